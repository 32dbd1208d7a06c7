"""Operator actions on incidents and nodes, over any Store: what the admin API and the CLI share.

Incident ids are hashes (``inc_...``): the node is found by scanning the node records (bounded by
the known nodes; these are operator actions, not the request path). Ack and resolve go through
``Store.apply`` with ``decide.decide_ack``/``decide_resolve``, so they commit atomically with the
version check, and a replica's timer racing with them either sees them or is decided again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.decide import Decision, NodeRecord, Policy, decide_ack, decide_resolve
from bridge.frozen import frozen
from bridge.incident_state import Incident
from bridge.model import format_timestamp
from bridge.store import Store


@frozen
class Outcome:
    status: str  # "acked", "resolved", "already_acked", "not_found"
    incident: dict[str, Any] | None = None
    decision: Decision | None = None


def node_view(rec: NodeRecord, now: datetime) -> dict[str, Any]:
    s, inc = rec.state, rec.incidents.incident
    return {"node": s.node_id, "status": s.status, "since": format_timestamp(s.since),
            "newest": format_timestamp(s.last_timestamp),
            "incident": inc.view(now) if inc is not None else None,
            "timers": [{"kind": t.kind, "route": t.route, "due_at": format_timestamp(t.due_at)}
                       for t in rec.incidents.timers]}


def select(records: Sequence[NodeRecord], *, include_resolved: bool = False) -> list[Incident]:
    """Open incidents, by opening time; with ``include_resolved`` also each node's last resolved one."""
    found: list[Incident] = []
    for rec in records:
        if rec.incidents.incident is not None:
            found.append(rec.incidents.incident)
        if include_resolved and rec.incidents.last_resolved is not None:
            found.append(rec.incidents.last_resolved)
    return sorted(found, key=lambda i: (i.opened_at, i.id))


def incidents(records: Sequence[NodeRecord], now: datetime, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    """``select``'s incidents as the admin API shows them."""
    return [i.view(now) for i in select(records, include_resolved=include_resolved)]


def find(records: Sequence[NodeRecord], incident_id: str) -> tuple[NodeRecord, Incident] | None:
    for rec in records:
        for inc in (rec.incidents.incident, rec.incidents.last_resolved):
            if inc is not None and inc.id == incident_id:
                return rec, inc
    return None


async def ack(store: Store, incident_id: str, *, by: str, now: datetime) -> Outcome:
    hit = find(await store.list_nodes(), incident_id)
    if hit is None or not hit[1].is_open:
        return Outcome("not_found")
    node = hit[0].node_id
    d = await store.apply(node, lambda rec: decide_ack(rec, incident_id, by=by, now=now), now=now)
    return _outcome(d, "acked", incident_id, now)


async def resolve(store: Store, incident_id: str, policy: Policy, *, by: str, now: datetime) -> Outcome:
    hit = find(await store.list_nodes(), incident_id)
    if hit is None or not hit[1].is_open:
        return Outcome("not_found")
    node = hit[0].node_id
    d = await store.apply(node, lambda rec: decide_resolve(rec, incident_id, policy, by=by, now=now), now=now)
    return _outcome(d, "resolved", incident_id, now)


def _outcome(d: Decision, done: str, incident_id: str, now: datetime) -> Outcome:
    if d.outcome == "not_found":
        return Outcome("not_found", decision=d)
    if d.record is None:
        return Outcome("already_acked", decision=d)
    hit = find([d.record], incident_id)
    return Outcome(done, hit[1].view(now) if hit else None, d)
