-- record the outcomes of sends, many at once. ARGV: 2.. 5 per item: kind ('done', 'dead' or
-- 'resched'), id, now µs, next attempt µs (resched), error ('dead', 'resched'). Answers 1 or 0
-- per item (0: the job was not in a state that takes this outcome).
local out = {}
for i = 2, #ARGV, 5 do
  local kind, id, now = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'done' then
    out[#out + 1] = finish(id, 'done', now, false)
  elseif kind == 'dead' then
    out[#out + 1] = finish(id, 'dead', now, ARGV[i + 4])
  else
    out[#out + 1] = reschedule(id, now, ARGV[i + 3], ARGV[i + 4])
  end
end
return out
