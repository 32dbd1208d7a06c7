"""Dispatcher behaviour with real receivers against the loopback fakes, on memory and SQLite stores.

The dispatcher is driven two ways: with a fake clock and ``run_until_idle`` (exact, no sleeping:
a retry is due when the test moves the clock past ``next_attempt_at``), or with its real loop
where time itself is the subject (Retry-After, rate limits, concurrency). The fakes record when
each request arrived, so timing is measured where the receiver sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.config import RetryConfig
from bridge.delivery import RetryPolicy
from bridge.errors import StorageUnavailable
from bridge.model import Delivery
from bridge.store import Store
from bridge.store.memory import MemoryStore
from bridge.store.redis import RedisStore
from bridge.store.sqlite import SQLiteStore
from tests.support.fakes import FakeSlack, Received, WebhookSink, free_port, wait_until
from tests.support.harness import ProbeSink
from tests.support.redis_server import RedisServer, redis_outage_server  # noqa: F401
from tests.support.rig import Clock, Rig, RigFactory, close_rig, hook, open_rig

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(60)

STORES = ["memory", "sqlite"]




def event_of(req: Received) -> tuple[str, str, str]:
    """(node, status, eventTimestamp) of one request the webhook receiver sent."""
    ev = req.payload["event"]
    return ev["nodeId"], ev["status"], ev["eventTimestamp"]


@pytest.fixture(params=STORES)
async def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RigFactory]:
    """``await make_rig(receivers={...}, clock=..., lease=...)`` on the parametrised store."""
    rigs: list[Rig] = []
    async with aiohttp.ClientSession() as session:

        async def make(receivers: dict[str, Any], **options: Any) -> Rig:
            store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "bridge.db")
            rig = await open_rig(store, receivers, session, **options)
            rigs.append(rig)
            return rig

        yield make
        for rig in reversed(rigs):
            await close_rig(rig)


FAST_RETRY = {"initial_backoff": "100ms", "max_backoff": "1s", "max_attempts": 50}


async def drive(rig: Rig, clock: Clock, done: Callable[[], bool], *, step: float = 2.0, rounds: int = 50) -> None:
    """Send what is due, move the clock, repeat until ``done()`` (bounded)."""
    for _ in range(rounds):
        await rig.dispatcher.run_until_idle()
        if done():
            return
        clock.advance(step)
    raise AssertionError(f"not done after {rounds} rounds")


# --- outcomes ------------------------------------------------------------------------------------


async def test_success_marks_done_and_sends_the_delivery_id(make_rig: RigFactory, webhook_sink: WebhookSink) -> None:
    clock = Clock()
    rig = await make_rig({"hook": hook(webhook_sink.url)}, clock=clock)
    [jid] = await rig.enqueue("n1", "FAILED")
    await rig.dispatcher.run_until_idle()
    [req] = webhook_sink.requests
    assert req.headers["webhook-id"] == jid
    assert event_of(req)[:2] == ("n1", "FAILED")
    job = await rig.job(jid)
    assert (job.state, job.attempts, job.last_error) == ("done", 1, None)


async def test_retry_later_persists_next_attempt_then_delivers(
    make_rig: RigFactory, webhook_sink: WebhookSink
) -> None:
    clock = Clock()
    rig = await make_rig({"hook": hook(webhook_sink.url, retry=FAST_RETRY)}, clock=clock)
    [jid] = await rig.enqueue("n1", "FAILED")
    webhook_sink.fail_next(1, status=503)
    failed_at = clock()
    await rig.dispatcher.run_until_idle()

    job = await rig.job(jid)
    assert job.state == "pending" and job.attempts == 1
    assert job.last_error is not None and "503" in job.last_error
    # tenacity's exponential wait for attempt 1: initial_backoff plus up to 1 s of jitter
    delay = (job.next_attempt_at - failed_at).total_seconds()
    assert 0.1 <= delay <= 1.0
    if isinstance(rig.store, SQLiteStore):  # persisted: committed to the file, as a reader sees it
        with closing(sqlite3.connect(rig.store.path)) as db:
            row = db.execute("SELECT state, next_attempt_at, last_error FROM jobs WHERE id = ?", (jid,)).fetchone()
        assert row == ("pending", job.next_attempt_at.timestamp(), job.last_error)

    # not due yet: nothing is sent before next_attempt_at
    clock.advance(delay - 0.05)
    await rig.dispatcher.run_until_idle()
    assert len(webhook_sink.requests) == 1
    clock.advance(0.1)
    await rig.dispatcher.run_until_idle()
    assert [r.status for r in webhook_sink.requests] == [503, 200]
    assert [r.headers["webhook-id"] for r in webhook_sink.requests] == [jid, jid]
    job = await rig.job(jid)
    assert (job.state, job.attempts) == ("done", 2)


async def test_connection_refused_is_retried(make_rig: RigFactory) -> None:
    clock = Clock()
    rig = await make_rig({"hook": hook(f"http://127.0.0.1:{free_port()}/hook", retry=FAST_RETRY)}, clock=clock)
    [jid] = await rig.enqueue("n1", "FAILED")
    await rig.dispatcher.run_until_idle()
    job = await rig.job(jid)
    assert job.state == "pending" and job.last_error is not None and "webhook" in job.last_error


async def test_slack_429_retry_after_delays_the_retry(make_rig: RigFactory, fake_slack: FakeSlack) -> None:
    # Real clock and the dispatcher's own loop: the wait is the subject. Backoff alone would
    # retry within 0.1 s + 1 s of jitter; Retry-After: 2 must hold the retry back for 2 s.
    rig = await make_rig({"slack": {"type": "slack", "webhook_url": fake_slack.webhook_url, "rate_limit": 0,
                                    "retry": FAST_RETRY}})
    fake_slack.rate_limit(1, retry_after=2)
    [first] = await rig.enqueue("n1", "FAILED", to=("slack",))
    [other] = await rig.enqueue("n2", "FAILED", to=("slack",))
    rig.dispatcher.start()
    await wait_until(lambda: len(fake_slack.messages) == 2, 10, "both messages")
    throttled, *rest = fake_slack.requests
    assert throttled.status == 429
    # the retry of the throttled message and the other node's message both wait out Retry-After
    assert all(r.at - throttled.at >= 2.0 for r in rest), [r.at - throttled.at for r in rest]
    assert (await rig.job(first)).attempts == 2
    assert (await rig.job(other)).state == "done"


async def test_slack_429_pauses_sends_already_waiting_for_the_rate_limit(
    make_rig: RigFactory, fake_slack: FakeSlack
) -> None:
    # rate 1/s, two sends in parallel: the second waits for its slot when the first earns a 429;
    # it must then wait out Retry-After too, not go out at its old slot.
    rig = await make_rig({"slack": {"type": "slack", "webhook_url": fake_slack.webhook_url, "rate_limit": 1,
                                    "concurrency": 2, "retry": FAST_RETRY}})
    fake_slack.rate_limit(1, retry_after=2)
    await rig.enqueue("n1", "FAILED", to=("slack",))
    await rig.enqueue("n2", "FAILED", to=("slack",))
    rig.dispatcher.start()
    await wait_until(lambda: len(fake_slack.messages) == 2, 10, "both messages")
    throttled, *rest = fake_slack.requests
    assert throttled.status == 429
    assert all(r.at - throttled.at >= 2.0 for r in rest), [r.at - throttled.at for r in rest]


async def test_permanent_webhook_error_is_dead_after_one_attempt(
    make_rig: RigFactory, webhook_sink: WebhookSink
) -> None:
    clock = Clock()
    rig = await make_rig({"hook": hook(webhook_sink.url, retry=FAST_RETRY)}, clock=clock)
    webhook_sink.default_status = 400
    [jid] = await rig.enqueue("n1", "FAILED")
    await rig.dispatcher.run_until_idle()
    clock.advance(3600)
    await rig.dispatcher.run_until_idle()
    assert len(webhook_sink.requests) == 1
    job = await rig.job(jid)
    assert (job.state, job.attempts) == ("dead", 1)
    assert job.last_error is not None and job.last_error.startswith("permanent:") and "400" in job.last_error


async def test_slack_invalid_auth_is_dead_after_one_attempt(make_rig: RigFactory, fake_slack: FakeSlack) -> None:
    clock = Clock()
    slack = {"type": "slack", "token": "xoxb-not-the-right-one", "channel": "#alerts", "api_url": fake_slack.api_url,
             "rate_limit": 0, "retry": FAST_RETRY}
    rig = await make_rig({"slack": slack}, clock=clock)
    [jid] = await rig.enqueue("n1", "FAILED", to=("slack",))
    await rig.dispatcher.run_until_idle()
    clock.advance(3600)
    await rig.dispatcher.run_until_idle()
    [req] = fake_slack.requests
    assert not req.accepted
    job = await rig.job(jid)
    assert (job.state, job.attempts) == ("dead", 1)
    assert job.last_error is not None and "invalid_auth" in job.last_error


async def test_attempts_exhausted_is_dead_with_last_error(make_rig: RigFactory, webhook_sink: WebhookSink) -> None:
    clock = Clock()
    retry = {"initial_backoff": "100ms", "max_backoff": "1s", "max_attempts": 3}
    rig = await make_rig({"hook": hook(webhook_sink.url, retry=retry)}, clock=clock)
    webhook_sink.default_status = 503
    [jid] = await rig.enqueue("n1", "FAILED")
    for _ in range(10):
        await rig.dispatcher.run_until_idle()
        if (await rig.job(jid)).state == "dead":
            break
        clock.advance(2)
    job = await rig.job(jid)
    assert job.state == "dead" and job.attempts == 3
    assert len(webhook_sink.requests) == 3
    assert job.last_error is not None and "gave up after 3 attempts" in job.last_error and "503" in job.last_error
    # dead stays dead
    clock.advance(3600)
    await rig.dispatcher.run_until_idle()
    assert len(webhook_sink.requests) == 3


async def test_order_per_receiver_and_node_survives_failures(make_rig: RigFactory, webhook_sink: WebhookSink) -> None:
    clock = Clock()
    rig = await make_rig({"hook": hook(webhook_sink.url, retry=FAST_RETRY, concurrency=8)}, clock=clock)
    sent: list[tuple[str, str]] = []
    for i in range(6):
        for node in ("n1", "n2", "n3"):
            status = "FAILED" if i % 2 == 0 else "RUNNING"
            await rig.enqueue(node, status)
            sent.append((node, status))
    # the receiver fails the first requests, answers, fails again, then recovers
    webhook_sink.flap([503, 503, 503, 200, 200, 503, 503, 500], times=2)
    await drive(rig, clock, lambda: len(webhook_sink.delivered) >= len(sent), step=1.5)

    for node in ("n1", "n2", "n3"):
        want = [(n, s) for n, s in sent if n == node]
        delivered = [event_of(r) for r in webhook_sink.delivered if event_of(r)[0] == node]
        assert [(n, s) for n, s, _ in delivered] == want
        # every attempt, failed or not, is in event order: nothing newer goes out before an older one is done
        attempts = [event_of(r)[2] for r in webhook_sink.requests if event_of(r)[0] == node]
        assert attempts == sorted(attempts)
    assert any(r.status >= 500 for r in webhook_sink.requests)
    assert len(webhook_sink.delivered) == len(sent)  # exactly once each


async def test_failing_receiver_holds_back_only_its_own_order_key(make_rig: RigFactory) -> None:
    clock = Clock()
    async with ProbeSink() as good, ProbeSink(failing_nodes=("n1",)) as bad:
        rig = await make_rig({"good": hook(good.url, retry=FAST_RETRY), "bad": hook(bad.url, retry=FAST_RETRY)},
                             clock=clock)
        ids = {}
        for node, status in [("n1", "FAILED"), ("n1", "RUNNING"), ("n2", "FAILED"), ("n2", "RUNNING")]:
            _, bad_id = await rig.enqueue(node, status, to=("good", "bad"))
            ids[(node, status)] = bad_id
        for _ in range(3):
            await rig.dispatcher.run_until_idle()
            clock.advance(2)
        await rig.dispatcher.run_until_idle()
        # the other receiver got everything; the failing receiver still delivered the other node
        assert sorted(event_of(r)[:2] for r in good.delivered) == sorted(ids)
        assert [event_of(r)[:2] for r in bad.delivered] == [("n2", "FAILED"), ("n2", "RUNNING")]
        # n1's RUNNING waits behind n1's FAILED on the failing receiver: never sent, still pending
        assert {event_of(r)[:2] for r in bad.requests if event_of(r)[0] == "n1"} == {("n1", "FAILED")}
        assert (await rig.job(ids[("n1", "RUNNING")])).state == "pending"
        assert (await rig.job(ids[("n1", "RUNNING")])).attempts == 0


# --- limits -----------------------------------------------------------------------------------------


async def test_rate_limit_spaces_sends(make_rig: RigFactory, webhook_sink: WebhookSink) -> None:
    rig = await make_rig({"hook": hook(webhook_sink.url, rate_limit=5, concurrency=4)})
    for i in range(10):
        await rig.enqueue(f"n{i}", "FAILED")  # ten order keys: only the rate limit spaces them
    rig.dispatcher.start()
    await webhook_sink.wait_for(10, timeout=15)
    at = [r.at for r in webhook_sink.requests]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert at[-1] - at[0] >= 1.8 - 0.05, gaps
    assert min(gaps) >= 0.15, gaps


async def test_concurrency_limit_respected(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.3) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=3)})
        for i in range(12):
            await rig.enqueue(f"n{i}", "FAILED")
        rig.dispatcher.start()
        await sink.wait_for(12, timeout=15)
        await wait_until(lambda: sink.active == 0, 5, "last answer")
        assert sink.max_active == 3  # never more, and the limit is actually used


async def test_send_slower_than_the_lease_is_not_sent_twice(make_rig: RigFactory) -> None:
    # visibility_timeout shorter than a send: the job's own dispatcher must not claim it again
    # while it is still sending it (the receiver's timeout bounds the send, not the lease).
    async with ProbeSink(delay=2.5) as sink:
        rig = await make_rig({"hook": hook(sink.url, timeout="5s")}, lease=1.0)
        [jid] = await rig.enqueue("n1", "FAILED")
        rig.dispatcher.start()
        await wait_until(lambda: len(sink.delivered) == 1 and sink.active == 0, 10, "the answer")
        await asyncio.sleep(0.3)
        assert [r.headers["webhook-id"] for r in sink.requests] == [jid]
        assert (await rig.job(jid)).state == "done"


async def test_sends_that_end_together_are_recorded_and_counted_together(make_rig: RigFactory) -> None:
    async with ProbeSink() as sink:
        rig = await make_rig({"hook": hook(sink.url)})
        sink.hold()
        ids = [(await rig.enqueue(f"n{i}", "FAILED"))[0] for i in range(4)]
        rig.dispatcher.start()
        await wait_until(lambda: sink.active == 4, 5, "four sends at once")
        sink.release()
        for _ in range(200):
            if [(await rig.job(i)).state for i in ids] == ["done"] * 4:
                break
            await asyncio.sleep(0.01)
        assert [(await rig.job(i)).state for i in ids] == ["done"] * 4
        counted = rig.dispatcher._metrics.deliveries.labels("hook", "delivered")._value.get()
        assert counted == 4 and sorted(sink.arrived) == sorted(ids)


async def test_an_outcome_is_retried_while_its_own_lease_lasts_not_the_batchs_shortest(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    """Storage away for a second: of two delivered jobs, the one whose lease ends first is given up
    (it will be sent again), the other is still recorded once storage is back."""
    async with ProbeSink() as sink:
        rig = await make_rig({"hook": hook(sink.url)})
        ids = [(await rig.enqueue(f"n{i}", "FAILED"))[0] for i in range(2)]
        short, long = [await rig.job(i) for i in ids]
        d = rig.dispatcher
        d._sending[short.id] = time.monotonic() + 0.5
        d._sending[long.id] = time.monotonic() + 20
        back_at = time.monotonic() + 1.0
        asked: list[list[str]] = []

        async def record(jobs: Sequence[Delivery]) -> None:
            asked.append([j.id for j in jobs])
            if time.monotonic() < back_at:
                raise StorageUnavailable("storage away")

        done = await d._settle([short, long], record)
        assert [j.id for j in done] == [long.id]
        assert asked[0] == [short.id, long.id] and asked[-1] == [long.id]
        assert f"could not record the outcome of delivery {short.id}" in caplog.text
        assert long.id not in caplog.text


async def test_stop_releases_unsent_jobs_and_waits_for_inflight(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.5) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        ids = [(await rig.enqueue("n1", s))[0] for s in ("FAILED", "RUNNING", "FAILED")]
        rig.dispatcher.start()
        await wait_until(lambda: sink.active == 1, 5, "first send")
        await rig.dispatcher.stop(grace=2.0)
        assert len(sink.delivered) == 1
        states = [(await rig.job(i)).state for i in ids]
        assert states == ["done", "pending", "pending"]


async def test_stop_interrupts_sends_past_the_grace(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=5) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        [jid] = await rig.enqueue("n1", "FAILED")
        rig.dispatcher.start()
        await wait_until(lambda: sink.active == 1, 5, "first send")
        await rig.dispatcher.stop(grace=0.2)
        job = await rig.job(jid)
        assert job.state == "pending" and job.last_error == "interrupted by shutdown"
        assert job.next_attempt_at <= datetime.now(UTC)  # due again at once on the next start


@pytest.mark.parametrize("sends", [1, 3])
async def test_outcome_is_recorded_after_a_storage_outage_not_sent_again(
    redis_outage_server: RedisServer,  # noqa: F811
    sends: int,
) -> None:
    # Redis goes away while sends are in flight and comes back a second later: the dispatcher
    # keeps trying to record "done" (within the lease) instead of leaving the jobs in flight to be
    # sent again when their leases run out. Three sends that end together are recorded together.
    server = redis_outage_server
    admin = aioredis.Redis(host="127.0.0.1", port=server.port)
    await admin.config_set("save", "3600 1")  # the restarted server loads what it had
    await admin.aclose()
    async with ProbeSink() as sink, aiohttp.ClientSession() as session:
        rig = await open_rig(RedisStore(server.url, prefix="blip:"), {"hook": hook(sink.url)}, session, lease=30)
        try:
            sink.hold()
            jids = [(await rig.enqueue(f"n{i}", "FAILED"))[0] for i in range(sends)]
            rig.dispatcher.start()
            await wait_until(lambda: sink.active == sends, 5, "the sends")
            await asyncio.to_thread(server.stop)
            sink.release()
            await wait_until(lambda: len(sink.delivered) == sends, 5, "the answers")
            await asyncio.sleep(0.5)  # recording the outcomes fails meanwhile
            await asyncio.to_thread(server.start)
            for _ in range(100):
                if [(await rig.job(j)).state for j in jids] == ["done"] * sends:
                    break
                await asyncio.sleep(0.1)
            assert [(await rig.job(j)).state for j in jids] == ["done"] * sends
            assert sorted(sink.arrived) == sorted(jids)
        finally:
            await close_rig(rig)


# --- RetryPolicy ---------------------------------------------------------------------------------


def policy(**settings: Any) -> RetryPolicy:
    return RetryPolicy(RetryConfig(**settings))


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    # tenacity's wait_exponential_jitter: initial·2^(attempt-1) plus up to initial_backoff of jitter
    random.seed(7)
    p = policy(initial_backoff=0.5, max_backoff=60, max_attempts=100, max_elapsed=10**6)
    for attempt in range(1, 8):
        base = 0.5 * 2 ** (attempt - 1)
        samples = [p.next_delay(attempt, 0.0, None) for _ in range(200)]
        delays = [d for d in samples if d is not None]
        assert len(delays) == 200
        assert all(base <= d <= min(base + 0.5, 60) for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.25  # jitter is actually applied


def test_backoff_is_capped_at_max_backoff() -> None:
    p = policy(initial_backoff=1, max_backoff=5, max_attempts=100, max_elapsed=10**6)
    assert all(p.next_delay(20, 0.0, None) == 5 for _ in range(50))


def test_max_attempts_stops() -> None:
    p = policy(max_attempts=3, max_elapsed=10**6)
    assert p.next_delay(1, 0.0, None) is not None
    assert p.next_delay(2, 0.0, None) is not None
    assert p.next_delay(3, 0.0, None) is None
    assert policy(max_attempts=1).next_delay(1, 0.0, None) is None


def test_max_elapsed_stops() -> None:
    p = policy(initial_backoff=10, max_backoff=10, max_attempts=100, max_elapsed=100)
    assert p.next_delay(1, 50.0, None) is not None
    assert p.next_delay(1, 100.0, None) is None  # already past it
    assert p.next_delay(1, 95.0, None) is None  # the next attempt would be past it


def test_retry_after_is_never_shortened() -> None:
    p = policy(initial_backoff=0.1, max_backoff=1, max_attempts=100, max_elapsed=3600)
    assert all(p.next_delay(1, 0.0, 30.0) == 30.0 for _ in range(20))  # longer than max_backoff: kept
    assert all((d := p.next_delay(4, 0.0, 0.01)) is not None and d >= 0.8 for _ in range(20))  # backoff wins
    # a Retry-After beyond max_elapsed gives up rather than trying earlier than the peer asked
    assert p.next_delay(1, 3000.0, 900.0) is None
