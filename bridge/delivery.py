"""Delivery workers: claim due jobs, send them, record the outcome. The one place that retries.

Receivers only say "retry later" or "permanent"; ``RetryPolicy`` (tenacity's wait and stop
strategies) decides when the next attempt is, and the store persists it so backoff survives a
restart. Per receiver: a concurrency limit and a rate limit, so bursts queue instead of earning 429s.

Per receiver, ``concurrency`` senders each hold a send slot. When the jobs at hand fit in the slots,
the dispatcher claims ``lane.PREFETCH_ROUNDS`` rounds (``concurrency`` jobs each) ahead, so a sender whose
send ends takes the next claimed job at once. Finished sends' outcomes are recorded with the next
claim, or after ``RECORD_DELAY`` at the latest, in one store batch (one SQLite commit); the delivered
ones with one store call (``complete_many``). Outcomes are written before the claim, so the next job
of a finished job's order key (receiver and node) is claimable in the same batch. Only heads of
order keys are claimed, so prefetching never reorders a key's jobs.

Every store round trip of the dispatcher is one batch for all receivers: the outcomes every lane
has finished, then a claim for every lane with room. A lane only asks the store again when it may
have due jobs it has not claimed (``Lane.backlog``): new jobs were accepted, its last claim came
back full, an outcome may have unblocked the next job of its order key, or a poll is due. Every
commit costs the loop time, and SQLite WAL frames that checkpoints must then copy and sync.

With a store that takes a ``Handoff`` (SQLite), a new job that is its key's head, due now and
ungrouped is claimed in the accept's own transaction when its lane has a send slot free or room in
its queue with nothing older unclaimed (``reserve``), and comes here after that commit (``take``):
no wake-up, claim query or commit of its own. Anything else (a full queue, a backlog, a held or
grouped job, a busy key's next job, retries) is claimed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.config import ReceiverBase
from bridge.errors import Permanent, RetryLater, Unavailable
from bridge.grouping import MATES, Grouper
from bridge.lane import Lane
from bridge.metrics import Metrics
from bridge.model import Delivery
from bridge.pacing import RateLimiter, RetryPolicy
from bridge.receivers.base import Receiver
from bridge.store import Store
from bridge.store.base import Handoff

log = logging.getLogger("bridge.delivery")

__all__ = ["Dispatcher", "RateLimiter", "RetryPolicy"]


# A finished send's outcome waits at most this long for the next claim, to share its commit. Under
# load, claims come sooner and carry the outcomes. At a trickle, the outcomes of one event's sends
# (which end together) share a commit in the idle time after them: waiting longer would put that
# commit, and the outcomes' bookkeeping, in the path of the next event (bench/README.md).
RECORD_DELAY = 0.001


def _log_ids(job: Delivery) -> dict[str, object]:
    return {"delivery_id": job.id, "receiver": job.receiver, "event_id": job.alert.event.id, "attempt": job.attempts}


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
        self._lanes: dict[str, Lane] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: dict[str, float] = {}  # jobs this dispatcher holds (queued or sending) -> lease end
        self._grouper = Grouper(store)  # fleet digests: one send for the claimed jobs of a group
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None

    def set_receivers(self, receivers: Mapping[str, Receiver], configs: Mapping[str, ReceiverBase]) -> None:
        """Install (or, on reload, replace) the receivers. Limits carry over for unchanged ones."""
        lanes = {}
        for name, receiver in receivers.items():
            cfg = configs[name]
            old = self._lanes.get(name)
            if old is None:
                lanes[name] = Lane(receiver, cfg, RetryPolicy(cfg.retry), RateLimiter(cfg.rate_limit))
                continue
            # The same lane object, updated in place: sends in flight hold it and decrement its
            # ``active`` when they finish; a new lane would never see that and lose capacity.
            if old.cfg.rate_limit != cfg.rate_limit:
                old.limiter = RateLimiter(cfg.rate_limit)
            old.receiver, old.cfg, old.policy = receiver, cfg, RetryPolicy(cfg.retry)
            lanes[name] = old
        for name, old in self._lanes.items():
            if name not in lanes:  # removed: what it claimed but did not send goes back
                old.retired = True
                self._record_finished(old)
                self._release_queued(old, "receiver removed by a reload")
        self._lanes = lanes
        self.wake()

    def wake(self) -> None:
        """New jobs may be due (ingest accepted some): every lane asks the store at once."""
        self._mark_backlog()
        self._wake.set()

    def _mark_backlog(self) -> None:
        for lane in self._lanes.values():
            lane.backlog = True

    # --- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")
        self._set_handoff(self)

    def _set_handoff(self, handoff: Handoff | None) -> None:
        hook = getattr(self._store, "set_handoff", None)  # SQLite: claims in the accept's commit
        if hook is not None:
            hook(handoff)

    # --- hand-off: jobs claimed in the accept's own transaction (store.base.Handoff) -----------------

    def reserve(self, receiver: str) -> float | None:
        """A lease when the lane can take a new job now (``Lane.has_room_for_new``), else None."""
        lane = self._lanes.get(receiver)
        if lane is None or self._stopping or not lane.has_room_for_new():
            return None
        lane.incoming += 1
        return lane.lease_for(lane.active + len(lane.queued) + lane.incoming, self._lease)

    def release(self, receiver: str) -> None:
        lane = self._lanes.get(receiver)
        if lane is not None:
            lane.incoming -= 1

    def unclaimed(self, receiver: str) -> None:
        lane = self._lanes.get(receiver)
        if lane is not None:
            lane.backlog = True  # the wake-up comes from whoever wrote it (ingest, timers)

    def take(self, job: Delivery, lease: float) -> None:
        lane = self._lanes[job.receiver]  # reserved in this same flush: no reload came between
        lane.incoming -= 1
        self._sending[job.id] = time.monotonic() + lease
        lane.queued.append(job)
        self._pump(lane)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before claiming: a wake-up during the claim is not lost
            try:
                await self.claim_once()
            except Unavailable as exc:
                log.warning("cannot claim deliveries: %s", exc.detail)
            except Exception:
                log.exception("unexpected error while claiming deliveries")
            try:
                # (asyncio.timeout, not wait_for: no extra task per wake-up.)
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                self._mark_backlog()  # retries and expired leases come due with time alone

    async def claim_once(self) -> int:
        """One store batch: the outcomes of finished sends, then due jobs claimed for every
        receiver with room, if any of them may have some (or outcomes are due); start sending them."""
        lanes = list(self._lanes.items())
        wanted = any(lane.backlog and lane.wants_jobs() for _, lane in lanes)
        if not (wanted or any(lane.record_due for _, lane in lanes)):
            return 0
        claiming = [(name, lane) for name, lane in lanes if lane.wants_jobs() and not self._stopping]
        # Outcomes first: their tasks are created before the claims' (asyncio starts tasks in that
        # order), so their writes share the claims' store batch (with SQLite one commit) and come
        # before them: the next job of a finished job's order key can be claimed right away.
        # Claiming for a lane that has nothing due costs a query in that batch, not a commit.
        for _, lane in lanes:
            if lane.finished:
                self._record_finished(lane, claimed_after=lane.wants_jobs() and not self._stopping)
        if not claiming:
            return 0
        # Concurrent, so every claim joins the same store batch.
        counts = await asyncio.gather(*(self._claim(name, lane) for name, lane in claiming))
        return sum(counts)

    async def _claim(self, name: str, lane: Lane) -> int:
        held = lane.active + len(lane.queued)
        limit = min(lane.holds_at_most() - held, self._batch)
        if limit <= 0:
            return 0
        lane.backlog = False  # anything that comes due from now on sets it again
        lease = lane.lease_for(held + limit, self._lease)
        lane.claiming = True  # until its jobs are queued: a hand-off meanwhile would overtake them
        try:
            now = self._clock()
            jobs = await self._store.claim(now=now, limit=limit, lease=lease, receivers=(name,),
                                           group_limit=MATES)
            units = await self._grouper.bundle(jobs, now=now, digests=getattr(lane.receiver, "sends_digests", True))
        except BaseException:
            lane.backlog, lane.claiming = True, False  # still unclaimed: the next poll tries again
            raise
        if len(jobs) >= limit:  # a full batch (a group's jobs come on top): more may be due right away
            lane.backlog = True
            self._wake.set()
        for job in units:
            ids = self._ids(job)
            if any(i in self._sending for i in ids):  # its lease ran out during a long pause; still ours
                log.warning("delivery %s claimed again while being sent; not sent twice", job.id)
                self._grouper.forget(job)
                continue
            for i in (job.id, *ids):
                self._sending[i] = time.monotonic() + lease
            lane.queued.append(job)
        lane.claiming = False
        if lane.retired or self._stopping:  # a reload or stop() came during the claim
            why = "interrupted by shutdown" if self._stopping else "receiver removed by a reload"
            self._release_queued(lane, why)
        self._pump(lane)
        return len(jobs)

    def _pump(self, lane: Lane) -> None:
        """Start a sender for each queued job that has a free send slot."""
        while lane.queued and lane.active < lane.cfg.concurrency and not (self._stopping or lane.retired):
            job = lane.queued.popleft()
            lane.active += 1
            self._spawn(self._sender(lane, job), f"deliver-{job.id}")

    def _next_queued(self, lane: Lane) -> Delivery | None:
        """The next queued job for a sender whose send just ended (it keeps its slot), if any."""
        if lane.queued and lane.active <= lane.cfg.concurrency and not (self._stopping or lane.retired):
            return lane.queued.popleft()
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record_finished(self, lane: Lane, *, claimed_after: bool = False) -> None:
        """Start recording every finished send's outcome (in one store batch where the store can).
        ``claimed_after``: a claim for the lane follows in the same batch."""
        if lane.record_timer is not None:
            lane.record_timer.cancel()
            lane.record_timer = None
        lane.record_due = False
        finished, lane.finished = lane.finished, []
        # An outcome may make its key's next job due in this same store batch, before a claim (if
        # any) marks the lane as claiming: no new job may be handed into the queue ahead of it.
        lane.backlog = lane.backlog or bool(finished)
        # Sends that went well share one store call and one task; the others, one each.
        delivered = [job for job, failure in finished if failure is None]
        if delivered:
            self._spawn(self._record_delivered(lane, delivered, claimed_after), "record-delivered")
        for job, failure in finished:
            if failure is not None:
                self._spawn(self._record_outcome(lane, job, failure, claimed_after), f"record-{job.id}")

    def _record_soon(self, lane: Lane) -> None:
        lane.record_timer = None
        lane.record_due = True
        self._wake.set()

    def _release_queued(self, lane: Lane, reason: str) -> None:
        """Put claimed jobs that were never sent back to pending."""
        while lane.queued:
            job = lane.queued.popleft()
            self._spawn(self._release_claimed(job, reason), f"release-{job.id}")

    async def run_until_idle(self, timeout: float = 10.0) -> None:
        """Test hook: claim, send and record until nothing is due and nothing is in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._mark_backlog()  # tests move their clock: retries come due without a wake-up
            claimed = await self.claim_once()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            elif not claimed and not any(lane.finished for lane in self._lanes.values()):
                return
            else:
                await asyncio.sleep(0)
        raise TimeoutError("deliveries still due after run_until_idle timeout")

    async def stop(self, grace: float) -> None:
        """Stop claiming; give jobs in flight ``grace`` seconds, then put the rest back to pending."""
        self._stopping = True
        self._set_handoff(None)
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        for lane in self._lanes.values():
            self._record_finished(lane)
            self._release_queued(lane, "interrupted by shutdown")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("%d deliveries interrupted by shutdown; they stay pending", len(pending))

    # --- one job -------------------------------------------------------------------------------

    async def _sender(self, lane: Lane, job: Delivery) -> None:
        """Holds one send slot: sends ``job``, then the next queued job, until none is left."""
        current: Delivery | None = job
        while current is not None:
            job = current
            try:
                failure = await self._send(lane, job)
            except asyncio.CancelledError:
                lane.active -= 1
                await self._release_claimed(job, "interrupted by shutdown")
                raise
            current = self._next_queued(lane)  # the slot goes to the next claimed job at once
            if current is None:
                lane.active -= 1
            if self._stopping or lane.retired:  # nobody will record it with others
                await (self._record_delivered(lane, [job], False) if failure is None
                       else self._record_outcome(lane, job, failure))
                continue
            # The outcome is recorded with the next claim (one store batch for both), or after
            # RECORD_DELAY at the latest. The slot that just freed claims at once only if a job
            # may be waiting for it.
            lane.finished.append((job, failure))
            if lane.backlog and lane.wants_jobs():
                self._wake.set()
            elif lane.record_timer is None and not lane.record_due:
                lane.record_timer = asyncio.get_running_loop().call_later(RECORD_DELAY, self._record_soon, lane)

    async def _send(self, lane: Lane, job: Delivery) -> Exception | None:
        """One attempt: None when delivered, else what went wrong."""
        try:
            await lane.limiter.acquire()
            started = time.perf_counter()
            try:
                if getattr(lane.receiver, "bounds_send_time", False):
                    await lane.receiver.send(job.alert)  # it holds each send to cfg.timeout itself
                else:  # bound whatever a receiver leaves unbounded
                    async with asyncio.timeout(lane.cfg.timeout + 5):
                        await lane.receiver.send(job.alert)
            except TimeoutError:
                raise RetryLater("timed out") from None
            self._metrics.observe_delivery(job.receiver, time.perf_counter() - started)
        except Exception as exc:  # classified by _record
            if isinstance(exc, RetryLater) and exc.retry_after:
                lane.limiter.pause(exc.retry_after)  # before the slot goes to the next job
            return exc
        return None

    def _ids(self, job: Delivery) -> tuple[str, ...]:  # the store's jobs a send settles (a digest's members)
        return self._grouper.ids(job)

    def _done_with(self, job: Delivery) -> None:
        for i in (job.id, *self._ids(job)):
            self._sending.pop(i, None)
        self._grouper.forget(job)

    async def _each(self, job: Delivery, record: Callable[[str], Awaitable[None]]) -> None:
        """Record one outcome for every job ``job`` settles (a digest's: all of its members)."""
        await asyncio.gather(*(record(i) for i in self._ids(job)))

    async def _record_outcome(
        self, lane: Lane, job: Delivery, failure: Exception, claimed_after: bool = False
    ) -> None:
        try:
            await self._record(lane, job, failure)
        finally:
            self._done_with(job)
        self._recorded(lane, claimed_after)

    async def _record_delivered(self, lane: Lane, jobs: list[Delivery], claimed_after: bool) -> None:
        """Record several delivered sends of ``lane`` with one store call (``complete_many``)."""
        now = self._clock()
        try:
            done = await self._settle(jobs, lambda js: self._store.complete_many(
                [i for job in js for i in self._ids(job)], now=now))
            if done:
                self._metrics.count_deliveries(jobs[0].receiver, "delivered", sum(len(self._ids(j)) for j in done))
                if log.isEnabledFor(logging.INFO):
                    for job in done:
                        log.info("delivered", extra=_log_ids(job))
        finally:
            for job in jobs:
                self._done_with(job)
        self._recorded(lane, claimed_after)

    def _recorded(self, lane: Lane, claimed_after: bool) -> None:
        # A claim in the same batch saw the next job of these order keys (or, if recording had to
        # wait out a storage outage, the next poll will); else that job may be due now.
        if not claimed_after:
            lane.backlog = True
            if lane.wants_jobs():
                self._wake.set()

    async def _record(self, lane: Lane, job: Delivery, failure: Exception) -> None:
        ids = _log_ids(job)
        if isinstance(failure, Permanent):
            await self._bury(job, f"permanent: {failure.reason}", ids)
        elif isinstance(failure, RetryLater):
            await self._retry(lane, job, failure.reason, failure.retry_after, ids)
        else:  # a receiver bug must not kill the worker; treat it as transient
            log.error("receiver raised unexpectedly", exc_info=failure, extra=ids)
            await self._retry(lane, job, f"unexpected {type(failure).__name__}", None, ids)

    async def _retry(
        self, lane: Lane, job: Delivery, reason: str, retry_after: float | None, ids: dict[str, object]
    ) -> None:
        now = self._clock()
        elapsed = (now - job.created_at).total_seconds()
        delay = lane.policy.next_delay(job.attempts, elapsed, retry_after)
        if delay is None:
            await self._bury(job, f"gave up after {job.attempts} attempts: {reason}", ids)
            return
        nxt = now + timedelta(seconds=delay)
        if not await self._settle((job,), lambda _: self._each(job, lambda i: self._store.reschedule(
                i, now=now, next_attempt_at=nxt, error=reason))):
            return
        self._metrics.count_deliveries(job.receiver, "retry", len(self._ids(job)))
        log.warning("delivery failed, retrying in %.1fs: %s", delay, reason, extra=ids)

    async def _bury(self, job: Delivery, reason: str, ids: dict[str, object]) -> None:
        now = self._clock()
        if not await self._settle((job,), lambda _: self._each(job, lambda i: self._store.bury(i, now=now,
                                                                                                 error=reason))):
            return
        self._metrics.count_deliveries(job.receiver, "dead", len(self._ids(job)))
        log.error("delivery dead: %s", reason, extra=ids)

    async def _settle(
        self, jobs: Sequence[Delivery], record: Callable[[Sequence[Delivery]], Awaitable[None]]
    ) -> Sequence[Delivery]:
        """Record the outcome of ``jobs`` (``record(jobs)``); what was recorded. Storage may be away
        for a moment (a Redis restart): keep trying for each job while its lease lasts, so a job that
        was sent is not sent again; past that, its lease has run out and it is sent again anyway (at
        least once)."""
        deadline = {job.id: self._sending.get(job.id) or time.monotonic() + self._lease for job in jobs}
        pause = 0.1
        while True:
            try:
                await record(jobs)
                return jobs
            except Unavailable as exc:
                now = time.monotonic() + 0.2  # the last try comes just before a lease ends
                gone = [job for job in jobs if deadline[job.id] <= now]
                if gone:
                    log.error("could not record the outcome of delivery %s: %s; it will be sent again",
                              ", ".join(job.id for job in gone), exc.detail)
                    jobs = [job for job in jobs if deadline[job.id] > now]
                    if not jobs:
                        return jobs
                await asyncio.sleep(min(pause, min(deadline[job.id] for job in jobs) - now))
                pause = min(pause * 2, 2.0)

    async def _release_claimed(self, job: Delivery, reason: str) -> None:
        try:
            now = self._clock()
            await self._each(job, lambda i: self._store.reschedule(i, now=now, next_attempt_at=now, error=reason))
        except Exception:  # the lease runs out and the job is sent again anyway
            log.warning("could not release delivery %s at shutdown", job.id)
        finally:
            self._done_with(job)
