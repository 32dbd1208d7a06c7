-- POSTs pre-signed ThunderStack events from bench/.cache/events-*.rec (see benchlib/events.py).
--
-- wrk ... -s post_signed.lua -- FILE RECORD_LEN THREADS OFFSET LIMIT MODE PATH
--   Thread t sends events OFFSET+t, OFFSET+t+THREADS, ... inside the window [OFFSET, OFFSET+LIMIT),
--   so threads never send the same event and (with NODES a multiple of THREADS) each node's events
--   come from one thread, oldest first. MODE "once": running past the window is a wrap and is
--   reported (the bridge would see duplicates); MODE "loop": cycling is intended (stateless servers,
--   the 100%-duplicates case).
-- Records are fixed width, so a thread seeks to its next event instead of loading the whole window
-- at init: a long init in one thread would let the others run before wrk's clock starts.
-- done() prints one "BENCH_JSON {...}" line that benchlib/wrk.py parses (latencies in microseconds).

-- BENCH_PORTS (environment, comma-separated): replicas on the URL's host; thread t connects to
-- the (t mod n)-th (bench/run.py --workers).

local threads = {}
local ports = {}
for p in string.gmatch(os.getenv("BENCH_PORTS") or "", "[0-9]+") do
   table.insert(ports, p)
end

function setup(thread)
   local tid = #threads
   thread:set("tid", tid)
   if #ports > 0 then
      thread.addr = wrk.lookup(wrk.host, ports[(tid % #ports) + 1])[1]
   end
   table.insert(threads, thread)
end

function init(args)
   file = assert(io.open(args[1], "rb"))
   reclen = tonumber(args[2])
   nthreads = tonumber(args[3])
   offset = tonumber(args[4])
   local limit = tonumber(args[5])
   loop = args[6] == "loop"
   url_path = args[7] or "/webhook"
   count = 0
   if limit > tid then
      count = math.floor((limit - tid - 1) / nthreads) + 1
   end
   k = 0
   wraps = 0
end

function request()
   if k >= count then
      k = 0
      wraps = wraps + 1
   end
   local i = offset + tid + k * nthreads
   k = k + 1
   file:seek("set", i * reclen)
   local rec = file:read(reclen)
   local tab = rec:find("\t", 1, true)
   local sig = rec:sub(1, tab - 1)
   local body = rec:sub(tab + 1):match("^(.-)%s*$")
   return wrk.format("POST", url_path, {
      ["Content-Type"] = "application/json",
      ["X-ThunderStack-Signature"] = sig,
   }, body)
end

function done(summary, latency, requests)
   -- max_used: the most events any thread took (sent or still in flight when wrk stopped); the
   -- next run starts past OFFSET + THREADS * max_used so it never repeats one.
   local total_wraps, max_used = 0, 0
   for _, t in ipairs(threads) do
      local w = t:get("wraps") or 0
      total_wraps = total_wraps + w
      max_used = math.max(max_used, w * (t:get("count") or 0) + (t:get("k") or 0))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,' ..
      '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"wraps":%d,"max_used":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean, total_wraps, max_used))
end
