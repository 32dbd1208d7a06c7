"""Fleet digests: which firings are grouped (decide), how a claimed group becomes one send
(grouping.plan_send, pure tables), the wording and every receiver's digest format with hostile node
ids, and the dispatcher sending one digest per group through real receivers on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import parse
from bridge.decide import NodeRecord, Policy, decide, decide_timers
from bridge.delivery import Dispatcher
from bridge.digest_text import MAX_NAME, MAX_NAMED, wording
from bridge.grouping import MAX_MEMBERS, Grouper, GroupState, digest_delivery_id, group_id, plan_send
from bridge.grouping_key import group_tag
from bridge.incident_state import Policy as IncidentPolicy
from bridge.incident_state import RoutePolicy
from bridge.metrics import Metrics
from bridge.model import Alert, Delivery, Digest, DigestMember, Event, IncidentRef, NodeState, RouteMatch
from bridge.receivers import build_receivers
from bridge.receivers.discord import discord_digest
from bridge.receivers.email import digest_content
from bridge.receivers.msteams import teams_message
from bridge.receivers.slack import slack_message
from bridge.receivers.telegram import telegram_message
from bridge.receivers.webhook import digest_body
from bridge.render import Renderer
from bridge.store import Store
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SQLiteStore
from tests.support.fakes import FakeSlack, SMTPServer, WebhookSink
from tests.support.rig import Clock

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
HOSTILE = "<!channel> @everyone <@U123> *bold* <b>x</b> &amp; [l](http://e) {{7*7}}\r\nBcc: x@y"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- decide: which jobs are grouped ------------------------------------------------------------------


def grouping_policy(labels: dict[str, dict[str, str]], **route: Any) -> Policy:
    rp = RoutePolicy("fleet", ("hook",), **{"group_wait": 30.0, "group_interval": 300.0, **route})
    plain = RoutePolicy("plain", ("mail",))

    def routes(event: Event, prev: NodeState | None) -> list[RouteMatch]:
        return [RouteMatch("fleet", ("hook",)), RouteMatch("plain", ("mail",))]

    return Policy(routes, incidents=IncidentPolicy(routes={"fleet": rp, "plain": plain}),
                  labels=lambda node: labels.get(node, {}))


def failed(node: str, t: float, labels: dict[str, str] | None = None, status: str = "FAILED") -> Event:
    return Event("NODE_STATUS_UPDATED", at(t), node, status, labels=labels or {}, received_at=at(t))


def test_firings_of_a_grouped_route_are_tagged_and_held_for_group_wait() -> None:
    policy = grouping_policy({}, group_by=("env",))
    d = decide(failed("n1", 0, {"env": "prod"}), None, policy, at(0))
    by_receiver = {j.receiver: j for j in d.jobs}
    fleet, plain = by_receiver["hook"], by_receiver["mail"]
    assert fleet.kind == "firing" and fleet.not_before == at(30)
    assert fleet.group == group_tag("fleet", ("env",), {"env": "prod"}, 300.0)
    assert fleet.group is not None and dict(fleet.group.labels) == {"env": "prod"}
    assert (plain.group, plain.not_before) == (None, None)  # a route without group_wait: as before
    # same route and env: same group; another env or route: another group
    other = decide(failed("n2", 1, {"env": "prod"}), None, policy, at(1)).jobs[0]
    staging = decide(failed("n3", 1, {"env": "staging"}), None, policy, at(1)).jobs[0]
    assert other.group == fleet.group and staging.group != fleet.group
    assert group_tag("other", ("env",), {"env": "prod"}, 300.0).key != fleet.group.key
    # resolutions stay per incident: never grouped, never held
    assert d.record is not None
    resolved = decide(failed("n1", 60, {"env": "prod"}, "RUNNING"), d.record, policy, at(60))
    assert [(j.kind, j.group, j.not_before) for j in resolved.jobs if j.receiver == "hook"] == \
        [("resolved", None, None)]


def test_a_held_firing_is_grouped_by_the_node_labels_the_config_gives() -> None:
    policy = grouping_policy({"n1": {"env": "prod"}}, group_by=("env",), hold=60.0)
    d = decide(failed("n1", 0), None, policy, at(0))
    assert [j.receiver for j in d.jobs] == ["mail"]  # the grouped route holds its firing (for: 60s)
    assert d.record is not None
    fired = decide_timers(NodeRecord(d.record.state, d.record.incidents), policy, at(60))
    [job] = [j for j in fired.jobs if j.receiver == "hook"]
    assert job.kind == "firing" and job.not_before == at(90)
    assert job.group is not None and dict(job.group.labels) == {"env": "prod"}
    assert job.event is not None and dict(job.event.labels) == {"env": "prod"}


def test_a_node_without_the_group_by_label_groups_with_the_others_that_lack_it() -> None:
    assert group_tag("r", ("env",), {}, 1.0) == group_tag("r", ("env",), {"team": "x"}, 1.0)
    assert group_tag("r", (), {"env": "a"}, 1.0).key == group_tag("r", (), {"env": "b"}, 1.0).key


# --- plan_send: one send per claimed group ----------------------------------------------------------------


def job(node: str, created: float, *, interval: float = 300.0, attempts: int = 1) -> Delivery:
    tag = group_tag("fleet", (), {}, interval)
    inc = IncidentRef(f"inc_{node}", at(created), 0.0, "FAILED")
    alert = Alert(failed(node, created), "fleet", "hook", f"dlv_{node}", kind="firing", incident=inc, group=tag)
    return Delivery(f"dlv_{node}", alert, "inflight", attempts, at(created), at(created + 30), None, at(created))


KEY = group_tag("fleet", (), {}, 300.0).key

NEW_A, NEW_D = group_id("hook", KEY, "dlv_a"), group_id("hook", KEY, "dlv_d")
PLAN_CASES: list[tuple[str, list[str], GroupState | None, float, str, bool, GroupState]] = [
    # (case, members, stored state, now, kind, update, state after)
    ("a new group of three is one digest", ["a", "b", "c"], None, 31, "digest", False,
     GroupState(NEW_A, at(31), "dlv_a", "dlv_a")),
    ("a group of one is a plain firing", ["a"], None, 31, "firing", False, GroupState(NEW_A, at(31), "dlv_a", "dlv_a")),
    ("joins a group sent within group_interval", ["d"], GroupState("grp_x", at(31), "dlv_a", "dlv_a"), 100,
     "digest", True, GroupState("grp_x", at(100), "dlv_a", "dlv_d")),
    ("a later firing starts a new group", ["d"], GroupState("grp_x", at(-400), "dlv_a", "dlv_a"), 100,
     "firing", False, GroupState(NEW_D, at(100), "dlv_d", "dlv_d")),
    ("a resend keeps its id and kind", ["a", "b"], GroupState("grp_x", at(31), "dlv_a", "dlv_a"), 90,
     "digest", False, GroupState("grp_x", at(90), "dlv_a", "dlv_a")),
    ("a resent follow-up stays a follow-up", ["d"], GroupState("grp_x", at(-1000), "dlv_a", "dlv_d"), 200,
     "digest", True, GroupState("grp_x", at(200), "dlv_a", "dlv_d")),
    ("the first message resent after a follow-up stays the first", ["a", "b"],
     GroupState("grp_x", at(90), "dlv_a", "dlv_d"), 200, "digest", False,
     GroupState("grp_x", at(200), "dlv_a", "dlv_d")),
]


@pytest.mark.parametrize(("case", "nodes", "state", "now", "kind", "update", "after"), PLAN_CASES,
                         ids=[c[0] for c in PLAN_CASES])
def test_plan_send(case: str, nodes: list[str], state: GroupState | None, now: float, kind: str, update: bool,
                   after: GroupState) -> None:
    created = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 60.0}
    members = [job(n, created[n]) for n in nodes]
    send = plan_send(members, state, at(now))
    alert = send.unit.alert
    assert (alert.kind, alert.digest is not None) == (kind, True)
    assert alert.digest is not None and (alert.digest.id, alert.digest.update) == (after.id, update)
    assert [m.node_id for m in alert.digest.members] == nodes
    assert [m.incident.id for m in alert.digest.members if m.incident] == [f"inc_{n}" for n in nodes]
    assert send.members == tuple(members)
    assert send.state == after
    assert GroupState.from_json(after.to_json()) == after
    if kind == "firing":  # the member's own job, its group noted
        assert send.unit.id == members[0].id and alert.incident == members[0].alert.incident
    else:
        assert send.unit.id == alert.delivery_id == digest_delivery_id(members)
        assert alert.incident is None
    # the digest survives the job-context JSON round trip (what the lead's Slack threading stores)
    again = Alert.from_context(alert.delivery_id, json.loads(json.dumps(alert.context())))
    assert again.digest == alert.digest and again.group == alert.group and again.kind == alert.kind


async def test_a_claim_holding_more_than_a_digest_of_one_group_sends_a_follow_up() -> None:
    # Two due jobs of one group in one claim, each with its mates: no digest lists more than 200.
    store = MemoryStore()
    await store.open()
    jobs = [job(f"n{i:03d}", i / 100) for i in range(2 * MAX_MEMBERS + 1)]
    sends = await Grouper(store).bundle(jobs, now=at(40), digests=True)
    digests = [s.alert.digest for s in sends]
    assert [(len(d.members), d.update) for d in digests if d] == [(200, False), (200, True), (1, True)]
    assert [m.node_id for d in digests if d for m in d.members] == [j.alert.event.node_id for j in jobs]
    assert len({d.id for d in digests if d}) == 1
    await store.close()


def test_group_interval_zero_never_joins_and_a_retry_takes_the_oldest_attempts() -> None:
    state = GroupState("grp_x", at(31), "dlv_a", "dlv_a")
    send = plan_send([job("d", 32, interval=0.0)], state, at(62))
    assert send.unit.alert.digest is not None and send.unit.alert.digest.id != "grp_x"
    two = plan_send([job("a", 0, attempts=3), job("b", 1)], None, at(40))
    assert (two.unit.attempts, two.unit.created_at) == (3, at(0))
    assert digest_delivery_id(two.members) == digest_delivery_id(tuple(reversed(two.members)))


# --- wording and the receivers' formats ---------------------------------------------------------------


def digest_alert(nodes: Sequence[str], *, update: bool = False, statuses: Sequence[str] | None = None,
                 labels: dict[str, str] | None = None) -> Alert:
    members = tuple(
        DigestMember(f"dlv_{i}", n, (statuses or ["FAILED"] * len(nodes))[i],
                     IncidentRef(f"inc_{i}", at(i), 1.0, "FAILED"), f"evt_{i}")
        for i, n in enumerate(nodes))
    return Alert(failed(nodes[0], 0), "fleet", "hook", "dgs_1", kind="digest",
                 digest=Digest("grp_1", members, update, labels or {}))


def test_wording_caps_the_list_and_cuts_long_ids() -> None:
    nodes = [f"node-{i:02d}" for i in range(MAX_NAMED + 12)]
    w = wording(digest_alert(nodes, labels={"env": "prod"}).digest)  # type: ignore[arg-type]
    assert w.title == f"{MAX_NAMED + 12} nodes FAILED (env=prod)"
    assert w.headline == f"{w.title}: " + ", ".join(nodes[:MAX_NAMED]) + " and 12 more"
    long = wording(digest_alert(["x" * 1000]).digest)  # type: ignore[arg-type]
    assert long.names == ("x" * (MAX_NAME - 1) + "…",) and long.title == "1 node FAILED"
    mixed = wording(digest_alert(["a", "b"], update=True, statuses=["FAILED", "PAUSED"]).digest)  # type: ignore[arg-type]
    assert mixed.title == "2 more nodes failing"


def test_slack_digest_escapes_node_ids_and_stays_within_block_limits() -> None:
    alert = digest_alert([HOSTILE, *[f"{HOSTILE}{i}" * 5 for i in range(40)]])
    msg = slack_message(Renderer(), alert, None)  # type: ignore[arg-type]
    text = json.dumps(msg)
    assert "<!channel>" not in text and "<@U123>" not in text and "&lt;!channel&gt;" in text
    assert all(len(b["text"]["text"]) <= 3000 for b in msg["blocks"] if b["type"] == "section")
    assert msg["blocks"][0]["text"]["text"].endswith("41 nodes FAILED") and "and 21 more" in msg["text"]


def test_discord_telegram_teams_email_digests_escape_node_ids() -> None:
    alert = digest_alert([HOSTILE, "ok-node"])
    discord = discord_digest(alert)
    assert discord["allowed_mentions"] == {"parse": []}
    assert "\\@everyone" in discord["embeds"][0]["description"]
    assert "<!channel>" not in discord["embeds"][0]["description"]
    cfg = parse({"verification": {"public_key": "x"}, "receivers": {
        "tg": {"type": "telegram", "bot_token": "1:abc", "chat_id": "42"},
        "teams": {"type": "msteams", "url": "https://example.invalid/hook"}}}, env={})
    tg = telegram_message(Renderer(), alert, cfg.receivers["tg"])  # type: ignore[arg-type]
    assert tg["parse_mode"] == "HTML" and "<b>x</b>" not in tg["text"] and "&lt;b&gt;x&lt;/b&gt;" in tg["text"]
    assert tg["text"].startswith("<b>2 nodes FAILED</b>\n")
    teams = json.dumps(teams_message(Renderer(), alert, cfg.receivers["teams"]))  # type: ignore[arg-type]
    assert "{{7*7}}" not in teams and "\\\\*bold\\\\*" in teams
    mail = digest_content(alert)
    assert "\r" not in mail.subject and "\n" not in mail.subject
    assert mail.subject.startswith("[alert-bridge] 2 nodes FAILED: ")
    assert "<b>x</b>" not in mail.html and "&lt;b&gt;x&lt;/b&gt;" in mail.html and "inc_0" in mail.text


def test_webhook_digest_is_one_document_listing_every_member() -> None:
    nodes = [HOSTILE, *[f"n{i}" for i in range(60)]]
    doc = json.loads(digest_body(digest_alert(nodes)))
    assert doc["kind"] == "digest" and doc["group"] == {"id": "grp_1", "update": False, "labels": {}}
    assert doc["count"] == 61 and [m["nodeId"] for m in doc["members"]] == nodes  # all of them, uncut
    assert doc["members"][0]["incident"]["id"] == "inc_0" and doc["deliveryId"] == "dgs_1"
    assert doc["text"].endswith("and 41 more")


# --- the dispatcher: one send per group, through real receivers ---------------------------------------




Rig = tuple[Store, Dispatcher, Callable[..., Any]]


@pytest.fixture
async def pager_sink() -> AsyncIterator[WebhookSink]:
    async with WebhookSink() as sink:
        yield sink


@pytest.fixture(params=["memory", "sqlite"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path, webhook_sink: WebhookSink, pager_sink: WebhookSink,
              fake_slack: FakeSlack, smtp_server: SMTPServer,
              ) -> AsyncIterator[tuple[Store, Dispatcher, Clock, Callable[..., Any]]]:
    clock = Clock()
    store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "b.db")
    receivers = {
        "hook": {"type": "webhook", "url": webhook_sink.url,
                 "retry": {"initial_backoff": "1s", "max_backoff": "2s", "max_attempts": 20}},
        # Unpaced: at Slack's 1/s, ten resolutions took run_until_idle's whole 10 s (flaky). Pacing: test_lane.
        "slack": {"type": "slack", "webhook_url": fake_slack.webhook_url, "rate_limit": 0},
        "pager": {"type": "webhook", "url": pager_sink.url},
        "mail": {"type": "email", "to": ["oncall@example.test"], "from": "bridge@example.test",
                 "smtp": {"host": "127.0.0.1", "port": smtp_server.port, "security": "none"}},
    }
    cfg = parse({"verification": {"public_key": "unused"}, "receivers": receivers}, env={})
    await store.open()
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(store, metrics=Metrics(), clock=clock, lease=60, poll_interval=0.05)
        built = build_receivers(cfg, Renderer.from_config(cfg), session)
        built["pager"].sends_digests = False  # type: ignore[attr-defined]  # as pagerduty/opsgenie say
        dispatcher.set_receivers(built, dict(cfg.receivers))
        policy = Policy(lambda e, prev: [RouteMatch("fleet", ("hook", "slack", "pager", "mail"))],
                        incidents=IncidentPolicy(routes={"fleet": RoutePolicy(
                            "fleet", ("hook", "slack", "pager", "mail"), group_wait=10.0, group_interval=60.0)}))

        async def post(node: str, status: str = "FAILED") -> None:
            now = clock()
            event = Event("NODE_STATUS_UPDATED", now, node, status, received_at=now)
            res = await store.accept(event, lambda rec, dup: decide(event, rec, policy, now, duplicate=dup),
                                     now=now, dedup_ttl=3600)
            assert res.status == "accepted"

        yield store, dispatcher, clock, post
        await dispatcher.stop(0)
    await store.close()


def hook_docs(sink: WebhookSink, path: str = "/hook") -> list[dict[str, Any]]:
    return [r.json() for r in sink.delivered if r.path == path]


async def test_ten_simultaneous_failures_are_one_digest_and_ten_resolutions(
    rig: tuple[Store, Dispatcher, Clock, Callable[..., Any]], webhook_sink: WebhookSink, fake_slack: FakeSlack,
    pager_sink: WebhookSink, smtp_server: SMTPServer,
) -> None:
    store, dispatcher, clock, post = rig
    nodes = ["<b>evil</b>\r\nBcc: x@y", *[f"node-{i}" for i in range(1, 10)]]
    for node in nodes:
        await post(node)
        clock.advance(0.1)
    await dispatcher.run_until_idle()
    assert webhook_sink.delivered == [] and fake_slack.messages == []  # held for group_wait
    clock.advance(10)
    await dispatcher.run_until_idle()
    [doc] = hook_docs(webhook_sink)
    assert doc["kind"] == "digest" and doc["count"] == 10
    assert [m["nodeId"] for m in doc["members"]] == nodes
    [msg] = fake_slack.messages
    assert msg.payload["text"].startswith("10 nodes FAILED: &lt;b&gt;evil&lt;/b&gt; Bcc: x@y, node-1, node-2")
    [mail] = smtp_server.messages
    assert mail.message["Subject"].startswith("[alert-bridge] 10 nodes FAILED: <b>evil</b> Bcc: x@y, node-1")
    assert mail.message["Bcc"] is None and mail.rcpt_tos == ["oncall@example.test"]
    assert all(n in mail.part("plain") for n in nodes[1:]) and "&lt;b&gt;evil&lt;/b&gt;" in mail.part("html")
    assert "<b>evil</b>" not in mail.part("html")
    pager = hook_docs(pager_sink)
    assert sorted(d["event"]["nodeId"] for d in pager) == sorted(nodes)
    assert {d["kind"] for d in pager} == {"firing"}  # pagers: one event per incident
    assert (await store.stats(now=clock())).pending == 0
    for node in nodes:
        await post(node, "RUNNING")
    await dispatcher.run_until_idle()
    resolved = [d for d in hook_docs(webhook_sink) if d["kind"] == "resolved"]
    assert sorted(d["event"]["nodeId"] for d in resolved) == sorted(nodes)
    assert len(smtp_server.messages) == 11
    ids = {m["incident"]["id"] for m in doc["members"]}
    assert {d["incident"]["id"] for d in resolved} == ids
    assert len([m for m in fake_slack.messages if "RESOLVED" in m.payload["text"].upper()]) == 10


async def test_a_mass_failure_is_digests_of_at_most_200(
    rig: tuple[Store, Dispatcher, Clock, Callable[..., Any]], webhook_sink: WebhookSink,
) -> None:
    # Probe s04: the claim took the due job and 200 mates, a digest of 201.
    _, dispatcher, clock, post = rig
    nodes = [f"node-{i:03d}" for i in range(MAX_MEMBERS + 1)]
    for node in nodes:
        await post(node)
    clock.advance(10)
    await dispatcher.run_until_idle()
    docs = hook_docs(webhook_sink)
    assert [(d["count"], len(d["members"]), d["group"]["update"]) for d in docs] == [(200, 200, False),
                                                                                    (1, 1, True)]
    assert sorted(m["nodeId"] for d in docs for m in d["members"]) == nodes


async def test_a_failure_within_group_interval_joins_as_a_follow_up_and_later_ones_start_anew(
    rig: tuple[Store, Dispatcher, Clock, Callable[..., Any]], webhook_sink: WebhookSink,
) -> None:
    _, dispatcher, clock, post = rig
    await post("a")
    clock.advance(0.1)
    await post("b")
    clock.advance(10)
    await dispatcher.run_until_idle()
    [first] = hook_docs(webhook_sink)
    clock.advance(20)
    await post("c")
    clock.advance(10)
    await dispatcher.run_until_idle()
    follow = hook_docs(webhook_sink)[1]
    assert follow["kind"] == "digest" and follow["group"]["update"] is True
    assert follow["group"]["id"] == first["group"]["id"] and [m["nodeId"] for m in follow["members"]] == ["c"]
    clock.advance(100)  # past group_interval: a new group, and a lone firing reads as a plain firing
    await post("d")
    clock.advance(10)
    await dispatcher.run_until_idle()
    last = hook_docs(webhook_sink)[2]
    assert last["kind"] == "firing" and last["event"]["nodeId"] == "d"
    assert last["group"]["id"] != first["group"]["id"] and last["group"]["update"] is False  # a new group


async def test_a_failed_digest_is_retried_as_the_same_digest(
    rig: tuple[Store, Dispatcher, Clock, Callable[..., Any]], webhook_sink: WebhookSink,
) -> None:
    store, dispatcher, clock, post = rig
    webhook_sink.script(503)
    for node in ("a", "b", "c"):
        await post(node)
        clock.advance(0.1)
    clock.advance(10)
    await dispatcher.run_until_idle()
    assert [r.status for r in webhook_sink.requests if r.path == "/hook"] == [503]
    clock.advance(5)
    await post("late")  # joins the retry: a pending head of the same group
    clock.advance(5)
    await dispatcher.run_until_idle()
    docs = hook_docs(webhook_sink)
    assert len(docs) == 1 and docs[0]["group"]["update"] is False
    assert [m["nodeId"] for m in docs[0]["members"]] == ["a", "b", "c", "late"]
    first = webhook_sink.requests[0].json()
    assert first["group"]["id"] == docs[0]["group"]["id"]
    done = await store.list_deliveries(state="done", limit=100)
    assert len([d for d in done if d.receiver == "hook"]) == 4
