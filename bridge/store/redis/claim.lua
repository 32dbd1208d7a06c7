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
  local f = redis.call('HMGET', k, 'state', 'next_attempt_at', 'lease_until', 'created_at', 'receiver')
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
      redis.call('HSET', k, 'state', 'inflight', 'updated_at', now, 'lease_until', ARGV[4])
      redis.call('HINCRBY', k, 'attempts', 1)
      redis.call('ZADD', DUE, ARGV[4], m)
      out[#out + 1] = redis.call('HGETALL', k)
    end
  end
end
return out
