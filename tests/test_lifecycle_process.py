"""The incident lifecycle end to end (issue 13): the real ``alert-bridge`` process, a webhook
receiver on loopback, durations of a few seconds. No timed upper bounds: every wait is "until the
sink holds this", with a generous deadline that only turns a hang into a failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.support.cli_runner import run_cli
from tests.support.fakes import WebhookSink
from tests.support.fakes_pagers import PD_ROUTING_KEY, FakePagerDuty
from tests.support.harness import BridgeProcess
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.waits import until

StartBridge = Callable[..., Any]
FAST_RETRY = {"initial_backoff": "200ms", "max_backoff": "2s", "max_attempts": 1000, "max_elapsed": "1h"}


def hook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "retry": FAST_RETRY}


def kinds(sink: WebhookSink, node: str | None = None) -> list[str]:
    return [r.json()["kind"] for r in sink.delivered if node is None or r.json()["event"]["nodeId"] == node]




def ts(base: datetime, seconds: float) -> datetime:
    return base + timedelta(seconds=seconds)


async def start(bridge_process: StartBridge, sink: WebhookSink, route: dict[str, Any], **more: Any) -> BridgeProcess:
    p: BridgeProcess = await bridge_process(receivers={"hook": hook(sink.url), **more.pop("receivers", {})},
                                            routes=[{"name": "down", "match": {"status": ["FAILED"]}, "to": ["hook"],
                                                     **route}], **more)
    return p


async def post(p: BridgeProcess, node: str, status: str, at: datetime) -> None:
    code, doc = await p.event(node, status, timestamp=at)
    assert code == 200 and doc["status"] == "accepted", doc


async def test_failed_starting_running_gives_one_firing_and_one_resolved(
    bridge_process: StartBridge,
) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {})
        t0 = datetime.now(UTC) - timedelta(seconds=1000)  # event times: in the past, within max_event_age
        await post(p, "n1", "FAILED", t0)
        await post(p, "n1", "FAILED", ts(t0, 5))  # a repeat: an update of nothing
        await post(p, "n1", "STARTING", ts(t0, 720))
        await post(p, "n1", "RUNNING", ts(t0, 900))
        await until(lambda: len(sink.delivered) >= 2, "firing and resolved")
        await asyncio.sleep(1.0)  # anything else would have come by now (not a bound: a check for extras)
        assert kinds(sink) == ["firing", "resolved"]
        firing, resolved = (r.json() for r in sink.delivered)
        assert firing["incident"]["id"] == resolved["incident"]["id"]
        assert resolved["incident"]["duration"] == 900
        assert resolved["incident"]["path"] == "FAILED 12m → STARTING 3m → RUNNING"


async def test_failed_then_running_inside_for_notifies_nobody(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"for": "2s"})
        t0 = datetime.now(UTC)
        await post(p, "quick", "FAILED", t0)
        await post(p, "quick", "RUNNING", ts(t0, 1))
        await post(p, "slow", "FAILED", t0)  # the witness: its hold runs out
        await until(lambda: len(sink.delivered) >= 1, "the held firing of the node that stayed down")
        await asyncio.sleep(1.0)
        assert kinds(sink, "quick") == []
        assert kinds(sink, "slow") == ["firing"]


async def test_reminders_repeat_while_open_and_stop_after_ack(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"repeat_interval": "1s"})
        await post(p, "n1", "FAILED", datetime.now(UTC))
        await until(lambda: kinds(sink).count("reminder") >= 2, "two reminders")
        code, doc = await p.get(p.admin_url + "/api/v1/incidents")
        assert code == 200 and len(doc["incidents"]) == 1
        iid = doc["incidents"][0]["id"]
        assert iid == sink.delivered[0].json()["incident"]["id"]
        async with aiohttp.ClientSession() as s, s.post(p.admin_url + f"/api/v1/incidents/{iid}/ack",
                                                        json={"by": "alice"}) as r:
            assert r.status == 200 and (await r.json())["incident"]["acked_by"] == "alice"
        seen = len(sink.delivered)
        await asyncio.sleep(3.5)  # three intervals: a reminder still running would have come
        # the ack itself, and at most one reminder already on its way when the ack committed
        assert len(sink.delivered) <= seen + 2
        assert set(kinds(sink)) == {"firing", "reminder", "acknowledged"}
        (acked,) = [r.json() for r in sink.delivered if r.json()["kind"] == "acknowledged"]
        assert acked["incident"]["id"] == iid
        code, doc = await p.get(p.admin_url + f"/api/v1/incidents/{iid}")
        assert code == 200 and doc["incident"]["acked_by"] == "alice"
        await post(p, "n1", "RUNNING", datetime.now(UTC))
        await until(lambda: kinds(sink)[-1:] == ["resolved"], "the resolution after the ack")


async def test_escalation_reaches_its_receiver_once(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink, WebhookSink() as pager:
        p = await start(bridge_process, sink, {"escalate": [{"after": "1s", "to": ["pager"]}]},
                        receivers={"pager": hook(pager.url)})
        await post(p, "n1", "FAILED", datetime.now(UTC))
        await until(lambda: len(pager.delivered) >= 1, "the escalation")
        await asyncio.sleep(2.0)
        assert kinds(pager) == ["escalation"] and kinds(sink) == ["firing"]
        await post(p, "n1", "RUNNING", datetime.now(UTC))
        await until(lambda: kinds(pager)[-1:] == ["resolved"], "the resolution to the escalation's receiver")


async def test_an_escalation_before_for_pages_and_resolves_the_pager_alone(bridge_process: StartBridge) -> None:
    # The step comes before the route's `for` (check warns) and the node recovers between the two:
    # the page went out, so it must close; the route's own receiver was told nothing and hears nothing.
    async with WebhookSink() as sink, FakePagerDuty() as pd:
        pager = {"type": "pagerduty", "routing_key": PD_ROUTING_KEY, "api_url": pd.url, "retry": FAST_RETRY}
        p = await start(bridge_process, sink, {"for": "30s", "escalate": [{"after": "1s", "to": ["pager"]}]},
                        receivers={"pager": pager})
        await post(p, "n1", "FAILED", datetime.now(UTC))
        await until(lambda: list(pd.alerts.values()) == ["triggered"], "the escalation's page")
        await post(p, "n1", "RUNNING", datetime.now(UTC))
        await until(lambda: list(pd.alerts.values()) == ["resolved"], "the page resolved")
        await asyncio.sleep(1.0)  # anything else would have come by now (not a bound: a check for extras)
        assert [r.payload["event_action"] for r in pd.accepted] == ["trigger", "resolve"]
        assert kinds(sink) == []


async def test_late_out_of_order_running_does_not_resolve(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {})
        t0 = datetime.now(UTC)
        await post(p, "n1", "FAILED", t0)
        code, doc = await p.event("n1", "RUNNING", timestamp=ts(t0, -5))
        assert code == 200 and "note" in doc  # out of order: recorded, not notified
        await until(lambda: len(sink.delivered) >= 1, "the firing")
        await asyncio.sleep(1.0)
        assert kinds(sink) == ["firing"]
        code, doc = await p.get(p.admin_url + "/api/v1/incidents")
        assert [i["state"] for i in doc["incidents"]] == ["open"]


async def test_sigkill_with_a_pending_reminder_fires_it_once_after_restart(
    bridge_process: StartBridge,
) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"repeat_interval": "3s"})
        await post(p, "n1", "FAILED", datetime.now(UTC))
        await until(lambda: kinds(sink) == ["firing"], "the firing")
        p.kill()  # SIGKILL, the reminder pending in the node record
        await asyncio.sleep(4.0)  # it comes due while the bridge is down
        assert kinds(sink) == ["firing"]
        await p.start()
        await until(lambda: kinds(sink).count("reminder") >= 1, "the reminder after the restart")
        first = next(r.json()["deliveryId"] for r in sink.delivered if r.json()["kind"] == "reminder")
        p.kill()
        await asyncio.sleep(0.5)
        assert [r.json()["deliveryId"] for r in sink.delivered].count(first) == 1


async def test_two_replicas_on_one_redis_fire_every_timer_once(
    bridge_process: StartBridge, redis_server: RedisServer,  # noqa: F811
) -> None:
    async with WebhookSink() as sink:
        settings = {"storage": {"url": redis_server.url}}
        p1 = await start(bridge_process, sink, {"repeat_interval": "2s", "for": "1s"}, **settings)
        p2 = await start(bridge_process, sink, {"repeat_interval": "2s", "for": "1s"}, **settings)
        t0 = datetime.now(UTC)
        for i in range(10):
            await post(p1 if i % 2 else p2, f"n{i}", "FAILED", t0)
        # each node: the held firing (after 1 s), then a reminder every 2 s
        await until(lambda: all(kinds(sink, f"n{i}").count("reminder") >= 2 for i in range(10)),
                    "two reminders for every node", timeout=60)
        p1.kill()
        p2.kill()
        await asyncio.sleep(0.5)
        for i in range(10):
            ids = [r.json()["deliveryId"] for r in sink.delivered if r.json()["event"]["nodeId"] == f"n{i}"]
            assert len(ids) == len(set(ids)), f"n{i} got a timer's notification twice"
            ks = kinds(sink, f"n{i}")
            assert ks[0] == "firing" and ks.count("firing") == 1, ks


async def test_a_flapping_node_gives_one_flapping_and_one_stable(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {}, incidents={"flapping": {"transitions": 4, "window": "2s"}})
        t0 = datetime.now(UTC)
        statuses = ["FAILED", "RUNNING", "FAILED", "RUNNING", "FAILED", "RUNNING", "FAILED", "RUNNING"]
        for i, status in enumerate(statuses):
            await post(p, "n1", status, ts(t0, i * 0.1))
        await until(lambda: "stable" in kinds(sink), "the stable summary once the window passed without a change")
        await asyncio.sleep(2.5)  # a whole window more: a second summary would have come (a check for extras)
        ks = kinds(sink)
        assert ks.count("flapping") == 1 and ks.count("stable") == 1, ks
        assert ks.index("flapping") < ks.index("stable")
        flapping = next(r.json() for r in sink.delivered if r.json()["kind"] == "flapping")
        stable = next(r.json() for r in sink.delivered if r.json()["kind"] == "stable")
        assert flapping["title"].startswith("n1 is flapping (4 status changes in ")
        assert stable["title"].startswith("n1 stable again: flapped ") and stable["title"].endswith(", now RUNNING")
        # while flapping, the per-event notifications were held: fewer than one per change
        assert len(ks) < len(statuses)


async def test_a_reload_that_drops_the_owning_route_cancels_its_timers(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        routes = [{"name": "down", "match": {"status": ["FAILED"], "node": ["n1"]}, "to": ["hook"],
                   "repeat_interval": "4s"},
                  {"name": "kept", "match": {"status": ["FAILED"], "node": ["n2"]}, "to": ["hook"],
                   "repeat_interval": "4s"}]
        p: BridgeProcess = await bridge_process(receivers={"hook": hook(sink.url)}, routes=routes)
        t0 = datetime.now(UTC)
        await post(p, "n1", "FAILED", t0)
        await post(p, "n2", "FAILED", t0)
        await until(lambda: kinds(sink, "n1") == ["firing"] and kinds(sink, "n2") == ["firing"], "both firings")
        p.write_config({**p.cfg, "routes": routes[1:]})
        async with aiohttp.ClientSession() as s, s.post(p.admin_url + "/-/reload", json={}) as r:
            assert (r.status, await r.json()) == (200, {"status": "reloaded"})
        # n2's reminder (same interval, set at the same moment) is the witness that n1's came due;
        # then a margin past it.
        await until(lambda: "reminder" in kinds(sink, "n2"), "the kept route's reminder")
        await asyncio.sleep(1.5)
        assert kinds(sink, "n1") == ["firing"]
        code, doc = await p.get(p.admin_url + "/api/v1/incidents")
        assert code == 200 and sorted(i["node"] for i in doc["incidents"]) == ["n1", "n2"]  # the incident stays


async def test_an_ack_through_the_cli_stops_reminders(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"repeat_interval": "1s"})
        await post(p, "n1", "FAILED", datetime.now(UTC))
        await until(lambda: kinds(sink).count("reminder") >= 1, "a reminder")
        iid = sink.delivered[0].json()["incident"]["id"]
        r = await run_cli("incidents", "ack", iid, "-c", str(p.config_path), "--by", "bob")
        assert r.code == 0, r
        code, doc = await p.get(p.admin_url + f"/api/v1/incidents/{iid}")
        assert code == 200 and doc["incident"]["acked_by"] == "bob"  # through the running bridge
        seen = len(sink.delivered)
        await asyncio.sleep(3.5)  # three intervals: a reminder still running would have come
        # the ack itself, and at most one reminder on its way when the ack committed
        assert len(sink.delivered) <= seen + 2
        await post(p, "n1", "RUNNING", datetime.now(UTC))
        await until(lambda: kinds(sink)[-1:] == ["resolved"], "the resolution after the ack")
        assert set(kinds(sink)) == {"firing", "reminder", "acknowledged", "resolved"}


async def _silence(p: BridgeProcess, node: str, duration: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(p.admin_url + "/-/silences",
                                                    json={"node": node, "duration": duration}) as resp:
        assert resp.status == 201, await resp.text()


async def test_a_silence_neither_swallows_a_recovery_nor_outlives_itself(bridge_process: StartBridge) -> None:
    # "paged": paged, then silenced, recovers inside the silence: its page must close.
    # "muted": fails inside a 2 s silence and stays down, sending nothing more: paged once it ends.
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"match": {}}, incidents={"silence_recheck": "1s"})
        t0 = datetime.now(UTC)
        await post(p, "paged", "FAILED", t0)
        await until(lambda: kinds(sink, "paged") == ["firing"], "the page")
        await _silence(p, "paged", "1h")
        await _silence(p, "muted", "2s")
        code, doc = await p.event("paged", "RUNNING", timestamp=ts(t0, 1))
        assert code == 200 and doc["silenced"] and doc["deliveries"] == 1, doc
        code, doc = await p.event("muted", "FAILED", timestamp=ts(t0, 1))
        assert code == 200 and doc["silenced"] and doc["deliveries"] == 0, doc
        await until(lambda: kinds(sink, "paged") == ["firing", "resolved"], "the page's resolution")
        await until(lambda: kinds(sink, "muted") == ["firing"], "the firing once the silence is over")
        await asyncio.sleep(2.5)  # further re-checks would have come by now (not a bound: a check for extras)
        assert kinds(sink, "muted") == ["firing"]


async def test_a_restart_inside_a_silence_pages_nobody_it_covers(bridge_process: StartBridge) -> None:
    # The re-check is pending when the bridge stops; the new process must read the stored silence
    # before it applies a timer (or decides an event), else it pages the node at once.
    async with WebhookSink() as sink:
        p = await start(bridge_process, sink, {"match": {}}, incidents={"silence_recheck": "1s"})
        async with aiohttp.ClientSession() as s, s.post(p.admin_url + "/-/silences",
                                                        json={"node": "down", "duration": "1h"}) as resp:
            assert resp.status == 201
            silence_id = (await resp.json())["silence"]["id"]
        code, doc = await p.event("down", "FAILED", timestamp=datetime.now(UTC))
        assert code == 200 and doc["silenced"], doc
        assert await p.terminate() == 0
        await p.start()
        code, doc = await p.event("other", "FAILED", timestamp=datetime.now(UTC))  # decided after the start
        assert code == 200 and doc["deliveries"] == 1, doc
        await until(lambda: kinds(sink, "other") == ["firing"], "the unsilenced node's firing")
        await asyncio.sleep(2.5)  # two re-checks: a page would have come by now (not a bound)
        assert kinds(sink, "down") == []
        expire = p.admin_url + f"/-/silences/{silence_id}/expire"
        async with aiohttp.ClientSession() as s, s.post(expire, json={}) as resp:
            assert resp.status == 200
        await until(lambda: kinds(sink, "down") == ["firing"], "the firing once the silence is expired")
