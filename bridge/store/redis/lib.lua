local P = ARGV[1]
local DUE = P .. 'due'
local READY = P .. 'ready'
local function jk(id) return P .. 'job:' .. id end
local function qk(ok) return P .. 'q:' .. ok end
local function rk(rcv) return P .. 'ready:' .. rcv end
local function jid(m) return string.sub(m, 19) end
local function head_of(q) return redis.call('ZRANGE', q, 0, 0)[1] end
-- the unfinished jobs of one receiver with one group tag (store.claim's group_limit)
local function gk(rcv, grp) return P .. 'grp:' .. rcv .. '|' .. grp end
local function ungroup(id, rcv, grp)
  if grp and grp ~= '' then redis.call('SREM', gk(rcv, grp), id) end
end

local function head_due(m)
  local f = redis.call('HMGET', jk(jid(m)), 'state', 'next_attempt_at', 'lease_until')
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
  local f = redis.call('HMGET', k, 'state', 'order_key', 'member', 'receiver', 'grp')
  local st = f[1]
  if not st then return 0 end
  ungroup(id, f[4], f[5])
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
  local f = redis.call('HMGET', k, 'state', 'order_key', 'member', 'receiver', 'created_at', 'grp')
  local st = f[1]
  if st ~= 'pending' and st ~= 'inflight' then return 0 end
  ungroup(id, f[4], f[6])
  local q = qk(f[2])
  local old = head_of(q)
  redis.call('ZREM', q, f[3])
  redis.call('HSET', k, 'state', new, 'updated_at', now)
  if err then redis.call('HSET', k, 'last_error', err) end
  redis.call('HDEL', k, 'lease_until')
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
  local f = redis.call('HMGET', k, 'state', 'order_key', 'member', 'receiver', 'created_at', 'event_ts', 'grp')
  local st = f[1]
  if st ~= 'dead' and st ~= 'pending' then return 0 end
  local q = qk(f[2])
  local old = head_of(q)
  if st == 'dead' then
    if f[7] and f[7] ~= '' then redis.call('SADD', gk(f[4], f[7]), id) end
    redis.call('ZREM', P .. 'st:dead', id)
    redis.call('ZREM', P .. 'fin:dead', id)
    redis.call('ZADD', P .. 'st:pending', f[5], id)
    redis.call('SADD', P .. 'rcv:' .. f[4], id)
    redis.call('ZADD', q, f[6], f[3])
  end
  redis.call('HSET', k, 'state', 'pending', 'next_attempt_at', now, 'attempts', 0, 'updated_at', now)
  fix_head(q, f[4], old, true)
  return 1
end

-- inflight -> pending, due at nxt
local function reschedule(id, now, nxt, err)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'order_key', 'created_at', 'receiver')
  if f[1] ~= 'inflight' then return 0 end
  local q = qk(f[2])
  local old = head_of(q)
  redis.call('HSET', k, 'state', 'pending', 'next_attempt_at', nxt, 'last_error', err, 'updated_at', now)
  redis.call('HDEL', k, 'lease_until')
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
    local f = redis.call('HMGET', jk(jid(m)), 'event_ts', 'receiver')
    if f[1] then
      redis.call('ZADD', READY, f[1], m)
      redis.call('ZADD', rk(f[2]), f[1], m)
    end
  end
  return #ms
end

local function nodek(node) return P .. 'node:' .. node end

-- a node's new record; nd: its earliest timer (µs, '' = none), indexed in P timers; io: '1' while
-- it has an open incident ('' = none), indexed in P open (the incidents-open gauge)
local function set_record(node, record, newest, nd, io)
  -- versions come from one counter, so a deleted and re-created record never repeats one
  redis.call('HSET', nodek(node), 'record', record, 'version', redis.call('INCR', P .. 'version'))
  redis.call('ZADD', P .. 'nodes', newest, node)
  if nd ~= nil and nd ~= '' then
    redis.call('ZADD', P .. 'timers', nd, node)
  else
    redis.call('ZREM', P .. 'timers', node)
  end
  if io == '1' then
    redis.call('SADD', P .. 'open', node)
  else
    redis.call('SREM', P .. 'open', node)
  end
end

-- a new pending job (id, order member, receiver, event ts µs, context JSON) of node; nb: not
-- before (µs, '' = now), grp: its group tag ('' = none)
local function add_job(id, m, rcv, ets, ctx, node, now, nb, grp)
  local ok = rcv .. '|' .. node
  local k = jk(id)
  if redis.call('EXISTS', k) == 1 then drop_job(id) end
  local due = now
  if nb and nb ~= '' then due = nb end
  redis.call('HSET', k, 'id', id, 'state', 'pending', 'attempts', 0, 'created_at', now, 'next_attempt_at', due,
    'updated_at', now, 'order_key', ok, 'receiver', rcv, 'event_ts', ets, 'member', m, 'context', ctx)
  if grp and grp ~= '' then
    redis.call('HSET', k, 'grp', grp)
    redis.call('SADD', gk(rcv, grp), id)
  end
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
  if not old then redis.call('ZADD', DUE, due, m) end  -- a new head: pending, due at nb or now
end
