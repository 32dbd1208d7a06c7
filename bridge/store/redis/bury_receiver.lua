-- ARGV: 2 receiver, 3 now µs, 4 error, 5 cap. Returns {buried, ids looked at}.
local ids = redis.call('SRANDMEMBER', P .. 'rcv:' .. ARGV[2], tonumber(ARGV[5]))
local n = 0
for _, id in ipairs(ids) do
  n = n + finish(id, 'dead', ARGV[3], ARGV[4])
end
return {n, #ids}
