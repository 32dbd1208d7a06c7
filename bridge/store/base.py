"""The Store contract: every backend (memory, sqlite, redis) passes the same tests.

``accept`` is the outbox's one transaction: dedup record, event, node record and the delivery
jobs that ``bridge.decide`` chose commit together, so a 200 answered after it means nothing is
lost. Stores only persist: they never route, match silences or compare event times.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

import orjson

from bridge.config import RetentionConfig
from bridge.decide import Apply, Decider, Decision, Job, NodeRecord, Outcome
from bridge.frozen import frozen
from bridge.model import Alert, Delivery, DeliveryState, Event, NodeState, Silence, context_fields
from bridge.render import ORJSON_STRICT

AcceptStatus = Outcome


@frozen
class Acceptance:
    status: AcceptStatus
    event_id: str
    deliveries: tuple[str, ...] = ()  # ids of the jobs created
    previous: NodeState | None = None
    silenced_by: str | None = None
    next_due: datetime | None = None  # the node's earliest timer after the commit (wakes the timer loop)
    resolved: tuple[float, ...] = ()  # durations of incidents resolved (metrics)
    handed_off: int = 0  # of ``deliveries``, how many went to the dispatcher claimed (Handoff)

    @classmethod
    def of(cls, event: Event, decision: Decision, handed_off: int = 0) -> Acceptance:
        """What ``accept`` answers once ``decision`` is committed."""
        jobs, record = decision.jobs, decision.record
        ids = tuple([j.id for j in jobs]) if jobs else ()
        due = record.next_due if record is not None else None
        return cls(decision.outcome, event.id, ids, decision.previous, decision.silenced_by, due, decision.resolved,
                   handed_off)


@frozen
class OutboxStats:
    pending: int
    inflight: int
    dead: int
    done: int
    oldest_pending_age: float  # seconds; 0 when nothing is pending
    incidents_open: int = 0  # nodes whose record has an open incident (an index the store keeps)


class Handoff(Protocol):
    """The dispatcher's side of claiming in the accept's own transaction (SQLite only: see
    bench/README.md, "End-to-end latency"). A new job that is its order key's head, due now and
    ungrouped may be written in flight, its lease running, when ``reserve`` grants it a place (a
    free send slot, or the queue a claim would have put it in); once that commits it goes to
    ``take``, else the place goes back with ``release``. All are called on the loop, within one
    batch's flush (a batch run again after a rollback releases first), so nothing runs between a
    reserve and its take."""

    def reserve(self, receiver: str) -> float | None:
        """The lease for one new job of ``receiver`` the dispatcher can take now, or None."""
        ...

    def release(self, receiver: str) -> None: ...

    def unclaimed(self, receiver: str) -> None:
        """A job of ``receiver`` that is due now was written without being handed off (it waits to
        be claimed): no later new job may be queued ahead of it."""
        ...

    def take(self, job: Delivery, lease: float) -> None:
        """``job`` is committed in flight with ``lease`` seconds: send it."""
        ...


class ConversationLog(Protocol):
    """What a receiver needs to continue the conversation about one incident: per (receiver, key)
    the reference its first message got (Slack: the root's channel id and ts). Alertmanager's
    notification log idea: it only records; what a reference means is the receiver's business.

    ``key`` is an incident id; a message several incidents share (a digest) is recorded once per
    member incident under the same reference. Recording again replaces the reference and its
    expiry. Shared by every replica of a store; ``prune`` drops a record once it expired."""

    async def get_conversation(self, receiver: str, key: str, *, now: datetime) -> dict[str, str] | None:
        """The reference recorded last, or None (never recorded, or expired at ``now``)."""
        ...

    async def record_conversation(
        self, receiver: str, key: str, ref: Mapping[str, str], *, now: datetime, ttl: float
    ) -> None:
        """Record ``ref`` (replacing any), kept until ``now + ttl`` seconds."""
        ...


class Store(ConversationLog, Protocol):
    """Storage for dedup records, events, node state, delivery jobs, silences, metadata and the
    conversation log."""

    durable: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageUnavailable when the store cannot be written."""

    async def accept(self, event: Event, decide: Decider, *, now: datetime, dedup_ttl: float) -> Acceptance:
        """Record ``event`` once, as ``decide`` says. Exactly one of many concurrent identical calls
        is decided on a dedup key that was not live.

        Reads the node's record and whether the event's dedup key is live, calls
        ``decide(record, duplicate)`` and, unless it answers 'duplicate', writes atomically: the
        dedup record (live until max(now, event time) + dedup_ttl), the event with its outcome, the
        node's new record (if any) and the decision's jobs, checking that the node's record is still
        the one decided on (else reading and deciding again). ``decide`` must be pure: it may be
        called more than once for one event. If it raises, nothing of the event is recorded."""
        ...

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None,
        group_limit: int = 0,
    ) -> list[Delivery]:
        """Take due jobs, oldest first, at most one in flight per (receiver, node), in event order.

        ``receivers``: only jobs for these receivers (the dispatcher asks per receiver with free
        capacity, so a slow receiver's jobs are not claimed only to wait in memory).

        ``group_limit`` > 0: with each claimed job that carries a group tag (``Alert.group.key``),
        also take, in the same atomic step, up to that many other jobs of the same receiver and tag
        that are heads of their order keys and pending (whatever their due time) or in flight past
        their lease; they follow it in the answer. The tag is opaque here: the dispatcher sends such
        jobs as one digest (bridge/grouping.py), and two replicas never split one group's jobs.

        A job stays 'inflight' until complete/reschedule/bury or until ``lease`` seconds pass (its
        worker died), when it is due again."""
        ...

    async def complete(self, delivery_id: str, *, now: datetime) -> None: ...

    async def complete_many(self, delivery_ids: Sequence[str], *, now: datetime) -> None:
        """``complete`` for each of ``delivery_ids`` (sends that ended together), in one store
        transaction or round trip where the store can."""
        ...

    async def reschedule(
        self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str
    ) -> None: ...

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        """Mark dead: attempts exhausted or permanent failure."""

    async def bury_receiver(self, receiver: str, *, now: datetime, error: str) -> int:
        """Every unfinished job for ``receiver`` goes dead (a reload removed it)."""
        ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 100
    ) -> list[Delivery]: ...

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int:
        """Dead (or pending) jobs become due now; ``None`` means every dead job."""
        ...

    async def purge_dead(self) -> int: ...

    async def stats(self, *, now: datetime) -> OutboxStats: ...

    async def prune(self, *, now: datetime, retention: RetentionConfig) -> int:
        """Drop expired dedup records, old events, done and dead jobs, expired conversation records,
        and the records of nodes whose newest event is older than the events' retention (jobs carry
        their own context, so none needs them). Returns the dedup records, events and jobs removed
        (node and conversation records uncounted)."""
        ...

    async def node_state(self, node_id: str) -> NodeState | None: ...

    async def list_nodes(self) -> list[NodeRecord]:
        """Every node record the store holds (bounded by the known nodes), by node id."""
        ...

    async def due_nodes(self, *, now: datetime, limit: int) -> list[str]:
        """Nodes whose record has a timer due at ``now`` (earliest first, at most ``limit``): each
        store indexes the record's ``next_due``, written atomically with the record."""
        ...

    async def apply(self, node_id: str, decide: Apply, *, now: datetime) -> Decision:
        """Read the node's record, call ``decide(record)`` and write its record and jobs atomically,
        checking (as ``accept`` does) that the record is still the one decided on, else reading and
        deciding again. No dedup or event record. Returns the decision committed (``record`` None:
        nothing written). ``decide`` must be pure: it may be called more than once."""
        ...

    async def forget_node(self, node_id: str) -> bool:
        """Reset a node: drop its record (state, repeat times); its events and dedup records stay.
        True if there was one."""
        ...

    async def add_silence(self, silence: Silence) -> None: ...

    async def list_silences(self, *, now: datetime, include_expired: bool = False) -> list[Silence]: ...

    async def expire_silence(self, silence_id: str, *, now: datetime) -> bool: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


def _unserialisable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder JSONEncoder(separators=(",", ":")).encode builds on every call, built once (a few
# are made per accept): the same text, without the per-call set-up and without the check for
# circular references (what the stores write is built fresh from plain data).
_compact = json.encoder.c_make_encoder(  # type: ignore[attr-defined]  # CPython's _json
    None, _unserialisable, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
)


def compact_json(value: object) -> str:
    """Compact JSON, as stored in every backend (no spaces to store or parse). ASCII-only: a body may
    carry a lone surrogate ("\\ud800"), which has no UTF-8 form to store."""
    return "".join(_compact(value, 0))


def own_json(value: object) -> str:
    """Compact JSON of what the bridge builds from its own data (node records, job contexts), with
    orjson, which costs far less than json's C encoder here (bench/README.md). Not for a
    body's values: orjson writes NaN and infinities as null where json keeps them. Non-ASCII text
    stays UTF-8; anything orjson refuses (a lone surrogate, an integer past 64 bits) is written
    by :func:`compact_json`."""
    try:
        return orjson.dumps(value, option=ORJSON_STRICT).decode()
    except TypeError:
        return compact_json(value)


def read_context(text: str) -> dict[str, Any]:
    """A job's stored context (``job_context`` wrote it), as json reads it. orjson parses it first,
    at a fraction of json's cost, and its result stands when every number in it is the bridge's own:
    the event's details are all text, and there is no group or digest (their labels may be values
    of a body). A number from a body may be an integer past 64 bits, which orjson 3.8 reads as a
    float; that, and whatever orjson refuses (NaN, infinities, a lone surrogate's escape), json reads."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return cast(dict[str, Any], json.loads(text))
    event = data.get("event") if type(data) is dict else None
    if (type(event) is dict and "group" not in data and "digest" not in data
            and all(type(v) is str for v in (event.get("details") or {}).values())):
        return cast(dict[str, Any], data)
    return cast(dict[str, Any], json.loads(text))


def encode_event(event: Event) -> str:
    """The stored JSON of an accepted event. ``details`` of strings only (the documented shape):
    :func:`own_json`; any other value (a float may be NaN or infinite): :func:`compact_json`."""
    doc = event.to_dict()
    if all(type(v) is str for v in event.details.values()):
        return own_json(doc)
    return compact_json(doc)


def job_context(event_json: str, job: Job, previous: NodeState | None) -> str:
    """``Alert.context()`` as JSON, around the event's JSON encoded once for all of its jobs
    (a job with its own ``event`` uses that one)."""
    if job.event is not None:
        event_json = encode_event(job.event)
    return f'{{"event":{event_json},{context_tail(job, previous)}'


def context_tail(job: Job, previous: NodeState | None) -> str:
    """The job context's JSON after ``{"event":<event>,`` (commit.lua joins the two the same way):
    every backend writes route, receiver, previous state, kind and incident through here."""
    fields = context_fields(job.route, job.receiver, previous.status if previous else None,
                            previous.since if previous else None)
    fields["kind"] = job.kind
    fields["incident"] = job.incident.to_dict() if job.incident else None
    if job.facts:
        fields["facts"] = dict(job.facts)
    if job.group is not None:
        fields["group"] = job.group.to_dict()
    return own_json(fields)[1:]


def job_alert(event: Event, job: Job, previous: NodeState | None) -> Alert:
    """The alert a job carries, as the stores that keep objects (memory) build it."""
    return Alert(job.event or event, job.route, job.receiver, job.id, previous.status if previous else None,
                 previous.since if previous else None, job.kind, job.incident, job.facts, job.group)
