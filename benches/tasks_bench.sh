#!/usr/bin/env bash
# Load test of cache-hit task submits, POST /v1/tasks: Capsule against the
# FastAPI + SQLite baseline (benches/tasks_baseline.py), with wrk.
#
#   benches/tasks_bench.sh                  both targets, interleaved
#   benches/tasks_bench.sh --baseline-only  the baseline alone
#   benches/tasks_bench.sh --capsule-only   Capsule alone
#
# Each target is warmed up the same way: one submit of the task (202,
# "queued" or already "cache_hit", an ID of the form TASK_YYYYMMDD_ + 32
# lower-case base32 characters), a wrong token must get 401, GET
# /v1/tasks/{id} is polled until the task is "done", and one more submit
# must answer "cache_hit" (the script stops otherwise). Then wrk posts that
# same body over keep-alive connections, so every measured request is a cache
# hit: auth, the task ID hash, a policy decision, a cache look-up and one
# durable (fsync'ed, group-committed) ledger entry.
#
# Both services and wrk share the machine's CPUs: on a 2-core machine wrk's
# own threads take a good part of one core, so the numbers are a lower bound
# for both sides and best read as the ratio. The baseline runs uvicorn with
# TASKS_WORKERS worker processes (default 2, one per core here), uvloop and
# httptools.
#
# Environment: CAPSULE (binary, default target/release/capsule), DURATION
# (per run, default 10s), WARMUP (default 3s), TASKS_CONNS (the wrk
# connection counts, default "16 64 256"), TASKS_THREADS (wrk threads, 1 or 2,
# default 2), TASKS_VENV (default target/bench-venv-tasks), TASKS_WORKERS
# (baseline processes, default 2), TASKS_BODY (the submit, default
# {"query": "2 + 2", "domain": "calc"}). Prints a markdown table; raw JSON
# lines go to target/tasks-bench.jsonl. Needs wrk (installed with apt-get
# when missing). Capsule runs with the hash embedder and the hash planner
# (no model is needed) and no rate limit.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CAPSULE="${CAPSULE:-$ROOT/target/release/capsule}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
VENV="${TASKS_VENV:-$ROOT/target/bench-venv-tasks}"
THREADS="${TASKS_THREADS:-2}"
export TASKS_WORKERS="${TASKS_WORKERS:-2}"
DEFAULT_BODY='{"query": "2 + 2", "domain": "calc"}'
export TASKS_BODY="${TASKS_BODY:-$DEFAULT_BODY}"
LUA="$ROOT/benches/tasks_wrk.lua"
OUT="$ROOT/target/tasks-bench.jsonl"

TARGETS=(capsule baseline)
case "${1:-}" in
  "") ;;
  --baseline-only) TARGETS=(baseline) ;;
  --capsule-only) TARGETS=(capsule) ;;
  *) echo "usage: $0 [--baseline-only|--capsule-only]" >&2; exit 2 ;;
esac
case "$THREADS" in
  1|2) ;;
  *) echo "TASKS_THREADS must be 1 or 2" >&2; exit 2 ;;
esac

CPU="$( (lscpu 2>/dev/null || true) | sed -n 's/^Model name: *//p' | head -1)"
[ -n "$CPU" ] || CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
NPROC="$(nproc)"
echo "machine: $NPROC CPUs (nproc), $CPU, $(uname -sr)"
echo "duration $DURATION per run (warm-up $WARMUP), targets: ${TARGETS[*]}, wrk threads: $THREADS"
echo "baseline: uvicorn --workers $TASKS_WORKERS; body: $TASKS_BODY"

mkdir -p "$ROOT/target"
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update -qq >&2 && apt-get install -y -qq wrk >&2
fi
PY="$(python3 "$ROOT/benches/tasks_baseline.py" setup "$VENV")"

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
json_field() {  # json_field FIELD < json
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
wait_ready() {  # wait_ready NAME PID URL LOG
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$3" || true)" = 200 ]; do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "$1 exited before it was ready; its log:" >&2; cat "$4" >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 not ready after 60 s; its log:" >&2; cat "$4" >&2; exit 1
    fi
    sleep 0.2
  done
}

declare -A URL TOKEN
submit() {  # submit TARGET -> the reply body; fails unless the status is 202
  local reply code
  reply="$(curl -s --max-time 60 -w '\n%{http_code}' -X POST "${URL[$1]}/v1/tasks" \
    -H "Authorization: Bearer ${TOKEN[$1]}" -H 'Content-Type: application/json' -d "$TASKS_BODY")" \
    || { echo "$1: POST /v1/tasks failed (no reply)" >&2; return 1; }
  code="${reply##*$'\n'}"
  reply="${reply%$'\n'*}"
  [ "$code" = 202 ] || { echo "$1: POST /v1/tasks answered $code, not 202: $reply" >&2; return 1; }
  printf '%s\n' "$reply"
}
# check_submit TARGET REPLY [STATUS]: the reply's shape (and its status, when given).
check_submit() {
  python3 - "$1" "$2" "${3:-}" <<'EOF'
import datetime, json, re, sys
target, reply, want = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
def fail(why):
    sys.exit(f"{target}: {why}; the reply: {json.dumps(reply)}")
for f in ("task_id", "status", "domain", "classification", "policy_decision", "latency_ms",
          "ledger_seq"):
    if f not in reply:
        fail(f"no {f!r} field")
m = re.fullmatch(r"TASK_(\d{8})_[a-z2-7]{32}", reply["task_id"])
if not m:
    fail("task_id is not TASK_YYYYMMDD_ + 32 lower-case base32 characters")
today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
if m.group(1) != today:
    print(f"{target}: note: task_id date {m.group(1)}, UTC today {today}", file=sys.stderr)
if reply["status"] not in ("queued", "cache_hit", "pending_approval", "blocked"):
    fail(f"status {reply['status']!r} is not a submit status")
if reply["policy_decision"].get("outcome") not in ("allowed", "approved", "auto_approved"):
    fail("the policy decision is not allowed")
if not isinstance(reply["ledger_seq"], int):
    fail("ledger_seq is not an integer")
if want and reply["status"] != want:
    fail(f"status {reply['status']!r}, not {want!r}")
EOF
}
# warm_up TARGET: submit, wait for done, and check the next submit is a cache hit.
warm_up() {
  local reply id status deadline code
  reply="$(submit "$1")"
  check_submit "$1" "$reply"
  id="$(json_field task_id <<<"$reply")"
  echo "$1 first submit: $reply"
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "${URL[$1]}/v1/tasks" \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer wrong' -d "$TASKS_BODY")"
  [ "$code" = 401 ] || { echo "$1: a wrong token got $code, not 401" >&2; exit 1; }
  deadline=$((SECONDS + 60))
  while :; do
    reply="$(curl -sf --max-time 10 "${URL[$1]}/v1/tasks/$id" \
      -H "Authorization: Bearer ${TOKEN[$1]}")" \
      || { echo "$1: GET /v1/tasks/$id failed" >&2; exit 1; }
    status="$(json_field status <<<"$reply")"
    [ "$status" = done ] && break
    case "$status" in
      failed|blocked|denied|cancelled|canceled|rejected)
        echo "$1: task $id ended $status: $reply" >&2; exit 1 ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
      echo "$1: task $id not done after 60 s (status $status): $reply" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "$1 task done: $reply"
  reply="$(submit "$1")"
  check_submit "$1" "$reply" cache_hit
  [ "$(json_field task_id <<<"$reply")" = "$id" ] \
    || { echo "$1: the repeated submit got another task_id: $reply" >&2; exit 1; }
  echo "$1 repeated submit: $reply"
}

for target in "${TARGETS[@]}"; do
  port="$(free_port)"
  URL[$target]="http://127.0.0.1:$port"
  if [ "$target" = capsule ]; then
    [ -x "$CAPSULE" ] || { echo "no Capsule binary at $CAPSULE (cargo build --release)" >&2; exit 1; }
    data="$TMP/capsule-data"
    "$CAPSULE" init "$data" --json >"$TMP/init.json"
    TOKEN[capsule]="$("$CAPSULE" tokens add --data "$data" --role agent --name bench --json | json_field token)"
    # The hash embedder and planner: no model is loaded or fetched.
    CAPSULE_MEMORY__EMBEDDER=hash CAPSULE_LLM__PLANNER=hash CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE=0 \
      "$CAPSULE" up --data "$data" \
      --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" --metrics "127.0.0.1:$(free_port)" \
      >"$TMP/capsule.log" 2>&1 &
    PIDS+=($!)
    wait_ready capsule $! "${URL[capsule]}/healthz" "$TMP/capsule.log"
  else
    TOKEN[baseline]="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    TASKS_TOKEN="${TOKEN[baseline]}" TASKS_BASELINE_DIR="$TMP/baseline" \
      "$PY" "$ROOT/benches/tasks_baseline.py" serve "$port" >"$TMP/baseline.log" 2>&1 &
    PIDS+=($!)
    wait_ready baseline $! "${URL[baseline]}/healthz" "$TMP/baseline.log"
  fi
  echo "$target ready at ${URL[$target]}"
  warm_up "$target"
done

run_wrk() {  # run_wrk TARGET THREADS CONNECTIONS DURATION -> one JSON line
  TASKS_TOKEN="${TOKEN[$1]}" wrk -t"$2" -c"$3" -d"$4" --timeout 10s -s "$LUA" "${URL[$1]}" \
    | grep '^{"requests"'
  # Requests wrk abandoned at the end finish in the server; one more submit
  # waits behind them and checks the task is still a cache hit.
  local reply
  reply="$(submit "$1")"
  check_submit "$1" "$reply" cache_hit
}

for target in "${TARGETS[@]}"; do
  run_wrk "$target" 1 4 "$WARMUP" >/dev/null
done

: >"$OUT"
for conns in ${TASKS_CONNS:-16 64 256}; do
  threads=$((conns < THREADS ? conns : THREADS))
  for target in "${TARGETS[@]}"; do
    load="$(cut -d' ' -f1 /proc/loadavg)"  # a busy machine (say, a cargo build) skews everything
    line="$(run_wrk "$target" "$threads" "$conns" "$DURATION")"
    python3 -c 'import json, sys
d = {"target": sys.argv[1], "connections": int(sys.argv[2]), "threads": int(sys.argv[3]),
     **json.loads(sys.argv[4]), "load1_before": float(sys.argv[7]), "nproc": int(sys.argv[5]),
     "cpu": sys.argv[6], "baseline_workers": int(sys.argv[8]), "body": json.loads(sys.argv[9])}
print(json.dumps(d))' "$target" "$conns" "$threads" "$line" "$NPROC" "$CPU" "$load" \
      "$TASKS_WORKERS" "$TASKS_BODY" >>"$OUT"
    echo "  $target c=$conns t=$threads (load before $load): $line" >&2
  done
done

echo
python3 - "$OUT" "$NPROC" "$CPU" "$TASKS_WORKERS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"machine: {sys.argv[3]}, nproc {sys.argv[2]}; wrk on the same machine; "
      f"baseline: uvicorn --workers {sys.argv[4]}")
print()
print("| target | connections | wrk threads | req/s | p50 ms | p99 ms | non-202 | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted({r["connections"] for r in rows}):
    at = {r["target"]: r for r in rows if r["connections"] == c}
    for r in at.values():
        print(f"| {r['target']} | {c} | {r['threads']} | {r['rps']:.1f} | {r['p50_ms']:.2f} "
              f"| {r['p99_ms']:.2f} | {r['non202']} | {r['errors']} |")
    if "capsule" in at and "baseline" in at:
        cap, base = at["capsule"], at["baseline"]
        ratio = f"{cap['rps'] / base['rps']:.2f}x" if base["rps"] else "n/a"
        print(f"| capsule / FastAPI | {c} | | {ratio} | | | | |")
print()
print("ratio rows: requests/s, Capsule / FastAPI. non-202: replies whose status was not 202 "
      "(counted in tasks_wrk.lua). errors: wrk's connect/read/write/timeout errors and "
      "replies with status >= 400.")
EOF
echo "raw: $OUT"
