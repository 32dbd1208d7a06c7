-- ARGV: 2 cap
local n = 0
for _, id in ipairs(redis.call('ZRANGE', P .. 'st:dead', 0, tonumber(ARGV[2]) - 1)) do
  n = n + drop_job(id)
end
return n
