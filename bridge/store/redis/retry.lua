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
