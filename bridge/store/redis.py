"""Redis store: shared state for several bridge replicas (``storage.url: redis://host:port/db``).

Everything the bridge remembers lives in Redis under one key prefix (default ``ab:``), so any
replica may accept any event and deliver any job. Semantics match ``MemoryStore`` exactly; the
contract tests run both side by side.

Keys (``P`` = prefix)::

    P dd:<node>|<ts>     string "<expires> <event id>"; PX = logical lifetime + 60 s (backstop)
    P dd:idx             zset  dedup key -> expires (unix s)     prune drops the expired ones
    P ev:<event id>      string JSON {event, outcome}; PX = retention.events + 1 d (backstop)
    P ev:idx             zset  event id -> received_at (µs)      prune drops old events
    P node:<node>        hash  status, since, last (µs), id, v (version, +1 on every write)
    P fired:<node>       hash  JSON [status, route] -> when the route last fired (unix s)
    P job:<id>           hash  id state attempts created next updated lease err ok rcv ets m ctx
    P jobs               zset  id -> created (µs)                 list_deliveries(state=None)
    P st:<state>         zset  id -> created (µs)                 list by state, stats (ZCARD)
    P fin:done|dead      zset  id -> updated (µs)                 prune by retention
    P rcv:<receiver>     set   ids of the receiver's unfinished jobs   bury_receiver
    P q:<receiver|node>  zset  m -> event ts (µs)                 unfinished jobs of one order key
    P due                zset  m -> due time (µs)                 heads not known to be due yet
    P ready              zset  m -> event ts (µs)                 heads that are due
    P ready:<receiver>   zset  the same, one receiver's heads     claim(receivers=...)
    P sil                hash  silence id -> JSON
    P meta               hash  key -> value

``m`` is a job's order member ``"<created µs, 17 digits>:<id>"``: inside a queue and in
``ready``, Redis orders equal scores by member, so the order is (event ts, created_at, id),
exactly ``MemoryStore``'s. Times are integer microseconds (exact in a double until year 2255);
the dedup expiry and repeat-interval times are the same floats ``MemoryStore`` computes, written
with ``repr`` so they survive the round trip exactly.

Claims: only the head of a queue may go out. Every head is in exactly one of ``due`` (scored by
next_attempt_at, or by lease expiry while in flight) or ``ready``. A claim first promotes the
heads whose due time has passed from ``due`` to ``ready`` (each head is promoted once per due
transition, so this is amortised O(log n)), then takes the first ``limit`` of ``ready``:
O(limit·log n). A claimed head stays the head of its queue and goes back to ``due`` scored by its
lease expiry, so a claim whose replica died is due again after ``lease`` seconds.

Accept: ``plan(prev)`` is Python, so accept is optimistic, and group-committed: the accepts
queued while no batch is on its way (those of one event-loop iteration), or while one is (the
next batch), go together. One script call reads every dedup record, node state (with its version)
and repeat-interval times of the batch; Python decides each accept in order and computes its plan
on the node state that the batch's earlier accepts of the same node leave behind (a repeat of an
event earlier in the batch waits for that one's answer); one script call then commits them in the
same order, re-checking for each its dedup record and that its node's version is the one planned
on, and answers per accept 'ok', 'dup <id>' or 'retry' (once an accept of a node is not 'ok', the
node's later accepts in the batch are 'retry': they were planned on it). Retries go first into
the next batch. Every write of repeat times also bumps the node's version, so the version check
covers them. WATCH/MULTI would also work, but it needs a dedicated connection per attempt; the
script keeps the commit a single atomic step. Consequence: ``plan`` may be called more than once
for one event under contention (it must be free of side effects). One script call per batch,
rather than a pipeline of one call per accept, costs the bridge ~10 µs less per accept.

Outcomes of sends (complete, reschedule, bury) are batched the same way: one script call records
all those queued meanwhile. A claim is one script call (promotion and claim together), unless
more heads fell due than one promotion batch holds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import redis.exceptions as rex
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

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
    next_node_state,
)
from bridge.store.base import (
    Acceptance,
    AcceptStatus,
    OutboxStats,
    Plan,
    compact_json,
    job_context,
    select_deliveries,
)

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # C encoding of commands; redis-py's asyncio client packs them in Python otherwise
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but the store works without it
    _hiredis_pack = None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MAX_ACCEPT_ATTEMPTS = 50
_ACCEPT_BATCH = 256  # accepts committed by one script call (bounds its run time)
_SETTLE_BATCH = 512  # send outcomes recorded by one script call
_BATCH = 1000  # keys handled per script call by prune and promotion (bounds one script's run time)
_DEDUP_GRACE_MS = 60_000
_MAX_PX = 10 * 365 * 86400 * 1000
# Redis answers these while it cannot take writes (failover, loading, OOM, a slow script).
_UNAVAILABLE_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "BUSY", "OOM", "TRYAGAIN", "CLUSTERDOWN")


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // _US


def _dt(us: str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _cutoff(now_us: int, seconds: float) -> int:
    """Largest t (µs) with ``(now - t).total_seconds() >= seconds``, as MemoryStore computes it."""
    c = now_us - round(seconds * 1_000_000)
    while (now_us - c) / 1_000_000 < seconds:
        c -= 1
    while (now_us - (c + 1)) / 1_000_000 >= seconds:
        c += 1
    return c


class _HiredisPacking(AbstractConnection):
    """Mixed into the pool's connection class: commands packed by hiredis (C), as redis-py's
    synchronous client does. A batch commit carries thousands of arguments."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if _hiredis_pack is not None and self.encoder.encoding == "utf-8" and args:
            head = args[0]
            if isinstance(head, str):
                args = (*head.encode().split(), *args[1:])
            elif isinstance(head, bytes) and b" " in head:
                args = (*head.split(), *args[1:])
            if all(type(a) in (str, bytes, int) for a in args):
                return [_hiredis_pack(args)]
        return super().pack_command(*args)


def _member(created_us: int, job_id: str) -> str:
    return f"{min(max(created_us, 0), 10**17 - 1):017d}:{job_id}"


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


# --- Lua ---------------------------------------------------------------------------------------
# Every script takes the key prefix as ARGV[1] and builds its keys from it (standalone Redis; the
# keys of one bridge are not spread over a cluster).

_LUA_LIB = r"""
local P = ARGV[1]
local DUE = P .. 'due'
local READY = P .. 'ready'
local function jk(id) return P .. 'job:' .. id end
local function qk(ok) return P .. 'q:' .. ok end
local function rk(rcv) return P .. 'ready:' .. rcv end
local function jid(m) return string.sub(m, 19) end
local function head_of(q) return redis.call('ZRANGE', q, 0, 0)[1] end

local function head_due(m)
  local f = redis.call('HMGET', jk(jid(m)), 'state', 'next', 'lease')
  if f[1] == 'inflight' then return f[3] end
  return f[2]
end

local function unready(m, rcv)
  redis.call('ZREM', READY, m)
  redis.call('ZREM', rk(rcv), m)
end

-- keep due/ready holding exactly the head of every non-empty queue (rcv: the queue's receiver)
local function fix_head(q, rcv, old, force)
  local h = head_of(q)
  if h == old and not force then return end
  if old then
    redis.call('ZREM', DUE, old)
    unready(old, rcv)
  end
  if h then
    unready(h, rcv)
    redis.call('ZADD', DUE, head_due(h), h)
  end
end

-- remove a job from every index and delete it
local function drop_job(id)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'ok', 'm', 'rcv')
  local st = f[1]
  if not st then return 0 end
  redis.call('ZREM', P .. 'st:' .. st, id)
  redis.call('ZREM', P .. 'jobs', id)
  if st == 'done' or st == 'dead' then
    redis.call('ZREM', P .. 'fin:' .. st, id)
  else
    redis.call('SREM', P .. 'rcv:' .. f[4], id)
    local q = qk(f[2])
    local old = head_of(q)
    redis.call('ZREM', q, f[3])
    fix_head(q, f[4], old, false)
  end
  redis.call('DEL', k)
  return 1
end

-- pending/inflight -> done/dead
local function finish(id, new, now, err)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'ok', 'm', 'rcv', 'created')
  local st = f[1]
  if st ~= 'pending' and st ~= 'inflight' then return 0 end
  local q = qk(f[2])
  local old = head_of(q)
  redis.call('ZREM', q, f[3])
  redis.call('HSET', k, 'state', new, 'updated', now)
  if err then redis.call('HSET', k, 'err', err) end
  redis.call('HDEL', k, 'lease')
  redis.call('ZREM', P .. 'st:' .. st, id)
  redis.call('ZADD', P .. 'st:' .. new, f[5], id)
  redis.call('ZADD', P .. 'fin:' .. new, now, id)
  redis.call('SREM', P .. 'rcv:' .. f[4], id)
  fix_head(q, f[4], old, false)
  return 1
end

-- dead/pending -> pending, due now, attempts 0
local function revive(id, now)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'ok', 'm', 'rcv', 'created', 'ets')
  local st = f[1]
  if st ~= 'dead' and st ~= 'pending' then return 0 end
  local q = qk(f[2])
  local old = head_of(q)
  if st == 'dead' then
    redis.call('ZREM', P .. 'st:dead', id)
    redis.call('ZREM', P .. 'fin:dead', id)
    redis.call('ZADD', P .. 'st:pending', f[5], id)
    redis.call('SADD', P .. 'rcv:' .. f[4], id)
    redis.call('ZADD', q, f[6], f[3])
  end
  redis.call('HSET', k, 'state', 'pending', 'next', now, 'attempts', 0, 'updated', now)
  fix_head(q, f[4], old, true)
  return 1
end

-- inflight -> pending, due at nxt
local function reschedule(id, now, nxt, err)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'ok', 'created', 'rcv')
  if f[1] ~= 'inflight' then return 0 end
  local q = qk(f[2])
  local old = head_of(q)
  redis.call('HSET', k, 'state', 'pending', 'next', nxt, 'err', err, 'updated', now)
  redis.call('HDEL', k, 'lease')
  redis.call('ZREM', P .. 'st:inflight', id)
  redis.call('ZADD', P .. 'st:pending', f[3], id)
  fix_head(q, f[4], old, true)
  return 1
end

-- heads whose due time has passed: due -> ready
local function promote(now, cap)
  local ms = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, cap)
  for _, m in ipairs(ms) do
    redis.call('ZREM', DUE, m)
    local f = redis.call('HMGET', jk(jid(m)), 'ets', 'rcv')
    if f[1] then
      redis.call('ZADD', READY, f[1], m)
      redis.call('ZADD', rk(f[2]), f[1], m)
    end
  end
  return #ms
end
"""

_LUA_READ = r"""
-- what a batch of accepts decides on. ARGV: 1 prefix, 2 n, then n dedup keys (without prefix),
-- then node ids. Returns {dedup values (false: none), per node {status, since, last, id, v,
-- then the fired hash as field, value, ...}}
local P = ARGV[1]
local n = tonumber(ARGV[2])
local dd, nodes = {}, {}
for i = 1, n do dd[i] = redis.call('GET', P .. 'dd:' .. ARGV[2 + i]) end
for i = n + 3, #ARGV do
  local h = redis.call('HMGET', P .. 'node:' .. ARGV[i], 'status', 'since', 'last', 'id', 'v')
  for _, x in ipairs(redis.call('HGETALL', P .. 'fired:' .. ARGV[i])) do h[#h + 1] = x end
  nodes[#nodes + 1] = h
end
return {dd, nodes}
"""

_LUA_COMMIT = (
    _LUA_LIB
    + r"""
-- commit a batch of accepts, in order. ARGV: 2 event px, 3 n, then n items:
--   1 dedup key (without prefix), 2 now (unix s), 3 dedup value "<expires> <event id>", 4 expires,
--   5 dedup px, 6 event id, 7 event json, 8 received_at µs, 9 node id, 10 check the node's version
--   (0/1), 11 expected version ('' = no node), 12 write node (0/1), 13 status, 14 since µs,
--   15 last µs, 16 now µs, 17 n fired, then n (field, value), then n jobs, then 5 per job
--   (id, member, receiver, event ts µs, context json)
-- Answers per item: 'ok', 'dup <event id>' or 'retry'. An item was planned on the state its
-- batch predecessors of the same node leave behind, so once one of them is not 'ok', the rest of
-- that node's items answer 'retry'.
local evpx = ARGV[2]
local out = {}
local broken = {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local dkey, nowts, dval, expires, dpx, eid, rec, rcvd, node, check, ver, write, st, since, last, now =
    unpack(ARGV, i, i + 15)
  local nf = tonumber(ARGV[i + 16])
  local fi = i + 17
  local nj = tonumber(ARGV[fi + 2 * nf])
  local ji = fi + 2 * nf + 1
  i = ji + 5 * nj
  local dk = P .. 'dd:' .. dkey
  local nk = P .. 'node:' .. node
  local res = 'ok'
  if broken[node] then
    res = 'retry'
  else
    local d = redis.call('GET', dk)
    if d then
      local sp = string.find(d, ' ', 1, true)
      if sp and tonumber(string.sub(d, 1, sp - 1)) > tonumber(nowts) then
        res = 'dup ' .. string.sub(d, sp + 1)
      end
    end
    if res == 'ok' and check == '1' and (redis.call('HGET', nk, 'v') or '') ~= ver then res = 'retry' end
  end
  out[#out + 1] = res
  if res ~= 'ok' then
    broken[node] = true
  else
    redis.call('SET', dk, dval, 'PX', dpx)
    redis.call('ZADD', P .. 'dd:idx', expires, dk)
    redis.call('SET', P .. 'ev:' .. eid, rec, 'PX', evpx)
    redis.call('ZADD', P .. 'ev:idx', rcvd, eid)
    if write == '1' then
      -- the version was checked above: this is HINCRBY v 1 in the same call
      redis.call('HSET', nk, 'status', st, 'since', since, 'last', last, 'id', eid, 'v', (tonumber(ver) or 0) + 1)
    end
    if nf > 0 then redis.call('HSET', P .. 'fired:' .. node, unpack(ARGV, fi, fi + 2 * nf - 1)) end
    for j = ji, ji + 5 * (nj - 1), 5 do
      local id, m, rcv, ets, ctx = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
      local ok = rcv .. '|' .. node
      local k = jk(id)
      if redis.call('EXISTS', k) == 1 then drop_job(id) end
      redis.call('HSET', k, 'id', id, 'state', 'pending', 'attempts', 0, 'created', now, 'next', now,
        'updated', now, 'ok', ok, 'rcv', rcv, 'ets', ets, 'm', m, 'ctx', ctx)
      redis.call('ZADD', P .. 'st:pending', now, id)
      redis.call('ZADD', P .. 'jobs', now, id)
      redis.call('SADD', P .. 'rcv:' .. rcv, id)
      -- fix_head(), knowing the new job: it is the head if it sorts before the old one
      local q = qk(ok)
      local top = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
      redis.call('ZADD', q, ets, m)
      local old = top[1]
      if old then
        local ts, ots = tonumber(ets), tonumber(top[2])
        if ts < ots or (ts == ots and m < old) then
          redis.call('ZREM', DUE, old)
          unready(old, rcv)
          old = nil
        end
      end
      if not old then redis.call('ZADD', DUE, now, m) end  -- a new head: pending, due now
    end
  end
end
return out
"""
)

_LUA_PROMOTE = (
    _LUA_LIB
    + r"""
-- ARGV: 2 now µs, 3 cap
return promote(ARGV[2], tonumber(ARGV[3]))
"""
)

_LUA_CLAIM = (
    _LUA_LIB
    + r"""
-- ARGV: 2 now µs, 3 limit, 4 lease expiry µs, 5 promotion cap, 6 '*' (any receiver) or '',
-- then receivers. Returns {1} when the promotion filled its cap (promote, then call again),
-- otherwise {0, claimed job hashes...}
local now = ARGV[2]
local limit = tonumber(ARGV[3])
local cap = tonumber(ARGV[5])
-- a full promotion batch: more heads may be due; the caller promotes the rest and asks again
if promote(now, cap) >= cap then return {1} end
local sets = {READY}
if ARGV[6] ~= '*' then
  sets = {}
  for i = 7, #ARGV do sets[#sets + 1] = rk(ARGV[i]) end
end

-- the oldest ready head over the sets: lowest (event ts, member); members are fixed-width
-- "<digits>:dlv_<hex>", so comparing them as strings is byte order in any collation
local function oldest()
  local best, best_ts = nil, nil
  for _, key in ipairs(sets) do
    local c = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if c[1] then
      local ts = tonumber(c[2])
      if best == nil or ts < best_ts or (ts == best_ts and c[1] < best) then
        best, best_ts = c[1], ts
      end
    end
  end
  return best
end

local out = {0}
while #out <= limit do
  local m = oldest()
  if not m then break end
  local id = jid(m)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'next', 'lease', 'created', 'rcv')
  redis.call('ZREM', READY, m)
  if not f[1] then
    -- a vanished job (impossible while the indexes are consistent): drop its entries
    for _, key in ipairs(sets) do redis.call('ZREM', key, m) end
  else
    redis.call('ZREM', rk(f[5]), m)
    local due = f[2]
    if f[1] == 'inflight' then due = f[3] end
    if tonumber(due) > tonumber(now) then
      redis.call('ZADD', DUE, due, m)  -- promoted by a claim whose clock ran ahead
    else
      if f[1] == 'pending' then
        redis.call('ZREM', P .. 'st:pending', id)
        redis.call('ZADD', P .. 'st:inflight', f[4], id)
      end
      redis.call('HSET', k, 'state', 'inflight', 'updated', now, 'lease', ARGV[4])
      redis.call('HINCRBY', k, 'attempts', 1)
      redis.call('ZADD', DUE, ARGV[4], m)
      out[#out + 1] = redis.call('HGETALL', k)
    end
  end
end
return out
"""
)

_LUA_SETTLE = (
    _LUA_LIB
    + r"""
-- record the outcomes of sends, many at once. ARGV: 2.. 5 per item: kind ('done', 'dead' or
-- 'resched'), id, now µs, next attempt µs (resched), error ('dead', 'resched'). Answers 1 or 0
-- per item (0: the job was not in a state that takes this outcome).
local out = {}
for i = 2, #ARGV, 5 do
  local kind, id, now = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'done' then
    out[#out + 1] = finish(id, 'done', now, false)
  elseif kind == 'dead' then
    out[#out + 1] = finish(id, 'dead', now, ARGV[i + 4])
  else
    out[#out + 1] = reschedule(id, now, ARGV[i + 3], ARGV[i + 4])
  end
end
return out
"""
)

_LUA_BURY_RECEIVER = (
    _LUA_LIB
    + r"""
-- ARGV: 2 receiver, 3 now µs, 4 error, 5 cap. Returns {buried, ids looked at}.
local ids = redis.call('SRANDMEMBER', P .. 'rcv:' .. ARGV[2], tonumber(ARGV[5]))
local n = 0
for _, id in ipairs(ids) do
  n = n + finish(id, 'dead', ARGV[3], ARGV[4])
end
return {n, #ids}
"""
)

_LUA_RETRY = (
    _LUA_LIB
    + r"""
-- ARGV: 2 now µs, 3 a cap: that many dead jobs (call again while it returns the cap), or '',
-- then ids
local ids
if ARGV[3] ~= '' then
  ids = redis.call('ZRANGE', P .. 'st:dead', 0, tonumber(ARGV[3]) - 1)
else
  ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local n = 0
for _, id in ipairs(ids) do n = n + revive(id, ARGV[2]) end
return n
"""
)

_LUA_PURGE_DEAD = (
    _LUA_LIB
    + r"""
-- ARGV: 2 cap
local n = 0
for _, id in ipairs(redis.call('ZRANGE', P .. 'st:dead', 0, tonumber(ARGV[2]) - 1)) do
  n = n + drop_job(id)
end
return n
"""
)

_LUA_PRUNE = (
    _LUA_LIB
    + r"""
-- ARGV: 2 now (unix s), 3 done cutoff µs, 4 dead cutoff µs, 5 events cutoff µs, 6 cap
-- returns {removed, 1 if a batch was full (call again)}
local cap = tonumber(ARGV[6])
local removed, more = 0, 0
local dd = redis.call('ZRANGEBYSCORE', P .. 'dd:idx', '-inf', ARGV[2], 'LIMIT', 0, cap)
for _, k in ipairs(dd) do
  redis.call('DEL', k)
  redis.call('ZREM', P .. 'dd:idx', k)
end
removed = removed + #dd
if #dd == cap then more = 1 end
for _, s in ipairs({{'done', ARGV[3]}, {'dead', ARGV[4]}}) do
  local ids = redis.call('ZRANGEBYSCORE', P .. 'fin:' .. s[1], '-inf', s[2], 'LIMIT', 0, cap)
  for _, id in ipairs(ids) do
    if drop_job(id) == 0 then redis.call('ZREM', P .. 'fin:' .. s[1], id) end
    removed = removed + 1
  end
  if #ids == cap then more = 1 end
end
local ev = redis.call('ZRANGEBYSCORE', P .. 'ev:idx', '-inf', ARGV[5], 'LIMIT', 0, cap)
for _, id in ipairs(ev) do
  redis.call('DEL', P .. 'ev:' .. id)
  redis.call('ZREM', P .. 'ev:idx', id)
end
removed = removed + #ev
if #ev == cap then more = 1 end
return {removed, more}
"""
)

_LUA_SWAP = r"""
-- compare-and-set one hash field. ARGV: 1 key, 2 field, 3 expected, 4 new
if redis.call('HGET', ARGV[1], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', ARGV[1], ARGV[2], ARGV[4])
return 1
"""


class RedisStore:
    """The ``Store`` contract on a Redis server shared by every replica."""

    durable = True

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
        self._accepts: list[_Accept] = []
        self._accept_task: asyncio.Task[None] | None = None
        self._settles: list[tuple[tuple[str, str, int, int, str], asyncio.Future[None]]] = []
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
            if _hiredis_pack is not None and not issubclass(pool.connection_class, _HiredisPacking):
                cls = pool.connection_class
                pool.connection_class = type(f"Packing{cls.__name__}", (_HiredisPacking, cls), {})
            self._redis = Redis.from_pool(pool)
            self._scripts = {
                name: self._redis.register_script(text)
                for name, text in (
                    ("read", _LUA_READ),
                    ("commit", _LUA_COMMIT),
                    ("promote", _LUA_PROMOTE),
                    ("claim", _LUA_CLAIM),
                    ("settle", _LUA_SETTLE),
                    ("bury_receiver", _LUA_BURY_RECEIVER),
                    ("retry", _LUA_RETRY),
                    ("purge_dead", _LUA_PURGE_DEAD),
                    ("prune", _LUA_PRUNE),
                    ("swap", _LUA_SWAP),
                )
            }
        return self._redis

    async def _run(self, script: str, *args: str | int | float) -> Any:
        self._client()
        with _guard():
            return await self._scripts[script](args=[self.prefix, *args])

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    async def open(self) -> None:
        """Connect and check that Redis takes writes; StorageUnavailable otherwise."""
        await self.ping()

    async def close(self) -> None:
        # let the batches on their way finish (or fail) on the connection they started on
        for task in (self._accept_task, self._settle_task):
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

    async def accept(
        self,
        event: Event,
        plan: Plan,
        *,
        now: datetime,
        dedup_ttl: float,
        mode: Literal["notify", "stale", "silenced"] = "notify",
    ) -> Acceptance:
        loop = asyncio.get_running_loop()
        item = _Accept(event, plan, mode, now, dedup_ttl, loop.create_future())
        self._accepts.append(item)
        if self._accept_task is None:
            # Starts at the next loop iteration: every request handled in this one joins the batch.
            self._accept_task = loop.create_task(self._drain_accepts())
        return await item.fut

    async def _drain_accepts(self) -> None:
        """Commit queued accepts, batch after batch; accepts that arrive meanwhile join the next."""
        try:
            while self._accepts:
                batch = [a for a in self._accepts[:_ACCEPT_BATCH] if not a.fut.done()]  # done: cancelled
                del self._accepts[:_ACCEPT_BATCH]
                if not batch:
                    continue
                try:
                    again = await self._accept_batch(batch)
                except BaseException as exc:
                    err = exc if isinstance(exc, Exception) else StorageUnavailable("redis store is closing")
                    for a in batch:
                        if not a.fut.done():
                            a.fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self._requeue(again)
        finally:
            self._accept_task = None

    def _requeue(self, again: list[_Accept]) -> None:
        """Accepts to try once more, ahead of the queue (in their order); after a few tries, after
        a short random pause (another replica keeps committing events of the same node)."""
        now_items: list[_Accept] = []
        loop = asyncio.get_running_loop()
        for a in again:
            if a.attempts >= _MAX_ACCEPT_ATTEMPTS:
                if not a.fut.done():
                    a.fut.set_exception(
                        StorageUnavailable("redis: too much contention on node state; retry later", 1.0)
                    )
            elif a.attempts >= 3:
                loop.call_later(random.uniform(0, 0.001 * a.attempts), self._enqueue_later, a)
            else:
                now_items.append(a)
        self._accepts[:0] = now_items

    def _enqueue_later(self, a: _Accept) -> None:
        if a.fut.done():
            return
        self._accepts.append(a)
        if self._accept_task is None:
            self._accept_task = asyncio.get_running_loop().create_task(self._drain_accepts())

    async def _accept_batch(self, batch: list[_Accept]) -> list[_Accept]:
        """One round trip reads what every accept of ``batch`` decides on, Python decides and plans
        them in order (each on the node state its predecessors leave), one script commits them all,
        re-checking each. Returns the accepts to try again."""
        nodes = list(dict.fromkeys(a.event.node_id for a in batch))
        found_all, rows = await self._run("read", len(batch), *(a.event.dedup_key for a in batch), *nodes)
        sims = {node: _NodeSim(node, row) for node, row in zip(nodes, rows, strict=True)}

        args: list[str | int | float] = [round((self._events_keep + 86400) * 1000), 0]
        sent: list[tuple[_Accept, Acceptance]] = []
        waiting: list[tuple[int, _Accept, _Accept]] = []  # (position, accept, earlier one with its dedup key)
        seen: dict[str, _Accept] = {}
        for pos, (a, found) in enumerate(zip(batch, found_all, strict=True)):
            ev = a.event
            earlier = seen.get(ev.dedup_key)
            if earlier is not None:  # its answer depends on whether the earlier one commits
                waiting.append((pos, a, earlier))
                continue
            if found:
                exp_text, _, found_id = found.partition(" ")
                if float(exp_text) > a.now_ts:
                    a.fut.set_result(Acceptance("duplicate", found_id))
                    continue
            try:
                result = self._plan(a, sims[ev.node_id], args)
            except Exception as exc:  # plan() raised: this accept fails, the others go on
                a.fut.set_exception(exc)
                continue
            seen[ev.dedup_key] = a
            sent.append((a, result))

        again: list[tuple[int, _Accept]] = []
        committed: set[int] = set()
        if sent:
            args[1] = len(sent)
            answers = await self._run("commit", *args)
            position = {id(a): pos for pos, a in enumerate(batch)}
            for (a, result), answer in zip(sent, answers, strict=True):
                if answer == "ok":
                    committed.add(id(a))
                    if not a.fut.done():
                        a.fut.set_result(result)
                elif answer.startswith("dup "):
                    if not a.fut.done():
                        a.fut.set_result(Acceptance("duplicate", answer[4:]))
                else:
                    a.attempts += 1
                    again.append((position[id(a)], a))
        for pos, a, earlier in waiting:
            if id(earlier) in committed and earlier.expires > a.now_ts:
                if not a.fut.done():
                    a.fut.set_result(Acceptance("duplicate", earlier.event.id))
            else:
                again.append((pos, a))
        again.sort(key=lambda pa: pa[0])
        return [a for _, a in again if not a.fut.done()]

    @staticmethod
    def _plan(a: _Accept, sim: _NodeSim, args: list[str | int | float]) -> Acceptance:
        """Decide ``a`` on ``sim`` (the node as the batch's earlier accepts leave it), append its
        commit arguments to ``args`` and advance ``sim``. Returns the answer if the commit takes it."""
        event = a.event
        ev_json = a.event_json()  # like plan() below, before anything changes: it could raise
        prev = sim.prev
        now_ts = a.now_ts
        now_us = a.now_us
        outcome: AcceptStatus
        new: NodeState | None = None
        fired_args: list[str] = []
        jobs: list[str | int] = []
        ids: list[str] = []
        if a.mode == "stale":
            outcome = "stale"
        elif prev is not None and event.timestamp < prev.last_timestamp:
            outcome = "out_of_order"
        elif a.mode == "silenced":
            outcome = "silenced"
            new = next_node_state(prev, event)
        else:
            outcome = "accepted"
            matches = a.plan(prev)  # first: it may raise, and nothing is changed yet
            new = next_node_state(prev, event)
            fired_map = sim.fired()
            last = {
                m.route: float(fired_map[f])
                for m in matches
                if m.repeat_interval > 0 and (f := _fired_field(event.status, m.route)) in fired_map
            }
            pairs, fired = select_deliveries(matches, last, now_ts)
            now_text = repr(now_ts)
            for route in fired:
                f = _fired_field(event.status, route)
                fired_args += [f, now_text]
                fired_map[f] = now_text
            if pairs:
                ets_us = _us(event.timestamp)
                for route, receiver in pairs:
                    did = delivery_id(event.id, receiver)
                    jobs += [did, _member(now_us, did), receiver, ets_us, job_context(ev_json, route, receiver, prev)]
                    ids.append(did)

        version = sim.version
        if new is not None:
            sim.prev = new
            sim.version = str(int(version or 0) + 1)
        args += [
            event.dedup_key,
            repr(now_ts),
            f"{a.expires!r} {event.id}",
            repr(a.expires),
            a.dedup_px,
            event.id,
            f'{{"event":{ev_json},"outcome":"{outcome}"}}',
            _us(event.received_at),
            event.node_id,
            "0" if a.mode == "stale" else "1",
            version,
            "1" if new is not None else "0",
            new.status if new else "",
            _us(new.since) if new else 0,
            _us(new.last_timestamp) if new else 0,
            now_us,
            len(fired_args) // 2,
            *fired_args,
            len(ids),
            *jobs,
        ]
        if outcome == "accepted":
            return Acceptance("accepted", event.id, tuple(ids), prev)
        if outcome == "stale":
            return Acceptance("stale", event.id)
        return Acceptance(outcome, event.id, previous=prev)

    # --- delivery jobs ---------------------------------------------------------------------------

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None
    ) -> list[Delivery]:
        if limit <= 0 or (receivers is not None and not receivers):
            return []
        only = ("*",) if receivers is None else ("", *dict.fromkeys(receivers))
        now_us = _us(now)
        lease_us = _us(now + timedelta(seconds=lease))
        while True:
            # One round trip, unless many heads fell due at once: then promote them in bounded
            # batches first, so no single script blocks Redis for long.
            rows = await self._run("claim", now_us, limit, lease_us, _BATCH, *only)
            if not int(rows[0]):
                return [_delivery(_pairs(row)) for row in rows[1:]]
            while await self._run("promote", now_us, _BATCH) >= _BATCH:
                pass

    async def complete(self, delivery_id: str, *, now: datetime) -> None:
        await self._settle("done", delivery_id, _us(now), 0, "")

    async def reschedule(self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str) -> None:
        await self._settle("resched", delivery_id, _us(now), _us(next_attempt_at), error)

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        await self._settle("dead", delivery_id, _us(now), 0, error)

    async def _settle(self, kind: str, delivery_id: str, now_us: int, next_us: int, error: str) -> None:
        """Outcomes recorded in the same loop iteration (and while one batch is on its way) share
        one script call."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._settles.append(((kind, delivery_id, now_us, next_us, error), fut))
        if self._settle_task is None:
            self._settle_task = loop.create_task(self._drain_settles())
        await fut

    async def _drain_settles(self) -> None:
        try:
            while self._settles:
                batch = self._settles[:_SETTLE_BATCH]
                del self._settles[:_SETTLE_BATCH]
                try:
                    await self._run("settle", *(x for item, _ in batch for x in item))
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
                pending, inflight, dead, done, p0, i0 = await pipe.execute()
        firsts = [int(score) for _, score in (*p0, *i0)]
        age = (_us(now) - min(firsts)) / 1_000_000 if firsts else 0.0
        return OutboxStats(pending, inflight, dead, done, age)

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
            node = cast(dict[str, str], await r.hgetall(self._k("node:", node_id)))
        return _node_state(node_id, node) if node else None

    async def list_nodes(self) -> list[NodeState]:
        # No index of nodes exists: SCAN the node hashes (the console asks, not the request path).
        r = self._client()
        start = len(self._k("node:"))
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._k("node:")) + "*"
        with _guard():
            keys = [k async for k in r.scan_iter(match=pattern, count=1000)]
            async with r.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hgetall(k)
                rows = cast(list[dict[str, str]], await pipe.execute())
        return [_node_state(k[start:], h) for k, h in zip(keys, rows, strict=True) if h]

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


class _Accept:
    """One ``accept`` call waiting for its batch."""

    __slots__ = ("_event_json", "attempts", "dedup_px", "event", "expires", "fut", "mode", "now_ts", "now_us", "plan")

    def __init__(
        self, event: Event, plan: Plan, mode: str, now: datetime, dedup_ttl: float, fut: asyncio.Future[Acceptance]
    ) -> None:
        self.event = event
        self.plan = plan
        self.mode = mode
        self.fut = fut
        self.now_ts = now.timestamp()
        self.now_us = _us(now)
        self.expires = max(self.now_ts, event.timestamp.timestamp()) + dedup_ttl
        self.dedup_px = min(_MAX_PX, max(0, math.ceil((self.expires - self.now_ts) * 1000)) + _DEDUP_GRACE_MS)
        self.attempts = 0
        self._event_json: str | None = None

    def event_json(self) -> str:
        if self._event_json is None:
            self._event_json = compact_json(self.event.to_dict())
        return self._event_json


class _NodeSim:
    """A node as read for a batch, advanced by each accept of the batch that is planned on it."""

    __slots__ = ("_fired", "_fired_flat", "prev", "version")

    def __init__(self, node_id: str, row: Sequence[Any]) -> None:
        # row: status, since, last, id, v (missing: None or False), then the fired hash, flat
        self.prev = NodeState(node_id, row[0], _dt(row[1]), _dt(row[2]), row[3]) if row[0] else None
        self.version: str = row[4] or ""
        self._fired_flat = row[5:]
        self._fired: dict[str, str] | None = None

    def fired(self) -> dict[str, str]:
        """(status, route) field -> when that route last fired for the node (unix s, as text)."""
        if self._fired is None:
            flat = self._fired_flat
            self._fired = dict(zip(flat[::2], flat[1::2], strict=True))
        return self._fired


@functools.lru_cache(maxsize=4096)
def _fired_field(status: str, route: str) -> str:
    return compact_json([status, route])


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _node_state(node_id: str, h: dict[str, str]) -> NodeState:
    return NodeState(node_id, h["status"], _dt(h["since"]), _dt(h["last"]), h["id"])


def _delivery(h: dict[str, str]) -> Delivery:
    return Delivery(
        id=h["id"],
        alert=Alert.from_context(h["id"], json.loads(h["ctx"])),
        state=cast(DeliveryState, h["state"]),
        attempts=int(h["attempts"]),
        created_at=_dt(h["created"]),
        next_attempt_at=_dt(h["next"]),
        last_error=h.get("err"),
        updated_at=_dt(h["updated"]),
    )
