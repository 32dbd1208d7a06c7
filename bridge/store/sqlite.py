"""The embedded default store: one SQLite file in WAL mode, group commits on the event loop.

Operations queue up and run together at the end of the current event-loop iteration, in one
transaction (each in its own SAVEPOINT, so one failing does not undo the others): under concurrent
load, every request that arrived in the same iteration shares one commit. Statements and commits
are fast (WAL with synchronous=NORMAL writes no fsync at commit), so they run on the loop itself:
no thread hop, no GIL hand-off per request. The WAL's checkpoints, which do fsync, run on a
background thread with their own connection, and often, so that each has little to sync: the
loop's commits write to the same files and slow down while a checkpoint syncs them. Long
read-only scans (stats) run on a reader connection in a worker thread, outside the write batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from bridge.config import RetentionConfig
from bridge.errors import StorageUnavailable
from bridge.model import (
    Alert,
    Delivery,
    DeliveryState,
    Event,
    NodeState,
    Silence,
    delivery_id,
    format_timestamp,
    next_node_state,
    order_key,
)
from bridge.store.base import Acceptance, OutboxStats, Plan, compact_json, job_context, select_deliveries

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

# Events double as dedup records: an event's id is derived from its dedup key. Pruning ends the
# dedup record (expires_at = 0) and the event record (kept = 0) separately, and deletes the row
# once both are over.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL, event_type TEXT NOT NULL,
  ts REAL NOT NULL, received_at REAL NOT NULL, expires_at REAL NOT NULL, outcome TEXT NOT NULL,
  body TEXT NOT NULL, kept INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS events_expiry ON events(expires_at) WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS events_kept ON events(received_at) WHERE kept = 1;
CREATE TABLE IF NOT EXISTS nodes (
  node_id TEXT PRIMARY KEY, status TEXT NOT NULL, since REAL NOT NULL, last_ts REAL NOT NULL,
  last_event_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fired (
  route TEXT NOT NULL, node_id TEXT NOT NULL, status TEXT NOT NULL, at REAL NOT NULL,
  PRIMARY KEY (route, node_id, status));
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, order_key TEXT NOT NULL, receiver TEXT NOT NULL, seq REAL NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  next_attempt_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT,
  -- is_head: the oldest unfinished job of its order key, the only one that may be sent;
  -- due_at: next_attempt_at while pending, the lease's end while in flight.
  is_head INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL, context TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_heads ON jobs(receiver, seq, created_at, id) WHERE is_head = 1;
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(order_key, seq) WHERE state IN ('pending', 'inflight');
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, updated_at);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, ends_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_JOB_COLS = "id, state, attempts, created_at, next_attempt_at, updated_at, last_error, context"
# Seconds between background WAL checkpoints. Short, for two reasons. (1) A checkpoint syncs all the
# WAL written since the last one, and commits on the loop slow down while it does: at 200 events/s,
# checkpoints 1 s apart had ~16 MiB to sync, took 15-30 ms, and held commits for up to 6 ms; 0.1 s
# apart, each takes ~2 ms and no commit waits 1 ms. (2) A checkpoint that ends with no commit
# during it lets the next commit start the WAL over from the beginning: short ones often do, so
# under a steady stream the WAL stays small without RESTART, which holds every commit back.
_CHECKPOINT_EVERY = 0.1
# Under saturation (thousands of events a second) checkpoints that often copy the same hot pages
# again and again, a few percent of the core; latency there is queueing, not checkpoints. While the
# WAL grows faster than this (frames a second; 200 events/s write ~2,000), checkpoint every 1 s.
_CHECKPOINT_BUSY_RATE = 10_000
_CHECKPOINT_EVERY_BUSY = 1.0
_DISK_FULL_CAUTION = 60.0  # seconds of emptying the WAL around every write after a "disk full"
_WAL_RESTART_FRAMES = 4096  # ~16 MiB of 4 KiB pages
_NODE_CACHE_MAX = 50_000  # node states kept in memory (~16 MB at most)
_PRUNE_CHUNK = 5000  # rows per DELETE, so pruning a large backlog never stalls the loop for long


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _row_to_delivery(row: sqlite3.Row | tuple[Any, ...]) -> Delivery:
    jid, state, attempts, created, nxt, updated, error, context = row
    return Delivery(
        id=jid,
        alert=Alert.from_context(jid, json.loads(context)),
        state=state,
        attempts=attempts,
        created_at=_ts(created),
        next_attempt_at=_ts(nxt),
        last_error=error,
        updated_at=_ts(updated),
    )


def _fix_head(conn: sqlite3.Connection, key: str) -> None:
    """Make the oldest unfinished job of ``key`` its head (and only it)."""
    # Heads are always unfinished, so both statements stay on the partial index jobs_key.
    conn.execute(
        "UPDATE jobs SET is_head = 0 WHERE order_key = ? AND state IN ('pending', 'inflight') AND is_head = 1",
        (key,),
    )
    conn.execute(
        "UPDATE jobs SET is_head = 1 WHERE id = (SELECT id FROM jobs WHERE order_key = ? "
        "AND state IN ('pending', 'inflight') ORDER BY seq, created_at, id LIMIT 1)",
        (key,),
    )


class SQLiteStore:
    durable = True

    def __init__(self, path: Path | str, *, max_batch: int = 1024) -> None:
        self.path = Path(path)
        self._max_batch = max_batch
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._lock_file: IO[str] | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self._disk_full_until = 0.0  # monotonic; until then the WAL is emptied around every write
        # Node states as committed (or written by the batch in progress): this process owns the file
        # (the lock), so only its own writes change them. Saves a query per event. Emptied by any
        # rollback, as the batch's writes are then undone; bounded by emptying it when full.
        self._nodes: dict[str, NodeState] = {}
        # Long read-only scans (stats over a large backlog: ~45 ms at 200,000 jobs) run on their
        # own connection in one worker thread: a WAL reader never blocks the writer, and sqlite3
        # releases the GIL while it steps, so the loop and its commits go on meanwhile.
        self._reader: sqlite3.Connection | None = None
        self._read_pool: ThreadPoolExecutor | None = None

    # --- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._closing.clear()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite is the single-replica store: refuse a second bridge on the same file (use Redis).
        self._lock_file = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise StorageUnavailable(
                f"{self.path} is in use by another alert-bridge process; replicas need storage.url: redis://"
            ) from None
        self._nodes.clear()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power loss may undo the last commits but never corrupts; a process
        # crash (kill -9) loses nothing committed.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        # Checkpoints (the fsyncs) are the background thread's job, not the committing loop's.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA journal_size_limit=16777216")
        conn.executescript(_SCHEMA)
        # One process owns the file (the lock above), so jobs left in flight by a crash can be
        # sent again at once instead of waiting for their lease to run out.
        with conn:
            conn.execute("UPDATE jobs SET due_at = MIN(due_at, ?) WHERE state = 'inflight'", (time.time(),))
        self._conn = conn

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=200")
            wait = _CHECKPOINT_EVERY
            while not self._closing.wait(wait):
                with contextlib.suppress(sqlite3.Error):
                    # PASSIVE never blocks the writer, but when commits keep landing during it (heavy
                    # load), no checkpoint ends caught up, and the WAL only grows. Once it is large,
                    # RESTART: it waits for the current transaction, copies the rest and lets the
                    # next writer start the WAL from the beginning (bounded, a short pause).
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > _WAL_RESTART_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
                    busy = frames > _CHECKPOINT_BUSY_RATE * wait
                    wait = _CHECKPOINT_EVERY_BUSY if busy else _CHECKPOINT_EVERY
        finally:
            conn.close()

    async def close(self) -> None:
        if self._pending:
            self._flush()
        if self._read_pool is not None:
            pool, self._read_pool = self._read_pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._closing.set()
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StorageUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, fut))
        if not self._flush_scheduled:
            # At the end of this loop iteration: every request that is being handled now joins.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``op`` on the reader connection, off the loop; it sees the last commit."""
        if self._conn is None:
            raise StorageUnavailable("store is not open")
        if self._read_pool is None:
            self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._read_on_reader, op)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"storage read failed: {exc}") from exc

    def _read_on_reader(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:  # made in the pool's thread, used only there
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA busy_timeout=5000")
        return op(self._reader)

    def _flush(self) -> None:
        self._flush_scheduled = False
        low_on_space = time.monotonic() < self._disk_full_until
        if low_on_space:
            self._empty_wal()
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = self._run_batch([op for op, _ in batch])
            except (sqlite3.Error, OSError) as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    self._disk_full_until = time.monotonic() + _DISK_FULL_CAUTION
                err = StorageUnavailable(f"storage write failed: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():  # the caller went away (cancelled); its op committed anyway
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        if low_on_space or time.monotonic() < self._disk_full_until:
            self._empty_wal()

    def _empty_wal(self) -> None:
        """After the disk filled up. The WAL may be what filled it: the background checkpoints cannot
        copy it into a database file that cannot grow, and once space is freed the next commits would
        take it all again before the next checkpoint. So for a while, every batch of writes is
        preceded and followed by copying the WAL over and truncating it (slower, but it recovers)."""
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA busy_timeout=0")  # never wait for the checkpoint thread on the loop
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.execute("PRAGMA busy_timeout=5000")

    def _run_batch(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """Run ``ops`` in one transaction. An op that raises must not undo the others: if one
        does, the batch is rolled back and run again with a savepoint per op (ops are pure
        functions of the database, so running them again is safe)."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[tuple[bool, Any]] = [(True, op(conn)) for op in ops]
        except (sqlite3.Error, OSError):
            self._rollback(conn)
            raise
        except Exception:
            self._rollback(conn)
            return self._run_isolated(conn, ops)
        self._commit(conn)
        return results

    def _rollback(self, conn: sqlite3.Connection, savepoint: str | None = None) -> None:
        self._nodes.clear()
        conn.execute(f"ROLLBACK TO {savepoint}" if savepoint else "ROLLBACK")

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except BaseException:
            self._nodes.clear()  # a failed COMMIT (disk full) leaves the transaction undone or open
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _run_isolated(self, conn: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, op(conn)))
                    conn.execute("RELEASE op")
                except (sqlite3.Error, OSError):
                    raise
                except Exception as exc:
                    self._rollback(conn, "op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
            self._commit(conn)
        except BaseException:
            if conn.in_transaction:
                self._rollback(conn)
            raise
        return results

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    # --- accept ------------------------------------------------------------------------------

    async def accept(
        self,
        event: Event,
        plan: Plan,
        *,
        now: datetime,
        dedup_ttl: float,
        mode: Literal["notify", "stale", "silenced"] = "notify",
    ) -> Acceptance:
        return await self._run(lambda c: self._accept(c, event, plan, now, dedup_ttl, mode))

    def _accept(
        self,
        c: sqlite3.Connection,
        event: Event,
        plan: Plan,
        now: datetime,
        dedup_ttl: float,
        mode: str,
    ) -> Acceptance:
        now_ts = now.timestamp()
        eid = event.id
        ts = event.timestamp.timestamp()
        prev = None if mode == "stale" else self._node_state(c, event.node_id)
        if mode == "stale":
            outcome = "stale"
        elif prev is not None and event.timestamp < prev.last_timestamp:
            outcome = "out_of_order"
        else:
            outcome = "silenced" if mode == "silenced" else "accepted"
        event_json = compact_json(event.to_dict())
        # Check-and-record in one statement: a live row with this id means a repeat.
        cur = c.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(id) DO UPDATE SET "
            "received_at = excluded.received_at, expires_at = excluded.expires_at, outcome = excluded.outcome, "
            "body = excluded.body, kept = 1 WHERE events.expires_at <= ?",
            (eid, event.node_id, event.status, event.event_type, ts, event.received_at.timestamp(),
             max(now_ts, ts) + dedup_ttl, outcome, event_json, now_ts),
        )
        if cur.rowcount == 0:
            return Acceptance("duplicate", eid)
        if outcome == "stale":
            return Acceptance("stale", eid)
        if outcome == "out_of_order":
            return Acceptance("out_of_order", eid, previous=prev)
        new = next_node_state(prev, event)
        # An upsert rewrites the row in place; REPLACE would delete it and insert it again under a
        # new rowid, dirtying more pages for every commit to write to the WAL.
        c.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET status = excluded.status, "
            "since = excluded.since, last_ts = excluded.last_ts, last_event_id = excluded.last_event_id",
            (new.node_id, new.status, new.since.timestamp(), new.last_timestamp.timestamp(), new.last_event_id),
        )
        if len(self._nodes) >= _NODE_CACHE_MAX:
            self._nodes.clear()
        self._nodes[new.node_id] = new
        if outcome == "silenced":
            return Acceptance("silenced", eid, previous=prev)
        matches = plan(prev)
        last: dict[str, float] = {}
        for m in matches:
            if m.repeat_interval > 0:
                r = c.execute(
                    "SELECT at FROM fired WHERE route = ? AND node_id = ? AND status = ?",
                    (m.route, event.node_id, event.status),
                ).fetchone()
                if r is not None:
                    last[m.route] = r[0]
        pairs, fired = select_deliveries(matches, last, now_ts)
        if fired:
            c.executemany(
                "INSERT OR REPLACE INTO fired VALUES (?, ?, ?, ?)",
                [(route, event.node_id, event.status, now_ts) for route in fired],
            )
        ids = []
        for route, receiver in pairs:
            did = delivery_id(eid, receiver)
            key = order_key(receiver, event.node_id)
            # Jobs of one key are created in event order (older events are out_of_order above),
            # so a new job is the head exactly when its key has no unfinished job.
            c.execute(
                "INSERT OR REPLACE INTO jobs (id, order_key, receiver, seq, state, attempts, created_at, "
                "next_attempt_at, updated_at, is_head, due_at, context) "
                "VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, NOT EXISTS (SELECT 1 FROM jobs WHERE order_key = ? "
                "AND state IN ('pending', 'inflight')), ?, ?)",
                (did, key, receiver, ts, now_ts, now_ts, now_ts, key, now_ts,
                 job_context(event_json, route, receiver, prev)),
            )
            ids.append(did)
        return Acceptance("accepted", eid, tuple(ids), prev)

    def _node_state(self, c: sqlite3.Connection, node_id: str) -> NodeState | None:
        state = self._nodes.get(node_id)
        if state is not None:
            return state
        r = c.execute(
            "SELECT node_id, status, since, last_ts, last_event_id FROM nodes WHERE node_id = ?", (node_id,)
        ).fetchone()
        if r is None:
            return None
        state = NodeState(r[0], r[1], _ts(r[2]), _ts(r[3]), r[4])
        if len(self._nodes) < _NODE_CACHE_MAX:
            self._nodes[node_id] = state
        return state

    async def node_state(self, node_id: str) -> NodeState | None:
        return await self._run(lambda c: self._node_state(c, node_id))

    async def list_nodes(self) -> list[NodeState]:
        def read(c: sqlite3.Connection) -> list[NodeState]:
            rows = c.execute("SELECT node_id, status, since, last_ts, last_event_id FROM nodes").fetchall()
            return [NodeState(r[0], r[1], _ts(r[2]), _ts(r[3]), r[4]) for r in rows]

        return await self._read(read)

    # --- delivery jobs -------------------------------------------------------------------------

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None
    ) -> list[Delivery]:
        def op(c: sqlite3.Connection) -> list[Delivery]:
            now_ts = now.timestamp()
            where = "is_head = 1 AND due_at <= ?"
            args: list[Any] = [now_ts]
            if receivers is not None:
                where += f" AND receiver IN ({','.join('?' * len(receivers))})"
                args.extend(receivers)
            rows = c.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE {where} ORDER BY seq, created_at, id LIMIT ?", (*args, limit)
            ).fetchall()
            out = []
            for row in rows:
                c.execute(
                    "UPDATE jobs SET state = 'inflight', attempts = attempts + 1, updated_at = ?, due_at = ? "
                    "WHERE id = ?",
                    (now_ts, now_ts + lease, row[0]),
                )
                d = _row_to_delivery(row)
                d.state = "inflight"
                d.attempts += 1
                d.updated_at = now
                out.append(d)
            return out

        return await self._run(op)

    def _finish(self, c: sqlite3.Connection, did: str, state: str, now: datetime, error: str | None) -> int:
        row = c.execute(
            "UPDATE jobs SET state = ?, updated_at = ?, last_error = COALESCE(?, last_error), is_head = 0 "
            "WHERE id = ? AND state IN ('pending', 'inflight') RETURNING order_key",
            (state, now.timestamp(), error, did),
        ).fetchone()
        if row is None:
            return 0
        # The finished job was its key's head; the next unfinished one (if any) takes over.
        c.execute(
            "UPDATE jobs SET is_head = 1 WHERE id = (SELECT id FROM jobs WHERE order_key = ? "
            "AND state IN ('pending', 'inflight') ORDER BY seq, created_at, id LIMIT 1)",
            (row[0],),
        )
        return 1

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        await self._run(lambda c: self._finish(c, delivery_id, "done", now, None))

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        await self._run(lambda c: self._finish(c, delivery_id, "dead", now, error))

    async def reschedule(
        self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str
    ) -> None:
        nxt = next_attempt_at.timestamp()
        await self._run(
            lambda c: c.execute(
                "UPDATE jobs SET state = 'pending', next_attempt_at = ?, due_at = ?, last_error = ?, "
                "updated_at = ? WHERE id = ? AND state = 'inflight'",
                (nxt, nxt, error, now.timestamp(), delivery_id),
            )
        )

    async def bury_receiver(self, receiver: str, *, now: datetime, error: str) -> int:
        def op(c: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM jobs WHERE receiver = ? AND state IN ('pending', 'inflight')", (receiver,)
                )
            ]
            return sum(self._finish(c, i, "dead", now, error) for i in ids)

        return await self._run(op)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def op(c: sqlite3.Connection) -> Delivery | None:
            row = c.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (delivery_id,)).fetchone()
            return _row_to_delivery(row) if row else None

        return await self._run(op)

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 100
    ) -> list[Delivery]:
        def op(c: sqlite3.Connection) -> list[Delivery]:
            if state is None:
                rows = c.execute(
                    f"SELECT {_JOB_COLS} FROM jobs ORDER BY created_at, id LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = c.execute(
                    f"SELECT {_JOB_COLS} FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT ?",
                    (state, limit),
                ).fetchall()
            return [_row_to_delivery(r) for r in rows]

        return await self._run(op)

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int:
        def op(c: sqlite3.Connection) -> int:
            if ids is None:
                rows = c.execute("SELECT id, order_key FROM jobs WHERE state = 'dead'").fetchall()
            else:
                rows = [
                    r
                    for i in ids
                    for r in c.execute(
                        "SELECT id, order_key FROM jobs WHERE id = ? AND state IN ('dead', 'pending')", (i,)
                    )
                ]
            now_ts = now.timestamp()
            for jid, _ in rows:
                c.execute(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, due_at = ?, "
                    "updated_at = ? WHERE id = ?",
                    (now_ts, now_ts, now_ts, jid),
                )
            for key in {k for _, k in rows}:
                _fix_head(c, key)
            return len(rows)

        return await self._run(op)

    async def purge_dead(self) -> int:
        return await self._run(lambda c: c.execute("DELETE FROM jobs WHERE state = 'dead'").rowcount)

    async def stats(self, *, now: datetime) -> OutboxStats:
        def op(c: sqlite3.Connection) -> OutboxStats:
            counts = dict(c.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            oldest = c.execute(
                "SELECT MIN(created_at) FROM jobs WHERE state IN ('pending', 'inflight')"
            ).fetchone()[0]
            age = max(0.0, now.timestamp() - oldest) if oldest is not None else 0.0
            return OutboxStats(
                counts.get("pending", 0), counts.get("inflight", 0), counts.get("dead", 0),
                counts.get("done", 0), age,
            )

        return await self._read(op)

    async def prune(self, *, now: datetime, retention: RetentionConfig) -> int:
        t = now.timestamp()
        counted = [  # records that end, each counted once
            "UPDATE events SET expires_at = 0 WHERE rowid IN "
            "(SELECT rowid FROM events WHERE expires_at > 0 AND expires_at <= ? LIMIT ?)",
            "UPDATE events SET kept = 0 WHERE rowid IN "
            "(SELECT rowid FROM events WHERE kept = 1 AND received_at <= ? LIMIT ?)",
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE state = 'done' AND updated_at <= ? LIMIT ?)",
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE state = 'dead' AND updated_at <= ? LIMIT ?)",
            "DELETE FROM silences WHERE rowid IN (SELECT rowid FROM silences WHERE ends_at <= ? LIMIT ?)",
        ]
        limits = [t, t - retention.events, t - retention.done, t - retention.dead, t - retention.events]
        removed = 0
        for sql, limit in zip(counted, limits, strict=True):
            removed += await self._chunked(sql, (limit, _PRUNE_CHUNK))
        # rows whose dedup and event records are both over (not counted again)
        await self._chunked(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE expires_at = 0 AND kept = 0 LIMIT ?)",
            (_PRUNE_CHUNK,),
        )
        return removed

    async def _chunked(self, sql: str, args: tuple[float | int, ...]) -> int:
        """Repeat ``sql`` (which touches at most _PRUNE_CHUNK rows) until it touches fewer: each run
        is its own short transaction, so pruning a large backlog never stalls the loop for long."""

        def op(c: sqlite3.Connection) -> int:
            return int(c.execute(sql, args).rowcount)

        total = 0
        while True:
            n = await self._run(op)
            total += n
            if n < _PRUNE_CHUNK:
                return total

    # --- silences, meta ------------------------------------------------------------------------

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

        return await self._run(op)

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

        return await self._run(op)

    async def get_meta(self, key: str) -> str | None:
        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        return await self._run(op)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(lambda c: c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))
