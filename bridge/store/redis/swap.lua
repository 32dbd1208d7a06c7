-- compare-and-set one hash field. ARGV: 1 key, 2 field, 3 expected, 4 new
if redis.call('HGET', ARGV[1], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', ARGV[1], ARGV[2], ARGV[4])
return 1
