"""The SQLite backend: the outbox (store.py) on the group-commit engine (groupcommit.py)."""

from bridge.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
