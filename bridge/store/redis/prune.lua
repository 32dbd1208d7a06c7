-- ARGV: 2 now (unix s), 3 done cutoff µs, 4 dead cutoff µs, 5 events cutoff µs, 6 cap
-- returns {removed, 1 if a batch was full (call again)}; node records whose newest event is
-- older than the events cutoff go too (not counted: no job needs them)
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
local nodes = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', ARGV[5], 'LIMIT', 0, cap)
local dropped = 0
for _, node in ipairs(nodes) do
  if not redis.call('ZSCORE', P .. 'timers', node) then  -- a node with a pending timer stays
    redis.call('DEL', P .. 'node:' .. node)
    redis.call('ZREM', P .. 'nodes', node)
    redis.call('SREM', P .. 'open', node)
    dropped = dropped + 1
  end
end
-- expired conversation records (conversations.py), uncounted
local cv = redis.call('ZRANGEBYSCORE', P .. 'conv:idx', '-inf', ARGV[2], 'LIMIT', 0, cap)
for _, m in ipairs(cv) do
  redis.call('DEL', P .. 'conv:' .. m)
  redis.call('ZREM', P .. 'conv:idx', m)
end
if #cv == cap then more = 1 end
-- more only when this call dropped a full batch: kept nodes must not make the caller loop
if dropped == cap then more = 1 end
return {removed, more}
