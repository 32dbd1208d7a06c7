"""Bringing SQLite files written by earlier versions to the current schema (run before it)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from bridge.decide import NodeRecord
from bridge.model import NodeState
from bridge.store.base import own_json


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def migrate_nodes(conn: sqlite3.Connection) -> None:
    """Files written before node records were one JSON blob: nodes (status, since, last_ts,
    last_event_id) and fired (route, node_id, status, at) become records. The old repeat times are
    dropped: repeat_interval reminds now (issue 13), it no longer suppresses."""
    if "status" not in {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}:
        return
    rows = conn.execute("SELECT node_id, status, since, last_ts, last_event_id FROM nodes").fetchall()
    conn.execute("DROP TABLE nodes")
    conn.execute("DROP TABLE fired")
    conn.execute("CREATE TABLE nodes (node_id TEXT PRIMARY KEY, newest REAL NOT NULL, record TEXT NOT NULL)")
    for node_id, status, since, last_ts, last_event_id in rows:
        record = NodeRecord(NodeState(node_id, status, _ts(since), _ts(last_ts), last_event_id))
        conn.execute("INSERT INTO nodes VALUES (?, ?, ?)", (node_id, last_ts, own_json(record.to_json())))


def add_columns(conn: sqlite3.Connection) -> None:
    """Columns later versions added, NULL in rows written before them: nodes.next_due (timers; NULL:
    no timer, as none existed), jobs.grp (fleet digests; NULL: no group) and nodes.incident_open
    (filled from the records once: incidents existed before the column)."""
    for table, column, kind in (("nodes", "next_due", "REAL"), ("jobs", "grp", "TEXT"),
                                ("nodes", "incident_open", "INTEGER")):
        cols = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if cols and column not in cols:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            if column == "incident_open":
                rows = conn.execute("SELECT node_id, record FROM nodes").fetchall()
                conn.executemany("UPDATE nodes SET incident_open = 1 WHERE node_id = ?",
                                 ((n,) for n, r in rows if NodeRecord.from_json(n, json.loads(r)).incident_open))
