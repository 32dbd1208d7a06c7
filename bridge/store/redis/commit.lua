-- Commit a batch of accepts, in order. ARGV: 2 event px, 3 n, then n items laid out as
-- store.CommitItem (its docstring lists the fields; read here by position, in that order).
-- Answers per item: 'ok', 'dup <event id>' or 'retry'. An item was decided on the state its
-- batch predecessors of the same node leave behind, so once one of them is not 'ok', the rest of
-- that node's items answer 'retry'; a node's first item checks the version it was decided on
-- (later ones pass '=': this batch's earlier items of the node, all 'ok', left what they expect).
local evpx = ARGV[2]
local out = {}
local broken = {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local dkey, nowts, dval, expires, dpx, eid, rec, rcvd, node, ver, record, newest, now =
    unpack(ARGV, i, i + 12)
  local nj = tonumber(ARGV[i + 13])
  local ji = i + 14
  i = ji + 5 * nj
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
    redis.call('SET', P .. 'ev:' .. eid, rec, 'PX', evpx)
    redis.call('ZADD', P .. 'ev:idx', rcvd, eid)
    if record ~= '' then
      -- versions come from one counter, so a deleted and re-created record never repeats one
      redis.call('HSET', nk, 'record', record, 'version', redis.call('INCR', P .. 'version'))
      redis.call('ZADD', P .. 'nodes', newest, node)
    end
    for j = ji, ji + 5 * (nj - 1), 5 do
      local id, m, rcv, ets, ctx = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
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
