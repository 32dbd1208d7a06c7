"""Pure: what would happen to node X with status Y under a config (``route`` and the console ask)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.decide import Job, NodeRecord, decide
from bridge.ingest import Rules
from bridge.model import Event, NodeState
from bridge.routing import explain


def route_answer(rules: Rules, node: str, status: str, *, now: datetime, previous_status: str | None = None,
                 event_type: str = "NODE_STATUS_UPDATED", record: NodeRecord | None = None) -> dict[str, Any]:
    """Which routes match (with reasons), who is notified with which kind, which timers would be set;
    ``refused`` when the allow-list says 403.

    Decided as the bridge would on a node with that previous status and no open incident, or, given
    the node's stored ``record`` (``route`` asks the running bridge for it), on its status and its
    open incident: then a RUNNING reads as the resolution."""
    refused = rules.nodes is not None and node not in rules.nodes
    event = Event(event_type, now, node, status, {"nodeId": node, "status": status},
                  rules.labeler.labels_for(node), now)
    if record is not None:
        # The stored state as of now: the what-if event comes after the node's newest one.
        stored = replace(record.state, last_timestamp=min(record.state.last_timestamp, now))
        record = replace(record, state=stored)
        prev: NodeState | None = stored
        previous_status = stored.status
    else:
        prev = NodeState(node, previous_status, now, now, "evt_prev") if previous_status else None
        record = NodeRecord(prev) if prev else None
    steps = explain(rules.router, event, prev)
    decision = None if refused else decide(event, record, rules.policy(()), now)
    jobs = decision.jobs if decision else ()
    pending = {t.id for t in record.incidents.timers} if record is not None else set()
    timers = [t for t in decision.record.incidents.timers if t.id not in pending] \
        if decision and decision.record else []  # the timers this event would set
    return {
        "node": node, "status": status, "previous_status": previous_status,
        "refused": f"node {node!r} is not in nodes: the bridge would refuse it with 403" if refused else None,
        "labels": dict(event.labels),
        "routes": [{"route": name, "matched": matched, "reason": why} for name, matched, why in steps],
        "notified": [{"receiver": j.receiver, "route": j.route, "kind": j.kind, **_grouped(j, now)} for j in jobs],
        "timers": [{"route": t.route, "kind": t.kind, "after": (t.due_at - now).total_seconds()} for t in timers],
    }


def _grouped(job: Job, now: datetime) -> dict[str, Any]:
    """A firing held for its route's group_wait: sent with its group as one digest (fleet digests)."""
    if job.group is None or job.not_before is None:
        return {}
    return {"digest": {"after": (job.not_before - now).total_seconds(), "group_by": dict(job.group.labels)}}
