"""Metric values after a scripted run: every series an operator watches moves as it should."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge import __version__
from bridge.testing import event_body, sign
from tests.support.fakes import LOOPBACK, WebhookSink, free_port, wait_until
from tests.support.harness import InProcessBridge
from tests.support.keyserver import KeyEndpoint
from tests.support.promtext import present
from tests.support.promtext import series as metric_value

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def key_endpoint(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[KeyEndpoint]:
    async with KeyEndpoint(signing_key, failures=1) as endpoint:
        yield endpoint


async def test_metrics_after_a_scripted_run(
    bridge: Callable[..., Any], key_endpoint: KeyEndpoint, other_key: rsa.RSAPrivateKey
) -> None:
    fast = {"initial_backoff": "50ms", "max_backoff": "100ms", "max_attempts": 5}
    async with WebhookSink() as hook, WebhookSink(default_status=400) as strict:
        hook.fail_next(1, status=500)
        b: InProcessBridge = await bridge(
            server={"max_body_bytes": 1024},
            verification={"public_key_file": None, "public_key_url": key_endpoint.url},
            nodes={"n1": {}, "n2": {}, "n3": {}},
            receivers={
                "hook": {"type": "webhook", "url": hook.url, "retry": fast},
                "strict": {"type": "webhook", "url": strict.url, "retry": fast},
                "down": {"type": "webhook", "url": f"http://{LOOPBACK}:{free_port()}/",
                         "retry": {"initial_backoff": "1h", "max_backoff": "1h", "max_elapsed": "2h"}},
            },
            routes=[{"name": "n1", "match": {"node": "n1"}, "to": ["hook"]},
                    {"name": "n2-strict", "match": {"node": "n2"}, "to": ["strict"]},
                    {"name": "n2-down", "match": {"node": "n2"}, "to": ["down"]},
                    {"name": "n3", "match": {"node": "n3"}, "to": ["hook"]}],
        )
        # The key URL failed once before the bridge became ready.
        deadline = time.monotonic() + 10
        while (await b.get(b.admin_url + "/readyz"))[0] != 200:
            assert time.monotonic() < deadline, "bridge never became ready"
            await asyncio.sleep(0.05)
        text = await b.metrics()
        assert metric_value(text, "alert_bridge_public_key_refresh_failures_total") == 1
        assert metric_value(text, "alert_bridge_public_key_age_seconds") < 30
        loaded_at = metric_value(text, "alert_bridge_public_key_loaded_timestamp_seconds")
        assert abs(loaded_at - time.time()) < 30

        now = datetime.now(UTC)
        verified = 0

        async def signed(body: bytes, **kw: Any) -> int:
            nonlocal verified
            verified += 1
            return (await b.post(body, **kw))[0]

        assert await signed(event_body("n1", "FAILED", timestamp=now - timedelta(minutes=5))) == 200  # accepted
        assert await signed(event_body("n1", "FAILED", timestamp=now - timedelta(minutes=5))) == 200  # duplicate
        assert await signed(event_body("n1", "RUNNING", timestamp=now - timedelta(minutes=9))) == 200  # out_of_order
        assert await signed(event_body("n1", "FAILED", timestamp=now - timedelta(days=3))) == 200  # stale
        bad = event_body("n1", "PAUSED")
        assert await signed(bad, signature=sign(bad, other_key)) == 403  # invalid_signature
        assert (await b.post(event_body("n1", "PAUSED"), signature=None))[0] == 401  # missing_signature
        assert await signed(b"{not json") == 400  # invalid_json
        assert await signed(event_body("intruder", "FAILED")) == 403  # node_rejected
        assert (await b.post(b"x" * 2048))[0] == 413  # body_too_large
        assert await signed(event_body("n2", "FAILED", timestamp=now - timedelta(minutes=4))) == 200  # accepted
        async with aiohttp.ClientSession() as s, s.post(b.admin_url + "/-/silences",
                                                        json={"node": "n3", "duration": "1h"}) as resp:
            assert resp.status == 201
        assert await signed(event_body("n3", "FAILED", timestamp=now - timedelta(minutes=3))) == 200  # silenced

        await hook.wait_for(2, timeout=10)  # the 500, then the delivery
        await wait_until(lambda: len(strict.requests) >= 1, 10, "the strict receiver's one attempt")
        await wait_until(lambda: metric_value(b.app.metrics.render().decode(), "alert_bridge_deliveries_total",
                                              receiver="down", outcome="retry") == 1, 10, "down's first attempt")
        await asyncio.sleep(0.3)  # the pending job ages
        text = await b.metrics()

    events = {o: metric_value(text, "alert_bridge_events_total", outcome=o) for o in (
        "accepted", "duplicate", "out_of_order", "stale", "invalid_signature", "missing_signature", "invalid_json",
        "node_rejected", "body_too_large", "silenced", "unavailable")}
    assert events == {"accepted": 2, "duplicate": 1, "out_of_order": 1, "stale": 1, "invalid_signature": 1,
                      "missing_signature": 1, "invalid_json": 1, "node_rejected": 1, "body_too_large": 1,
                      "silenced": 1, "unavailable": 0}
    assert metric_value(text, "alert_bridge_verification_seconds_count") == verified
    assert metric_value(text, "alert_bridge_verification_seconds_sum") > 0

    def deliveries(receiver: str, outcome: str) -> float:
        return metric_value(text, "alert_bridge_deliveries_total", receiver=receiver, outcome=outcome)

    assert (deliveries("hook", "retry"), deliveries("hook", "delivered"), deliveries("hook", "dead")) == (1, 1, 0)
    assert (deliveries("strict", "retry"), deliveries("strict", "delivered"), deliveries("strict", "dead")) == (0, 0, 1)
    assert (deliveries("down", "retry"), deliveries("down", "delivered"), deliveries("down", "dead")) == (1, 0, 0)
    assert metric_value(text, "alert_bridge_delivery_seconds_count", receiver="hook") == 1

    # Outbox gauges are read at scrape time: one job waits (down), one gave up (strict).
    assert metric_value(text, "alert_bridge_deliveries_pending") == 1
    assert metric_value(text, "alert_bridge_deliveries_inflight") == 0
    assert metric_value(text, "alert_bridge_deliveries_dead") == 1
    assert metric_value(text, "alert_bridge_oldest_pending_seconds") >= 0.3
    # n1, n2 and n3 went FAILED: three open incidents (a silence mutes n3's notifications; its
    # incident is still tracked). The out-of-order RUNNING of n1 resolved nothing.
    assert metric_value(text, "alert_bridge_incidents_open") == 3

    # invalid_signature made one (rate-limited) refresh attempt; it succeeded, so no new failure.
    assert metric_value(text, "alert_bridge_public_key_refresh_failures_total") == 1
    assert key_endpoint.calls >= 2
    assert metric_value(text, "alert_bridge_silences_active") == 1
    assert metric_value(text, "alert_bridge_config_last_reload_successful") == 1
    assert metric_value(text, "alert_bridge_config_last_reload_success_timestamp_seconds") > 0
    assert metric_value(text, "alert_bridge_config_reloads_total", outcome="failure") == 0
    assert metric_value(text, "alert_bridge_build_info", version=__version__) == 1


async def test_receiver_series_exist_before_any_traffic(bridge: Callable[..., Any]) -> None:
    """Dashboards see zeros, not gaps, and the admin port serves nothing but admin paths."""
    b: InProcessBridge = await bridge(receivers={"console": {"type": "log"}, "audit": {"type": "log"}})
    text = await b.metrics()
    for receiver in ("console", "audit"):
        for outcome in ("delivered", "retry", "dead"):
            assert present(text, "alert_bridge_deliveries_total", receiver=receiver, outcome=outcome)
            assert metric_value(text, "alert_bridge_deliveries_total", receiver=receiver, outcome=outcome) == 0
    assert present(text, "alert_bridge_events_total", outcome="accepted")
    assert not present(text, "alert_bridge_deliveries_total", receiver="nobody", outcome="dead")
    status, _ = await b.get(b.base_url + "/metrics")
    assert status == 404  # the webhook port does not expose metrics
