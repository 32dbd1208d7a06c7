"""PagerDuty, Opsgenie, Teams, Discord and Telegram receivers against loopback fakes that answer
as each service documents (tests/support/fakes_pagers.py), then through the dispatcher, the CLI and the
real process."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import parse
from bridge.errors import Permanent, RetryLater
from bridge.model import Alert, IncidentRef
from bridge.receivers import Receiver, build_receiver
from bridge.receivers.http import correlation_key
from bridge.render import Renderer
from bridge.store.memory import MemoryStore
from tests.support.cli_runner import run, write
from tests.support.fakes import Answer, free_port, make_alert, wait_until
from tests.support.fakes_pagers import (
    DISCORD_TOKEN,
    OG_API_KEY,
    PD_ROUTING_KEY,
    TEAMS_SIG,
    TG_TOKEN,
    FakeDiscord,
    FakeOpsgenie,
    FakePagerDuty,
    FakeTeams,
    FakeTelegram,
    _ServiceFake,
)
from tests.support.rig import close_rig, open_rig

pytest_plugins = ["tests.support.fakes", "tests.support.fakes_pagers"]
pytestmark = pytest.mark.timeout(30)

INCIDENT = IncidentRef(id="inc_7f3a9c", opened_at=dt.datetime(2026, 4, 16, 12, 0, tzinfo=dt.UTC), duration=900.0,
                       path="FAILED 12m → STARTING 3m → RUNNING")
KINDS = ("pagerduty", "opsgenie", "msteams", "discord", "telegram")
SECRETS = {"pagerduty": PD_ROUTING_KEY, "opsgenie": OG_API_KEY, "msteams": TEAMS_SIG, "discord": DISCORD_TOKEN,
           "telegram": TG_TOKEN}


def incident_alert(kind: str, status: str = "FAILED", **kw: Any) -> Alert:
    return dataclasses.replace(make_alert(status=status, **kw), kind=kind, incident=INCIDENT)


def settings_for(kind: str, fake: _ServiceFake) -> dict[str, Any]:
    """A receiver config entry pointing at ``fake``."""
    if kind == "pagerduty":
        return {"type": kind, "routing_key": PD_ROUTING_KEY, "api_url": fake.base_url + "/v2/enqueue"}
    if kind == "opsgenie":
        return {"type": kind, "api_key": OG_API_KEY, "api_url": fake.base_url}
    if kind == "telegram":
        assert isinstance(fake, FakeTelegram)
        return {"type": kind, "bot_token": TG_TOKEN, "chat_id": fake.chat_id, "api_url": fake.base_url}
    assert isinstance(fake, FakeTeams | FakeDiscord)
    return {"type": kind, "url": fake.url}


def make_receiver(session: aiohttp.ClientSession, settings: dict[str, Any], **extra: Any) -> Receiver:
    cfg = parse({"verification": {"public_key": "unused"}, "receivers": {"pager": {**settings, **extra}}}, env={})
    return build_receiver("pager", cfg.receivers["pager"], renderer=Renderer.from_config(cfg), session=session)


FAKES: dict[str, type[_ServiceFake]] = {"pagerduty": FakePagerDuty, "opsgenie": FakeOpsgenie, "msteams": FakeTeams,
                                        "discord": FakeDiscord, "telegram": FakeTelegram}


@pytest.fixture(params=KINDS)
async def service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, _ServiceFake]]:
    async with FAKES[request.param]() as fake:
        yield request.param, fake


# --- PagerDuty ------------------------------------------------------------------------------------


async def test_pagerduty_trigger_ack_resolve_share_the_incident_id(
    fake_pagerduty: FakePagerDuty, http_session: aiohttp.ClientSession
) -> None:
    pd = make_receiver(http_session, settings_for("pagerduty", fake_pagerduty))
    await pd.send(incident_alert("firing"))
    assert fake_pagerduty.alerts == {"inc_7f3a9c": "triggered"}
    trigger = fake_pagerduty.requests[0].payload
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "inc_7f3a9c"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == "node-prod-1 is FAILED"
    assert trigger["payload"]["source"] == "node-prod-1"
    assert trigger["payload"]["custom_details"]["incident"]["path"] == INCIDENT.path
    await pd.send(incident_alert("acknowledged"))
    assert fake_pagerduty.alerts == {"inc_7f3a9c": "acknowledged"}
    await pd.send(incident_alert("resolved", status="RUNNING"))
    assert fake_pagerduty.alerts == {"inc_7f3a9c": "resolved"}
    assert [r.payload["event_action"] for r in fake_pagerduty.requests] == ["trigger", "acknowledge", "resolve"]
    assert all(r.status == 202 for r in fake_pagerduty.requests)


@pytest.mark.parametrize(("kind", "action"), [("reminder", "trigger"), ("escalation", "trigger"),
                                              ("update", "trigger"), ("flapping", "trigger"), ("event", "trigger"),
                                              ("stable", "resolve"), ("some-future-kind", "trigger")])
async def test_pagerduty_kind_table(
    kind: str, action: str, fake_pagerduty: FakePagerDuty, http_session: aiohttp.ClientSession
) -> None:
    await make_receiver(http_session, settings_for("pagerduty", fake_pagerduty)).send(incident_alert(kind))
    [req] = fake_pagerduty.requests
    assert (req.payload["event_action"], req.status) == (action, 202)


async def test_a_flapping_notice_and_its_stable_summary_share_the_node_key(
    fake_pagerduty: FakePagerDuty, fake_opsgenie: FakeOpsgenie, http_session: aiohttp.ClientSession
) -> None:
    # The notice goes out with no incident, the summary with the one the node settled in: the summary
    # must close the notice's alert, not the incident's (which its own firing opens).
    pd = make_receiver(http_session, settings_for("pagerduty", fake_pagerduty))
    og = make_receiver(http_session, settings_for("opsgenie", fake_opsgenie))
    for r in (pd, og):
        await r.send(dataclasses.replace(make_alert(), kind="flapping"))
        await r.send(incident_alert("firing"))
        await r.send(incident_alert("stable"))
    node_key = correlation_key(make_alert())
    assert fake_pagerduty.alerts == {node_key: "resolved", "inc_7f3a9c": "triggered"}
    assert fake_opsgenie.alerts == {node_key: "closed", "inc_7f3a9c": "open"}


async def test_pagerduty_severity_map_and_node_fallback_key(
    fake_pagerduty: FakePagerDuty, http_session: aiohttp.ClientSession
) -> None:
    pd = make_receiver(http_session, settings_for("pagerduty", fake_pagerduty),
                       severity={"FAILED": "error"}, default_severity="info")
    await pd.send(make_alert(status="FAILED"))
    await pd.send(make_alert(status="PAUSED"))
    await pd.send(make_alert(node="node-prod-2", status="FAILED"))
    first, second, other = (r.payload for r in fake_pagerduty.requests)
    assert (first["payload"]["severity"], second["payload"]["severity"]) == ("error", "info")
    # no incident: one key per node, stable across events, bounded and URL-safe
    assert first["dedup_key"] == second["dedup_key"] == correlation_key(make_alert())
    assert first["dedup_key"] != other["dedup_key"]
    assert first["dedup_key"].startswith("node-") and len(first["dedup_key"]) == 29


async def test_pagerduty_invalid_event_is_permanent_with_the_reason(
    fake_pagerduty: FakePagerDuty, http_session: aiohttp.ClientSession
) -> None:
    fake_pagerduty.routing_key = "another-key-000000000000000000000"
    with pytest.raises(Permanent) as info:
        await make_receiver(http_session, settings_for("pagerduty", fake_pagerduty)).send(incident_alert("firing"))
    assert info.value.reason == "pagerduty answered 400 Event object is invalid: Invalid routing key"


# --- Opsgenie -------------------------------------------------------------------------------------


async def test_opsgenie_create_ack_close_by_alias(
    fake_opsgenie: FakeOpsgenie, http_session: aiohttp.ClientSession
) -> None:
    og = make_receiver(http_session, settings_for("opsgenie", fake_opsgenie), tags=["thunderstack"])
    await og.send(incident_alert("firing"))
    create = fake_opsgenie.requests[0]
    assert create.path == "/v2/alerts" and create.headers["Authorization"] == f"GenieKey {OG_API_KEY}"
    assert create.payload["alias"] == "inc_7f3a9c" and create.payload["priority"] == "P1"
    assert create.payload["tags"] == ["thunderstack"]
    assert all(isinstance(v, str) for v in create.payload["details"].values())
    assert fake_opsgenie.alerts == {"inc_7f3a9c": "open"}
    await og.send(incident_alert("acknowledged"))
    assert fake_opsgenie.alerts == {"inc_7f3a9c": "acked"}
    await og.send(incident_alert("resolved", status="RUNNING"))
    assert fake_opsgenie.alerts == {"inc_7f3a9c": "closed"}
    ack, close = fake_opsgenie.requests[1:]
    assert (ack.path, ack.query) == ("/v2/alerts/inc_7f3a9c/acknowledge", {"identifierType": "alias"})
    assert (close.path, close.query) == ("/v2/alerts/inc_7f3a9c/close", {"identifierType": "alias"})


async def test_opsgenie_long_title_is_cut_to_130(
    fake_opsgenie: FakeOpsgenie, http_session: aiohttp.ClientSession
) -> None:
    await make_receiver(http_session, settings_for("opsgenie", fake_opsgenie)).send(
        incident_alert("firing", node="n" * 300))
    [req] = fake_opsgenie.requests
    assert req.status == 202 and len(req.payload["message"]) == 130


# --- chat services: hostile values ----------------------------------------------------------------

HOSTILE = '@everyone <@123> **bold** [x](http://evil.test) <b>hi</b> & {{DATE(x)}} `c` _i_'


async def test_telegram_html_escapes_every_event_value(
    fake_telegram: FakeTelegram, http_session: aiohttp.ClientSession
) -> None:
    tg = make_receiver(http_session, settings_for("telegram", fake_telegram))
    await tg.send(incident_alert("firing", node=HOSTILE, labels={"team": "<i>x</i>"}))
    [req] = fake_telegram.requests
    assert req.status == 200, req.payload
    assert req.payload["parse_mode"] == "HTML" and req.payload["chat_id"] == fake_telegram.chat_id
    [seen] = fake_telegram.texts
    assert f"{HOSTILE} is FAILED" in seen  # shown literally, no tag took effect
    assert "team=<i>x</i>" in seen
    assert req.payload["text"].startswith("<b>")  # our own markup stays markup


async def test_telegram_long_text_stays_valid_html(
    fake_telegram: FakeTelegram, http_session: aiohttp.ClientSession
) -> None:
    await make_receiver(http_session, settings_for("telegram", fake_telegram)).send(
        incident_alert("firing", labels={"k": "<&>" * 3000}))
    [req] = fake_telegram.requests
    assert req.status == 200, req.body[:200]
    assert len(req.payload["text"]) <= 4096


async def test_discord_embed_mentions_off_and_markdown_escaped(
    fake_discord: FakeDiscord, http_session: aiohttp.ClientSession
) -> None:
    dc = make_receiver(http_session, settings_for("discord", fake_discord))
    await dc.send(incident_alert("firing", node=HOSTILE))
    await dc.send(incident_alert("resolved", status="RUNNING"))
    failed, resolved = fake_discord.requests
    assert failed.query == {"wait": "true"} and failed.status == 200
    assert failed.payload["allowed_mentions"] == {"parse": []}
    [embed] = failed.payload["embeds"]
    assert embed["color"] == 0xD62728 and resolved.payload["embeds"][0]["color"] == 0x2CA02C
    node_part = embed["title"].removesuffix(" is FAILED")
    # every markdown, mention and emoji character of the node id is backslash-escaped
    assert re.search(r"(?<!\\)[@<*\[\]()`_~|>#:!-]", node_part) is None, node_part
    assert node_part.replace("\\", "") == HOSTILE
    assert node_part in embed["description"]


async def test_teams_adaptive_card_with_escaped_values(
    fake_teams: FakeTeams, http_session: aiohttp.ClientSession
) -> None:
    await make_receiver(http_session, settings_for("msteams", fake_teams)).send(incident_alert("firing", node=HOSTILE))
    [req] = fake_teams.requests
    assert req.status == 202
    [card] = fake_teams.cards
    assert card["type"] == "AdaptiveCard" and card["body"][0]["color"] == "attention"
    text = json.dumps(card)
    for raw in ("**bold**", "[x](http", "{{DATE", "`c`", "_i_"):
        assert raw not in text
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Incident"] == "inc\\_7f3a9c"


# --- every service: failures ----------------------------------------------------------------------

# The 429 each service documents, and the wait we must take from it (None: our backoff decides).
RATE_LIMITS: dict[str, tuple[dict[str, Any], float | None]] = {
    "pagerduty": ({}, None),
    "opsgenie": ({}, None),
    "msteams": ({"retry_after": 3}, 3.0),
    "discord": ({"retry_after": 2.5}, 2.5),
    "telegram": ({"retry_after": 4}, 4.0),
}


async def test_429_is_retry_later_with_the_services_own_wait(
    service: tuple[str, _ServiceFake], http_session: aiohttp.ClientSession
) -> None:
    kind, fake = service
    options, wait = RATE_LIMITS[kind]
    fake.rate_limit(1, **options)
    rcv = make_receiver(http_session, settings_for(kind, fake))
    with pytest.raises(RetryLater) as info:
        await rcv.send(incident_alert("firing"))
    assert info.value.reason.startswith(f"{kind} answered 429")
    assert info.value.retry_after == wait
    assert len(fake.requests) == 1  # one attempt
    await rcv.send(incident_alert("firing"))
    assert fake.requests[-1].accepted


async def test_discord_takes_the_longer_of_body_and_header(
    fake_discord: FakeDiscord, http_session: aiohttp.ClientSession
) -> None:
    fake_discord.rate_limit(1, retry_after=0.4, header="2")
    with pytest.raises(RetryLater) as info:
        await make_receiver(http_session, settings_for("discord", fake_discord)).send(make_alert())
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retry_later(
    status: int, service: tuple[str, _ServiceFake], http_session: aiohttp.ClientSession
) -> None:
    kind, fake = service
    fake.script(status)
    with pytest.raises(RetryLater, match=f"^{kind} answered {status}"):
        await make_receiver(http_session, settings_for(kind, fake)).send(incident_alert("firing"))


async def test_timeout_and_refused_are_retry_later(
    service: tuple[str, _ServiceFake], http_session: aiohttp.ClientSession
) -> None:
    kind, fake = service
    fake.delay_next(5)
    with pytest.raises(RetryLater) as info:
        await make_receiver(http_session, settings_for(kind, fake), timeout="300ms").send(incident_alert("firing"))
    assert info.value.reason == f"{kind}: no answer within 0.3s"
    await fake.close()
    with pytest.raises(RetryLater, match="Connection refused"):
        await make_receiver(http_session, settings_for(kind, fake)).send(incident_alert("firing"))


# A wrong secret or target, as each service answers it: permanent, with the service's reason.
WRONG: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "pagerduty": (lambda s: {**s, "routing_key": "x" * 32},
                  "pagerduty answered 400 Event object is invalid: Invalid routing key"),
    "opsgenie": (lambda s: {**s, "api_key": "wrong-key-123"}, "opsgenie answered 401 Could not authenticate"),
    "msteams": (lambda s: {**s, "url": s["url"].replace(TEAMS_SIG, "bad")}, "msteams answered 401 The request failed."),
    "discord": (lambda s: {**s, "url": s["url"].replace(DISCORD_TOKEN, "bad-token")},
                "discord answered 401 Invalid Webhook Token (code 50027)"),
    "telegram": (lambda s: {**s, "chat_id": 42}, "telegram answered 400 Bad Request: chat not found"),
}


async def test_4xx_is_permanent_with_the_services_reason(
    service: tuple[str, _ServiceFake], http_session: aiohttp.ClientSession
) -> None:
    kind, fake = service
    change, reason = WRONG[kind]
    with pytest.raises(Permanent) as info:
        await make_receiver(http_session, change(settings_for(kind, fake))).send(incident_alert("firing"))
    assert info.value.reason == reason


async def test_telegram_migrated_group_says_which_chat_id(
    fake_telegram: FakeTelegram, http_session: aiohttp.ClientSession
) -> None:
    body = {"ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -1009876543210}}
    fake_telegram.script(Answer(status=400, body=json.dumps(body).encode()))
    with pytest.raises(Permanent, match="set chat_id: -1009876543210"):
        await make_receiver(http_session, settings_for("telegram", fake_telegram)).send(make_alert())


# --- secrets --------------------------------------------------------------------------------------


async def test_no_secret_in_errors_reprs_or_logs(
    service: tuple[str, _ServiceFake], http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kind, fake = service
    secret = SECRETS[kind]
    settings = settings_for(kind, fake)
    rcv = make_receiver(http_session, settings)
    # A hostile peer echoes the secret (and the whole URL) back in every error form it has.
    echo = f"denied {secret} {json.dumps(settings)}"
    for status in (400, 401, 429, 503):
        doc = {"message": echo, "description": echo, "errors": [echo], "error": {"message": echo},
               "retry_after": 1, "parameters": {"retry_after": 1}}
        fake.script(Answer(status=status, body=json.dumps(doc).encode(), reason="Denied"))
    fake.delay_next(5)
    errors: list[BaseException] = []
    for r in [rcv] * 4 + [make_receiver(http_session, settings, timeout="200ms")]:
        with pytest.raises((RetryLater, Permanent)) as info:
            await r.send(incident_alert("firing"))
        errors.append(info.value)
    dead_url = f"http://127.0.0.1:{free_port()}"
    dead = make_receiver(http_session, {k: (v.replace(fake.base_url, dead_url) if isinstance(v, str) else v)
                                        for k, v in settings.items()})
    with pytest.raises(RetryLater) as info:
        await dead.send(incident_alert("firing"))
    errors.append(info.value)
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]
    seen = "\n".join([str(e) for e in errors] + [repr(e) for e in errors] + [repr(rcv), repr(dead)]
                     + [r.getMessage() for r in ours])
    assert secret not in seen
    assert "denied" in seen  # the echoed reason was kept, only the secret was scrubbed (where a reason is shown)
    for exc in errors:
        assert exc.__cause__ is None


# --- through the dispatcher: the service's wait is honoured, 4xx is dead with its reason -----------


@pytest.mark.parametrize(("kind", "options", "wait"), [("discord", {"retry_after": 2}, 2.0),
                                                       ("telegram", {"retry_after": 2}, 2.0),
                                                       ("msteams", {"retry_after": 2}, 2.0)])
async def test_dispatcher_waits_out_the_services_retry_after(
    kind: str, options: dict[str, Any], wait: float, http_session: aiohttp.ClientSession
) -> None:
    async with FAKES[kind]() as fake:
        fake.rate_limit(1, **options)
        fast = {"initial_backoff": "100ms", "max_backoff": "1s", "max_attempts": 5}
        rig = await open_rig(MemoryStore(), {"pager": {**settings_for(kind, fake), "rate_limit": 0, "retry": fast}},
                             http_session)
        try:
            [job] = await rig.enqueue("n1", "FAILED", to=("pager",))
            rig.dispatcher.start()
            await wait_until(lambda: len(fake.accepted) == 1, 15, "the retried message")
            throttled, retried = fake.requests
            assert throttled.status == 429
            assert retried.at - throttled.at >= wait, retried.at - throttled.at
            assert (await rig.job(job)).attempts == 2
        finally:
            await close_rig(rig)


async def test_dispatcher_retries_a_pagerduty_429_by_backoff_and_kills_a_400(
    fake_pagerduty: FakePagerDuty, http_session: aiohttp.ClientSession
) -> None:
    fast = {"initial_backoff": "100ms", "max_backoff": "500ms", "max_attempts": 5}
    rig = await open_rig(MemoryStore(), {
        "pd": {**settings_for("pagerduty", fake_pagerduty), "rate_limit": 0, "retry": fast},
        "bad": {**settings_for("pagerduty", fake_pagerduty), "routing_key": "y" * 32, "rate_limit": 0},
    }, http_session)
    try:
        fake_pagerduty.rate_limit(1)
        [job] = await rig.enqueue("n1", "FAILED", to=("pd",))
        rig.dispatcher.start()
        await wait_until(lambda: len(fake_pagerduty.accepted) == 1, 15, "the retried trigger")
        await wait_until(lambda: len(fake_pagerduty.requests) == 2, 5, "two requests")
        found = await rig.job(job)
        assert (found.attempts, fake_pagerduty.requests[0].status) == (2, 429)
        [dead_id] = await rig.enqueue("n2", "FAILED", to=("bad",))

        deadline = time.monotonic() + 10
        while (await rig.job(dead_id)).state != "dead":
            assert time.monotonic() < deadline, "the 400 never went dead"
            await asyncio.sleep(0.05)
        failed = await rig.job(dead_id)
        assert failed.attempts == 1
        assert failed.last_error == "permanent: pagerduty answered 400 Event object is invalid: Invalid routing key"
    finally:
        await close_rig(rig)


# --- send-test through the CLI --------------------------------------------------------------------


async def test_send_test_through_the_cli(tmp_path: Path) -> None:
    async with FakePagerDuty() as pd, FakeTelegram() as tg:
        cfg = write(tmp_path, {"verification": {"public_key": "unused"}, "receivers": {
            "pd": settings_for("pagerduty", pd), "tg": settings_for("telegram", tg),
            "pd_wrong": {**settings_for("pagerduty", pd), "routing_key": "z" * 32}}})
        for name in ("pd", "tg"):
            code, out, err = await run("send-test", "-c", cfg, "--receiver", name, "--node", "n7")
            assert code == 0, err
            assert f"was accepted by receiver '{name}'" in out
        assert pd.requests[0].payload["payload"]["summary"] == "TEST: n7 is FAILED"  # send-test says TEST
        assert pd.alerts == {correlation_key(make_alert(node="n7")): "triggered"}
        [text] = tg.texts
        assert text.startswith("TEST: n7 is FAILED\nn7 is FAILED") and "receiver: tg" in text
        code, out, err = await run("send-test", "-c", cfg, "--receiver", "pd_wrong")
        assert code == 1
        assert "FAILED (permanent): pagerduty answered 400 Event object is invalid" in err
        for text in (out, err):
            assert PD_ROUTING_KEY not in text and TG_TOKEN not in text and "z" * 32 not in text


# --- the real process -----------------------------------------------------------------------------


async def test_signed_event_reaches_pagerduty_through_the_real_process(bridge_process: Callable[..., Any]) -> None:
    async with FakePagerDuty() as pd:
        p = await bridge_process(
            receivers={"pager": {**settings_for("pagerduty", pd), "rate_limit": 0}},
            routes=[{"name": "failed", "match": {"status": "FAILED"}, "to": ["pager"]}],
            log={"level": "debug"},
        )
        assert (await p.event("node-prod-9", "FAILED"))[0] == 200
        await wait_until(lambda: len(pd.accepted) == 1, 15, "the trigger")
        [req] = pd.requests
        event = req.payload
        assert event["event_action"] == "trigger" and event["routing_key"] == PD_ROUTING_KEY
        # A FAILED opens an incident: PagerDuty correlates on its id (the resolution closes the same alert).
        code, doc = await p.get(p.admin_url + "/api/v1/incidents")
        assert code == 200, doc
        [incident] = doc["incidents"]
        assert event["dedup_key"] == incident["id"] and pd.alerts == {incident["id"]: "triggered"}
        assert event["payload"]["summary"] == "node-prod-9 is FAILED"
        key = incident["id"]
        assert event["payload"]["source"] == "node-prod-9" and event["payload"]["severity"] == "critical"
        assert (await p.event("node-prod-9", "STARTING"))[0] == 200  # an update: the incident stays open
        assert (await p.event("node-prod-9", "RUNNING"))[0] == 200
        await wait_until(lambda: len(pd.accepted) == 2, 15, "the resolution")
        assert pd.requests[1].payload["event_action"] == "resolve" and pd.requests[1].payload["dedup_key"] == key
        assert pd.alerts == {key: "resolved"}
        metrics = await p.metrics()
        assert 'receiver="pager"' in metrics
        await p.terminate()
        assert PD_ROUTING_KEY not in metrics and PD_ROUTING_KEY not in p.log()
