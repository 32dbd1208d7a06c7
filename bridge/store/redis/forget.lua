-- Reset a node: drop its record. ARGV: 1 prefix, 2 node id. Returns 1 if there was one.
local P = ARGV[1]
redis.call('ZREM', P .. 'nodes', ARGV[2])
redis.call('ZREM', P .. 'timers', ARGV[2])
redis.call('SREM', P .. 'open', ARGV[2])
return redis.call('DEL', P .. 'node:' .. ARGV[2])
