"""Pure: what would happen to node X with status Y under a config (``route`` and the console ask)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.decide import select_deliveries
from bridge.ingest import Rules
from bridge.model import Event, NodeState
from bridge.routing import explain


def route_answer(rules: Rules, node: str, status: str, *, now: datetime, previous_status: str | None = None,
                 event_type: str = "NODE_STATUS_UPDATED") -> dict[str, Any]:
    """Which routes match (with reasons) and who is notified; ``refused`` when the allow-list says 403.

    Repeat intervals are not consulted (nothing has fired yet in this question)."""
    refused = rules.nodes is not None and node not in rules.nodes
    event = Event(event_type, now, node, status, {"nodeId": node, "status": status},
                  rules.labeler.labels_for(node), now)
    prev = NodeState(node, previous_status, now, now, "evt_prev") if previous_status else None
    steps = explain(rules.router, event, prev)
    pairs = [] if refused else select_deliveries(rules.router.match(event, prev), {}, now.timestamp())[0]
    return {
        "node": node, "status": status, "previous_status": previous_status,
        "refused": f"node {node!r} is not in nodes: the bridge would refuse it with 403" if refused else None,
        "labels": dict(event.labels),
        "routes": [{"route": name, "matched": matched, "reason": why} for name, matched, why in steps],
        "notified": [{"receiver": rcv, "route": route} for route, rcv in pairs],
    }
