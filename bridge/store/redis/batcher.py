"""Accepts group-committed: the accepts queued while a batch is on its way to Redis go together.

One round trip (``read.lua``) reads what every accept of a batch decides on, Python decides them
in order (each on the node record its predecessors leave), one ``commit.lua`` call commits them
all, re-checking each node's version; the accepts whose node moved meanwhile (another replica)
are decided again, ahead of the queue."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bridge.decide import Decider, NodeRecord
from bridge.errors import StorageUnavailable
from bridge.model import Event
from bridge.store.base import Acceptance, compact_json
from bridge.store.redis.accepts import Accept, CommitItem, Known, NodeSim, remember

MAX_ACCEPT_ATTEMPTS = 50
ACCEPT_BATCH = 256  # accepts committed by one script call (bounds its run time)

Run = Callable[..., Awaitable[Any]]  # RedisStore._run: a script by name, with its arguments


class AcceptBatcher:
    def __init__(self, run: Run, events_keep: Callable[[], float]) -> None:
        self._run = run
        self._events_keep = events_keep  # seconds events are kept (their backstop TTL)
        self._queue: list[Accept] = []
        self._task: asyncio.Task[None] | None = None
        self._known: Known = {}

    async def accept(self, event: Event, decide: Decider, *, now: datetime, dedup_ttl: float) -> Acceptance:
        loop = asyncio.get_running_loop()
        item = Accept(event, decide, now, dedup_ttl, loop.create_future())
        self._queue.append(item)
        if self._task is None:
            # Starts at the next loop iteration: every request handled in this one joins the batch.
            self._task = loop.create_task(self._drain())
        return await item.fut

    async def wait_idle(self) -> None:
        """Let the batch on its way finish (or fail) on the connection it started on."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])

    async def _drain(self) -> None:
        """Commit queued accepts, batch after batch; accepts that arrive meanwhile join the next."""
        try:
            while self._queue:
                batch = [a for a in self._queue[:ACCEPT_BATCH] if not a.fut.done()]  # done: cancelled
                del self._queue[:ACCEPT_BATCH]
                if not batch:
                    continue
                try:
                    again = await self._commit(batch)
                except BaseException as exc:
                    err = exc if isinstance(exc, Exception) else StorageUnavailable("redis store is closing")
                    for a in batch:
                        if not a.fut.done():
                            a.fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self._requeue(again)
        finally:
            self._task = None

    def _requeue(self, again: list[Accept]) -> None:
        """Accepts to try once more, ahead of the queue (in their order); after a few tries, after
        a short random pause (another replica keeps committing events of the same node)."""
        now_items: list[Accept] = []
        loop = asyncio.get_running_loop()
        for a in again:
            if a.attempts >= MAX_ACCEPT_ATTEMPTS:
                if not a.fut.done():
                    a.fut.set_exception(
                        StorageUnavailable("redis: too much contention on node state; retry later", 1.0)
                    )
            elif a.attempts >= 3:
                loop.call_later(random.uniform(0, 0.001 * a.attempts), self._enqueue_later, a)
            else:
                now_items.append(a)
        self._queue[:0] = now_items

    def _enqueue_later(self, a: Accept) -> None:
        if a.fut.done():
            return
        self._queue.append(a)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _commit(self, batch: list[Accept]) -> list[Accept]:
        """One round trip reads what every accept of ``batch`` decides on, Python decides them in
        order (each on the node record its predecessors leave), one script commits them all,
        re-checking each. Returns the accepts to try again."""
        nodes = list(dict.fromkeys(a.event.node_id for a in batch))
        found_all, rows = await self._run("read", len(batch), *(a.event.dedup_key for a in batch), *nodes)
        known = self._known
        sims = {node: NodeSim(node, row, known) for node, row in zip(nodes, rows, strict=True)}

        items: list[CommitItem] = []
        sent: list[tuple[Accept, Acceptance]] = []
        records: list[NodeRecord | None] = []  # each sent item's new node record
        waiting: list[tuple[int, Accept, Accept]] = []  # (position, accept, earlier one with its dedup key)
        seen: dict[str, Accept] = {}
        for pos, (a, found) in enumerate(zip(batch, found_all, strict=True)):
            ev = a.event
            earlier = seen.get(ev.dedup_key)
            if earlier is not None:  # its answer depends on whether the earlier one commits
                waiting.append((pos, a, earlier))
                continue
            sim = sims[ev.node_id]
            try:
                if found and float(found.partition(" ")[0]) > a.now_ts:
                    a.fut.set_result(Acceptance.of(ev, a.decide(sim.record, True)))
                    continue
                decision = a.decide(sim.record, False)
            except Exception as exc:  # decide raised: this accept fails, the others go on
                a.fut.set_exception(exc)
                continue
            items.append(a.commit_item(decision, sim))
            seen[ev.dedup_key] = a
            sent.append((a, Acceptance.of(ev, decision)))
            records.append(decision.record)

        again: list[tuple[int, Accept]] = []
        committed: set[int] = set()
        if sent:
            answers = await self._run("commit", round((self._events_keep() + 86400) * 1000), compact_json(items))
            position = {id(a): pos for pos, a in enumerate(batch)}
            for (a, result), answer, item, record in zip(sent, answers, items, records, strict=True):
                if answer == "ok":
                    committed.add(id(a))
                    if record is not None:
                        remember(known, item.node_id, item.record, record)
                    if not a.fut.done():
                        a.fut.set_result(result)
                elif answer.startswith("dup "):
                    if not a.fut.done():
                        a.fut.set_result(Acceptance.of(a.event, a.decide(None, True)))
                else:
                    a.attempts += 1
                    again.append((position[id(a)], a))
        for pos, a, earlier in waiting:
            if id(earlier) in committed and earlier.expires > a.now_ts:
                if not a.fut.done():
                    a.fut.set_result(Acceptance.of(a.event, a.decide(None, True)))
            else:
                again.append((pos, a))
        again.sort(key=lambda pa: pa[0])
        return [a for _, a in again if not a.fut.done()]

