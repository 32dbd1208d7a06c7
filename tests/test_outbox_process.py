"""The outbox's promises, shown with the real ``python -m bridge serve`` process and real servers.

Each test plays ThunderStack (signed events over HTTP, re-posting what got a 503) against the
real process, with a webhook receiver on loopback (``ProbeSink``), a real redis-server where the
storage is Redis, and SIGKILL/SIGTERM where the process dies. The webhook receiver sends the
delivery id as ``webhook-id``, so the sink can tell a repeat from a new alert: every test counts
repeats and prints them (run with ``-s`` to see the numbers).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.config import RetentionConfig
from bridge.decide import Policy, decider
from bridge.model import Event, NodeState, RouteMatch, delivery_id, format_timestamp
from bridge.store.sqlite import SQLiteStore
from bridge.testing import event_body, sign
from tests.support.fakes import free_port, wait_until
from tests.support.harness import ROOT, BridgeProcess, ProbeSink
from tests.support.rawhttp import read_answer, request
from tests.support.redis_server import (
    RedisServer,
    redis_outage_server,  # noqa: F401
)

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(120)

StartBridge = Callable[..., Any]
FAST_RETRY = {"initial_backoff": "200ms", "max_backoff": "2s", "max_attempts": 1000, "max_elapsed": "1h"}


def hook(url: str, **settings: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "retry": FAST_RETRY, **settings}


# --- ThunderStack's side -----------------------------------------------------------------------


@dataclass
class Posted:
    """One event as ThunderStack sent it, and what the bridge(s) answered."""

    node: str
    status: str
    timestamp: str  # as the receivers render it (eventTimestamp)
    answers: list[tuple[int, dict[str, Any]]]  # every answer, in order, from every bridge
    event_id: str = ""

    @property
    def taken(self) -> bool:
        """Some bridge answered 200: the event is ThunderStack's no longer, it must be delivered."""
        return any(code == 200 for code, _ in self.answers)

    def statuses(self) -> list[str]:
        return [doc.get("status", "") for code, doc in self.answers if code == 200]


class ThunderStack:
    """Signs and posts events with one HTTP session; retries a 503 as the real sender does."""

    def __init__(self, session: aiohttp.ClientSession, key: Any) -> None:
        self.session = session
        self.key = key
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        self.sent_503 = 0
        self.retry_after_missing = 0
        self.unexpected: list[tuple[str, int, Any]] = []  # answers neither 200 nor 503

    def stamp(self, k: int) -> datetime:
        return self.base + timedelta(milliseconds=10 * k)

    async def post_once(self, url: str, body: bytes, sig: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"Content-Type": "application/json", "X-ThunderStack-Signature": sig}
        try:
            async with self.session.post(url + "/webhook", data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=15)) as r:
                return r.status, await r.json(content_type=None), dict(r.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, {"error": type(exc).__name__}, {}

    async def send(self, urls: Sequence[str], node: str, status: str, k: int, *,
                   retry_cap: float = 1.0, attempts: int = 60) -> Posted:
        """Post one event to every bridge in ``urls`` at once; re-post to those that answered 503."""
        ts = self.stamp(k)
        body = event_body(node, status, timestamp=ts)
        sig = sign(body, self.key)
        posted = Posted(node, status, format_timestamp(ts.replace(microsecond=ts.microsecond // 1000 * 1000)), [])
        todo = list(urls)
        for _ in range(attempts):
            answers = await asyncio.gather(*(self.post_once(u, body, sig) for u in todo))
            again = []
            wait = 0.0
            for url, (code, doc, headers) in zip(todo, answers, strict=True):
                posted.answers.append((code, doc))
                if code == 200:
                    posted.event_id = doc["id"]
                    continue
                if code == 503:
                    self.sent_503 += 1
                    if "Retry-After" not in headers:
                        self.retry_after_missing += 1
                else:  # retried too, as ThunderStack would; the test decides whether that was fine
                    self.unexpected.append((node, code, doc))
                wait = max(wait, min(float(headers.get("Retry-After", 1)), retry_cap))
                again.append(url)
            if not again:
                return posted
            todo = again
            await asyncio.sleep(wait)
        raise AssertionError(f"{node} {status} never accepted: {posted.answers[-3:]}")

    async def sequences(self, urls: Sequence[str], nodes: int, per_node: int, *, pace: float = 0.0,
                        first: int = 0, parallel: int = 32) -> list[Posted]:
        """``per_node`` events for each of ``nodes`` nodes, alternating FAILED/RUNNING, each node's in
        time order (a newer event answered before an older one would leave the older unnotified)."""
        gate = asyncio.Semaphore(parallel)

        async def node_seq(n: int) -> list[Posted]:
            out = []
            async with gate:
                for i in range(first, first + per_node):
                    status = "FAILED" if i % 2 == 0 else "RUNNING"
                    out.append(await self.send(urls, f"node-{n:03d}", status, i * nodes + n))
                    if pace:
                        await asyncio.sleep(pace)
            return out

        return [p for seq in await asyncio.gather(*(node_seq(n) for n in range(nodes))) for p in seq]


@pytest.fixture
async def thunderstack(signing_key: Any) -> AsyncIterator[ThunderStack]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        sender = ThunderStack(session, signing_key)
        yield sender
    assert sender.unexpected == [], sender.unexpected[:5]


# --- checks --------------------------------------------------------------------------------------


def expected_ids(posted: Sequence[Posted], receiver: str) -> dict[str, Posted]:
    out = {}
    for p in posted:
        assert p.taken and p.event_id, p
        out[delivery_id(p.event_id, receiver)] = p
    return out


def assert_in_order_per_node(sink: ProbeSink, posted: Sequence[Posted]) -> None:
    """Per node, the sink got every alert, in event order (every attempt, failed or not)."""
    by_node: dict[str, list[str]] = {}
    for r in sink.requests:
        ev = r.payload["event"]
        by_node.setdefault(ev["nodeId"], []).append(ev["eventTimestamp"])
    for node, stamps in by_node.items():
        assert stamps == sorted(stamps), f"{node} out of order"
    delivered: dict[str, list[str]] = {}  # first deliveries (a repeat is counted elsewhere)
    for r in sink.delivered:
        ev = r.payload["event"]
        stamps = delivered.setdefault(ev["nodeId"], [])
        if ev["eventTimestamp"] not in stamps:
            stamps.append(ev["eventTimestamp"])
    for node in {p.node for p in posted}:
        want = sorted(p.timestamp for p in posted if p.node == node)
        assert delivered.get(node) == want, f"{node}: delivered {len(delivered.get(node, []))} of {len(want)}"


def repeats(sink: ProbeSink) -> dict[str, int]:
    """Delivery ids that reached the sink more than once (sent again), with how often."""
    return {i: n for i, n in Counter(sink.arrived).items() if n > 1}


def sample(text: str, name: str, **labels: str) -> float:
    """One series' value in Prometheus text output, whatever the label order (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, _, value = line.rpartition(" ")
        pairs = dict(kv.split("=", 1) for kv in series[len(name) + 1 : -1].split(","))
        if {k: v.strip('"') for k, v in pairs.items()} == labels:
            return float(value)
    return 0.0


async def delivered_metric(p: BridgeProcess, receiver: str, outcome: str = "delivered") -> float:
    return sample(await p.metrics(), "alert_bridge_deliveries_total", receiver=receiver, outcome=outcome)


async def wait_metric(p: BridgeProcess, receiver: str, outcome: str, value: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (got := await delivered_metric(p, receiver, outcome)) < value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{receiver} {outcome}: {got} < {value} after {timeout}s")
        await asyncio.sleep(0.05)


async def wait_all_delivered(sinks: Sequence[ProbeSink], want: Sequence[set[str]], timeout: float) -> None:
    def done() -> bool:
        return all(w <= set(s.ids()) for s, w in zip(sinks, want, strict=True))

    try:
        await wait_until(done, timeout, "every accepted alert delivered")
    except AssertionError:
        missing = [len(w - set(s.ids())) for s, w in zip(sinks, want, strict=True)]
        raise AssertionError(f"undelivered after {timeout}s: {missing}") from None
    await asyncio.sleep(1.0)  # room for a repeat to show up before counting


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``alert-bridge ...`` as a subprocess (off the event loop: the sinks live on it)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )


# --- 1. a receiver down for 20 s -----------------------------------------------------------------


@pytest.mark.slow
async def test_receiver_down_20s_then_back_delivers_each_once_in_order(
    bridge_process: StartBridge, thunderstack: ThunderStack
) -> None:
    port = free_port()  # nothing listens here for 20 s: connection refused
    sink = ProbeSink(port=port)
    p = await bridge_process(receivers={"hook": hook(f"http://127.0.0.1:{port}/hook", timeout="2s")},
                             default_to=["hook"])
    down_at = time.monotonic()
    during = await thunderstack.sequences([p.base_url], nodes=3, per_node=25, pace=0.6)  # ~15 s of traffic
    assert all(p.statuses() == ["accepted"] for p in during)
    retries_while_down = await delivered_metric(p, "hook", "retry")
    await asyncio.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
    assert sink.requests == []
    await sink.start()
    try:
        back_at = time.monotonic()
        after = await thunderstack.sequences([p.base_url], nodes=3, per_node=5, first=25)
        posted = during + after
        want = expected_ids(posted, "hook")
        await wait_all_delivered([sink], [set(want)], timeout=30)
        drained = time.monotonic() - back_at
        counts = Counter(sink.ids())
        print(f"\nreceiver down {back_at - down_at:.1f}s: {len(posted)} events, {retries_while_down:.0f} failed "
              f"attempts while down, all delivered {drained:.1f}s after it came back; "
              f"repeats {sum(n - 1 for n in counts.values())}")
        assert retries_while_down >= 3  # the receiver really was down and retried
        assert set(counts) == set(want)
        assert all(n == 1 for n in counts.values()), {i: n for i, n in counts.items() if n > 1}
        assert repeats(sink) == {}
        assert_in_order_per_node(sink, posted)
    finally:
        await sink.close()


# --- 2. kill -9 with 200 jobs pending ------------------------------------------------------------


@pytest.mark.slow
async def test_kill_9_with_200_pending_then_restart_delivers_all(
    bridge_process: StartBridge, thunderstack: ThunderStack
) -> None:
    async with ProbeSink() as sink:
        sink.hold(from_arrival=20)  # the first 20 are answered, then the receiver stalls
        p = await bridge_process(receivers={"hook": hook(sink.url, timeout="60s", concurrency=4)},
                                 default_to=["hook"])
        posted = await thunderstack.sequences([p.base_url], nodes=20, per_node=11)  # 220 events
        want = expected_ids(posted, "hook")
        await wait_metric(p, "hook", "delivered", 20, timeout=20)  # 20 done and recorded
        await wait_until(lambda: sink.active == 4, 10, "4 sends stalled at the receiver")
        in_flight = set(sink.arrived[20:])
        done_before = set(sink.ids())
        assert len(in_flight) == 4 and len(done_before) == 20
        pending = len(want) - len(done_before)
        assert pending == 200

        p.kill()  # SIGKILL: no grace, no cleanup
        await wait_until(lambda: sink.active == 0, 5, "the stalled requests to see their client gone")
        sink.release()
        await p.start()
        await wait_all_delivered([sink], [set(want)], timeout=30)

        again = repeats(sink)
        print(f"\nkill -9 with {pending} jobs pending ({len(in_flight)} in flight at the receiver): "
              f"all {len(want)} delivered after restart; repeats {len(again)} "
              f"({'exactly the in-flight ones' if set(again) == in_flight else 'UNEXPECTED'})")
        assert set(sink.ids()) == set(want)
        assert set(again) == in_flight  # repeats only for (and always for) the jobs in flight at the kill
        assert all(n == 2 for n in again.values())
        assert all(n == 1 for n in Counter(sink.ids()).values())  # the stalled sends were never answered
        assert not done_before & set(again)  # nothing recorded done is sent again
        assert_in_order_per_node(sink, posted)


# --- 3. two replicas on one Redis ----------------------------------------------------------------


@pytest.mark.slow
async def test_two_replicas_on_one_redis_deliver_each_alert_once_per_receiver(
    bridge_process: StartBridge, thunderstack: ThunderStack, redis_outage_server: RedisServer,  # noqa: F811
) -> None:
    async with ProbeSink() as a, ProbeSink() as b:
        settings = {"storage": {"url": redis_outage_server.url},
                    "receivers": {"a": hook(a.url), "b": hook(b.url)}, "default_to": ["a", "b"]}
        p1 = await bridge_process(**settings)
        p2 = await bridge_process(**settings)
        # every event to both replicas at the same moment, as a load balancer retrying both might
        posted = await thunderstack.sequences([p1.base_url, p2.base_url], nodes=50, per_node=20)
        assert len(posted) == 1000
        outcomes = Counter(tuple(sorted(p.statuses())) for p in posted)
        assert set(outcomes) == {("accepted", "duplicate")}, outcomes  # exactly one replica took each
        want_a, want_b = set(expected_ids(posted, "a")), set(expected_ids(posted, "b"))
        await wait_all_delivered([a, b], [want_a, want_b], timeout=60)

        per_replica = [await delivered_metric(p, r) for p in (p1, p2) for r in ("a", "b")]
        ra, rb = repeats(a), repeats(b)
        print(f"\n2 replicas, 1 Redis: 1000 events posted to both, {sum(per_replica):.0f} deliveries "
              f"(replica 1 sent {per_replica[0] + per_replica[1]:.0f}, "
              f"replica 2 {per_replica[2] + per_replica[3]:.0f}); "
              f"repeats: receiver a {len(ra)}, receiver b {len(rb)}; 503s re-posted {thunderstack.sent_503}")
        for sink, want in ((a, want_a), (b, want_b)):
            counts = Counter(sink.ids())
            assert set(counts) == want
            assert all(n == 1 for n in counts.values())
            assert_in_order_per_node(sink, posted)
        assert ra == {} and rb == {}  # no kills: no job is ever sent twice
        assert sum(per_replica) == 2000


# --- 4. Redis stopped for 10 s under traffic -----------------------------------------------------


@pytest.mark.slow
async def test_redis_down_10s_under_traffic_503_then_recovers(
    bridge_process: StartBridge, thunderstack: ThunderStack, redis_outage_server: RedisServer,  # noqa: F811
) -> None:
    server = redis_outage_server
    # A durable deployment: the final snapshot at shutdown is loaded at restart (the fixture's
    # server starts with persistence off; without it a restarted Redis is empty by design).
    admin = aioredis.Redis(host="127.0.0.1", port=server.port)
    await admin.config_set("save", "3600 1")
    await admin.aclose()
    async with ProbeSink() as sink:
        p = await bridge_process(storage={"url": server.url},
                                 receivers={"hook": hook(sink.url, timeout="2s")}, default_to=["hook"])
        stop = asyncio.Event()
        posted: list[Posted] = []
        ready_during_outage: list[int] = []

        async def feed(n: int) -> None:
            k = 0
            while not stop.is_set():
                status = "FAILED" if k % 2 == 0 else "RUNNING"
                posted.append(await thunderstack.send([p.base_url], f"node-{n}", status, k * 10 + n))
                k += 1
                await asyncio.sleep(0.05)

        feeders = [asyncio.create_task(feed(n)) for n in range(4)]
        try:
            await asyncio.sleep(2)
            before = len(posted)
            await asyncio.to_thread(server.stop)
            outage_started = time.monotonic()
            while time.monotonic() - outage_started < 10:
                status, _ = await p.get(p.base_url + "/readyz")
                ready_during_outage.append(status)
                await asyncio.sleep(1)
            await asyncio.to_thread(server.start)
            sent_before_back = set(sink.arrived)
            await asyncio.sleep(4)
        finally:
            stop.set()
            await asyncio.gather(*feeders)
        assert thunderstack.unexpected == [], thunderstack.unexpected[:5]
        assert thunderstack.sent_503 > 0, "the bridge never answered 503 while Redis was down"
        assert thunderstack.retry_after_missing == 0
        assert set(ready_during_outage) == {503}, ready_during_outage
        assert len(posted) > before + 8, (before, len(posted))  # traffic went on after Redis came back
        want = expected_ids(posted, "hook")
        await wait_all_delivered([sink], [set(want)], timeout=45)
        again = repeats(sink)
        print(f"\nRedis down 10s under traffic: {len(posted)} events, {thunderstack.sent_503} answers 503 "
              f"(re-posted until 200), all {len(want)} delivered; repeats {len(again)}")
        assert set(sink.ids()) == set(want)
        # at-least-once: only a job sent while Redis was away can be sent again (its outcome could
        # not be recorded within its lease), and at most the 4 in flight (concurrency) at once
        assert set(again) <= sent_before_back and len(again) <= 4, again
        assert_in_order_per_node(sink, posted)


# --- 5. the SQLite file stays bounded ------------------------------------------------------------


@pytest.mark.slow
async def test_sqlite_file_stays_bounded_over_100k_events_with_pruning(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    store = SQLiteStore(db)
    await store.open()
    clock = datetime.now(UTC).replace(microsecond=0)
    retention = RetentionConfig(done=1.0, dead=1.0, events=1.0)
    nodes = 200
    batch = 1000
    sizes: dict[int, int] = {}
    wal_peak = 0
    wal = Path(f"{db}-wal")

    def routes(event: Event, prev: NodeState | None) -> list[RouteMatch]:
        return [RouteMatch("r", ("hook",))]

    try:
        for n in range(0, 100_000, batch):
            now = clock
            events = [
                Event("NODE_STATUS_UPDATED", now + timedelta(microseconds=i), f"node-{(n + i) % nodes}",
                      "FAILED" if (n + i) // nodes % 2 else "RUNNING", {"nodeId": f"node-{(n + i) % nodes}"}, {}, now)
                for i in range(batch)
            ]
            results = await asyncio.gather(
                *(store.accept(e, decider(e, Policy(routes), now), now=now, dedup_ttl=1.0) for e in events)
            )
            assert all(r.status == "accepted" for r in results)
            sent = 0
            for _ in range(batch):  # every job of the batch: one per node and time, in order
                jobs = await store.claim(now=now, limit=nodes, lease=60)
                if not jobs:
                    break
                await asyncio.gather(*(store.complete(j.id, now=now) for j in jobs))
                sent += len(jobs)
            assert sent == batch
            clock += timedelta(seconds=2)
            await store.prune(now=clock, retention=retention)
            wal_peak = max(wal_peak, wal.stat().st_size if wal.exists() else 0)
            done = n + batch
            if done in (20_000, 100_000):
                sizes[done] = db.stat().st_size
        stats = await store.stats(now=clock)
    finally:
        await store.close()
    print(f"\nSQLite after 20k events: {sizes[20_000] / 1e6:.2f} MB, after 100k: {sizes[100_000] / 1e6:.2f} MB; "
          f"WAL at most {wal_peak / 1e6:.2f} MB")
    assert stats.done == 0 and stats.pending == 0 and stats.dead == 0
    assert sizes[100_000] < 1.5 * sizes[20_000]
    # The WAL is on the same disk: checkpoints must keep it bounded too. It swings between checkpoints
    # with the machine's speed (its peak after a batch: 48-88 MiB on an idle machine; a single sample
    # once read 64.01 MiB), so the bound is on the peak over every batch and generous: without
    # checkpoints this run's WAL passes 256 MiB before 45,000 events and reaches ~600 MiB.
    assert wal_peak <= 256 * 2**20


# --- 6. SIGTERM ----------------------------------------------------------------------------------


async def test_sigterm_finishes_inflight_within_grace_leaves_rest_pending(
    bridge_process: StartBridge, thunderstack: ThunderStack
) -> None:
    async with ProbeSink(delay=1.0) as sink:  # each send takes 1 s, shutdown_grace is 2 s
        p = await bridge_process(receivers={"hook": hook(sink.url, concurrency=2)}, default_to=["hook"],
                                 delivery={"shutdown_grace": "2s"})
        posted = await thunderstack.sequences([p.base_url], nodes=2, per_node=5)
        want = expected_ids(posted, "hook")
        await wait_until(lambda: sink.active == 2, 10, "two sends in flight")
        in_flight = set(sink.arrived)
        arrived_before = len(sink.arrived)
        p.signal(15)
        assert await p.wait_exit(timeout=15) == 0
        # the sends in flight finished inside the grace period; nothing new was started
        assert set(sink.ids()) == in_flight and len(sink.arrived) == arrived_before
        assert "stopped" in p.log()

        sink.delay = 0
        await p.start()
        await wait_all_delivered([sink], [set(want)], timeout=20)
        counts = Counter(sink.arrived)
        print(f"\nSIGTERM with {len(in_flight)} in flight (finished in the grace) and "
              f"{len(want) - len(in_flight)} pending: all delivered after restart, repeats {len(repeats(sink))}")
        assert set(counts) == set(want) and all(n == 1 for n in counts.values())
        assert_in_order_per_node(sink, posted)


async def test_sigterm_interrupts_sends_longer_than_the_grace(
    bridge_process: StartBridge, thunderstack: ThunderStack
) -> None:
    async with ProbeSink() as sink:
        sink.hold()  # nothing is ever answered before the restart
        p = await bridge_process(receivers={"hook": hook(sink.url, concurrency=2, timeout="60s")},
                                 default_to=["hook"], delivery={"shutdown_grace": "1s"})
        posted = await thunderstack.sequences([p.base_url], nodes=2, per_node=3)
        want = expected_ids(posted, "hook")
        await wait_until(lambda: sink.active == 2, 10, "two sends in flight")
        in_flight = set(sink.arrived)
        p.signal(15)
        assert await p.wait_exit(timeout=15) == 0  # bounded by the grace, not by the 60 s timeout
        assert "interrupted by shutdown" in p.log()
        sink.release()
        await p.start()
        await wait_all_delivered([sink], [set(want)], timeout=20)
        again = repeats(sink)
        print(f"\nSIGTERM past the grace: {len(in_flight)} sends interrupted, sent again after restart "
              f"(repeats {len(again)}); all {len(want)} delivered")
        assert set(again) == in_flight
        assert all(n == 1 for n in Counter(sink.ids()).values())


async def test_sigterm_reads_an_event_whose_body_is_arriving_and_delivers_it(bridge_process: StartBridge) -> None:
    """A rolling restart's SIGTERM lands while an event is on the wire: the rest of its body is read,
    it is answered 200 (Connection: close) and delivered after the restart; nothing sent after it
    on that connection is read."""
    async with ProbeSink() as sink:
        p = await bridge_process(receivers={"hook": hook(sink.url)}, default_to=["hook"])
        first, second = event_body("term-mid-1", "FAILED"), event_body("term-mid-2", "FAILED")
        wire = request("POST", "/webhook", {"X-ThunderStack-Signature": sign(first, p.key)}, first)
        after = request("POST", "/webhook", {"X-ThunderStack-Signature": sign(second, p.key)}, second)
        cut = wire.index(b"\r\n\r\n") + 10
        host, _, port = p.base_url.removeprefix("http://").rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(wire[:cut])
            await writer.drain()
            await asyncio.sleep(0.2)  # the head is read: its body is arriving
            p.signal(15)
            await wait_until(lambda: "shutting down" in p.log(), 10, "the bridge begins its stop")
            await asyncio.sleep(0.1)
            writer.write(wire[cut:] + after)
            await writer.drain()
            answer = await read_answer(reader, 10.0)
            assert answer is not None and answer.status == 200, (answer, p.log())
            assert answer.headers["connection"] == "close" and json.loads(answer.body)["status"] == "accepted"
            assert await read_answer(reader, 5.0) is None  # closed: the second event was not read
        finally:
            writer.close()
        assert await p.wait_exit(timeout=15) == 0
        await p.start()
        await wait_until(lambda: len(sink.delivered) >= 1, 10, "the event delivered after the restart")
        await asyncio.sleep(0.5)
        assert len(sink.delivered) == 1 and b"term-mid-1" in sink.delivered[0].body, sink.delivered


# --- 7. alert-bridge deliveries list / retry / purge ---------------------------------------------


def listed(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


async def test_deliveries_cli_on_sqlite_running_and_stopped(
    bridge_process: StartBridge, thunderstack: ThunderStack
) -> None:
    async with ProbeSink() as sink:
        sink.default_status = 400  # permanent: each job goes dead after one attempt
        p = await bridge_process(receivers={"hook": hook(sink.url)}, default_to=["hook"])
        posted = await thunderstack.sequences([p.base_url], nodes=4, per_node=1)
        want = expected_ids(posted, "hook")
        await wait_metric(p, "hook", "dead", 4, timeout=15)
        cfg = str(p.config_path)

        # while it runs, the CLI goes through its admin API (the SQLite file admits one process)
        running = listed(await cli("deliveries", "list", "-c", cfg, "--state", "dead", "--json"))
        assert {d["id"] for d in running} == set(want)
        assert await p.terminate() == 0
        # stopped: the CLI opens the store itself

        dead = listed(await cli("deliveries", "list", "-c", cfg, "--state", "dead", "--json"))
        assert {d["id"] for d in dead} == set(want)
        assert all(d["attempts"] == 1 and "400" in d["last_error"] and d["receiver"] == "hook" for d in dead)
        text = await cli("deliveries", "list", "-c", cfg)
        assert text.returncode == 0 and all(i in text.stdout for i in want) and "4 deliveries" in text.stderr

        revived = sorted(want)[0]
        out = await cli("deliveries", "retry", "-c", cfg, revived)
        assert out.returncode == 0 and out.stdout.strip() == "1 delivery queued again"
        pending = listed(await cli("deliveries", "list", "-c", cfg, "--state", "pending", "--json"))
        assert [(d["id"], d["attempts"]) for d in pending] == [(revived, 0)]

        out = await cli("deliveries", "purge", "-c", cfg, "--dead")
        assert out.returncode == 0 and out.stdout.strip() == "3 dead deliveries purged"
        assert listed(await cli("deliveries", "list", "-c", cfg, "--state", "dead", "--json")) == []

        sink.default_status = 200
        await p.start()
        await wait_until(lambda: revived in sink.ids(), 15, "the retried delivery")
        await asyncio.sleep(0.5)
        assert sink.ids() == [revived]  # the purged ones are gone for good


async def test_deliveries_cli_on_redis_while_the_bridge_runs(
    bridge_process: StartBridge, thunderstack: ThunderStack, redis_outage_server: RedisServer,  # noqa: F811
) -> None:
    async with ProbeSink() as sink:
        sink.default_status = 400
        p = await bridge_process(storage={"url": redis_outage_server.url}, receivers={"hook": hook(sink.url)},
                                 default_to=["hook"])
        posted = await thunderstack.sequences([p.base_url], nodes=3, per_node=1)
        want = expected_ids(posted, "hook")
        await wait_metric(p, "hook", "dead", 3, timeout=15)
        cfg = str(p.config_path)

        dead = listed(await cli("deliveries", "list", "-c", cfg, "--state", "dead", "--json"))
        assert {d["id"] for d in dead} == set(want)
        sink.default_status = 200
        out = await cli("deliveries", "retry", "-c", cfg, "--dead")
        assert out.returncode == 0 and out.stdout.strip() == "3 deliveries queued again"
        await wait_until(lambda: set(sink.ids()) == set(want), 15, "the retried deliveries")  # the running bridge
        done = listed(await cli("deliveries", "list", "-c", cfg, "--state", "done", "--json"))
        assert {d["id"] for d in done} == set(want)
        out = await cli("deliveries", "purge", "-c", cfg, "--dead")
        assert out.returncode == 0 and out.stdout.strip() == "0 dead deliveries purged"


async def test_redis_down_at_start_then_up(bridge_process: StartBridge, tmp_path: Path) -> None:
    """The real process starts not-ready while Redis is down, answers 503, and recovers by itself."""
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    p = await bridge_process(wait_ready=False, storage={"url": server.url})
    status, body = await p.get(p.base_url + "/readyz")
    assert status == 503 and "reason" not in body  # the why is for the admin port only
    status, body = await p.get(p.admin_url + "/readyz")
    assert status == 503 and "storage" in body["reason"]
    code, doc = await p.event("n1", "FAILED")
    assert code == 503 and doc["error"] == "unavailable"
    server.start()
    try:
        await p.wait_http("/readyz", 20)
        code, doc = await p.event("n1", "FAILED")
        assert code == 200 and doc["status"] == "accepted"
    finally:
        server.stop()
