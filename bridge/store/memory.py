"""In-process store for tests and quick trials. Not durable: a restart forgets everything."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bridge.config import RetentionConfig
from bridge.decide import Apply, Decider, Decision, NodeRecord
from bridge.model import Delivery, DeliveryState, Event, NodeState, Silence
from bridge.store.base import Acceptance, OutboxStats, job_alert


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._dedup: dict[str, tuple[str, float]] = {}  # key -> (event id, expires_at)
        self._events: dict[str, tuple[Event, str]] = {}  # id -> (event, outcome)
        self._nodes: dict[str, NodeRecord] = {}
        self._next_due: dict[str, datetime] = {}  # node -> its record's next_due (the timer index)
        self._open: set[str] = set()  # nodes whose record has an open incident (the gauge's index)
        self._jobs: dict[str, Delivery] = {}
        self._places: dict[str, tuple[datetime, datetime, str]] = {}  # job id -> its place (Job.order first)
        self._leases: dict[str, datetime] = {}
        self._silences: dict[str, Silence] = {}
        self._meta: dict[str, str] = {}
        self._conversations: dict[tuple[str, str], tuple[dict[str, str], float]] = {}  # -> (ref, expires_at)
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def accept(self, event: Event, decide: Decider, *, now: datetime, dedup_ttl: float) -> Acceptance:
        # No await between the read and the writes: atomic on the event loop.
        now_ts = now.timestamp()
        found = self._dedup.get(event.dedup_key)
        record = self._nodes.get(event.node_id)
        decision = decide(record, found is not None and found[1] > now_ts)
        if decision.outcome == "duplicate":
            return Acceptance("duplicate", found[0] if found is not None else event.id)
        self._dedup[event.dedup_key] = (event.id, max(now_ts, event.timestamp.timestamp()) + dedup_ttl)
        self._events[event.id] = (event, decision.outcome)
        self._write(event, decision, now)
        return Acceptance.of(event, decision)

    def _write(self, event: Event | None, decision: Decision, now: datetime) -> None:
        new = decision.record
        if new is not None:
            self._nodes[new.node_id] = new
            due = new.next_due
            if due is None:
                self._next_due.pop(new.node_id, None)
            else:
                self._next_due[new.node_id] = due
            if new.incident_open:
                self._open.add(new.node_id)
            else:
                self._open.discard(new.node_id)
        for job in decision.jobs:
            shown = job.event or event
            assert shown is not None, "a job decided outside accept carries its event"
            alert = job_alert(shown, job, decision.previous)
            self._jobs[job.id] = Delivery(job.id, alert, "pending", 0, now, job.not_before or now, None, now)
            self._places[job.id] = (job.order, now, job.id)

    async def apply(self, node_id: str, decide: Apply, *, now: datetime) -> Decision:
        # No await between the read and the writes: atomic on the event loop.
        decision = decide(self._nodes.get(node_id))
        self._write(None, decision, now)
        return decision

    async def due_nodes(self, *, now: datetime, limit: int) -> list[str]:
        due = sorted((t, n) for n, t in self._next_due.items() if t <= now)
        return [n for _, n in due[:limit]]

    async def list_nodes(self) -> list[NodeRecord]:
        return [self._nodes[n] for n in sorted(self._nodes)]

    def _due(self, job: Delivery, now: datetime) -> bool:
        if job.state == "pending":
            return job.next_attempt_at <= now
        if job.state == "inflight":
            return self._leases.get(job.id, now) <= now
        return False

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None,
        group_limit: int = 0,
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
                if head is None or self._place(job) < self._place(head):
                    heads[key] = job
            due = sorted((j for j in heads.values() if self._due(j, now)), key=self._place)[:limit]
            out: list[Delivery] = []
            taken: set[str] = set()
            for job in due:
                if job.id in taken:  # already taken as a group mate
                    continue
                group = [job]
                tag = job.alert.group
                if group_limit > 0 and tag is not None:
                    mates = sorted((j for j in heads.values() if j.id != job.id and j.id not in taken
                                    and j.receiver == job.receiver and j.alert.group is not None
                                    and j.alert.group.key == tag.key
                                    and (j.state == "pending" or self._due(j, now))), key=self._place)
                    group += mates[:group_limit]
                for j in group:
                    taken.add(j.id)
                    j.state = "inflight"
                    j.attempts += 1
                    j.updated_at = now
                    self._leases[j.id] = now + timedelta(seconds=lease)
                    out.append(replace(j))
            return out

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        self._finish(delivery_id, "done", now, None)

    async def complete_many(self, delivery_ids: Sequence[str], *, now: datetime) -> None:
        for delivery_id in delivery_ids:
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
            del self._jobs[i], self._places[i]
        return len(dead)

    async def stats(self, *, now: datetime) -> OutboxStats:
        counts = {s: 0 for s in ("pending", "inflight", "dead", "done")}
        oldest: datetime | None = None
        for job in self._jobs.values():
            counts[job.state] += 1
            if job.state in ("pending", "inflight") and (oldest is None or job.created_at < oldest):
                oldest = job.created_at
        age = (now - oldest).total_seconds() if oldest else 0.0
        return OutboxStats(counts["pending"], counts["inflight"], counts["dead"], counts["done"], age,
                           len(self._open))

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
            del self._jobs[jid], self._places[jid]
            removed += 1
        for eid in [
            i for i, (e, _) in self._events.items() if (now - e.received_at).total_seconds() >= retention.events
        ]:
            del self._events[eid]
            removed += 1
        for node_id in [
            n for n, r in self._nodes.items()
            if (now - r.kept_from).total_seconds() >= retention.events and n not in self._next_due
        ]:
            del self._nodes[node_id]
            self._open.discard(node_id)
        for conv in [k for k, (_, exp) in self._conversations.items() if exp <= now_ts]:
            del self._conversations[conv]
        return removed

    async def node_state(self, node_id: str) -> NodeState | None:
        record = self._nodes.get(node_id)
        return record.state if record is not None else None

    async def forget_node(self, node_id: str) -> bool:
        self._next_due.pop(node_id, None)
        self._open.discard(node_id)
        return self._nodes.pop(node_id, None) is not None

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

    async def get_conversation(self, receiver: str, key: str, *, now: datetime) -> dict[str, str] | None:
        found = self._conversations.get((receiver, key))
        return dict(found[0]) if found is not None and found[1] > now.timestamp() else None

    async def record_conversation(
        self, receiver: str, key: str, ref: Mapping[str, str], *, now: datetime, ttl: float
    ) -> None:
        self._conversations[(receiver, key)] = (dict(ref), now.timestamp() + ttl)

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def _place(self, job: Delivery) -> tuple[datetime, datetime, str]:
        return self._places[job.id]
