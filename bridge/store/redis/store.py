"""Redis store: shared state for several bridge replicas (``storage.url: redis://host:port/db``).

Everything the bridge remembers lives in Redis under one key prefix (default ``ab:``), so any
replica may accept any event and deliver any job. Semantics match ``MemoryStore`` exactly; the
contract tests run both side by side.

Keys (``P`` = prefix)::

    P dd:<node>\0<ts>\0<status>  string "<expires> <event id>"; PX = logical lifetime + 60 s (backstop)
    P dd:idx             zset  dedup key -> expires (unix s)     prune drops the expired ones
    P ev:<event id>      string JSON {event, outcome}; PX = retention.events + 1 d (backstop)
    P ev:idx             zset  event id -> received_at (µs)      prune drops old events
    P node:<node>        hash  record (bridge.decide.NodeRecord as JSON), version (from P version)
    P nodes              zset  node -> newest event's ordering time (µs)   prune drops old nodes
    P timers             zset  node -> its record's earliest timer (µs)    due_nodes (the timer loop)
    P version            string counter: every node record write takes the next version
    P job:<id>           hash  id state attempts created_at next_attempt_at updated_at lease_until
                               last_error order_key receiver event_ts (its Job.order) member context
    P jobs               zset  id -> created (µs)                 list_deliveries(state=None)
    P st:<state>         zset  id -> created (µs)                 list by state, stats (ZCARD)
    P fin:done|dead      zset  id -> updated (µs)                 prune by retention
    P rcv:<receiver>     set   ids of the receiver's unfinished jobs   bury_receiver
    P grp:<rcv>|<tag>    set   ids of the receiver's unfinished jobs with that group tag (job field grp)
    P q:<receiver|node>  zset  m -> Job.order (µs)                unfinished jobs of one order key
    P due                zset  m -> due time (µs)                 heads not known to be due yet
    P ready              zset  m -> Job.order (µs)                heads that are due
    P ready:<receiver>   zset  the same, one receiver's heads     claim(receivers=...)
    P sil                hash  silence id -> JSON
    P meta               hash  key -> value
    P conv:<m>, conv:idx the conversation log (conversations.py)

``member`` is a job's order member ``"<created µs, 17 digits>:<id>"``: inside a queue and in
``ready``, Redis orders equal scores by member, so the order is (Job.order, created_at, id),
exactly ``MemoryStore``'s. Times are integer microseconds (exact in a double until year 2255);
the dedup expiry is the float ``MemoryStore`` computes, written with ``repr``.

Claims: only the head of a queue may go out. Every head is in exactly one of ``due`` (scored by
next_attempt_at, or by lease expiry while in flight) or ``ready``. A claim first promotes the
heads whose due time has passed from ``due`` to ``ready`` (each head is promoted once per due
transition, so this is amortised O(log n)), then takes the first ``limit`` of ``ready``:
O(limit·log n). A claimed head stays the head of its queue and goes back to ``due`` scored by its
lease expiry, so a claim whose replica died is due again after ``lease`` seconds.

Accept (batcher.py): ``decide`` is Python, so accept is optimistic, and group-committed: the accepts queued
while no batch is on its way (those of one event-loop iteration), or while one is (the next
batch), go together. One script call (read.lua) reads every dedup record and node record (with
its version) of the batch; Python decides each accept in order, on the node record the batch's
earlier accepts of the same node leave behind (a repeat of an event earlier in the batch waits
for that one's answer); one script call (commit.lua) then commits them in the same order,
re-checking for each its dedup record and that its node's version is the one decided on, and
answers per accept 'ok', 'dup <id>' or 'retry' (once an accept of a node is not 'ok', the node's
later accepts in the batch are 'retry'). Retries go first into the next batch. WATCH/MULTI would
also work, but needs a dedicated connection per attempt; the script keeps the commit one atomic
step. So ``decide`` may be called more than once for one event under contention (it is pure).

Outcomes of sends (complete, reschedule, bury) are batched the same way: one script call records
all those queued meanwhile. A claim is one script call (promotion and claim together), unless
more heads fell due than one promotion batch holds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, cast

import redis.exceptions as rex
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from bridge.config import RetentionConfig
from bridge.decide import Apply, Decider, Decision, NodeRecord
from bridge.errors import StorageUnavailable
from bridge.model import Alert, Delivery, DeliveryState, Event, NodeState, Silence, from_us, to_us
from bridge.store.base import Acceptance, OutboxStats, compact_json, job_context, own_json, read_context
from bridge.store.redis.accepts import incident_open, job_extras, member, next_due_us
from bridge.store.redis.batcher import MAX_ACCEPT_ATTEMPTS, AcceptBatcher
from bridge.store.redis.conversations import RedisConversations

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_SETTLE_BATCH = 512  # send outcomes recorded by one script call
_BATCH = 1000  # keys handled per script call by prune and promotion (bounds one script's run time)
# 2: node records as JSON, readable job fields; 3: the open-incident index (P open)
_LAYOUT_FIELD, _LAYOUT = "redis_layout", "3"
# Redis answers these while it cannot take writes (failover, loading, OOM, a slow script).
_UNAVAILABLE_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "BUSY", "OOM", "TRYAGAIN", "CLUSTERDOWN")


_us = to_us


def _dt(us: str | int) -> datetime:
    return from_us(int(us))


def _cutoff(now_us: int, seconds: float) -> int:
    """The latest time (µs) at least ``seconds`` before ``now_us``."""
    return now_us - round(seconds * 1_000_000)


@contextmanager
def _guard() -> Iterator[None]:
    """Redis unreachable or unable to write → StorageUnavailable (the server answers 503)."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
        raise StorageUnavailable(f"redis unavailable: {exc}") from exc
    except rex.ResponseError as exc:
        if isinstance(exc, rex.ReadOnlyError | rex.OutOfMemoryError) or str(exc).startswith(_UNAVAILABLE_REPLIES):
            raise StorageUnavailable(f"redis cannot write: {exc}") from exc
        raise


# --- Lua: bridge/store/redis/*.lua -------------------------------------------------------------------
# Every script takes the key prefix as ARGV[1] and builds its keys from it (standalone Redis; the
# keys of one bridge are not spread over a cluster). lib.lua is prepended to those that use it.
_STANDALONE = ("read", "swap", "forget", "migrate")
_WITH_LIB = ("commit", "apply", "promote", "claim", "settle", "bury_receiver", "retry", "purge_dead", "prune")


@functools.cache
def _scripts() -> dict[str, str]:
    here = resources.files(__package__ or "bridge.store.redis")
    lib = (here / "lib.lua").read_text()
    out = {name: (here / f"{name}.lua").read_text() for name in _STANDALONE}
    out.update({name: lib + (here / f"{name}.lua").read_text() for name in _WITH_LIB})
    return out


class RedisStore(RedisConversations):
    """The ``Store`` contract on a Redis server shared by every replica."""

    durable = True
    _guard = staticmethod(_guard)

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ab:",
        socket_timeout: float = 2.0,
        health_check_interval: int = 15,
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._socket_timeout = socket_timeout
        self._health_check_interval = health_check_interval
        self._max_connections = max_connections
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._events_keep = RetentionConfig().events  # backstop TTL of events; prune updates it
        # group commits: accepts (and send outcomes) queued while a batch is on its way go together
        self._accepts = AcceptBatcher(self._run, lambda: self._events_keep)
        self._settles: list[tuple[tuple[str, str, str, str, str], asyncio.Future[None]]] = []
        self._settle_task: asyncio.Task[None] | None = None

    # --- connection ------------------------------------------------------------------------------

    def _client(self) -> Redis:
        if self._redis is None:
            # Connection refused is immediate; a silent host costs at most socket_timeout per try.
            # One quick retry lets a pooled connection that died with a Redis restart reconnect.
            # A bounded pool: a burst of requests waits for a connection instead of failing.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._max_connections,
                timeout=self._socket_timeout * 2,
                decode_responses=True,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout / 2,
                health_check_interval=self._health_check_interval,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            )
            self._redis = Redis.from_pool(pool)
            self._scripts = {name: self._redis.register_script(text) for name, text in _scripts().items()}
        return self._redis

    async def _run(self, script: str, *args: str | int | float) -> Any:
        self._client()
        with _guard():
            return await self._scripts[script](args=[self.prefix, *args])

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    async def open(self) -> None:
        """Connect and check that Redis takes writes; StorageUnavailable otherwise. Keys written by
        earlier versions are brought to the current layout first (once: a meta field marks it)."""
        await self.ping()
        await self._migrate()

    async def _migrate(self) -> None:
        r = self._client()
        with _guard():
            if await r.hget(self._k("meta"), _LAYOUT_FIELD) == _LAYOUT:
                return
            for pattern in ("job:*", "node:*"):
                batch: list[str] = []
                async for key in r.scan_iter(match=self._k(pattern), count=_BATCH):
                    batch.append(key)
                    if len(batch) >= _BATCH:
                        await self._run("migrate", *batch)
                        batch = []
                if batch:
                    await self._run("migrate", *batch)
            await self._index_open_incidents()
            await r.hset(self._k("meta"), _LAYOUT_FIELD, _LAYOUT)

    async def _index_open_incidents(self) -> None:
        """Layout 3: the open-incident index, filled once from the records written before it."""
        r = self._client()
        start = len(self._k("node:"))
        async for key in r.scan_iter(match=self._k("node:*"), count=_BATCH):
            raw = await r.hget(key, "record")
            node = key[start:]
            if raw and NodeRecord.from_json(node, json.loads(raw)).incident_open:
                await r.sadd(self._k("open"), node)

    async def close(self) -> None:
        # let the batches on their way finish (or fail) on the connection they started on
        await self._accepts.wait_idle()
        task = self._settle_task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])
        if self._redis is not None:
            redis, self._redis = self._redis, None
            self._scripts = {}
            await redis.aclose()

    async def ping(self) -> None:
        r = self._client()
        with _guard():
            await r.set(self._k("ping"), "1", px=60_000)

    # --- accept ----------------------------------------------------------------------------------

    async def accept(self, event: Event, decide: Decider, *, now: datetime, dedup_ttl: float) -> Acceptance:
        return await self._accepts.accept(event, decide, now=now, dedup_ttl=dedup_ttl)

    # --- delivery jobs ---------------------------------------------------------------------------

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None,
        group_limit: int = 0,
    ) -> list[Delivery]:
        if limit <= 0 or (receivers is not None and not receivers):
            return []
        only = ("*",) if receivers is None else ("", *dict.fromkeys(receivers))
        now_us = _us(now)
        lease_us = _us(now + timedelta(seconds=lease))
        while True:
            # One round trip, unless many heads fell due at once: then promote them in bounded
            # batches first, so no single script blocks Redis for long.
            rows = await self._run("claim", now_us, limit, lease_us, _BATCH, max(0, group_limit), *only)
            if not int(rows[0]):
                return [_delivery(_pairs(row)) for row in rows[1:]]
            while await self._run("promote", now_us, _BATCH) >= _BATCH:
                pass

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        await self._settle("done", delivery_id, _us(now), 0, "")

    async def complete_many(self, delivery_ids: Sequence[str], *, now: datetime) -> None:
        await asyncio.gather(*[self._settle("done", i, _us(now), 0, "") for i in delivery_ids])

    async def reschedule(self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str) -> None:
        await self._settle("resched", delivery_id, _us(now), _us(next_attempt_at), error)

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        await self._settle("dead", delivery_id, _us(now), 0, error)

    def _settle(self, kind: str, delivery_id: str, now_us: int, next_us: int, error: str) -> asyncio.Future[None]:
        """Queue an outcome: those of one loop iteration (and while a batch is on its way) share a script call."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._settles.append(((kind, delivery_id, str(now_us), str(next_us), error), fut))
        if self._settle_task is None:
            self._settle_task = loop.create_task(self._drain_settles())
        return fut

    async def _drain_settles(self) -> None:
        try:
            while self._settles:
                batch = self._settles[:_SETTLE_BATCH]
                del self._settles[:_SETTLE_BATCH]
                try:
                    await self._run("settle", compact_json([item for item, _ in batch]))
                except BaseException as exc:
                    err = exc if isinstance(exc, Exception) else StorageUnavailable("redis store is closing")
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._settle_task = None

    async def bury_receiver(self, receiver: str, *, now: datetime, error: str) -> int:
        total = 0
        while True:  # in batches, so one script never holds Redis for long
            n, seen = await self._run("bury_receiver", receiver, _us(now), error, _BATCH)
            total += int(n)
            if int(seen) < _BATCH:
                return total

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        r = self._client()
        with _guard():
            row = cast(dict[str, str], await r.hgetall(self._k("job:", delivery_id)))
        return _delivery(row) if row else None

    async def list_deliveries(self, *, state: DeliveryState | None = None, limit: int = 100) -> list[Delivery]:
        if limit == 0:
            return []
        r = self._client()
        index = self._k("jobs") if state is None else self._k("st:", state)
        with _guard():
            # A negative limit drops from the end, as the slice [:limit] does.
            ids = cast(list[str], await r.zrange(index, 0, limit - 1))
            async with r.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hgetall(self._k("job:", i))
                rows = await pipe.execute()
        return [_delivery(row) for row in rows if row]

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int:
        if ids is None:
            total = 0
            while True:
                n = int(await self._run("retry", _us(now), _BATCH))
                total += n
                if n < _BATCH:
                    return total
        if not ids:
            return 0
        return int(await self._run("retry", _us(now), "", *ids))

    async def purge_dead(self) -> int:
        total = 0
        while True:
            n = int(await self._run("purge_dead", _BATCH))
            total += n
            if n < _BATCH:
                return total

    async def stats(self, *, now: datetime) -> OutboxStats:
        r = self._client()
        with _guard():
            async with r.pipeline(transaction=False) as pipe:
                for s in ("pending", "inflight", "dead", "done"):
                    pipe.zcard(self._k("st:", s))
                pipe.zrange(self._k("st:pending"), 0, 0, withscores=True)
                pipe.zrange(self._k("st:inflight"), 0, 0, withscores=True)
                pipe.scard(self._k("open"))
                pending, inflight, dead, done, p0, i0, incidents = await pipe.execute()
        firsts = [int(score) for _, score in (*p0, *i0)]
        age = (_us(now) - min(firsts)) / 1_000_000 if firsts else 0.0
        return OutboxStats(pending, inflight, dead, done, age, incidents)

    async def prune(self, *, now: datetime, retention: RetentionConfig) -> int:
        self._events_keep = retention.events
        now_us = _us(now)
        args = (
            repr(now.timestamp()),
            _cutoff(now_us, retention.done),
            _cutoff(now_us, retention.dead),
            _cutoff(now_us, retention.events),
            _BATCH,
        )
        total = 0
        while True:
            removed, more = await self._run("prune", *args)
            total += int(removed)
            if not more:
                return total

    # --- node state, silences, meta --------------------------------------------------------------

    async def node_state(self, node_id: str) -> NodeState | None:
        r = self._client()
        with _guard():
            raw = cast(str | None, await r.hget(self._k("node:", node_id), "record"))
        return NodeRecord.from_json(node_id, json.loads(raw)).state if raw else None

    async def forget_node(self, node_id: str) -> bool:
        return bool(await self._run("forget", node_id))

    # --- timers, commands: Store.apply ----------------------------------------------------------

    async def apply(self, node_id: str, decide: Apply, *, now: datetime) -> Decision:
        r = self._client()
        now_us = _us(now)
        for attempt in range(MAX_ACCEPT_ATTEMPTS):
            with _guard():
                raw, version = await r.hmget(self._k("node:", node_id), ["record", "version"])
            record = NodeRecord.from_json(node_id, json.loads(raw)) if raw else None
            decision = decide(record)
            new = decision.record
            if new is None:
                return decision
            jobs = [
                (j.id, member(now_us, j.id), j.receiver, str(_us(j.order)),
                 job_context("", j, decision.previous), *job_extras(j))
                for j in decision.jobs
            ]
            if int(await self._run("apply", node_id, str(version or ""), own_json(new.to_json()),
                                   _us(new.kept_from), next_due_us(new), now_us, compact_json(jobs),
                                   incident_open(new))):
                return decision
            # another replica wrote the node meanwhile: read and decide again
            if attempt >= 3:
                await asyncio.sleep(random.uniform(0, 0.001 * attempt))
        raise StorageUnavailable("redis: too much contention on node state; retry later", 1.0)

    async def due_nodes(self, *, now: datetime, limit: int) -> list[str]:
        r = self._client()
        with _guard():
            return cast(list[str], await r.zrangebyscore(self._k("timers"), "-inf", _us(now), start=0, num=limit))

    async def list_nodes(self) -> list[NodeRecord]:
        r = self._client()
        with _guard():
            nodes = cast(list[str], await r.zrange(self._k("nodes"), 0, -1))
            async with r.pipeline(transaction=False) as pipe:
                for n in nodes:
                    pipe.hget(self._k("node:", n), "record")
                raws = await pipe.execute()
        found = [NodeRecord.from_json(n, json.loads(raw)) for n, raw in zip(nodes, raws, strict=True) if raw]
        return sorted(found, key=lambda rec: rec.node_id)

    async def add_silence(self, silence: Silence) -> None:
        r = self._client()
        with _guard():
            await r.hset(self._k("sil"), silence.id, json.dumps(silence.to_dict()))

    async def list_silences(self, *, now: datetime, include_expired: bool = False) -> list[Silence]:
        r = self._client()
        with _guard():
            raw = await r.hvals(self._k("sil"))
        found = (Silence.from_dict(json.loads(v)) for v in raw)
        return sorted((s for s in found if include_expired or s.ends_at > now), key=lambda s: (s.starts_at, s.id))

    async def expire_silence(self, silence_id: str, *, now: datetime) -> bool:
        r = self._client()
        key = self._k("sil")
        while True:
            with _guard():
                raw = await r.hget(key, silence_id)
            if raw is None:
                return False
            s = Silence.from_dict(json.loads(raw))
            if s.ends_at <= now:
                return False
            ended = json.dumps(replace(s, ends_at=now).to_dict())
            self._client()
            with _guard():
                if await self._scripts["swap"](args=[key, silence_id, raw, ended]):
                    return True

    async def get_meta(self, key: str) -> str | None:
        r = self._client()
        with _guard():
            return cast(str | None, await r.hget(self._k("meta"), key))

    async def set_meta(self, key: str, value: str) -> None:
        r = self._client()
        with _guard():
            await r.hset(self._k("meta"), key, value)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _delivery(h: dict[str, str]) -> Delivery:
    return Delivery(
        id=h["id"],
        alert=Alert.from_context(h["id"], read_context(h["context"])),
        state=cast(DeliveryState, h["state"]),
        attempts=int(h["attempts"]),
        created_at=_dt(h["created_at"]),
        next_attempt_at=_dt(h["next_attempt_at"]),
        last_error=h.get("last_error"),
        updated_at=_dt(h["updated_at"]),
    )
