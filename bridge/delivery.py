"""Delivery workers: claim due jobs, send them, record the outcome. The one place that retries.

Receivers only say "retry later" or "permanent"; ``RetryPolicy`` (tenacity's wait and stop
strategies) decides when the next attempt is, and the store persists it so backoff survives a
restart. Per receiver: a concurrency limit and a rate limit, so bursts queue instead of earning 429s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import RetryCallState, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from bridge.config import ReceiverBase, RetryConfig
from bridge.errors import Permanent, RetryLater, Unavailable
from bridge.metrics import Metrics
from bridge.model import Delivery
from bridge.receivers.base import Receiver
from bridge.store import Store

log = logging.getLogger("bridge.delivery")


class RetryPolicy:
    """When to try a failed job again, or None to give up. Pure: tenacity's strategies, no sleeping."""

    def __init__(self, cfg: RetryConfig) -> None:
        self._wait = wait_exponential_jitter(
            multiplier=cfg.initial_backoff, max=cfg.max_backoff, jitter=cfg.initial_backoff
        )
        self._stop = stop_after_attempt(cfg.max_attempts) | stop_after_delay(cfg.max_elapsed)
        self._max_elapsed = cfg.max_elapsed

    def next_delay(self, attempts: int, elapsed: float, retry_after: float | None) -> float | None:
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempts
        state.start_time = 0.0
        state.outcome_timestamp = elapsed
        if self._stop(state):
            return None
        delay = self._wait(state)
        if retry_after is not None:
            delay = max(delay, retry_after)  # the peer said when; never earlier
        if elapsed + delay > self._max_elapsed:
            return None
        return delay


class RateLimiter:
    """Spaces sends at least 1/rate apart; ``pause`` holds the receiver (a 429's Retry-After)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    def wait_bound(self, sends: int) -> float:
        """At most how long the next ``sends`` acquires wait, unless a ``pause`` comes first."""
        return max(0.0, self._next - time.monotonic()) + sends * self._interval

    def pause(self, seconds: float) -> None:
        self._next = max(self._next, time.monotonic() + seconds)

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            while self._next > now:  # a loop: a pause may come while waiting
                await asyncio.sleep(self._next - now)
                now = time.monotonic()
            self._next = now + self._interval


@dataclass
class _Lane:
    """One receiver's send path."""

    receiver: Receiver
    cfg: ReceiverBase
    policy: RetryPolicy
    limiter: RateLimiter
    active: int = 0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        *,
        metrics: Metrics,
        clock: Callable[[], datetime],
        lease: float,
        poll_interval: float = 1.0,
        batch_size: int = 64,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._lease = lease
        self._poll = poll_interval
        self._batch = batch_size
        self._lanes: dict[str, _Lane] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: dict[str, float] = {}  # jobs this dispatcher is sending -> lease end (monotonic)
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None

    def set_receivers(self, receivers: Mapping[str, Receiver], configs: Mapping[str, ReceiverBase]) -> None:
        """Install (or, on reload, replace) the receivers. Limits carry over for unchanged ones."""
        lanes = {}
        for name, receiver in receivers.items():
            cfg = configs[name]
            old = self._lanes.get(name)
            if old is None:
                lanes[name] = _Lane(receiver, cfg, RetryPolicy(cfg.retry), RateLimiter(cfg.rate_limit))
                continue
            # The same lane object, updated in place: sends in flight hold it and decrement its
            # ``active`` when they finish; a new lane would never see that and lose capacity.
            if old.cfg.rate_limit != cfg.rate_limit:
                old.limiter = RateLimiter(cfg.rate_limit)
            old.receiver, old.cfg, old.policy = receiver, cfg, RetryPolicy(cfg.retry)
            lanes[name] = old
        self._lanes = lanes
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.claim_once()
            except Unavailable as exc:
                log.warning("cannot claim deliveries: %s", exc.detail)
                claimed = 0
            except Exception:
                log.exception("unexpected error while claiming deliveries")
                claimed = 0
            if claimed and not self._stopping:
                continue  # more may be due right away
            try:
                # (asyncio.timeout, not wait_for: no extra task per wake-up.)
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def claim_once(self) -> int:
        """Claim due jobs for every receiver with free capacity and start sending them."""
        total = 0
        for name, lane in list(self._lanes.items()):
            free = min(lane.cfg.concurrency - lane.active, self._batch)
            if free <= 0:
                continue
            # The lease must outlast the wait for a send slot and the send itself, or the job is
            # due again (here or at another replica) while it is still being sent.
            busy = lane.limiter.wait_bound(lane.active + free) + lane.cfg.timeout + 5
            lease = max(self._lease, busy + 5)
            jobs = await self._store.claim(now=self._clock(), limit=free, lease=lease, receivers=(name,))
            for job in jobs:
                if job.id in self._sending:  # its lease ran out during a long pause; still ours
                    log.warning("delivery %s claimed again while being sent; not sent twice", job.id)
                    continue
                self._sending[job.id] = time.monotonic() + lease
                lane.active += 1
                task = asyncio.create_task(self._deliver(lane, job), name=f"deliver-{job.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            total += len(jobs)
        return total

    async def run_until_idle(self, timeout: float = 10.0) -> None:
        """Test hook: claim and send until nothing is due and nothing is in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = await self.claim_once()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            elif not claimed:
                return
        raise TimeoutError("deliveries still due after run_until_idle timeout")

    async def stop(self, grace: float) -> None:
        """Stop claiming; give jobs in flight ``grace`` seconds, then put the rest back to pending."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("%d deliveries interrupted by shutdown; they stay pending", len(pending))

    # --- one job -------------------------------------------------------------------------------

    async def _deliver(self, lane: _Lane, job: Delivery) -> None:
        ids = {"delivery_id": job.id, "receiver": job.receiver, "event_id": job.alert.event.id,
               "attempt": job.attempts}
        try:
            failure = await self._send(lane, job)
        except asyncio.CancelledError:
            lane.active -= 1
            try:
                await self._release(job, "interrupted by shutdown")
            finally:
                self._sending.pop(job.id, None)
            raise
        # The send is over, so its slot is free. Waking the dispatcher before the outcome is queued
        # lets it claim the next job in the same store batch: with SQLite one commit records "done"
        # and claims the next job (in that order), instead of one commit after the other.
        lane.active -= 1
        self.wake()
        try:
            await self._record(lane, job, failure, ids)
        finally:
            self._sending.pop(job.id, None)
            if lane.active < lane.cfg.concurrency:
                self.wake()  # the next job of this order key may be due now, and there is room for it

    async def _send(self, lane: _Lane, job: Delivery) -> Exception | None:
        """One attempt: None when delivered, else what went wrong."""
        try:
            await lane.limiter.acquire()
            started = time.perf_counter()
            try:
                # The receiver times its own network calls; this bounds anything it forgot.
                async with asyncio.timeout(lane.cfg.timeout + 5):
                    await lane.receiver.send(job.alert)
            except TimeoutError:
                raise RetryLater("timed out") from None
            self._metrics.delivery_seconds.labels(job.receiver).observe(time.perf_counter() - started)
        except Exception as exc:  # classified by _record
            return exc
        return None

    async def _record(self, lane: _Lane, job: Delivery, failure: Exception | None, ids: dict[str, object]) -> None:
        if failure is None:
            if await self._settle(job, lambda: self._store.complete(job.id, now=self._clock())):
                self._metrics.deliveries.labels(job.receiver, "delivered").inc()
                log.info("delivered", extra=ids)
        elif isinstance(failure, Permanent):
            await self._bury(job, f"permanent: {failure.reason}", ids)
        elif isinstance(failure, RetryLater):
            await self._retry(lane, job, failure.reason, failure.retry_after, ids)
        else:  # a receiver bug must not kill the worker; treat it as transient
            log.error("receiver raised unexpectedly", exc_info=failure, extra=ids)
            await self._retry(lane, job, f"unexpected {type(failure).__name__}", None, ids)

    async def _retry(
        self, lane: _Lane, job: Delivery, reason: str, retry_after: float | None, ids: dict[str, object]
    ) -> None:
        now = self._clock()
        if retry_after:
            lane.limiter.pause(retry_after)
        elapsed = (now - job.created_at).total_seconds()
        delay = lane.policy.next_delay(job.attempts, elapsed, retry_after)
        if delay is None:
            await self._bury(job, f"gave up after {job.attempts} attempts: {reason}", ids)
            return
        nxt = now + timedelta(seconds=delay)
        if not await self._settle(job, lambda: self._store.reschedule(job.id, now=now, next_attempt_at=nxt,
                                                                      error=reason)):
            return
        self._metrics.deliveries.labels(job.receiver, "retry").inc()
        log.warning("delivery failed, retrying in %.1fs: %s", delay, reason, extra=ids)

    async def _bury(self, job: Delivery, reason: str, ids: dict[str, object]) -> None:
        if not await self._settle(job, lambda: self._store.bury(job.id, now=self._clock(), error=reason)):
            return
        self._metrics.deliveries.labels(job.receiver, "dead").inc()
        log.error("delivery dead: %s", reason, extra=ids)

    async def _settle(self, job: Delivery, record: Callable[[], Awaitable[None]]) -> bool:
        """Record a job's outcome. Storage may be away for a moment (a Redis restart): keep trying
        while the job's lease lasts, so a job that was sent is not sent again; past that, the
        lease has run out and the job is sent again anyway (at least once)."""
        deadline = self._sending.get(job.id) or time.monotonic() + self._lease
        pause = 0.1
        while True:
            try:
                await record()
                return True
            except Unavailable as exc:
                left = deadline - time.monotonic() - 0.2  # the last try comes just before the lease ends
                if left <= 0:
                    log.error("could not record the outcome of delivery %s: %s; it will be sent again",
                              job.id, exc.detail)
                    return False
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 2.0)

    async def _release(self, job: Delivery, reason: str) -> None:
        try:
            now = self._clock()
            await self._store.reschedule(job.id, now=now, next_attempt_at=now, error=reason)
        except Exception:  # the lease runs out and the job is sent again anyway
            log.warning("could not release delivery %s at shutdown", job.id)
