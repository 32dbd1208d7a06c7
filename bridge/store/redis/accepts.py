"""Accepts on their way to commit.lua: one call waiting for its batch, the node as the batch
leaves it, and the argument layout commit.lua reads (``CommitItem``)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bridge.decide import Decider, Decision, NodeRecord
from bridge.decide import Job as DecidedJob
from bridge.model import Event, to_us
from bridge.store.base import Acceptance, context_tail, encode_event, own_json

_DEDUP_GRACE_MS = 60_000
_MAX_PX = 10 * 365 * 86400 * 1000
_us = to_us


def next_due_us(record: NodeRecord | None) -> str:
    due = record.next_due if record is not None else None
    return str(_us(due)) if due is not None else ""


def incident_open(record: NodeRecord | None) -> str:
    return "1" if record is not None and record.incident_open else ""


def member(created_us: int, job_id: str) -> str:
    return f"{min(max(created_us, 0), 10**17 - 1):017d}:{job_id}"


# (id, member, receiver, event ts µs, context_tail(), not before µs or '', group tag or '')
Job = tuple[str, str, str, str, str, str, str]


def job_extras(job: DecidedJob) -> tuple[str, str]:
    """What add_job (lib.lua) takes after the context: not before (µs, '' = now) and group tag."""
    return (str(_us(job.not_before)) if job.not_before is not None else "",
            job.group.key if job.group is not None else "")


class CommitItem(NamedTuple):
    """One accept as commit.lua reads it: a JSON array of these fields, in this order (all text;
    a NamedTuple, so the C JSON encoder writes it as the array directly).

    ``now`` (unix s) and ``dedup_expires`` are the floats the dedup check compares, as ``repr``;
    ``expected_version`` is the node's version the decision was made on ('' = no record, '=' =
    the one this batch's previous item of the node left); ``record`` '' leaves the node as it is."""

    dedup_key: str
    now: str
    dedup_value: str  # "<expires> <event id>", what read.lua returns for a repeat
    dedup_expires: str
    dedup_px: str
    event_id: str
    event_json: str  # sent once: commit.lua wraps it into the event record and each job's context
    outcome: str
    received_us: str
    node_id: str
    expected_version: str
    record: str
    newest_us: str
    now_us: str
    jobs: tuple[Job, ...]
    next_due_us: str  # the new record's earliest timer ('' = none): the P timers index
    incident_open: str  # '1' while the new record has an open incident ('' = none): the P open index


class Accept:
    """One ``accept`` call waiting for its batch."""

    __slots__ = ("attempts", "decide", "dedup_px", "event", "expires", "fut", "now_ts", "now_us")

    def __init__(
        self, event: Event, decide: Decider, now: datetime, dedup_ttl: float, fut: asyncio.Future[Acceptance]
    ) -> None:
        self.event = event
        self.decide = decide
        self.fut = fut
        self.now_ts = now.timestamp()
        self.now_us = _us(now)
        self.expires = max(self.now_ts, event.timestamp.timestamp()) + dedup_ttl
        self.dedup_px = min(_MAX_PX, max(0, math.ceil((self.expires - self.now_ts) * 1000)) + _DEDUP_GRACE_MS)
        self.attempts = 0

    def commit_item(self, decision: Decision, sim: NodeSim) -> CommitItem:
        """The commit arguments for ``decision``; advances ``sim`` past it."""
        event = self.event
        ev_json = encode_event(event)
        prev = decision.previous
        jobs: tuple[Job, ...] = ()
        if decision.jobs:
            jobs = tuple(
                (j.id, member(self.now_us, j.id), j.receiver, str(_us(j.order)), context_tail(j, prev), *job_extras(j))
                for j in decision.jobs
            )
        new = decision.record
        version, sim.version = sim.version, "="
        if new is not None:
            sim.record = new
        return CommitItem(
            event.dedup_key, repr(self.now_ts), f"{self.expires!r} {event.id}", repr(self.expires),
            str(self.dedup_px), event.id, ev_json, decision.outcome,
            str(_us(event.received_at)), event.node_id, version, own_json(new.to_json()) if new is not None else "",
            str(_us(new.kept_from)) if new is not None else "0", str(self.now_us), jobs,
            next_due_us(new), incident_open(new),
        )  # fmt: skip


# Node records this process parsed or wrote, by node: (the JSON as stored, the record). Reading
# back the JSON a batch committed (the usual case: one replica owns most of a node's events) then
# costs a string comparison instead of a parse. Bounded: emptied when full.
Known = dict[str, tuple[str, NodeRecord]]
KNOWN_MAX = 20_000


def remember(known: Known, node_id: str, raw: str, record: NodeRecord) -> None:
    if node_id not in known and len(known) >= KNOWN_MAX:
        known.clear()  # a new node only: updates replace in place
    known[node_id] = (raw, record)


class NodeSim:
    """A node as read for a batch, advanced by each accept of the batch decided on it."""

    __slots__ = ("record", "version")

    def __init__(self, node_id: str, row: Sequence[Any], known: Known | None = None) -> None:
        raw, version = row  # HMGET record, version: None (or False) when the node has no record
        record = None
        if raw:
            hit = known.get(node_id) if known is not None else None
            if hit is not None and hit[0] == raw:
                record = hit[1]  # records are immutable: the one parsed (or written) before
            else:
                record = NodeRecord.from_json(node_id, json.loads(raw))
                if known is not None:
                    remember(known, node_id, raw, record)
        self.record = record
        self.version: str = version or ""
