-- ARGV: 2 now µs, 3 limit, 4 lease expiry µs, 5 promotion cap, 6 group limit (0: none), 7 '*' (any
-- receiver) or '', then receivers. Returns {1} when the promotion filled its cap (promote, then
-- call again), otherwise {0, claimed job hashes...}
local now = ARGV[2]
local limit = tonumber(ARGV[3])
local cap = tonumber(ARGV[5])
local group_limit = tonumber(ARGV[6])
-- a full promotion batch: more heads may be due; the caller promotes the rest and asks again
if promote(now, cap) >= cap then return {1} end
local sets = {READY}
if ARGV[7] ~= '*' then
  sets = {}
  for i = 8, #ARGV do sets[#sets + 1] = rk(ARGV[i]) end
end

-- the oldest ready head over the sets: lowest (Job.order, member); members are fixed-width
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
local function take(k, id, m, st, created)
  if st == 'pending' then
    redis.call('ZREM', P .. 'st:pending', id)
    redis.call('ZADD', P .. 'st:inflight', created, id)
  end
  redis.call('HSET', k, 'state', 'inflight', 'updated_at', now, 'lease_until', ARGV[4])
  redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('ZADD', DUE, ARGV[4], m)
  out[#out + 1] = redis.call('HGETALL', k)
end

-- the other heads of the group (any due time while pending; in flight once the lease is over),
-- oldest first, at most group_limit: they go out together with the job just taken
local function take_group(id, rcv, grp)
  local found = {}
  local gkey = gk(rcv, grp)
  for _, other in ipairs(redis.call('SMEMBERS', gkey)) do
    if other ~= id then
      local ok2 = jk(other)
      local g = redis.call('HMGET', ok2, 'state', 'order_key', 'member', 'lease_until', 'event_ts', 'created_at')
      if not g[1] then
        redis.call('SREM', gkey, other)  -- a vanished job: drop its entry
      elseif head_of(qk(g[2])) == g[3] and (g[1] == 'pending'
          or (g[1] == 'inflight' and tonumber(g[4]) <= tonumber(now))) then
        found[#found + 1] = {tonumber(g[5]), g[3], other, ok2, g[1], g[6]}
      end
    end
  end
  table.sort(found, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  for i = 1, math.min(#found, group_limit) do
    local x = found[i]
    redis.call('ZREM', DUE, x[2])
    unready(x[2], rcv)
    take(x[4], x[3], x[2], x[5], x[6])
  end
end

while #out <= limit do
  local m = oldest()
  if not m then break end
  local id = jid(m)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'next_attempt_at', 'lease_until', 'created_at', 'receiver', 'grp')
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
      take(k, id, m, f[1], f[4])
      if group_limit > 0 and f[6] and f[6] ~= '' then take_group(id, f[5], f[6]) end
    end
  end
end
return out
