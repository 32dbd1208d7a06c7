"""Slack bot-token mode keeps one conversation per incident (issue 14), against FakeSlack's
workspace (chat.postMessage, chat.update and threads as Slack documents them) and a real store's
conversation log: one root per incident, replies in order, the root edited on resolution, a new
message when the root is gone, hostile values escaped everywhere."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bridge.config import parse
from bridge.conversations import Conversations, conversation_source
from bridge.errors import Permanent, RetryLater
from bridge.model import Alert, Digest, DigestMember, IncidentRef
from bridge.receivers import Receiver, build_receiver
from bridge.render import Renderer
from bridge.store.memory import MemoryStore
from tests.support.fakes import T0, FakeSlack, free_port, make_alert
from tests.support.waits import strings

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(20)

PATH = "FAILED 12m → STARTING 3m → RUNNING"
INC = "inc_0123456789abcdef0123"


def incident(kind: str, status: str = "FAILED", *, node: str = "node-7", inc: str = INC, path: str = PATH,
             n: int = 0, receiver: str = "ops") -> Alert:
    ref = IncidentRef(inc, T0 - timedelta(minutes=15), 900.0 if kind == "resolved" else 60.0 * (n + 1), path)
    alert = make_alert(node=node, status=status, receiver=receiver, delivery_id=f"dlv_{kind}_{n}_{inc[-4:]}")
    return replace(alert, kind=kind, incident=ref)


def threaded(slack: FakeSlack, session: aiohttp.ClientSession, store: MemoryStore | None = None,
             **extra: Any) -> Receiver:
    settings = {"type": "slack", "token": slack.token, "channel": "#alerts", "api_url": slack.api_url, **extra}
    cfg = parse({"receivers": {"ops": settings}, "node_labels": [{"match": "*", "labels": {"team": "core"}}]},
                env={})
    source = conversation_source(store or MemoryStore(), clock=lambda: T0, keep=86400.0)
    return build_receiver("ops", cfg.receivers["ops"], renderer=Renderer.from_config(cfg), session=session,
                          conversations=source)


def api_calls(slack: FakeSlack) -> list[tuple[str, dict[str, Any]]]:
    return [(r.path.removeprefix("/api/"), r.payload) for r in slack.requests if r.kind == "api"]


async def test_one_root_per_incident_replies_in_order_root_edited_on_resolution(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session, mentions=["<!subteam^S0123>", "<@U0456>"])
    await receiver.send(incident("firing"))
    await receiver.send(incident("update", "STARTING", n=1))
    await receiver.send(incident("reminder", "STARTING", n=2))
    await receiver.send(incident("escalation", "STARTING", n=3))
    await receiver.send(incident("resolved", "RUNNING", n=4))

    channel = fake_slack.channel("#alerts")
    [root] = channel.roots
    assert [r.headline for r in root.replies] == [
        ":large_orange_circle: node-7 now STARTING (incident open 2m)",
        ":large_orange_circle: still STARTING after 3m: node-7",
        ":large_orange_circle: ESCALATED node-7: STARTING, open 4m",
        ":large_green_circle: RESOLVED node-7 after 15m",
    ]
    assert not any(r.broadcast for r in root.replies)
    # the root, edited in place: green, the duration and the path
    assert len(root.edits) == 1
    assert root.headline == ":large_green_circle: RESOLVED node-7 after 15m"
    assert root.colour == "#2ca02c"
    fields = [f["text"] for f in root.payload["attachments"][0]["blocks"][0]["fields"]]
    assert f"*Path*\n{PATH}" in fields
    # chat.update went to the channel ID chat.postMessage answered, not to the #name
    [(_, update)] = [c for c in api_calls(fake_slack) if c[0] == "chat.update"]
    assert update["channel"] == channel.id and channel.id.startswith("C") and update["ts"] == root.ts
    # mentions on the firing and the escalation only
    mentioned = [m for m in [root, *root.replies] if "<@U0456>" in json.dumps(m.edits[0] if m.edits else m.payload)]
    first_post = next(p for m, p in api_calls(fake_slack) if m == "chat.postMessage")
    assert first_post["text"].startswith("<!subteam^S0123> <@U0456> ")
    assert first_post["blocks"][1] == {"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": "<!subteam^S0123> <@U0456>"}}
    assert [m.headline for m in mentioned] == [":large_orange_circle: ESCALATED node-7: STARTING, open 4m"]
    assert "<@U0456>" not in json.dumps(root.payload)  # the edit carries no mention


async def test_two_incidents_two_threads(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = threaded(fake_slack, http_session, broadcast_resolved=True)
    a, b = "inc_aaaaaaaaaaaaaaaaaaaaaaaa", "inc_bbbbbbbbbbbbbbbbbbbbbbbb"
    await receiver.send(incident("firing", node="node-a", inc=a))
    await receiver.send(incident("firing", node="node-b", inc=b))
    await receiver.send(incident("update", "STARTING", node="node-b", inc=b, n=1))
    await receiver.send(incident("resolved", "RUNNING", node="node-a", inc=a, n=2))
    await receiver.send(incident("resolved", "RUNNING", node="node-b", inc=b, n=3))
    root_a, root_b = fake_slack.channel("#alerts").roots
    assert [r.headline for r in root_a.replies] == [":large_green_circle: RESOLVED node-a after 15m"]
    assert [r.headline for r in root_b.replies] == [
        ":large_orange_circle: node-b now STARTING (incident open 2m)",
        ":large_green_circle: RESOLVED node-b after 15m",
    ]
    assert root_a.replies[0].broadcast and root_b.replies[1].broadcast  # broadcast_resolved
    assert not root_b.replies[0].broadcast
    assert root_a.headline.endswith("RESOLVED node-a after 15m") and root_b.headline.endswith("node-b after 15m")


async def test_a_flapping_notice_is_a_root_its_stable_summary_turns_green(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    # The notice carries no incident, the summary the one the node settled in (whose firing came first).
    receiver = threaded(fake_slack, http_session)
    flap = {"flap": {"count": 3, "since": "2026-04-16T11:58:00.000000Z", "span": 120.0}}
    await receiver.send(replace(make_alert(node="node-7", delivery_id="dlv_flap"), kind="flapping", facts=flap))
    await receiver.send(replace(make_alert(node="node-7", delivery_id="dlv_flap"), kind="flapping", facts=flap))
    await receiver.send(incident("firing"))
    await receiver.send(replace(incident("stable", n=1), facts={"flap": {**flap["flap"], "count": 5}}))
    notice, inc_root = fake_slack.channel("#alerts").roots
    assert notice.headline == ":large_green_circle: node-7 stable again: flapped 5 times in 2m, now FAILED"
    assert len(notice.edits) == 1 and [r.headline for r in notice.replies] == [notice.headline]
    assert inc_root.headline.startswith(":red_circle: node-7 is FAILED") and inc_root.replies == []
    # The node's next episode is a conversation of its own (the log keeps the first for days).
    again = {"flap": {"count": 3, "since": "2026-04-16T13:10:00.000000Z", "span": 60.0}}
    await receiver.send(replace(make_alert(node="node-7", delivery_id="dlv_flap2"), kind="flapping", facts=again))
    await receiver.send(replace(make_alert(node="node-7", delivery_id="dlv_stable2"), kind="stable", facts=again))
    roots = fake_slack.channel("#alerts").roots
    assert len(roots) == 3 and roots[2].headline.startswith(":large_green_circle: node-7 stable again: flapped 3")
    assert len(roots[0].edits) == 1


async def test_a_plain_route_event_is_a_message_of_its_own(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session)
    await receiver.send(make_alert())
    await receiver.send(make_alert(delivery_id="dlv_2"))
    assert [len(r.replies) for r in fake_slack.channel("#alerts").roots] == [0, 0]


async def test_no_root_then_the_first_message_becomes_the_root(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """The firing was buried (or went to another receiver): the update starts the conversation."""
    receiver = threaded(fake_slack, http_session)
    await receiver.send(incident("update", "STARTING", n=1))
    await receiver.send(incident("reminder", "STARTING", n=2))
    await receiver.send(incident("resolved", "RUNNING", n=3))
    [root] = fake_slack.channel("#alerts").roots
    assert [r.headline.split(" ", 1)[1] for r in root.replies] == ["still STARTING after 3m: node-7",
                                                                  "RESOLVED node-7 after 15m"]
    assert root.headline.endswith("RESOLVED node-7 after 15m") and len(root.edits) == 1


async def test_a_retried_firing_is_not_posted_twice(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = threaded(fake_slack, http_session)
    await receiver.send(incident("firing"))
    await receiver.send(incident("firing"))  # the job ran again (its outcome was not recorded)
    [root] = fake_slack.channel("#alerts").roots
    assert root.replies == []


async def test_a_resolution_retried_after_its_edit_went_through(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """chat.update succeeded, the reply got 429: the retry edits again (same content) and replies once."""
    receiver = threaded(fake_slack, http_session)
    await receiver.send(incident("firing"))
    resolved = incident("resolved", "RUNNING", n=1)
    calls = len(fake_slack.requests)
    original = fake_slack.workspace.post_message
    refused: list[dict[str, Any]] = []

    def reply_refused_once(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("thread_ts") and not refused:
            refused.append(payload)
            return {"ok": False, "error": "ratelimited"}
        return original(payload)

    fake_slack.workspace.post_message = reply_refused_once  # type: ignore[method-assign]
    with pytest.raises(RetryLater, match="ratelimited"):
        await receiver.send(resolved)
    await receiver.send(resolved)
    [root] = fake_slack.channel("#alerts").roots
    assert len(root.edits) == 2 and root.edits[0] == root.edits[1]
    assert [r.headline for r in root.replies] == [":large_green_circle: RESOLVED node-7 after 15m"]
    assert len(fake_slack.requests) == calls + 4  # update, reply (refused), update, reply


@pytest.mark.parametrize("where", ["update", "reply"])
async def test_root_deleted_posts_a_new_message(
    where: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.receivers.slack")
    receiver = threaded(fake_slack, http_session)
    await receiver.send(incident("firing"))
    channel = fake_slack.channel("#alerts")
    fake_slack.workspace.delete(channel.id, channel.roots[0].ts)
    if where == "reply":
        await receiver.send(incident("update", "STARTING", n=1))  # thread_not_found: a new root
        await receiver.send(incident("reminder", "STARTING", n=2))  # ... whose thread it joins
        [_, new] = channel.roots
        assert new.headline.endswith("node-7 now STARTING (incident open 2m)")
        assert [r.headline.split(" ", 1)[1] for r in new.replies] == ["still STARTING after 3m: node-7"]
        assert "thread_not_found" in caplog.text
    else:
        await receiver.send(incident("resolved", "RUNNING", n=1))  # message_not_found: a new message
        [_, new] = channel.roots
        assert new.headline == ":large_green_circle: RESOLVED node-7 after 15m" and new.edits == []
        assert "message_not_found" in caplog.text


@pytest.mark.parametrize(("ref", "code"), [
    ({"channel": "C0GONE", "ts": "1.000001"}, "channel_not_found"),
    (None, "cant_update_message"),
])
async def test_a_root_that_cannot_be_edited_posts_a_new_message(
    ref: dict[str, str] | None, code: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.receivers.slack")
    store = MemoryStore()
    if ref is None:  # someone else's message (the bot may not edit it)
        foreign = fake_slack.workspace.post_foreign("#alerts", "hello")
        ref = {"channel": fake_slack.channel("#alerts").id, "ts": foreign.ts}
    await store.record_conversation("ops", INC, ref, now=T0, ttl=3600)
    receiver = threaded(fake_slack, http_session, store)
    await receiver.send(incident("resolved", "RUNNING"))
    assert fake_slack.channel("#alerts").roots[-1].headline == ":large_green_circle: RESOLVED node-7 after 15m"
    assert code in caplog.text
    assert (await store.get_conversation("ops", INC, now=T0)) != ref  # the new message is the root now


async def test_root_survives_a_new_receiver_over_the_same_store(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """A restart (or another replica) builds a new receiver: the root comes from the store."""
    store = MemoryStore()
    await threaded(fake_slack, http_session, store).send(incident("firing"))
    await threaded(fake_slack, http_session, store).send(incident("resolved", "RUNNING", n=1))
    [root] = fake_slack.channel("#alerts").roots
    assert len(root.replies) == 1 and len(root.edits) == 1


async def test_conversation_log_unavailable_is_retry_later(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    from bridge.store.redis import RedisStore

    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    cfg = parse({"receivers": {"ops": {"type": "slack", "token": fake_slack.token, "channel": "#alerts",
                                       "api_url": fake_slack.api_url}}}, env={})
    receiver = build_receiver("ops", cfg.receivers["ops"], renderer=Renderer.from_config(cfg), session=http_session,
                              conversations=lambda name: Conversations(dead, name, clock=lambda: T0, keep=60))
    try:
        with pytest.raises(RetryLater, match="conversation log unavailable"):
            await receiver.send(incident("firing"))
        assert fake_slack.requests == []  # nothing sent: the retry cannot duplicate anything
    finally:
        await dead.close()


# --- channel templates ---------------------------------------------------------------------------


async def test_channel_template_renders_per_alert(http_session: aiohttp.ClientSession) -> None:
    async with FakeSlack(channels=("#core-alerts", "#db-alerts")) as slack:
        receiver = threaded(slack, http_session, channel="#{{ labels.team }}-alerts")
        await receiver.send(incident("firing"))
        a = replace(incident("firing", node="db-1", inc="inc_dddddddddddddddddddddddd"))
        await receiver.send(replace(a, event=replace(a.event, labels={"team": "db"})))
        await receiver.send(incident("resolved", "RUNNING", n=1))
        assert len(slack.channel("#core-alerts").roots) == 1 and len(slack.channel("#db-alerts").roots) == 1
        assert slack.channel("#core-alerts").roots[0].edits  # edited through the stored channel ID


@pytest.mark.parametrize("team", ["<!channel>", "Core", "", "a b", "x\r\n#evil"])
async def test_a_rendered_channel_that_is_no_channel_is_a_clear_permanent_error(
    team: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session, channel="#{{ labels.team }}-alerts")
    alert = incident("firing")
    with pytest.raises(Permanent) as info:
        await receiver.send(replace(alert, event=replace(alert.event, labels={"team": team})))
    assert info.value.reason.startswith("receivers.ops.channel: the rendered value ")
    assert "not a Slack channel" in info.value.reason
    assert "\r" not in info.value.reason and "\n" not in info.value.reason
    assert fake_slack.requests == []


async def test_a_channel_template_without_the_label_is_a_permanent_error(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session, channel="#{{ labels.team }}-alerts")
    alert = incident("firing")
    with pytest.raises(Permanent, match=r"receivers\.ops\.channel: template failed for this alert \(UndefinedError"):
        await receiver.send(replace(alert, event=replace(alert.event, labels={})))


# --- hostile values ------------------------------------------------------------------------------

HOSTILE = ["<!channel>", "<@U1>", "&amp;", "a\r\nb", 'x" "y', "<https://evil.example|click>"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_stay_escaped_in_roots_replies_and_edits(
    value: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session, mentions=["<@U0456>"])
    path = f"FAILED 12m → {value} 3m → RUNNING"
    for kind, status, n in (("firing", value, 0), ("update", value, 1), ("escalation", value, 2),
                            ("acknowledged", value, 3), ("resolved", "RUNNING", 4)):
        alert = incident(kind, status, node=value, path=path, n=n)
        facts = {"by": value} if kind == "acknowledged" else {}  # who acked: typed by an operator
        await receiver.send(replace(alert, event=replace(alert.event, labels={"team": value}), facts=facts))
    [root] = fake_slack.channel("#alerts").roots
    assert len(root.replies) == 4 and len(root.edits) == 1
    assert "ACKNOWLEDGED" in root.replies[2].headline and ", open 4m by " in root.replies[2].headline
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for _, payload in api_calls(fake_slack):
        for s in strings(payload):
            for opened in s.split("<")[1:]:  # the only control sequences: ours
                assert opened.startswith(("!date^", "@U0456>")), (opened, s)
        shown = "\n".join(strings(payload))
        if "<" in value:
            assert value not in shown
        assert escaped in shown
    fields = [f["text"] for f in root.payload["attachments"][0]["blocks"][0]["fields"]]
    assert f"*Path*\nFAILED 12m → {escaped} 3m → RUNNING" in fields




# --- incoming-webhook mode -----------------------------------------------------------------------


async def test_webhook_mode_sends_every_notification_as_a_message_of_its_own(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    cfg = parse({"receivers": {"ops": {"type": "slack", "webhook_url": fake_slack.webhook_url,
                                       "mentions": ["<!here>"]}}}, env={})
    receiver = build_receiver("ops", cfg.receivers["ops"], renderer=Renderer.from_config(cfg), session=http_session,
                              conversations=conversation_source(MemoryStore(), clock=lambda: T0, keep=60))
    for kind, status, n in (("firing", "FAILED", 0), ("update", "STARTING", 1), ("resolved", "RUNNING", 2)):
        await receiver.send(incident(kind, status, n=n))
    heads = [m.payload["blocks"][0]["text"]["text"] for m in fake_slack.messages]
    assert heads == [":red_circle: node-7 is FAILED", ":large_orange_circle: node-7 now STARTING (incident open 2m)",
                     ":large_green_circle: RESOLVED node-7 after 15m"]
    assert [m.payload["text"].startswith("<!here> ") for m in fake_slack.messages] == [True, False, False]


@pytest.mark.parametrize("kind", ["update", "resolved"])
async def test_429_on_a_threaded_message_is_retry_later_with_retry_after(
    kind: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    receiver = threaded(fake_slack, http_session)
    await receiver.send(incident("firing"))
    fake_slack.rate_limit(retry_after=3)  # the reply (update) or the root edit (resolution)
    alert = incident(kind, "STARTING" if kind == "update" else "RUNNING", n=1)
    with pytest.raises(RetryLater) as info:
        await receiver.send(alert)
    assert info.value.retry_after == 3 and "429" in info.value.reason
    await receiver.send(alert)  # the dispatcher's next attempt
    [root] = fake_slack.channel("#alerts").roots
    assert len(root.replies) == 1 and len(root.edits) == (1 if kind == "resolved" else 0)


async def test_a_shared_digest_root_is_not_edited_by_one_member_resolution(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """The hook fleet digests build on: several incidents recorded under one root marked "digest"."""
    store = MemoryStore()
    digest = fake_slack.workspace.post_message({"channel": "#alerts", "text": "2 nodes FAILED: node-a, node-b"})
    ref = {"channel": digest["channel"], "ts": digest["ts"], "digest": "grp_1"}
    a, b = "inc_aaaaaaaaaaaaaaaaaaaaaaaa", "inc_bbbbbbbbbbbbbbbbbbbbbbbb"
    for key in (a, b):
        await store.record_conversation("ops", key, ref, now=T0, ttl=3600)
    receiver = threaded(fake_slack, http_session, store)
    await receiver.send(incident("update", "STARTING", node="node-a", inc=a, n=1))
    await receiver.send(incident("resolved", "RUNNING", node="node-b", inc=b, n=2))
    [root] = fake_slack.channel("#alerts").roots
    assert root.edits == [] and len(root.replies) == 2
    assert await store.get_conversation("ops", b, now=T0) == ref


def digest(nodes: list[str], *, update: bool = False, n: int = 0) -> Alert:
    members = tuple(DigestMember(f"dlv_m{n}_{i}", node, "FAILED",
                                 IncidentRef(f"inc_{node}", T0, 1.0, "FAILED"), f"evt_{n}_{i}")
                    for i, node in enumerate(nodes))
    return replace(make_alert(node=nodes[0], status="FAILED", receiver="ops", delivery_id=f"dgs_{n}"),
                   kind="digest", digest=Digest("grp_fleet", members, update, {}))


async def test_a_digest_is_the_root_of_its_members_and_of_its_follow_ups(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """Token mode: the digest is one root; each member's resolution and a later follow-up digest
    are replies in its thread; a retried digest is not posted twice; each resolution edits the root
    to count the recovered members (a retried one counts once)."""
    store = MemoryStore()
    receiver = threaded(fake_slack, http_session, store)
    first = digest(["node-a", "node-b", "node-c"])
    await receiver.send(first)
    await receiver.send(first)  # a retry after it went out and was recorded
    await receiver.send(digest(["node-d"], update=True, n=1))
    for node in ("node-a", "node-b", "node-c", "node-d"):
        await receiver.send(incident("resolved", "RUNNING", node=node, inc=f"inc_{node}"))
    await receiver.send(incident("resolved", "RUNNING", node="node-a", inc="inc_node-a"))  # a retry
    [root] = fake_slack.channel("#alerts").roots
    assert len(root.replies) == 6  # the follow-up, four resolutions, the retried one
    texts = [e["text"] for e in root.edits]
    assert [t.split(" · ")[1].split(":")[0] for t in texts] == [
        "1 of 4 recovered", "2 of 4 recovered", "3 of 4 recovered", "all 4 recovered", "all 4 recovered"]
    assert texts[-1].startswith("3 nodes FAILED") and "node-d" in texts[-1]
    for node in ("node-a", "node-d"):
        ref = await store.get_conversation("ops", f"inc_{node}", now=T0)
        assert ref is not None and ref["digest"] == "grp_fleet" and ref["ts"] == root.ts
