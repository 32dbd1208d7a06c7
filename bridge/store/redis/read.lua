-- What a batch of accepts decides on. ARGV: 1 prefix, 2 n, then n dedup keys (without prefix),
-- then node ids. Returns {dedup values (false: none), per node {record JSON, version} (false: none)}.
local P = ARGV[1]
local n = tonumber(ARGV[2])
local dd, nodes = {}, {}
for i = 1, n do dd[i] = redis.call('GET', P .. 'dd:' .. ARGV[2 + i]) end
for i = n + 3, #ARGV do
  nodes[#nodes + 1] = redis.call('HMGET', P .. 'node:' .. ARGV[i], 'record', 'version')
end
return {dd, nodes}
