"""The timer loop: applies due incident timers (``for``, reminders, escalations, flapping windows).

Timers live in each node's record (``IncidentState.timers``); every store indexes the record's
earliest due time, written in the same atomic write as the record. The loop asks the store which
nodes have a timer due (``due_nodes``) and applies ``decide.decide_timers`` to each through
``Store.apply``: read the record, decide, write record and jobs with the same version check as
``accept``. Exactly once without claims or leases: two replicas racing on one node both decide,
one commit wins, the other's version check fails and it decides again on the new record, where the
timer is no longer listed (``incidents.on_timer`` is a no-op for it). A crash before the commit
leaves the timer listed and due, so it fires at the next start; one that came due while the bridge
was down fires once at start. (docs/incidents.md, "Timers are data".)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bridge.decide import Decision, NodeRecord, Policy, decide_timers
from bridge.errors import Unavailable
from bridge.metrics import Metrics
from bridge.store import Store

log = logging.getLogger("bridge.timers")

BATCH = 100  # nodes applied per store query


class TimerLoop:
    def __init__(
        self,
        store: Store,
        *,
        policy: Callable[[], Policy],
        metrics: Metrics,
        clock: Callable[[], datetime],
        poll_interval: float = 1.0,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._metrics = metrics
        self._clock = clock
        self._poll = poll_interval
        self._on_enqueued = on_enqueued
        self._wake = asyncio.Event()
        self._next_wake: datetime | None = None  # when the loop will look again (bridge clock)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def timer_set(self, due: datetime) -> None:
        """A decision set a timer due at ``due``: look then, if that is before the next poll."""
        nxt = self._next_wake
        if nxt is not None and due >= nxt:
            return
        delay = max(0.0, (due - self._clock()).total_seconds())
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a wake-up during the look is not lost
            try:
                await self.run_once()
            except Unavailable as exc:
                log.warning("cannot apply timers: %s", exc.detail)
            except Exception:
                log.exception("unexpected error while applying timers")
            self._next_wake = self._clock() + timedelta(seconds=self._poll)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Apply every node with a timer due now; returns how many nodes changed."""
        changed = 0
        while True:
            now = self._clock()
            nodes = await self._store.due_nodes(now=now, limit=BATCH)
            failed = 0
            for node in nodes:
                try:
                    decision = await self.apply(node, now)
                except Unavailable:
                    raise
                except Exception:  # one node's bad record must not hold back every other node's timers
                    failed += 1
                    log.exception("cannot apply the timers of one node; the others go on", extra={"node": node})
                    continue
                if decision.record is not None:
                    changed += 1
            if len(nodes) < BATCH or failed == len(nodes):
                return changed

    async def apply(self, node: str, now: datetime) -> Decision:
        policy = self._policy()

        def run(record: NodeRecord | None) -> Decision:
            return decide_timers(record, policy, now)

        decision = await self._store.apply(node, run, now=now)
        if decision.record is not None:
            self._metrics.timers_fired.inc()
        for seconds in decision.resolved:
            self._metrics.incident_duration.observe(seconds)
        if decision.jobs:
            self._on_enqueued()
        return decision
