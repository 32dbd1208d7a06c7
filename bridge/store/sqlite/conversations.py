"""The conversation log (``bridge.store.base.ConversationLog``) on the SQLite file: one row per
(receiver, key), written through the store's group commit like everything else."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from bridge.store.base import compact_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (receiver TEXT NOT NULL, key TEXT NOT NULL, ref TEXT NOT NULL,
  expires_at REAL NOT NULL, PRIMARY KEY (receiver, key));
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations(expires_at);
"""
# Run by prune in chunks (the store's _chunked): expired records, uncounted.
PRUNE = ("DELETE FROM conversations WHERE rowid IN (SELECT rowid FROM conversations WHERE expires_at <= ? "
         "LIMIT ?)")


class SQLiteConversations:
    """Mixed into SQLiteStore, which provides ``_run`` (the write batch of this loop iteration)."""

    _run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

    async def get_conversation(self, receiver: str, key: str, *, now: datetime) -> dict[str, str] | None:
        def op(c: sqlite3.Connection) -> dict[str, str] | None:
            row = c.execute("SELECT ref FROM conversations WHERE receiver = ? AND key = ? AND expires_at > ?",
                            (receiver, key, now.timestamp())).fetchone()
            return dict(json.loads(row[0])) if row else None

        found: dict[str, str] | None = await self._run(op)
        return found

    async def record_conversation(
        self, receiver: str, key: str, ref: Mapping[str, str], *, now: datetime, ttl: float
    ) -> None:
        row = (receiver, key, compact_json(dict(ref)), now.timestamp() + ttl)
        await self._run(lambda c: c.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?) ON CONFLICT(receiver, key) DO UPDATE SET "
            "ref = excluded.ref, expires_at = excluded.expires_at", row))
