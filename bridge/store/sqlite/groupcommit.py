"""SQLite group commits on the event loop: the engine under the outbox (store.py).

Operations queue up and run together at the end of the current event-loop iteration, in one
transaction (each in its own SAVEPOINT, so one failing does not undo the others): under concurrent
load, every request that arrived in the same iteration shares one commit. Statements and commits
are fast (WAL with synchronous=NORMAL writes no fsync at commit), so they run on the loop itself:
no thread hop, no GIL hand-off per request. The WAL's checkpoints, which do fsync, run on a
background thread with their own connection, and often, so that each has little to sync: the
loop's commits write to the same files and slow down while a checkpoint syncs them. Long
read-only scans run on a reader connection in a worker thread, outside the write batches.
Measured figures behind the constants: bench/README.md ("SQLite group commits").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from bridge.errors import StorageUnavailable

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
Settle = Callable[[bool], None]

# Seconds between background WAL checkpoints. Short, for two reasons. (1) A checkpoint syncs all the
# WAL written since the last one, and commits on the loop slow down while it does: the less each
# has to sync, the shorter the stall. (2) A checkpoint that ends with no commit during it lets the
# next commit start the WAL over from the beginning: short ones often do, so under a steady stream
# the WAL stays small without RESTART, which holds every commit back.
_CHECKPOINT_EVERY = 0.1
# Under saturation checkpoints that often copy the same hot pages again and again; latency there is
# queueing, not checkpoints. While the WAL grows faster than this (frames a second), checkpoint
# every 1 s. (Figures: bench/README.md, "SQLite group commits".)
_CHECKPOINT_BUSY_RATE = 10_000
_CHECKPOINT_EVERY_BUSY = 1.0
_DISK_FULL_CAUTION = 60.0  # seconds of emptying the WAL around every write after a "disk full"
# A WAL larger than this is truncated to it when it starts over.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
# Frames (4 KiB pages and their 24-byte headers, ~12.6 MB) after which a checkpoint makes the WAL
# start over. Below JOURNAL_SIZE_LIMIT with room to spare, so starting over does not truncate: the
# truncate runs in the loop's commit and waits for the disk (on ext4 mounted with discard, for the
# device to discard the freed blocks: 5-20 ms on the bench machine).
WAL_RESTART_FRAMES = 3072
# While the checkpoint thread holds the write lock (RESTART), a batch waits without blocking the
# loop: it is tried again after _BUSY_RETRY, for at most _BUSY_WAIT.
_BUSY_RETRY = 0.001
_BUSY_WAIT = 5.0


class GroupCommit:
    """One SQLite file owned by this process: batched writes on the loop, reads off it.

    ``setup(conn)`` creates or migrates the schema when the file is opened; ``on_rollback()`` is
    called whenever a batch's writes are undone (so callers can drop what they cached of them)."""

    def __init__(
        self, path: Path, *, setup: Callable[[sqlite3.Connection], None], on_rollback: Callable[[], None],
        max_batch: int = 1024,
    ) -> None:
        self.path = path
        self._setup = setup
        self._on_rollback = on_rollback
        self._max_batch = max_batch
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, asyncio.Future[Any], Settle | None]] = []
        self._flush_scheduled = False
        self._lock_file: IO[str] | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self._disk_full_until = 0.0  # monotonic; until then the WAL is emptied around every write
        self._busy_since: float | None = None  # monotonic; the write lock has been taken since then
        # Long read-only scans run on their own connection in one worker thread: a WAL reader never
        # blocks the writer, and sqlite3 releases the GIL while it steps, so the loop and its
        # commits go on meanwhile.
        self._reader: sqlite3.Connection | None = None
        self._read_pool: ThreadPoolExecutor | None = None


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
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power loss may undo the last commits but never corrupts; a process
        # crash (kill -9) loses nothing committed.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")  # for setup() below; then none (see after it)
        # Checkpoints (the fsyncs) are the background thread's job, not the committing loop's.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        # The page cache stays at SQLite's default (2 MiB): a larger one saved only pread calls
        # (the OS caches the file too) and, once filled, was resident memory (bench/README.md,
        # "SQLite writer page cache").
        self._setup(conn)
        # From here on, never wait for a lock on the loop: a batch that finds the write lock taken is
        # tried again later (_flush), and the loop goes on meanwhile.
        conn.execute("PRAGMA busy_timeout=0")
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
                    if frames > WAL_RESTART_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
                    busy = frames > _CHECKPOINT_BUSY_RATE * wait
                    wait = _CHECKPOINT_EVERY_BUSY if busy else _CHECKPOINT_EVERY
        finally:
            conn.close()

    async def close(self) -> None:
        # The checkpoint thread first, so that it holds no lock the last batches would wait for.
        self._closing.set()
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        while self._pending and self._conn is not None:
            if not self._flush_scheduled:  # else a retry is already on its way
                self._flush()
            if self._pending:  # the write lock is another process's: _flush tries again shortly
                await asyncio.sleep(_BUSY_RETRY)
        if self._read_pool is not None:
            pool, self._read_pool = self._read_pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def run(self, op: Callable[[sqlite3.Connection], T], settle: Settle | None = None) -> T:
        """Run ``op`` in this iteration's batch. ``settle(committed)``, if given, is called once the
        op's writes have committed (True) or were undone (False), even if the caller stopped waiting."""
        if self._conn is None:
            raise StorageUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, fut, settle))
        if not self._flush_scheduled:
            # At the end of this loop iteration: every request that is being handled now joins.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    async def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
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
                results = self._run_batch([op for op, _, _ in batch])
            except _Busy as exc:
                now = time.monotonic()
                self._busy_since = self._busy_since or now
                if now - self._busy_since < _BUSY_WAIT:
                    self._pending[:0] = batch  # first again, with whatever joins meanwhile
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_later(_BUSY_RETRY, self._flush)
                    return
                self._busy_since = None
                self._fail(batch, exc.__cause__ or exc)
                continue
            except (sqlite3.Error, OSError) as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    self._disk_full_until = time.monotonic() + _DISK_FULL_CAUTION
                self._busy_since = None
                self._fail(batch, exc)
                continue
            self._busy_since = None
            for (_, fut, settle), (ok, value) in zip(batch, results, strict=True):
                if not fut.done():  # else the caller went away (cancelled); its op committed anyway
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
                # After the result: what settle starts runs after the caller's continuation.
                if settle is not None:
                    settle(ok)  # not ok: the op raised and its savepoint was rolled back
        if low_on_space or time.monotonic() < self._disk_full_until:
            self._empty_wal()

    @staticmethod
    def _fail(batch: list[tuple[Op, asyncio.Future[Any], Settle | None]], exc: BaseException) -> None:
        err = StorageUnavailable(f"storage write failed: {exc}")
        for _, fut, settle in batch:
            if not fut.done():
                fut.set_exception(err)
            if settle is not None:
                settle(False)

    def _empty_wal(self) -> None:
        """After the disk filled up. The WAL may be what filled it: the background checkpoints cannot
        copy it into a database file that cannot grow, and once space is freed the next commits would
        take it all again before the next checkpoint. So for a while, every batch of writes is
        preceded and followed by copying the WAL over and truncating it (slower, but it recovers)."""
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):  # busy (the checkpoint thread's turn): next batch
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _run_batch(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """Run ``ops`` in one transaction. An op that raises must not undo the others: if one
        does, the batch is rolled back and run again with a savepoint per op (ops are pure
        functions of the database, so running them again is safe)."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("store is closed")
        _begin(conn)
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
        self._on_rollback()
        conn.execute(f"ROLLBACK TO {savepoint}" if savepoint else "ROLLBACK")

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except BaseException:
            self._on_rollback()  # a failed COMMIT (disk full) leaves the transaction undone or open
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _run_isolated(self, conn: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        _begin(conn)
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


class _Busy(Exception):
    """The write lock is taken (by the checkpoint thread, or another process): nothing ran."""


def _begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # incl. extended codes
            raise _Busy() from exc
        raise
