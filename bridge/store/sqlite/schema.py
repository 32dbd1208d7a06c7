"""The SQLite file's tables and indexes, the upgrade of files written by older versions, and what
happens each time the file is opened."""

from __future__ import annotations

import sqlite3
import time

from bridge.store.sqlite import conversations
from bridge.store.sqlite.migrate import add_columns, migrate_nodes

# Events double as dedup records: an event's id is derived from its dedup key. Pruning ends the
# dedup record (expires_at = 0) and the event record (kept = 0) separately, and deletes the row
# once both are over.
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL, event_type TEXT NOT NULL,
  ts REAL NOT NULL, received_at REAL NOT NULL, expires_at REAL NOT NULL, outcome TEXT NOT NULL,
  body TEXT NOT NULL, kept INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS events_expiry ON events(expires_at) WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS events_kept ON events(received_at) WHERE kept = 1;
-- record: bridge.decide.NodeRecord as JSON; newest: its kept_from (unix s), for pruning;
-- next_due: its earliest timer's due time (unix s; NULL: none), for the timer loop
CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, newest REAL NOT NULL, record TEXT NOT NULL,
  next_due REAL);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, order_key TEXT NOT NULL, receiver TEXT NOT NULL, seq REAL NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  next_attempt_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT,
  -- is_head: the oldest unfinished job of its order key, the only one that may be sent;
  -- due_at: next_attempt_at while pending, the lease's end while in flight.
  is_head INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL, context TEXT NOT NULL, grp TEXT);
-- jobs.grp: the job's group tag (Alert.group.key; NULL: none), for claims that take a group together
CREATE INDEX IF NOT EXISTS jobs_heads ON jobs(receiver, seq, created_at, id) WHERE is_head = 1;
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(order_key, seq) WHERE state IN ('pending', 'inflight');
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, updated_at);
CREATE INDEX IF NOT EXISTS jobs_group ON jobs(receiver, grp) WHERE grp IS NOT NULL AND is_head = 1;
CREATE INDEX IF NOT EXISTS nodes_due ON nodes(next_due) WHERE next_due IS NOT NULL;
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, ends_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def setup(conn: sqlite3.Connection) -> None:
    """Run on every open (the group-commit engine's setup hook): upgrade, create what is missing."""
    with conn:
        migrate_nodes(conn)
        add_columns(conn)
    conn.executescript(SCHEMA + conversations.SCHEMA)
    # One process owns the file (a lock), so jobs left in flight by a crash can be sent again at
    # once instead of waiting for their lease to run out.
    with conn:
        conn.execute("UPDATE jobs SET due_at = MIN(due_at, ?) WHERE state = 'inflight'", (time.time(),))
