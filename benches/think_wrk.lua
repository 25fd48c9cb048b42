-- wrk script for POST /v1/think (used by think_bench.sh).
--
--   THINK_TOKEN=... wrk -t2 -c16 -d10s -s benches/think_wrk.lua http://127.0.0.1:PORT
--
-- Every request carries a different text (a dozen sentences, each with a
-- per-thread counter), so no two requests plan the same workspace vector.
--
-- THINK_ENDPOINT picks what is timed (think_bench.sh --tails uses all four):
--   think  POST /v1/think {"text"} (default)
--   step   POST /v1/kernel/step {"gw", "measure"}: the kernel step's own
--          path (policy, step, ledger) with a unit gw of 60 values, varied
--   embed  POST /v1/memory/search {"query", "k": 1, "filter": {"kind":
--          "bench.none"}}: the query is embedded, and the filter names a kind
--          no vector has, so the search returns at once; HTTP + embedding
--   floor  GET /v1/kernel/state: an authenticated request that computes
--          nothing (cached observables); HTTP, auth and a blocking-thread hop
-- done() prints one JSON line: requests, errors (connect + read + write +
-- status + timeout), non2xx, duration_s, rps, p50_ms, p99_ms, max_ms.

local token = os.getenv("THINK_TOKEN") or ""
-- THINK_PLANNER=local (etc.) names the planner in every request.
local planner = os.getenv("THINK_PLANNER") or ""
local planner_field = planner ~= "" and (', "planner": "' .. planner .. '"') or ""
local endpoint = os.getenv("THINK_ENDPOINT") or "think"
local paths = {
  think = "/v1/think",
  step = "/v1/kernel/step",
  embed = "/v1/memory/search",
  floor = "/v1/kernel/state",
}
if paths[endpoint] == nil then
  error("THINK_ENDPOINT must be think, step, embed or floor, not " .. endpoint)
end
wrk.method = endpoint == "floor" and "GET" or "POST"
wrk.path = paths[endpoint]
-- THINK_SESSIONS=N spreads the thinks over sessions s0 .. s(N-1), round
-- robin (offset per thread); unset or 0: no session field (the default one).
local sessions = tonumber(os.getenv("THINK_SESSIONS") or "0") or 0
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

local sentences = {
  "the ledger must never lose an entry",
  "summarise what happened in the last hour",
  "should the agent ask for approval first",
  "compare the two plans and pick the safer one",
  "a quiet afternoon with nothing scheduled",
  "check the store for quarantined objects",
  "what changed since the last snapshot",
  "the operator asked for a status report",
  "estimate the cost of the next step",
  "two requests arrived at the same time",
  "reflect on the previous decision",
  "is the kill switch armed right now",
}

-- setup() runs in the main Lua state, once per thread: give each an id and
-- keep the threads so done() can collect their non-2xx counts.
local threads = {}
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

-- The rest runs in each thread's own Lua state.
local counter = 0
non2xx = 0

-- A unit workspace vector of 60 values from a per-thread LCG, and a
-- measurement on every other step (as the hash planner's hash bit does).
local seed = 12345
local function step_body()
  local gw, norm = {}, 0
  for i = 1, 60 do
    seed = (seed * 1103515245 + 12345 + id) % 2147483648
    local x = seed / 2147483648 - 0.5
    gw[i] = x
    norm = norm + x * x
  end
  norm = math.sqrt(norm)
  for i = 1, 60 do
    gw[i] = string.format("%.6f", gw[i] / norm)
  end
  local measure = counter % 2 == 0 and "true" or "false"
  return '{"gw": [' .. table.concat(gw, ", ") .. '], "measure": ' .. measure .. '}'
end

function request()
  counter = counter + 1
  local text = sentences[(counter % #sentences) + 1] .. " #" .. tostring(id) .. "-" .. counter
  if endpoint == "step" then
    return wrk.format(nil, nil, nil, step_body())
  elseif endpoint == "embed" then
    return wrk.format(nil, nil, nil,
      '{"query": "' .. text .. '", "k": 1, "filter": {"kind": "bench.none"}}')
  elseif endpoint == "floor" then
    return wrk.format(nil, nil, nil, nil)
  end
  local session_field = ""
  if sessions > 0 then
    session_field = ', "session": "s' .. tostring((counter + id * 7) % sessions) .. '"'
  end
  return wrk.format(nil, nil, nil,
    '{"text": "' .. text .. '"' .. planner_field .. session_field .. '}')
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local non = 0
  for _, t in ipairs(threads) do
    non = non + (tonumber(t:get("non2xx")) or 0)
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "errors": %d, "non2xx": %d, "duration_s": %.3f, "rps": %.2f, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, non, secs,
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
