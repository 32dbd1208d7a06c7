"""A store of each backend for tests: memory (the reference), sqlite, redis (a real redis-server)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.decide import Policy
from bridge.incident_state import Policy as IncidentPolicy
from bridge.incident_state import RoutePolicy
from bridge.model import Event, NodeState, RouteMatch
from bridge.store.base import Store
from bridge.store.memory import MemoryStore

BACKENDS = ["memory", "sqlite", "redis"]
T0 = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)
TTL = 3600.0  # the dedup ttl the tests accept with
SKEW = 300.0
STALE_AGE = 1e6
# Routing given the node's previous state: the store tests fix the routes and check what is stored.
Plan = Callable[[NodeState | None], Sequence[RouteMatch]]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(node: str = "n1", status: str = "FAILED", t: float = 0.0, **details: Any) -> Event:
    return Event("NODE_STATUS_UPDATED", at(t), node, status, details=details, received_at=at(t))


def plan_to(*receivers: str, route: str = "r", repeat: float = 0.0) -> Plan:
    def plan(prev: NodeState | None) -> list[RouteMatch]:
        return [RouteMatch(route, receivers, repeat)]

    return plan


def with_incidents(plan: Plan, *routes: RoutePolicy) -> Policy:
    return Policy(lambda e, prev: plan(prev), (), STALE_AGE, SKEW, IncidentPolicy(routes={r.name: r for r in routes}))


async def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Store:
    """An opened store; stores of one backend opened with the same ``tmp_path`` and ``prefix`` share their
    data (Redis: one prefix = one deployment). Redis needs the ``redis_server`` fixture."""
    store: Store
    if backend == "memory":
        store = MemoryStore()
    elif backend == "sqlite":
        from bridge.store.sqlite import SQLiteStore  # imported late: a sibling module

        store = SQLiteStore(tmp_path / "b.db")
    else:
        from bridge.store.redis import RedisStore

        server = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, prefix=prefix)
    await store.open()
    return store
