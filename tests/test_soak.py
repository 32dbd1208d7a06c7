"""A bounded soak: a steady stream of signed events into the real process, every receiver on.

``SOAK_RATE`` events a second (default 200) for ``SOAK_SECONDS`` (default 60) from a separate
sender process (so signing does not compete with the fake receivers), routed to the webhook sink
and the log (every event), fake Slack (FAILED events) and SMTP (FAILED events of half the nodes).
Measured: the bridge's RSS over time (first third vs last third of the stream), the outbox draining
afterwards, ingest and delivery latency, and every delivery by id (nothing lost, nothing twice).
Timings are reported, and only loosely bounded.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.model import delivery_id
from bridge.testing import private_pem
from tests.support.harness import BridgeProcess
from tests.support.reliability import SecretGuard, record
from tests.support.under_fire import (
    RECEIVERS,
    Receivers,
    Sent,
    Stream,
    db_counts,
    db_path,
    latency_summary,
    rss_mib,
    wait_all_delivered,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

RATE = float(os.environ.get("SOAK_RATE", "200"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
NODES = 40


def _send(url: str, key_pem: bytes, rate: float, seconds: float, nodes: int) -> list[Sent]:
    """Runs in the sender process: the stream for ``seconds``, then the events as sent and answered."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)

    async def go() -> list[Sent]:
        stream = Stream(url, key, nodes=nodes, prefix="soak", request_timeout=10.0)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await stream.run(rate=rate, stop=stop)
        return stream.events

    events = asyncio.run(go())
    for e in events:
        e.body = b""  # not needed back
    return events


def routed(e: Sent) -> list[str]:
    """The receivers the routes above reach for one event."""
    out = ["webhook", "log"]
    if e.status == "FAILED":
        out.append("slack")
        if e.node[len("soak-"):].isdigit() and len(e.node) == len("soak-0"):
            out.append("email")
    return out


async def test_soak(bridge_process: Callable[..., Any], signing_key: rsa.RSAPrivateKey,
                    secret_guard: SecretGuard) -> None:
    async with Receivers() as rcv:
        receivers = rcv.config(slack={"concurrency": 2}, webhook={"concurrency": 16}, email={"concurrency": 8})
        routes = [
            {"name": "everything", "to": ["webhook", "log"]},
            # Each node alternates FAILED and RUNNING: every FAILED opens an incident (its firing); the
            # resolutions go to the webhook and the log only, so Slack and email get one alert per FAILED.
            {"name": "failures-mail", "match": {"status": "FAILED", "node": "soak-[0-9]"}, "to": ["email", "slack"],
             "send_resolved": False},
            {"name": "failures", "match": {"status": "FAILED"}, "to": ["slack"], "send_resolved": False},
        ]
        p: BridgeProcess = await bridge_process(receivers=receivers, routes=routes,
                                                storage={"prune_interval": "10s"})
        rcv.log_files.append(p.log_path)
        secret_guard.add_secrets(*rcv.secrets)
        secret_guard.watch_file(p.log_path)
        assert p.proc is not None
        pid = p.proc.pid

        samples: list[tuple[float, float]] = []  # (seconds into the stream, RSS MiB)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            sender = loop.run_in_executor(pool, _send, p.base_url + "/webhook", private_pem(signing_key), RATE,
                                          SECONDS, NODES)
            while not sender.done():
                samples.append((time.monotonic() - started, rss_mib(pid)))
                await asyncio.wait([sender], timeout=1.0)
            events = sender.result()
        stream_seconds = time.monotonic() - started
        stream = Stream(p.base_url + "/webhook", signing_key, events=events)

        drain_started = time.monotonic()
        t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=120, settle=1.0, wants=routed)
        drained_in = time.monotonic() - drain_started - 1.0
        counts = db_counts(db_path(p.cfg))
        rss_end = rss_mib(pid)

    # memory: the first third of the stream against the last third
    during = [m for s, m in samples if s <= SECONDS]
    third = max(1, len(during) // 3)
    first, last = statistics.fmean(during[:third]), statistics.fmean(during[-third:])
    # latency: request → 200 (sender), and first send → webhook sink (same monotonic clock on Linux)
    ingest = [e.latency for e in events if e.event_id]
    sent_at = {delivery_id(e.event_id, "webhook"): e.first_sent for e in events if e.event_id}
    arrival: dict[str, float] = {}
    for r in rcv.sink.delivered:
        arrival.setdefault(r.headers.get("webhook-id", ""), r.at)
    delivery = [arrival[d] - sent_at[d] for d in sent_at if d in arrival]
    achieved = t.accepted / SECONDS
    ingest_lat, delivery_lat = latency_summary(ingest), latency_summary(delivery)
    record("soak: steady stream, every receiver on",
           tried=f"{RATE:g} signed events/s for {SECONDS:g} s from {NODES} nodes (separate sender process); "
                 "webhook + log get every event, Slack the FAILED ones, email the FAILED ones of 10 nodes",
           times=t.sent, sent=t.sent, accepted=t.accepted, delivered=t.delivered, twice=t.total_twice,
           lost=t.total_lost,
           outcome=f"{achieved:.0f} events/s accepted; RSS {first:.1f} MiB (first third) -> {last:.1f} MiB (last "
                   f"third), {rss_end:.1f} MiB at the end; outbox drained {max(0.0, drained_in):.1f} s after the "
                   f"stream ({counts.get('jobs_pending', 0)} pending, {counts.get('jobs_dead', 0)} dead); ingest "
                   f"p50 {ingest_lat.get('p50_ms')} ms p99 {ingest_lat.get('p99_ms')} ms; sent -> webhook p50 "
                   f"{delivery_lat.get('p50_ms')} ms p99 {delivery_lat.get('p99_ms')} ms",
           rss_samples=[round(m, 1) for _, m in samples], ingest_latency=ingest_lat, delivery_latency=delivery_lat,
           attempts=sum(e.attempts for e in events),
           stream_seconds=round(stream_seconds, 1), db=counts)
    assert t.unaccepted == 0 and t.total_lost == 0 and t.total_twice == 0, (t.unaccepted, t.lost, t.twice)
    assert not any(counts.get(f"jobs_{state}", 0) for state in ("pending", "inflight", "dead")), counts
    assert last <= first * 1.25 + 10, f"RSS grew from {first:.1f} to {last:.1f} MiB"
    # Rates and latencies are in the reliability row above; speed targets live in bench/.
