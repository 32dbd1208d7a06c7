"""The SQLite store refuses at open a SQLite it cannot run on, saying why and what it needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import StorageUnavailable
from bridge.store.sqlite.schema import setup


class _NoJson:
    """A connection to a SQLite built without its JSON functions (3.35-3.37 may be): the real
    connection, except that json_each is unknown, as such a build answers."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "json_each" in sql:
            raise sqlite3.OperationalError("no such table: json_each")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_sqlite_without_json_functions_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db")
    with pytest.raises(StorageUnavailable, match=r"SQLite [0-9.]+ lacks its JSON functions .*3\.38"):
        setup(_NoJson(conn))  # type: ignore[arg-type]
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_this_sqlite_passes_and_gets_the_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db")
    setup(conn)
    assert {"events", "jobs", "nodes"} <= {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
