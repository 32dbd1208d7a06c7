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
  local dkey, nowts, dval, expires, dpx, eid, ev, outcome, rcvd, node, ver, record, newest, now, jobs = unpack(it)
  local dk = P .. 'dd:' .. dkey
  local nk = P .. 'node:' .. node
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
    if record ~= '' then
      -- versions come from one counter, so a deleted and re-created record never repeats one
      redis.call('HSET', nk, 'record', record, 'version', redis.call('INCR', P .. 'version'))
      redis.call('ZADD', P .. 'nodes', newest, node)
    end
    for _, job in ipairs(jobs) do
      -- the context as store.base.job_context writes it: the event, then the job's own fields
      local id, m, rcv, ets, ctx = job[1], job[2], job[3], job[4], '{"event":' .. ev .. ',' .. job[5]
      local ok = rcv .. '|' .. node
      local k = jk(id)
      if redis.call('EXISTS', k) == 1 then drop_job(id) end
      redis.call('HSET', k, 'id', id, 'state', 'pending', 'attempts', 0, 'created_at', now, 'next_attempt_at', now,
        'updated_at', now, 'order_key', ok, 'receiver', rcv, 'event_ts', ets, 'member', m, 'context', ctx)
      redis.call('ZADD', P .. 'st:pending', now, id)
      redis.call('ZADD', P .. 'jobs', now, id)
      redis.call('SADD', P .. 'rcv:' .. rcv, id)
      -- fix_head(), knowing the new job: it is the head if it sorts before the old one
      local q = qk(ok)
      local top = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
      redis.call('ZADD', q, ets, m)
      local old = top[1]
      if old then
        local ts, ots = tonumber(ets), tonumber(top[2])
        if ts < ots or (ts == ots and m < old) then
          redis.call('ZREM', DUE, old)
          unready(old, rcv)
          old = nil
        end
      end
      if not old then redis.call('ZADD', DUE, now, m) end  -- a new head: pending, due now
    end
  end
end
return out
