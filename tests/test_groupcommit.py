"""SQLite group commits (bridge/store/sqlite/groupcommit.py): what the loop never waits for.

The checkpoint thread's RESTART holds the write lock while it syncs, and a CLI or another
process may hold it too. A batch that finds the lock taken waits off the loop (tried again
shortly), and gives up with StorageUnavailable only after ``_BUSY_WAIT``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.errors import StorageUnavailable
from bridge.store.sqlite import groupcommit
from bridge.store.sqlite.groupcommit import JOURNAL_SIZE_LIMIT, WAL_RESTART_FRAMES, GroupCommit


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[GroupCommit]:
    gc = GroupCommit(tmp_path / "gc.db", setup=_setup, on_rollback=lambda: None)
    await gc.open()
    try:
        yield gc
    finally:
        await gc.close()


def _insert(x: int):  # type: ignore[no-untyped-def]
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (x) VALUES (?)", (x,))
        return x

    return op


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


class LockHolder:
    """Another connection (as another process would) holding the write lock until released."""

    def __init__(self, path: Path) -> None:
        self.taken = threading.Event()
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(path,), daemon=True)

    def _hold(self, path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.taken.set()
            self.release.wait(30)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async def __aenter__(self) -> LockHolder:
        self._thread.start()
        assert await asyncio.to_thread(self.taken.wait, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await asyncio.to_thread(self._thread.join, 10)


async def test_a_batch_waits_for_a_taken_write_lock_while_the_loop_goes_on(db: GroupCommit) -> None:
    async with LockHolder(db.path) as holder:
        write = asyncio.create_task(db.run(_insert(1)))
        ticks = 0
        for _ in range(20):  # with a busy handler on the loop, none of these would run until release
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and not write.done()
        also = asyncio.create_task(db.run(_insert(2)))  # joins the waiting batch
        await asyncio.sleep(0.01)
        assert not also.done()
        holder.release.set()
    assert await asyncio.wait_for(asyncio.gather(write, also), 10) == [1, 2]
    assert await db.run(_count) == 2


async def test_a_batch_gives_up_when_the_lock_stays_taken(db: GroupCommit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groupcommit, "_BUSY_WAIT", 0.2)
    async with LockHolder(db.path):
        with pytest.raises(StorageUnavailable, match="database is locked"):
            await asyncio.wait_for(db.run(_insert(1)), 10)
    assert await db.run(_insert(2)) == 2  # the lock is free again: writes go on
    assert await db.run(_count) == 1


async def test_a_batch_that_failed_after_waiting_leaves_the_next_wait_whole(
    db: GroupCommit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(groupcommit, "_BUSY_WAIT", 0.3)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM no_such_table")

    async with LockHolder(db.path) as holder:
        failing = asyncio.create_task(db.run(broken))
        await asyncio.sleep(0.1)
        holder.release.set()
    with pytest.raises(StorageUnavailable, match="no such table"):
        await asyncio.wait_for(failing, 10)
    await asyncio.sleep(0.4)  # longer than _BUSY_WAIT since that wait began
    async with LockHolder(db.path) as holder:
        write = asyncio.create_task(db.run(_insert(1)))
        await asyncio.sleep(0.1)
        holder.release.set()
    assert await asyncio.wait_for(write, 10) == 1  # waited its own turn, not failed at once


async def test_close_commits_what_is_pending_once_the_lock_is_free(tmp_path: Path) -> None:
    gc = GroupCommit(tmp_path / "gc.db", setup=_setup, on_rollback=lambda: None)
    await gc.open()
    async with LockHolder(gc.path) as holder:
        write = asyncio.create_task(gc.run(_insert(7)))
        await asyncio.sleep(0.02)
        closing = asyncio.create_task(gc.close())
        await asyncio.sleep(0.05)
        assert not closing.done()
        holder.release.set()
    await asyncio.wait_for(closing, 10)
    assert write.result() == 7
    conn = sqlite3.connect(tmp_path / "gc.db")
    assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    conn.close()


def test_the_wal_starts_over_before_it_reaches_its_size_limit(tmp_path: Path) -> None:
    # Past the limit, starting over truncates the WAL in the loop's commit (a wait for the disk).
    conn = sqlite3.connect(tmp_path / "size.db")
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    frame = page + 24  # each WAL frame: a page and its header
    assert WAL_RESTART_FRAMES * frame < 0.8 * JOURNAL_SIZE_LIMIT
