"""In-process store for tests and quick trials. Not durable: a restart forgets everything."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from bridge.config import RetentionConfig
from bridge.model import (
    Alert,
    Delivery,
    DeliveryState,
    Event,
    NodeState,
    Silence,
    delivery_id,
    next_node_state,
)
from bridge.store.base import Acceptance, AcceptStatus, OutboxStats, Plan, select_deliveries


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._dedup: dict[str, tuple[str, float]] = {}  # key -> (event id, expires_at)
        self._events: dict[str, tuple[Event, str]] = {}  # id -> (event, outcome)
        self._nodes: dict[str, NodeState] = {}
        self._fired: dict[tuple[str, str, str], float] = {}
        self._jobs: dict[str, Delivery] = {}
        self._leases: dict[str, datetime] = {}
        self._silences: dict[str, Silence] = {}
        self._meta: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def accept(
        self,
        event: Event,
        plan: Plan,
        *,
        now: datetime,
        dedup_ttl: float,
        mode: Literal["notify", "stale", "silenced"] = "notify",
    ) -> Acceptance:
        now_ts = now.timestamp()
        found = self._dedup.get(event.dedup_key)
        if found is not None and found[1] > now_ts:
            return Acceptance("duplicate", found[0])
        expires = max(now_ts, event.timestamp.timestamp()) + dedup_ttl
        prev = None if mode == "stale" else self._nodes.get(event.node_id)
        outcome: AcceptStatus = "stale" if mode == "stale" else "silenced" if mode == "silenced" else "accepted"
        if prev is not None and mode != "stale" and event.timestamp < prev.last_timestamp:
            outcome = "out_of_order"
        # Like a transaction: plan() may raise, and then nothing of this event is recorded.
        matches = plan(prev) if outcome == "accepted" else ()
        self._dedup[event.dedup_key] = (event.id, expires)
        if outcome in ("stale", "out_of_order"):
            self._events[event.id] = (event, outcome)
            return Acceptance(outcome, event.id, previous=prev)
        self._nodes[event.node_id] = next_node_state(prev, event)
        if outcome == "silenced":
            self._events[event.id] = (event, "silenced")
            return Acceptance("silenced", event.id, previous=prev)
        last = {
            m.route: self._fired[k]
            for m in matches
            if (k := (m.route, event.node_id, event.status)) in self._fired
        }
        pairs, fired = select_deliveries(matches, last, now_ts)
        for route in fired:
            self._fired[(route, event.node_id, event.status)] = now_ts
        ids = []
        for route, receiver in pairs:
            did = delivery_id(event.id, receiver)
            alert = Alert(
                event=event,
                route=route,
                receiver=receiver,
                delivery_id=did,
                previous_status=prev.status if prev else None,
                previous_since=prev.since if prev else None,
            )
            self._jobs[did] = Delivery(did, alert, "pending", 0, now, now, None, now)
            ids.append(did)
        self._events[event.id] = (event, "accepted")
        return Acceptance("accepted", event.id, tuple(ids), prev)

    def _due(self, job: Delivery, now: datetime) -> bool:
        if job.state == "pending":
            return job.next_attempt_at <= now
        if job.state == "inflight":
            return self._leases.get(job.id, now) <= now
        return False

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None
    ) -> list[Delivery]:
        async with self._lock:
            heads: dict[str, Delivery] = {}
            for job in self._jobs.values():
                if job.state not in ("pending", "inflight"):
                    continue
                if receivers is not None and job.receiver not in receivers:
                    continue
                key = job.order_key
                head = heads.get(key)
                if head is None or _order(job) < _order(head):
                    heads[key] = job
            due = sorted((j for j in heads.values() if self._due(j, now)), key=_order)[:limit]
            out = []
            for job in due:
                job.state = "inflight"
                job.attempts += 1
                job.updated_at = now
                self._leases[job.id] = now + timedelta(seconds=lease)
                out.append(replace(job))
            return out

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        self._finish(delivery_id, "done", now, None)

    async def reschedule(
        self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str
    ) -> None:
        job = self._jobs.get(delivery_id)
        if job is not None and job.state == "inflight":
            job.state = "pending"
            job.next_attempt_at = next_attempt_at
            job.last_error = error
            job.updated_at = now

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        self._finish(delivery_id, "dead", now, error)

    def _finish(self, delivery_id: str, state: DeliveryState, now: datetime, error: str | None) -> None:
        job = self._jobs.get(delivery_id)
        if job is not None and job.state in ("pending", "inflight"):
            job.state = state
            job.updated_at = now
            if error is not None:
                job.last_error = error
            self._leases.pop(delivery_id, None)

    async def bury_receiver(self, receiver: str, *, now: datetime, error: str) -> int:
        n = 0
        for job in self._jobs.values():
            if job.receiver == receiver and job.state in ("pending", "inflight"):
                self._finish(job.id, "dead", now, error)
                n += 1
        return n

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        job = self._jobs.get(delivery_id)
        return replace(job) if job else None

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 100
    ) -> list[Delivery]:
        jobs = [j for j in self._jobs.values() if state is None or j.state == state]
        return [replace(j) for j in sorted(jobs, key=lambda j: (j.created_at, j.id))[:limit]]

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int:
        targets = (
            [j for j in self._jobs.values() if j.state == "dead"]
            if ids is None
            else [self._jobs[i] for i in ids if i in self._jobs]
        )
        n = 0
        for job in targets:
            if job.state in ("dead", "pending"):
                job.state = "pending"
                job.next_attempt_at = now
                job.attempts = 0
                job.updated_at = now
                n += 1
        return n

    async def purge_dead(self) -> int:
        dead = [i for i, j in self._jobs.items() if j.state == "dead"]
        for i in dead:
            del self._jobs[i]
        return len(dead)

    async def stats(self, *, now: datetime) -> OutboxStats:
        counts = {s: 0 for s in ("pending", "inflight", "dead", "done")}
        oldest: datetime | None = None
        for job in self._jobs.values():
            counts[job.state] += 1
            if job.state in ("pending", "inflight") and (oldest is None or job.created_at < oldest):
                oldest = job.created_at
        age = (now - oldest).total_seconds() if oldest else 0.0
        return OutboxStats(counts["pending"], counts["inflight"], counts["dead"], counts["done"], age)

    async def prune(self, *, now: datetime, retention: RetentionConfig) -> int:
        now_ts = now.timestamp()
        removed = 0
        for key in [k for k, (_, exp) in self._dedup.items() if exp <= now_ts]:
            del self._dedup[key]
            removed += 1
        keep = {"done": retention.done, "dead": retention.dead}
        for jid in [
            i
            for i, j in self._jobs.items()
            if j.state in keep
            and j.updated_at is not None
            and (now - j.updated_at).total_seconds() >= keep[j.state]
        ]:
            del self._jobs[jid]
            removed += 1
        for eid in [
            i for i, (e, _) in self._events.items() if (now - e.received_at).total_seconds() >= retention.events
        ]:
            del self._events[eid]
            removed += 1
        return removed

    async def node_state(self, node_id: str) -> NodeState | None:
        return self._nodes.get(node_id)

    async def list_nodes(self) -> list[NodeState]:
        return list(self._nodes.values())

    async def add_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence

    async def list_silences(self, *, now: datetime, include_expired: bool = False) -> list[Silence]:
        return sorted(
            (s for s in self._silences.values() if include_expired or s.ends_at > now),
            key=lambda s: (s.starts_at, s.id),
        )

    async def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        s = self._silences.get(silence_id)
        if s is None or s.ends_at <= now:
            return False
        self._silences[silence_id] = replace(s, ends_at=now)
        return True

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value


def _order(job: Delivery) -> tuple[datetime, datetime, str]:
    return (job.alert.event.timestamp, job.created_at, job.id)
