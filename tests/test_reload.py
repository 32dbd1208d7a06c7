"""Reload without restart: SIGHUP and POST /-/reload, good and bad, under traffic, nothing lost."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge import config as config_mod
from bridge.app import App
from bridge.testing import event_body, sign
from tests.support.fakes import LOOPBACK, WebhookSink, free_port, wait_until
from tests.support.harness import BridgeProcess
from tests.support.promtext import series

pytestmark = pytest.mark.timeout(120)


class Traffic:
    """Posts signed events continuously; remembers every event answered 200 "accepted"."""

    def __init__(self, p: BridgeProcess) -> None:
        self.p = p
        self.accepted: list[str] = []
        self.deliveries: list[int] = []  # per accepted event, as the bridge answered
        self.failures: list[tuple[int, Any]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        t0 = datetime.now(UTC) - timedelta(hours=1)
        i = 0
        async with aiohttp.ClientSession() as s:
            while not self._stop.is_set() and i < 5000:
                body = event_body(f"node-{i % 7}", "FAILED" if i % 2 else "RUNNING",
                                  timestamp=t0 + timedelta(milliseconds=10 * i))
                headers = {"Content-Type": "application/json", "X-ThunderStack-Signature": sign(body, self.p.key)}
                async with s.post(self.p.base_url + "/webhook", data=body, headers=headers) as r:
                    doc = await r.json(content_type=None)
                    if r.status == 200 and doc.get("status") == "accepted":
                        self.accepted.append(doc["id"])
                        self.deliveries.append(doc["deliveries"])
                    else:
                        self.failures.append((r.status, doc))
                i += 1
                await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def until(self, count: int) -> None:
        """Wait for ``count`` more accepted events."""
        target = len(self.accepted) + count
        await wait_until(lambda: len(self.accepted) >= target, 10, f"{count} more accepted events")


async def reload_post(p: BridgeProcess) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(p.admin_url + "/-/reload", json={}) as r:
        return r.status, await r.json()


async def wait_metric(p: BridgeProcess, name: str, value: float, **labels: str) -> None:
    for _ in range(200):
        if series(await p.metrics(), name, **labels) == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{labels} never reached {value}: {series(await p.metrics(), name, **labels)}")


async def test_good_and_bad_reloads_under_traffic_lose_nothing(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink
) -> None:
    # Each send takes a little while and the receiver sends one at a time, so a job is almost
    # always in flight when a reload swaps the receivers.
    webhook_sink.delay_next(0.01, n=100000)
    p: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url, "concurrency": 1}},
        routes=[{"name": "all", "to": ["hook"]}],
    )
    base = dict(p.cfg)
    traffic = Traffic(p)
    traffic.start()
    await traffic.until(20)

    # 1. good, by SIGHUP: a second receiver joins the route
    p.write_config({**base, "receivers": {**base["receivers"], "audit": {"type": "log"}},
                    "routes": [{"name": "all", "to": ["hook", "audit"]}]})
    p.signal(signal.SIGHUP)
    await wait_metric(p, "alert_bridge_config_reloads_total", 1, outcome="success")
    mark = len(traffic.accepted)
    await traffic.until(20)
    assert set(traffic.deliveries[mark:]) == {2}, "the reloaded route is in force"

    # 2. bad, by POST /-/reload: every problem is answered and logged, the running config stays
    p.write_config({**base, "routes": [{"name": "all", "to": ["hook", "nobody"]}], "default_to": ["ghost"]})
    status, doc = await reload_post(p)
    assert status == 400 and doc["status"] == "error"
    assert any("routes[0].to[1]" in e and "nobody" in e for e in doc["errors"]), doc
    assert any("default_to[0]" in e and "ghost" in e for e in doc["errors"]), doc
    text = await p.metrics()
    assert series(text, "alert_bridge_config_last_reload_successful") == 0
    assert series(text, "alert_bridge_config_reloads_total", outcome="failure") == 1
    for problem in doc["errors"]:
        assert problem in p.log()
    mark = len(traffic.accepted)
    await traffic.until(20)
    assert set(traffic.deliveries[mark:]) == {2}, "the last good config still runs"

    # 3. bad, by SIGHUP: not even YAML
    p.config_path.write_text("routes: [unclosed\n")
    p.signal(signal.SIGHUP)
    await wait_metric(p, "alert_bridge_config_reloads_total", 2, outcome="failure")
    assert "not valid YAML" in p.log()
    await traffic.until(20)

    # 4. good again, by POST /-/reload: back to one receiver
    p.write_config(base)
    status, doc = await reload_post(p)
    assert (status, doc) == (200, {"status": "reloaded"})
    text = await p.metrics()
    assert series(text, "alert_bridge_config_last_reload_successful") == 1
    assert series(text, "alert_bridge_config_reloads_total", outcome="success") == 2
    mark = len(traffic.accepted)
    await traffic.until(20)
    await traffic.stop()
    assert set(traffic.deliveries[mark:]) == {1}
    assert traffic.failures == []

    # every accepted event reached the webhook exactly once
    accepted = set(traffic.accepted)
    assert len(accepted) == len(traffic.accepted) >= 100

    def delivered() -> Counter[str]:
        return Counter(r.payload["event"]["id"] for r in webhook_sink.requests if r.accepted)

    await wait_until(lambda: accepted <= set(delivered()), 30, "every accepted event delivered")
    await asyncio.sleep(0.3)
    counts = delivered()
    assert set(counts) == accepted
    assert max(counts.values()) == 1
    assert series(await p.metrics(), "alert_bridge_deliveries_pending") == 0
    assert await p.terminate() == 0


def _write(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg))


async def test_removed_receiver_jobs_go_dead_with_the_reason(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, webhook_sink: WebhookSink,
    signing_key: rsa.RSAPrivateKey,
) -> None:
    path = tmp_path / "reload.yaml"
    cfg = make_config(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url},
                   "doomed": {"type": "webhook", "url": f"http://{LOOPBACK}:{free_port()}/",
                              "retry": {"initial_backoff": "1h", "max_backoff": "1h", "max_elapsed": "2h"}}},
        routes=[{"name": "all", "to": ["hook", "doomed"]}],
    )
    _write(path, cfg)
    app = App(config_mod.load(path), config_path=path)
    await app.start()
    try:
        url = f"http://127.0.0.1:{app.webhook_port}/webhook"
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        async with aiohttp.ClientSession() as s:
            for i in range(3):
                body = event_body(f"n{i}", "FAILED", timestamp=t0)
                async with s.post(url, data=body, headers={"X-ThunderStack-Signature": sign(body, signing_key)}) as r:
                    assert r.status == 200 and (await r.json())["deliveries"] == 2
        await webhook_sink.wait_for(3, timeout=10)
        await wait_until(lambda: series(app.render_metrics().decode(), "alert_bridge_deliveries_total",
                                        receiver="doomed", outcome="retry") == 3, 10, "doomed tried once each")

        _write(path, {**cfg, "receivers": {"hook": cfg["receivers"]["hook"]},
                      "routes": [{"name": "all", "to": ["hook"]}]})
        assert await app.reload() == []
        dead = await app.store.list_deliveries(state="dead")
        assert sorted(d.alert.event.node_id for d in dead) == ["n0", "n1", "n2"]
        assert {(d.receiver, d.last_error) for d in dead} == {("doomed", "receiver removed by reload")}
        text = (await app.scrape()).decode()
        assert series(text, "alert_bridge_deliveries_total", receiver="doomed", outcome="dead") == 3
        assert series(text, "alert_bridge_deliveries_pending") == 0
        assert series(text, "alert_bridge_deliveries_dead") == 3
    finally:
        await app.stop()


async def test_reload_that_cannot_build_a_receiver_changes_nothing(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, webhook_sink: WebhookSink,
    signing_key: rsa.RSAPrivateKey,
) -> None:
    path = tmp_path / "reload.yaml"
    cfg = make_config(receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
                      routes=[{"name": "all", "to": ["hook"]}])
    _write(path, cfg)
    app = App(config_mod.load(path), config_path=path)
    await app.start()
    try:
        broken = {**cfg, "receivers": {**cfg["receivers"], "mail": {
            "type": "email", "to": ["a@b.test"], "from": "c@d.test",
            "smtp": {"host": "127.0.0.1", "ca_file": str(tmp_path / "missing-ca.pem")}}},
            "routes": [{"name": "all", "to": ["mail"]}]}
        _write(path, broken)
        problems = await app.reload()
        assert len(problems) == 1 and "ca_file" in problems[0]
        assert "mail" not in app.config.receivers and app.config.routes[0].to == ["hook"]
        assert series(app.render_metrics().decode(), "alert_bridge_config_last_reload_successful") == 0
        body = event_body("n1", "FAILED")
        async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{app.webhook_port}/webhook", data=body,
            headers={"X-ThunderStack-Signature": sign(body, signing_key)},
        ) as r:
            assert (await r.json())["deliveries"] == 1
        await webhook_sink.wait_for(1, timeout=10)
    finally:
        await app.stop()


async def test_reload_of_a_file_with_a_key_given_twice_changes_nothing(
    make_config: Callable[..., dict[str, Any]], tmp_path: Path, webhook_sink: WebhookSink,
) -> None:
    """A second receivers: (YAML alone would keep only it) is refused with both lines; the running
    config keeps its webhook receiver."""
    path = tmp_path / "reload.yaml"
    cfg = make_config(receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
                      routes=[{"name": "all", "to": ["hook"]}])
    _write(path, cfg)
    app = App(config_mod.load(path), config_path=path)
    await app.start()
    try:
        lines = path.read_text().splitlines()
        path.write_text(path.read_text() + "receivers: {hook: {type: log}}\n")
        assert await app.reload() == [
            f"receivers: duplicate key, given twice on lines {lines.index('receivers:') + 1} and {len(lines) + 1} "
            "(only the last would count); remove or rename one of them"]
        assert app.config.receivers["hook"].type == "webhook"
        assert series(app.render_metrics().decode(), "alert_bridge_config_last_reload_successful") == 0
    finally:
        await app.stop()
