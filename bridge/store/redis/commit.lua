-- Commit a batch of accepts, in order. ARGV: 2 event px, 3 a JSON array of items, each an array
-- of store.CommitItem's fields in its order (numbers as text: cjson would round µs to 14 digits).
-- One argument instead of ~20 per accept: redis-py packs every argument in Python.
-- Answers per item: 'ok', 'dup <event id>' or 'retry'. An item was decided on the state its
-- batch predecessors of the same node leave behind, so once one of them is not 'ok', the rest of
-- that node's items answer 'retry'; a node's first item checks the version it was decided on
-- (later ones pass '=': this batch's earlier items of the node, all 'ok', left what they expect).
local evpx = ARGV[2]
local out = {}
local broken = {}
for _, it in ipairs(cjson.decode(ARGV[3])) do
  local dkey, nowts, dval, expires, dpx, eid, ev, outcome, rcvd, node, ver, record, newest, now, jobs, nd, io = unpack(it)
  local dk = P .. 'dd:' .. dkey
  local nk = nodek(node)
  local res = 'ok'
  if broken[node] then
    res = 'retry'
  else
    local d = redis.call('GET', dk)
    if d then
      local sp = string.find(d, ' ', 1, true)
      if sp and tonumber(string.sub(d, 1, sp - 1)) > tonumber(nowts) then
        res = 'dup ' .. string.sub(d, sp + 1)
      end
    end
    if res == 'ok' and ver ~= '=' and (redis.call('HGET', nk, 'version') or '') ~= ver then res = 'retry' end
  end
  out[#out + 1] = res
  if res ~= 'ok' then
    broken[node] = true
  else
    redis.call('SET', dk, dval, 'PX', dpx)
    redis.call('ZADD', P .. 'dd:idx', expires, dk)
    redis.call('SET', P .. 'ev:' .. eid, '{"event":' .. ev .. ',"outcome":"' .. outcome .. '"}', 'PX', evpx)
    redis.call('ZADD', P .. 'ev:idx', rcvd, eid)
    if record ~= '' then set_record(node, record, newest, nd, io) end
    for _, job in ipairs(jobs) do
      -- the context as store.base.job_context writes it: the event, then the job's own fields
      add_job(job[1], job[2], job[3], job[4], '{"event":' .. ev .. ',' .. job[5], node, now, job[6], job[7])
    end
  end
end
return out
