"""The embedded default store: the outbox's queries on one SQLite file (its tables, and the
upgrade of files written by older versions, in schema.py).

Writes go through the group-commit engine (groupcommit.py): every operation here is a function
of one connection, run inside the batch of the current event-loop iteration. ``accept`` reads the
node's record, calls the decision and writes it in the same transaction; this process is the
file's only writer (a lock), so nothing can change the record in between.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.config import RetentionConfig
from bridge.decide import Apply, Decider, Decision, Job, NodeRecord
from bridge.model import Alert, Delivery, DeliveryState, Event, NodeState, order_key, to_us
from bridge.store.base import (
    Acceptance,
    Handoff,
    OutboxStats,
    encode_event,
    job_alert,
    job_context,
    own_json,
    read_context,
)
from bridge.store.sqlite import conversations
from bridge.store.sqlite.groupcommit import GroupCommit
from bridge.store.sqlite.schema import setup
from bridge.store.sqlite.silences import SQLiteSilences

T = TypeVar("T")

_INSERT_JOB = (
    "INSERT INTO jobs (id, order_key, receiver, seq, state, attempts, created_at, next_attempt_at, updated_at, "
    "is_head, due_at, context, grp) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, NOT EXISTS (SELECT 1 FROM jobs "
    "WHERE order_key = ? AND state IN ('pending', 'inflight')), ?, ?, ?)"
)
_JOB_COLS = "id, state, attempts, created_at, next_attempt_at, updated_at, last_error, context"
# Ending jobs and making their keys' next jobs heads: one job, or a list in two statements in all.
_END = ("UPDATE jobs SET state = ?, updated_at = ?, last_error = COALESCE(?, last_error), is_head = 0 WHERE {} "
        "AND state IN ('pending', 'inflight') RETURNING order_key")
_END_ONE, _END_MANY = _END.format("id = ?"), _END.format("id IN (SELECT value FROM json_each(?))")
_NEXT = ("SELECT id FROM jobs WHERE order_key = {} AND state IN ('pending', 'inflight') "
         "ORDER BY seq, created_at, id LIMIT 1")
_HEAD_ONE = f"UPDATE jobs SET is_head = 1 WHERE id = ({_NEXT.format('?')})"
_HEAD_MANY = f"UPDATE jobs SET is_head = 1 WHERE id IN (SELECT ({_NEXT.format('k.value')}) FROM json_each(?) k)"
_NODE_CACHE_MAX = 20_000  # node records kept in memory (bounded; size: bench/README.md)
_PRUNE_CHUNK = 5000  # rows per DELETE, so pruning a large backlog never stalls the loop for long


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _row_to_delivery(row: sqlite3.Row | tuple[Any, ...]) -> Delivery:
    jid, state, attempts, created, nxt, updated, error, context = row
    return Delivery(
        id=jid,
        alert=Alert.from_context(jid, read_context(context)),
        state=state,
        attempts=attempts,
        created_at=_ts(created),
        next_attempt_at=_ts(nxt),
        last_error=error,
        updated_at=_ts(updated),
    )


def _claimed(row: Sequence[Any], now: datetime) -> Delivery:
    """The job of ``row`` (``_JOB_COLS``) as its claim marks it in flight (the UPDATE is the caller's)."""
    d = _row_to_delivery(tuple(row))
    d.state = "inflight"
    d.attempts += 1
    d.updated_at = now
    return d


def _fix_head(conn: sqlite3.Connection, key: str) -> None:
    """Make the oldest unfinished job of ``key`` its head (and only it)."""
    # Heads are always unfinished, so both statements stay on the partial index jobs_key.
    conn.execute(
        "UPDATE jobs SET is_head = 0 WHERE order_key = ? AND state IN ('pending', 'inflight') AND is_head = 1",
        (key,),
    )
    conn.execute(_HEAD_ONE, (key,))


def _remember(cache: dict[str, tuple[int, NodeRecord]], node_id: str, raw: str, record: NodeRecord) -> None:
    if node_id not in cache and len(cache) >= _NODE_CACHE_MAX:
        cache.clear()  # bounded: emptied when full (a new node only; updates replace in place)
    cache[node_id] = (hash(raw), record)


class SQLiteStore(conversations.SQLiteConversations, SQLiteSilences):
    durable = True

    def __init__(self, path: Path | str, *, max_batch: int = 1024) -> None:
        self.path = Path(path)
        # Node records as committed (or written by the batch in progress): this process owns the
        # file (the lock), so only its own writes change them. Saves a query per event. Emptied by
        # any rollback, as the batch's writes are then undone; bounded by emptying it when full.
        # With each record the hash of its JSON as stored: list_nodes (the API and console, on the
        # reader thread) reuses the record of every row whose JSON hashes the same instead of
        # parsing it. A hash, not the JSON: that would double the cache's memory.
        self._nodes: dict[str, tuple[int, NodeRecord]] = {}
        self._db = GroupCommit(self.path, setup=setup, on_rollback=self._nodes.clear, max_batch=max_batch)
        self._handoff: Handoff | None = None

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """Run ``op`` in this loop iteration's write batch."""
        return self._db.run(op)

    def _read(self, op: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """Run read-only ``op`` on the reader connection, off the loop."""
        return self._db.read(op)

    async def open(self) -> None:
        self._nodes.clear()
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    # --- accept ------------------------------------------------------------------------------

    def set_handoff(self, handoff: Handoff | None) -> None:
        """Claim new jobs the dispatcher has room for in the accept's transaction (base.Handoff)."""
        self._handoff = handoff

    async def accept(self, event: Event, decide: Decider, *, now: datetime, dedup_ttl: float) -> Acceptance:
        # The read, the decision and the writes run in one transaction on the loop: no other
        # writer can come between them, so no version check is needed.
        h = self._handoff
        if h is None:
            return await self._run(lambda c: self._accept(c, event, decide, now, dedup_ttl, None))
        handed: list[tuple[Delivery, float]] = []  # claimed in the transaction, slots reserved

        def op(c: sqlite3.Connection) -> Acceptance:
            # The batch may run an op again (groupcommit): give back what an earlier run reserved.
            for d, _ in handed:
                h.release(d.receiver)
            handed.clear()
            return self._accept(c, event, decide, now, dedup_ttl, handed)

        def settle(committed: bool) -> None:
            for d, lease in handed:
                if committed:
                    h.take(d, lease)
                else:
                    h.release(d.receiver)

        return await self._db.run(op, settle)

    def _accept(
        self, c: sqlite3.Connection, event: Event, decide: Decider, now: datetime, dedup_ttl: float,
        handed: list[tuple[Delivery, float]] | None,
    ) -> Acceptance:
        now_ts = now.timestamp()
        eid = event.id
        ts = event.timestamp.timestamp()
        record = self._record(c, event.node_id)
        # Decided as if new; the insert-if-absent below says whether it is a repeat, and then
        # nothing has been written and the answer is decide's 'duplicate'. One statement for the
        # common case instead of a read and a write.
        decision = decide(record, False)
        event_json = encode_event(event)
        cur = c.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(ts_us, node_id, status) "
            "DO UPDATE SET received_at = excluded.received_at, expires_at = excluded.expires_at, "
            "outcome = excluded.outcome, body = excluded.body, kept = 1 WHERE events.expires_at <= ?",
            (eid, to_us(event.timestamp), event.node_id, event.status, event.event_type, ts,
             event.received_at.timestamp(), max(now_ts, ts) + dedup_ttl, decision.outcome, event_json, now_ts),
        )
        if cur.rowcount == 0:
            return Acceptance.of(event, decide(record, True))
        self._write(c, decision, event_json, now_ts, None if handed is None else (event, now, handed))
        return Acceptance.of(event, decision, len(handed) if handed else 0)

    def _write(self, c: sqlite3.Connection, decision: Decision, event_json: str | None,
               now_ts: float, handoff: tuple[Event, datetime, list[tuple[Delivery, float]]] | None = None) -> None:
        """The decision's node record and jobs (``event_json``: the accepted event's, or None: jobs
        carry their own). ``handoff``: the event, now, and where jobs claimed here go (accept)."""
        new = decision.record
        if new is not None:
            due = new.next_due
            # An upsert rewrites the row in place; REPLACE would delete it and insert it again under
            # a new rowid, dirtying more pages for every commit to write to the WAL.
            raw = own_json(new.to_json())
            c.execute(
                "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET newest = excluded.newest, "
                "record = excluded.record, next_due = excluded.next_due, incident_open = excluded.incident_open",
                (new.node_id, new.kept_from.timestamp(), raw, due.timestamp() if due is not None else None,
                 1 if new.incident_open else None),
            )
            _remember(self._nodes, new.node_id, raw, new)
        prev = decision.previous
        for job in decision.jobs:
            shown = job.event
            seq = job.order.timestamp()
            node_id = shown.node_id if shown is not None else (new.node_id if new is not None else "")
            key = order_key(job.receiver, node_id)
            # Jobs of one key are created in their order (decide: Job.order), so a new job is the
            # head exactly when its key has no unfinished job.
            job_due = job.not_before.timestamp() if job.not_before is not None else now_ts
            row = (job.id, key, job.receiver, seq, now_ts, job_due, now_ts, key, job_due,
                   job_context(event_json or "", job, prev), job.group.key if job.group is not None else None)
            if handoff is not None:
                head = c.execute(_INSERT_JOB + " ON CONFLICT(id) DO NOTHING RETURNING is_head", row).fetchone()
                if head is not None:
                    if head[0] and job_due <= now_ts and not (
                            job.not_before is None and job.group is None and self._hand_off(c, job, prev, *handoff)):
                        self._handoff_unclaimed(job.receiver)  # a claimable job waits in the store
                    continue
            elif c.execute(_INSERT_JOB + " ON CONFLICT(id) DO NOTHING", row).rowcount:
                self._handoff_unclaimed(job.receiver)  # (timers, resolves: never handed off)
                continue
            # The same job again (an event accepted again once its dedup record expired): it
            # replaces the old one, which may have been its key's head. Never handed off.
            old = c.execute("DELETE FROM jobs WHERE id = ? RETURNING order_key", (job.id,)).fetchone()
            c.execute(_INSERT_JOB, row)
            self._handoff_unclaimed(job.receiver)  # (conservative: it may not be due, nor a head)
            for k in {old[0], key}:
                _fix_head(c, k)

    def _handoff_unclaimed(self, receiver: str) -> None:
        if self._handoff is not None:
            self._handoff.unclaimed(receiver)

    def _hand_off(self, c: sqlite3.Connection, job: Job, prev: NodeState | None, event: Event, now: datetime,
                  handed: list[tuple[Delivery, float]]) -> bool:
        """Claim the new head ``job``, due now, here if the dispatcher has room (Handoff.reserve)."""
        assert self._handoff is not None
        lease = self._handoff.reserve(job.receiver)
        if lease is None:
            return False
        now_ts = now.timestamp()
        c.execute("UPDATE jobs SET state = 'inflight', attempts = 1, due_at = ? WHERE id = ?",
                  (now_ts + lease, job.id))
        handed.append((Delivery(id=job.id, alert=job_alert(event, job, prev), state="inflight", attempts=1,
                                created_at=now, next_attempt_at=now, updated_at=now), lease))
        return True

    async def apply(self, node_id: str, decide: Apply, *, now: datetime) -> Decision:
        # As accept: read, decide and write in one transaction of the only writer.
        def op(c: sqlite3.Connection) -> Decision:
            decision = decide(self._record(c, node_id))
            self._write(c, decision, None, now.timestamp())
            return decision

        return await self._run(op)

    async def due_nodes(self, *, now: datetime, limit: int) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT node_id FROM nodes WHERE next_due <= ? ORDER BY next_due LIMIT ?",
                             (now.timestamp(), limit)).fetchall()
            return [r[0] for r in rows]

        return await self._run(op)

    async def list_nodes(self) -> list[NodeRecord]:
        def op(c: sqlite3.Connection) -> list[NodeRecord]:
            rows = c.execute("SELECT node_id, record FROM nodes ORDER BY node_id").fetchall()
            known = self._nodes  # the loop's thread writes it meanwhile: single reads only
            out = []
            for n, r in rows:
                hit = known.get(n)
                out.append(hit[1] if hit is not None and hit[0] == hash(r) else NodeRecord.from_json(n, json.loads(r)))
            return out

        return await self._read(op)

    def _record(self, c: sqlite3.Connection, node_id: str) -> NodeRecord | None:
        hit = self._nodes.get(node_id)
        if hit is not None:
            return hit[1]
        r = c.execute("SELECT record FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        if r is None:
            return None
        record = NodeRecord.from_json(node_id, json.loads(r[0]))
        _remember(self._nodes, node_id, r[0], record)
        return record

    async def node_state(self, node_id: str) -> NodeState | None:
        record = await self._run(lambda c: self._record(c, node_id))
        return record.state if record is not None else None

    async def forget_node(self, node_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            self._nodes.pop(node_id, None)
            return bool(c.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount)

        return await self._run(op)

    # --- delivery jobs -------------------------------------------------------------------------

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None,
        group_limit: int = 0,
    ) -> list[Delivery]:
        def op(c: sqlite3.Connection) -> list[Delivery]:
            now_ts = now.timestamp()
            where = "is_head = 1 AND due_at <= ?"
            args: list[Any] = [now_ts]
            if receivers is not None:
                where += f" AND receiver IN ({','.join('?' * len(receivers))})"
                args.extend(receivers)
            rows = c.execute(
                f"SELECT {_JOB_COLS}, receiver, grp FROM jobs WHERE {where} ORDER BY seq, created_at, id LIMIT ?",
                (*args, limit),
            ).fetchall()
            out: list[Delivery] = []
            taken: set[str] = set()
            for *row, rcv, grp in rows:
                if row[0] in taken:
                    continue
                taken.add(row[0])
                if group_limit > 0 and grp is not None:
                    mates = c.execute(
                        f"SELECT {_JOB_COLS} FROM jobs WHERE receiver = ? AND grp = ? AND is_head = 1 AND id != ? "
                        "AND (state = 'pending' OR due_at <= ?) ORDER BY seq, created_at, id LIMIT ?",
                        (rcv, grp, row[0], now_ts, group_limit + len(taken)),
                    ).fetchall()
                    mates = [m for m in mates if m[0] not in taken][:group_limit]
                    taken.update(m[0] for m in mates)
                    group = [row, *mates]
                else:
                    group = [row]
                out += [_claimed(r, now) for r in group]
            if out:  # one statement for the batch (a statement costs more than the row's update)
                c.executemany(
                    "UPDATE jobs SET state = 'inflight', attempts = attempts + 1, updated_at = ?, due_at = ? "
                    "WHERE id = ?", [(now_ts, now_ts + lease, d.id) for d in out])
            return out

        return await self._run(op)

    def _finish(self, c: sqlite3.Connection, ids: Sequence[str], state: str, now: datetime, error: str | None) -> int:
        """End the unfinished jobs of ``ids``; their keys' next jobs become heads (bench/README.md, "Outcomes")."""
        if len(ids) < 3:  # json_each costs more than it saves for one or two jobs
            keys = [k for i in ids for k in c.execute(_END_ONE, (state, now.timestamp(), error, i)).fetchall()]
            for key in keys:
                c.execute(_HEAD_ONE, key)
            return len(keys)
        keys = c.execute(_END_MANY, (state, now.timestamp(), error, json.dumps(list(ids)))).fetchall()
        if keys:
            c.execute(_HEAD_MANY, (json.dumps(list(dict.fromkeys(k for (k,) in keys))),))
        return len(keys)

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        await self._run(lambda c: self._finish(c, (delivery_id,), "done", now, None))

    async def complete_many(self, delivery_ids: Sequence[str], *, now: datetime) -> None:
        await self._run(lambda c: self._finish(c, delivery_ids, "done", now, None))

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        await self._run(lambda c: self._finish(c, (delivery_id,), "dead", now, error))

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
            return self._finish(c, ids, "dead", now, error)

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
            incidents = c.execute("SELECT COUNT(*) FROM nodes WHERE incident_open = 1").fetchone()[0]
            return OutboxStats(
                counts.get("pending", 0), counts.get("inflight", 0), counts.get("dead", 0),
                counts.get("done", 0), age, incidents,
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
        await self._chunked(conversations.PRUNE, (t, _PRUNE_CHUNK))  # expired conversations, uncounted
        limits = [t, t - retention.events, t - retention.done, t - retention.dead, t - retention.events]
        removed = 0
        for sql, limit in zip(counted, limits, strict=True):
            removed += await self._chunked(sql, (limit, _PRUNE_CHUNK))
        # Node records past the events' retention (not counted). No index on newest: a scan per
        # prune costs less than an index write per accept.
        if await self._chunked(
            "DELETE FROM nodes WHERE rowid IN (SELECT rowid FROM nodes WHERE newest <= ? AND next_due IS NULL LIMIT ?)",
            (t - retention.events, _PRUNE_CHUNK),
        ):
            self._nodes.clear()
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
