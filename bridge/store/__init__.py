"""Storage backends behind one contract (``Store``), chosen by ``storage.url``."""

from __future__ import annotations

from pathlib import Path

from bridge.store.base import Acceptance, OutboxStats, Store

__all__ = ["Acceptance", "OutboxStats", "Store", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> Path:
    """sqlite:///var/lib/x.db → /var/lib/x.db; sqlite://data/x.db → data/x.db (relative)."""
    return Path(url[len("sqlite://") :])


def open_store(url: str) -> Store:
    """The store for a ``storage.url`` (not yet opened)."""
    if url.startswith("memory://"):
        from bridge.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite://"):
        from bridge.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if url.startswith(("redis://", "rediss://")):
        from bridge.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported storage url scheme: {url.split(':', 1)[0]}")
