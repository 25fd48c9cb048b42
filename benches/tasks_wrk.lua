-- wrk script for POST /v1/tasks cache hits (used by tasks_bench.sh).
--
--   TASKS_TOKEN=... wrk -t2 -c64 -d10s -s benches/tasks_wrk.lua http://127.0.0.1:PORT
--
-- Every request posts the same body (TASKS_BODY, default
-- {"query": "2 + 2", "domain": "calc"}) over keep-alive connections, so once
-- tasks_bench.sh has warmed the task up every submit is a cache hit: auth,
-- normalisation, the task ID hash, a policy decision, a cache look-up and
-- one durable ledger entry, and no execution.
--
-- The response() callback counts replies that are not 202. Defining it
-- makes wrk parse every reply in Lua, which costs wrk some CPU (the same for
-- both targets).
-- done() prints one JSON line: requests, errors (connect + read + write +
-- status + timeout), non202, duration_s, rps, p50_ms, p99_ms, max_ms.

local token = os.getenv("TASKS_TOKEN") or ""
local body = os.getenv("TASKS_BODY") or '{"query": "2 + 2", "domain": "calc"}'

wrk.method = "POST"
wrk.path = "/v1/tasks"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

-- setup() runs in the main Lua state, once per thread: keep the threads so
-- done() can collect their non-202 counts.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- The rest runs in each thread's own Lua state. With no request() function,
-- wrk sends the one pre-built request (method, path, headers, body) each time.
non202 = 0

function response(status, headers, body)
  if status ~= 202 then
    non202 = non202 + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local non = 0
  for _, t in ipairs(threads) do
    non = non + (tonumber(t:get("non202")) or 0)
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "errors": %d, "non202": %d, "duration_s": %.3f, "rps": %.2f, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, non, secs,
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
