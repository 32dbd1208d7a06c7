-- record the outcomes of sends, many at once. ARGV: 2 a JSON array of items, each [kind ('done',
-- 'dead' or 'resched'), id, now µs, next attempt µs (resched), error ('dead', 'resched')], times
-- as text. Answers 1 or 0 per item (0: the job was not in a state that takes this outcome).
local out = {}
for _, it in ipairs(cjson.decode(ARGV[2])) do
  local kind, id, now, nxt, err = unpack(it)
  if kind == 'done' then
    out[#out + 1] = finish(id, 'done', now, false)
  elseif kind == 'dead' then
    out[#out + 1] = finish(id, 'dead', now, err)
  else
    out[#out + 1] = reschedule(id, now, nxt, err)
  end
end
return out
