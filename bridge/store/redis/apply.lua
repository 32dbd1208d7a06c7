-- Commit one Store.apply (timers, ack, resolve): the node's record and jobs, if the node's version
-- is still the one decided on. ARGV: 2 node, 3 expected version ('' = no record), 4 record JSON,
-- 5 newest µs, 6 next due µs ('' = none), 7 now µs, 8 JSON array of jobs, 9 '1' while an incident is open
-- [id, member, receiver, event ts µs, context, not before µs or '', group tag or '']. Answers 1, or 0 when the version moved (decide again).
local node = ARGV[2]
if (redis.call('HGET', nodek(node), 'version') or '') ~= ARGV[3] then return 0 end
set_record(node, ARGV[4], ARGV[5], ARGV[6], ARGV[9])
for _, job in ipairs(cjson.decode(ARGV[8])) do
  add_job(job[1], job[2], job[3], job[4], job[5], node, ARGV[7], job[6], job[7])
end
return 1
