"""A store of each backend for tests: memory (the reference), sqlite, redis (a real redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.store.base import Store
from bridge.store.memory import MemoryStore

BACKENDS = ["memory", "sqlite", "redis"]


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
