"""The outbox's SQLite schema, and the migrations of files written by earlier versions.

Every accept writes an event row, its node's record and its jobs, in one commit: each index those
rows touch is work per event, and each page an index dirties is a WAL frame to write and, later,
to copy by a checkpoint. So the indexes are what the queries need and no more, and the event's
dedup key is (event time in µs, node, status): events arrive roughly in time order, so its entries
append to the index's last pages instead of dirtying a random page each, as the hashed event id
did (bench/README.md, "Where the time goes").
"""

from __future__ import annotations

import json
import sqlite3
import time

from bridge.errors import StorageUnavailable
from bridge.model import parse_timestamp, to_us
from bridge.store.sqlite import conversations
from bridge.store.sqlite.migrate import add_columns, migrate_nodes

# Events double as dedup records: (ts_us, node_id, status) is the dedup key (the event's id is
# derived from it too): another status at the same instant is another event. Pruning ends the
# dedup record (expires_at = 0) and the event record (kept = 0) separately, and deletes the row
# once both are over.
_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
  id TEXT NOT NULL, ts_us INTEGER NOT NULL, node_id TEXT NOT NULL, status TEXT NOT NULL,
  event_type TEXT NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL, expires_at REAL NOT NULL,
  outcome TEXT NOT NULL, body TEXT NOT NULL, kept INTEGER NOT NULL DEFAULT 1)
"""
_EVENT_COLUMNS = "id, ts_us, node_id, status, event_type, ts, received_at, expires_at, outcome, body, kept"

SCHEMA = _EVENTS + """;
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events(ts_us, node_id, status);
CREATE INDEX IF NOT EXISTS events_expiry ON events(expires_at) WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS events_kept ON events(received_at) WHERE kept = 1;
-- record: bridge.decide.NodeRecord as JSON; newest: its kept_from (unix s), for pruning;
-- next_due: its earliest timer's due time (unix s; NULL: none), for the timer loop;
-- incident_open: 1 while it has an open incident (NULL: none), counted for the gauge
CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, newest REAL NOT NULL, record TEXT NOT NULL,
  next_due REAL, incident_open INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, order_key TEXT NOT NULL, receiver TEXT NOT NULL, seq REAL NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  next_attempt_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT,
  -- is_head: the oldest unfinished job of its order key, the only one that may be sent;
  -- due_at: next_attempt_at while pending, the lease's end while in flight.
  is_head INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL, context TEXT NOT NULL, grp TEXT);
-- jobs.grp: the job's group tag (Alert.group.key; NULL: none), for claims that take a group together
CREATE INDEX IF NOT EXISTS jobs_heads ON jobs(receiver, seq, created_at, id) WHERE is_head = 1;
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(order_key, seq, created_at, id) WHERE state IN ('pending', 'inflight');
-- Finished jobs, for pruning: a job enters one of these once, when it ends (not at its insert or
-- claim, as an index over every state did).
CREATE INDEX IF NOT EXISTS jobs_done ON jobs(updated_at) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs(updated_at) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS jobs_group ON jobs(receiver, grp) WHERE grp IS NOT NULL AND is_head = 1;
CREATE INDEX IF NOT EXISTS nodes_due ON nodes(next_due) WHERE next_due IS NOT NULL;
CREATE INDEX IF NOT EXISTS nodes_open ON nodes(incident_open) WHERE incident_open = 1;
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, ends_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _require(conn: sqlite3.Connection) -> None:
    """Refuse at open, not at the first three outcomes that end together, a SQLite without the JSON
    functions (built in since 3.38, a build option before)."""
    try:
        conn.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable(
            f"SQLite {sqlite3.sqlite_version} lacks its JSON functions ({exc}): the SQLite store needs "
            "3.35 or later built with them (3.38 and later have them built in)"
        ) from None


def _key_events(conn: sqlite3.Connection) -> None:
    """Files whose events were keyed by the hashed event id: the rows move to the table keyed by
    (ts_us, node_id). The time comes from each event's stored eventTimestamp (microseconds, exact),
    not from the float ts. The index over every job state gives way to jobs_done and jobs_dead."""
    conn.execute("DROP INDEX IF EXISTS jobs_state")
    # jobs_key in the order heads are chosen by (seq, created_at, id): finding a key's next head
    # walks it instead of sorting. An older file's two-column one is made again by SCHEMA.
    if len(conn.execute("PRAGMA index_info(jobs_key)").fetchall()) == 2:
        conn.execute("DROP INDEX jobs_key")
    # The dedup key gained the status (two statuses at one instant are two events): made again by
    # SCHEMA over the rows as they are, which are unique by (ts_us, node_id) and so by the three.
    if len(conn.execute("PRAGMA index_info(events_key)").fetchall()) == 2:
        conn.execute("DROP INDEX events_key")
    cols = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if not cols or "ts_us" in cols:
        return
    conn.execute("ALTER TABLE events RENAME TO events_old")
    conn.execute("DROP INDEX IF EXISTS events_expiry")  # they went with the renamed table
    conn.execute("DROP INDEX IF EXISTS events_kept")
    conn.execute(_EVENTS)
    rows = conn.execute(
        "SELECT id, node_id, status, event_type, ts, received_at, expires_at, outcome, body, kept FROM events_old"
    )
    conn.executemany(
        f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((eid, to_us(parse_timestamp(json.loads(body)["eventTimestamp"])), node, status, etype, ts, rcvd, exp,
          outcome, body, kept) for eid, node, status, etype, ts, rcvd, exp, outcome, body, kept in rows),
    )
    conn.execute("DROP TABLE events_old")


def setup(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema of the file ``conn`` opened."""
    _require(conn)
    with conn:
        migrate_nodes(conn)
        add_columns(conn)
        _key_events(conn)
    conn.executescript(SCHEMA + conversations.SCHEMA)
    # One process owns the file (a lock), so jobs left in flight by a crash can be sent again at
    # once instead of waiting for their lease to run out.
    with conn:
        conn.execute("UPDATE jobs SET due_at = MIN(due_at, ?) WHERE state = 'inflight'", (time.time(),))
