-- Bring keys written by earlier versions to the current layout (run once, at open).
-- ARGV: 1 prefix, then keys. Job hashes: terse field names become readable ones. Node hashes
-- (status, since, last, id, v; repeat times in fired:<node>) become one record.
local P = ARGV[1]
local renames = {ctx = 'context', created = 'created_at', next = 'next_attempt_at', updated = 'updated_at',
  lease = 'lease_until', err = 'last_error', ok = 'order_key', rcv = 'receiver', ets = 'event_ts', m = 'member'}
local n = 0
for i = 2, #ARGV do
  local k = ARGV[i]
  if redis.call('HEXISTS', k, 'ctx') == 1 then
    for old, new in pairs(renames) do
      local v = redis.call('HGET', k, old)
      if v then
        redis.call('HSET', k, new, v)
        redis.call('HDEL', k, old)
      end
    end
    n = n + 1
  elseif redis.call('HEXISTS', k, 'status') == 1 and redis.call('HEXISTS', k, 'record') == 0 then
    local node = string.sub(k, #P + 6)
    local h = redis.call('HMGET', k, 'status', 'since', 'last', 'id')
    local by_status, order = {}, {}
    local fired = redis.call('HGETALL', P .. 'fired:' .. node)
    for j = 1, #fired, 2 do
      local sr = cjson.decode(fired[j])
      if not by_status[sr[1]] then by_status[sr[1]] = {}; order[#order + 1] = sr[1] end
      table.insert(by_status[sr[1]], cjson.encode(sr[2]) .. ':' .. fired[j + 1])
    end
    local parts = {}
    for _, st in ipairs(order) do parts[#parts + 1] = cjson.encode(st) .. ':{' .. table.concat(by_status[st], ',') .. '}' end
    -- numbers are copied as written (µs integers would lose digits through cjson)
    local record = '{"status":' .. cjson.encode(h[1]) .. ',"since":' .. h[2] .. ',"newest":' .. h[3] ..
      ',"event":' .. cjson.encode(h[4]) .. ',"fired":{' .. table.concat(parts, ',') .. '}}'
    redis.call('DEL', k, P .. 'fired:' .. node)
    redis.call('HSET', k, 'record', record, 'version', redis.call('INCR', P .. 'version'))
    redis.call('ZADD', P .. 'nodes', h[3], node)
    n = n + 1
  end
end
return n
