"""Pure: what would happen to node X with status Y under a config (``route`` and the console ask)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.decide import NodeRecord, decide
from bridge.ingest import Rules
from bridge.model import Event, NodeState
from bridge.routing import explain


def route_answer(rules: Rules, node: str, status: str, *, now: datetime, previous_status: str | None = None,
                 event_type: str = "NODE_STATUS_UPDATED") -> dict[str, Any]:
    """Which routes match (with reasons), who is notified with which kind, which timers would be set;
    ``refused`` when the allow-list says 403.

    Decided as the bridge would on a node with that previous status and no open incident (the stored
    incident is not read: this works without the store and the running bridge)."""
    refused = rules.nodes is not None and node not in rules.nodes
    event = Event(event_type, now, node, status, {"nodeId": node, "status": status},
                  rules.labeler.labels_for(node), now)
    prev = NodeState(node, previous_status, now, now, "evt_prev") if previous_status else None
    steps = explain(rules.router, event, prev)
    decision = None if refused else decide(event, NodeRecord(prev) if prev else None, rules.policy(()), now)
    jobs = decision.jobs if decision else ()
    timers = decision.record.incidents.timers if decision and decision.record else ()
    return {
        "node": node, "status": status, "previous_status": previous_status,
        "refused": f"node {node!r} is not in nodes: the bridge would refuse it with 403" if refused else None,
        "labels": dict(event.labels),
        "routes": [{"route": name, "matched": matched, "reason": why} for name, matched, why in steps],
        "notified": [{"receiver": j.receiver, "route": j.route, "kind": j.kind} for j in jobs],
        "timers": [{"route": t.route, "kind": t.kind, "after": (t.due_at - now).total_seconds()} for t in timers],
    }
