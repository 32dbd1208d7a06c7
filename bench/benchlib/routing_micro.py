"""Routing cost, in process: time of ``router.match(event, prev)`` with 1, 100 and 1,000 routes.

    python -m benchlib.routing_micro NODES REPEATS SIZE [SIZE ...]     (prints one JSON line)

10,000 configured nodes carry labels; routes mix the matchers operators write (label + status,
explicit node ids, node globs, event type + previous status + label), none with ``stop`` so every
route is considered: the worst case for a linear scan, the case compiling the rules should fix.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchlib.events import node_id

STATUSES = ("RUNNING", "STARTING", "PAUSED", "FAILED", "IN_PROGRESS")
TEAMS, REGIONS = 50, 8


def node_labels(n: int) -> dict[str, str]:
    return {"team": f"team-{n % TEAMS}", "region": f"r{n % REGIONS}", "tier": ("gold", "silver")[n % 2]}


def route(i: int, nodes: int) -> dict[str, Any]:
    kind = i % 4
    if kind == 0:
        match: dict[str, Any] = {"labels": {"team": f"team-{i % TEAMS}"}, "status": ["FAILED"]}
    elif kind == 1:
        match = {"node": [node_id((i * 7 + j * 131) % nodes) for j in range(5)]}
    elif kind == 2:
        match = {"node": f"{node_id(i % nodes)[:20]}*", "status": ["FAILED", "PAUSED"]}
    else:
        match = {
            "event_type": "NODE_STATUS_UPDATED",
            "previous_status": ["RUNNING"],
            "labels": {"region": f"r{i % REGIONS}"},
        }
    return {"name": f"route-{i}", "match": match, "to": ["log"]}


def config_data(n_routes: int, nodes: int) -> dict[str, Any]:
    return {
        "verification": {"public_key": "unused by routing"},
        "nodes": {node_id(n): {"labels": node_labels(n)} for n in range(nodes)},
        "receivers": {"log": {"type": "log"}},
        "routes": [route(i, nodes) for i in range(n_routes)],
        "default_to": ["log"],
    }


def sample_events(nodes: int, count: int = 2_000) -> list[tuple[Any, Any]]:
    from bridge.model import Event, NodeState

    rng = random.Random(6)
    now = datetime.now(UTC)
    out = []
    for k in range(count):
        n = rng.randrange(nodes)
        nid, ts = node_id(n), now - timedelta(seconds=count - k)
        event = Event(
            "NODE_STATUS_UPDATED", ts, nid, rng.choice(STATUSES), details={"nodeId": nid}, labels=node_labels(n)
        )
        prev = (
            None
            if k % 5 == 0
            else NodeState(nid, rng.choice(STATUSES), ts - timedelta(minutes=5), ts - timedelta(minutes=1), "evt_prev")
        )
        out.append((event, prev))
    return out


def measure(n_routes: int, nodes: int, repeats: int, events: list[tuple[Any, Any]]) -> dict[str, Any]:
    from bridge.config import parse
    from bridge.routing import compile_routes

    cfg = parse(config_data(n_routes, nodes), env={})
    t0 = time.perf_counter()
    router = compile_routes(cfg)
    compile_s = time.perf_counter() - t0
    matches = sum(len(router.match(e, p)) for e, p in events)  # warm-up, and a sanity figure
    # Calibrate: loop the sample until one repeat takes >= 0.2 s, so timer noise does not matter.
    loops, elapsed = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            for e, p in events:
                router.match(e, p)
        elapsed = time.perf_counter() - t0
        if elapsed >= 0.2 or loops >= 1_000:
            break
        loops *= 2
    per_event = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            for e, p in events:
                router.match(e, p)
        per_event.append((time.perf_counter() - t0) / (loops * len(events)))
    return {
        "routes": n_routes,
        "us_per_event": statistics.median(per_event) * 1e6,
        "us_min": min(per_event) * 1e6,
        "us_max": max(per_event) * 1e6,
        "compile_ms": compile_s * 1000,
        "matches_per_event": matches / len(events),
        "events_timed": loops * len(events) * repeats,
    }


def main() -> None:
    nodes, repeats, sizes = int(sys.argv[1]), int(sys.argv[2]), [int(a) for a in sys.argv[3:]]
    events = sample_events(nodes)
    print(json.dumps({"nodes": nodes, "sizes": [measure(n, nodes, repeats, events) for n in sizes]}))


if __name__ == "__main__":
    main()
