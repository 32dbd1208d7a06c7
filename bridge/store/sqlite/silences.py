"""Silences and metadata on the SQLite file, written through the store's group commit."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bridge.model import Silence, format_timestamp


class SQLiteSilences:
    """Mixed into SQLiteStore, which provides ``_run`` (the write batch of this loop iteration)."""

    _run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

    async def add_silence(self, silence: Silence) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO silences VALUES (?, ?, ?)",
                (silence.id, silence.ends_at.timestamp(), json.dumps(silence.to_dict())),
            )
        )

    async def list_silences(self, *, now: datetime, include_expired: bool = False) -> list[Silence]:
        def op(c: sqlite3.Connection) -> list[Silence]:
            rows = c.execute("SELECT body, ends_at FROM silences").fetchall()
            out = [Silence.from_dict(json.loads(b)) for b, end in rows if include_expired or end > now.timestamp()]
            return sorted(out, key=lambda s: (s.starts_at, s.id))

        out: list[Silence] = await self._run(op)
        return out

    async def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT body FROM silences WHERE id = ?", (silence_id,)).fetchone()
            if row is None:
                return False
            body = json.loads(row[0])
            if Silence.from_dict(body).ends_at <= now:
                return False
            body["ends_at"] = format_timestamp(now)
            c.execute(
                "UPDATE silences SET ends_at = ?, body = ? WHERE id = ?",
                (now.timestamp(), json.dumps(body), silence_id),
            )
            return True

        out: bool = await self._run(op)
        return out

    async def get_meta(self, key: str) -> str | None:
        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        out: str | None = await self._run(op)
        return out

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(lambda c: c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))
