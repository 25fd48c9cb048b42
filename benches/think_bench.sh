#!/usr/bin/env bash
# Load test of POST /v1/think: Capsule against the FastAPI + NumPy baseline
# (benches/think_baseline.py), with wrk at 1, 16 and 64 connections.
#
#   benches/think_bench.sh                  both targets, interleaved
#   benches/think_bench.sh --baseline-only  the baseline alone
#   THINK_PLANNER=local THINK_CONNS=1 DURATION=60s benches/think_bench.sh --capsule-only
#                                           Capsule with the SmolLM2 planner
#   benches/think_bench.sh --tails          issue 18: at concurrency 1, for each
#                                           kernel d in THINK_DIMS (default "64 16"),
#                                           think, kernel step, embedding and the
#                                           HTTP floor (see think_wrk.lua), then
#                                           the baseline; checks think p50 <= step
#                                           p50 + embedding p50 + 0.5 ms and think
#                                           p99 <= p50 + 2 ms
#   THINK_BINARIES="before=OLD after=target/release/capsule" benches/think_bench.sh --tails
#                                           the same, for two builds in one run
#
# Environment: CAPSULE (binary, default target/release/capsule), DURATION
# (per run, default 10s), WARMUP (default 3s), THINK_CONNS (the wrk
# connection counts, default "1 16 64"), THINK_VENV (default
# target/bench-venv-think). Prints a markdown table; raw JSON lines go to
# target/think-bench.jsonl. Needs wrk (installed with apt-get when missing).
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CAPSULE="${CAPSULE:-$ROOT/target/release/capsule}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
VENV="${THINK_VENV:-$ROOT/target/bench-venv-think}"
LUA="$ROOT/benches/think_wrk.lua"
OUT="$ROOT/target/think-bench.jsonl"

TARGETS=(capsule baseline)
case "${1:-}" in
  "") ;;
  --baseline-only) TARGETS=(baseline) ;;
  --capsule-only) TARGETS=(capsule) ;;
  --tails) TARGETS=(tails) ;;
  *) echo "usage: $0 [--baseline-only|--capsule-only|--tails]" >&2; exit 2 ;;
esac

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
NPROC="$(nproc)"
echo "machine: $NPROC CPUs, $CPU, $(uname -sr)"
echo "duration $DURATION per run (warm-up $WARMUP), targets: ${TARGETS[*]}"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update -qq >&2 && apt-get install -y -qq wrk >&2
fi
PY="$(python3 "$ROOT/benches/think_baseline.py" setup "$VENV")"

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

# start_capsule NAME [VAR=VALUE...]: `capsule up` on fresh data with the
# given environment; sets URL[NAME] and TOKEN[NAME].
declare -A URL TOKEN BINARY
start_capsule() {
  local name="$1" port data models
  shift
  local CAPSULE="${BINARY[$name]:-$CAPSULE}"
  port="$(free_port)"
  URL[$name]="http://127.0.0.1:$port"
  [ -x "$CAPSULE" ] || { echo "no Capsule binary at $CAPSULE (cargo build --release)" >&2; exit 1; }
  data="$TMP/$name-data"
  "$CAPSULE" init "$data" --json >"$TMP/$name-init.json"
  TOKEN[$name]="$("$CAPSULE" tokens add --data "$data" --role agent --name bench --json | json_field token)"
  models="${CAPSULE_MODELS:-${CAPSULE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capsule}/models}"
  "$CAPSULE" models fetch --models-dir "$models" >&2
  env "$@" CAPSULE_MEMORY__MODELS="$models" CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE=0 "$CAPSULE" up \
    --data "$data" --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" \
    --metrics "127.0.0.1:$(free_port)" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$name" $! "${URL[$name]}/healthz" "$TMP/$name.log"
}

# wrk_once NAME ENDPOINT DURATION -> one JSON line (concurrency 1); then
# one think by hand, which waits behind a request wrk abandoned at the end.
wrk_once() {
  THINK_ENDPOINT="$2" THINK_TOKEN="${TOKEN[$1]}" wrk -t1 -c1 -d"$3" --timeout 10s -s "$LUA" \
    "${URL[$1]}" | grep '^{"requests"'
  curl -sf -o /dev/null --max-time 120 -X POST "${URL[$1]}/v1/think" \
    -H "Authorization: Bearer ${TOKEN[$1]}" -H 'Content-Type: application/json' -d '{"text": "drain"}'
}

if [ "${TARGETS[*]}" = tails ]; then
  : >"$OUT"
  record() {  # record NAME D ENDPOINT LINE
    python3 -c 'import json, sys
print(json.dumps({"target": sys.argv[1], "d": int(sys.argv[2]), "endpoint": sys.argv[3],
                  **json.loads(sys.argv[4]), "load1_before": float(sys.argv[5]),
                  "nproc": int(sys.argv[6]), "cpu": sys.argv[7]}))' \
      "$1" "$2" "$3" "$4" "$(cut -d' ' -f1 /proc/loadavg)" "$NPROC" "$CPU" >>"$OUT"
    echo "  $1 d=$2 $3 (load $(cut -d' ' -f1 /proc/loadavg)): $4" >&2
  }
  builds=()
  for named in ${THINK_BINARIES:-capsule=$CAPSULE}; do
    builds+=("${named%%=*}")
    BINARY[${named%%=*}-d]="${named#*=}"
  done
  for d in ${THINK_DIMS:-64 16}; do
    for build in "${builds[@]}"; do
      name="$build-d$d"
      BINARY[$name]="${BINARY[$build-d]}"
      start_capsule "$name" "CAPSULE_KERNEL__DIM=$d"
      for endpoint in think step embed floor; do
        wrk_once "$name" "$endpoint" "$WARMUP" >/dev/null
      done
      for endpoint in think step embed floor; do
        record "$build" "$d" "$endpoint" "$(wrk_once "$name" "$endpoint" "$DURATION")"
      done
      # One service at a time: stop this one before the next starts.
      kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    done
  done
  TOKEN[baseline]="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
  port="$(free_port)"
  URL[baseline]="http://127.0.0.1:$port"
  THINK_TOKEN="${TOKEN[baseline]}" THINK_BASELINE_LEDGER="$TMP/baseline-ledger.jsonl" \
    "$PY" "$ROOT/benches/think_baseline.py" serve "$port" >"$TMP/baseline.log" 2>&1 &
  PIDS+=($!)
  wait_ready baseline $! "${URL[baseline]}/healthz" "$TMP/baseline.log"
  wrk_once baseline think "$WARMUP" >/dev/null
  record baseline 64 think "$(wrk_once baseline think "$DURATION")"
  echo
  python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
at = {(r["target"], r["d"], r["endpoint"]): r for r in rows}
print("| target | d | endpoint | requests/s | p50 ms | p99 ms | max ms | errors |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for r in rows:
    errors = str(r["errors"]) + (f" ({r['non2xx']} non-2xx)" if r["non2xx"] else "")
    print(f"| {r['target']} | {r['d']} | {r['endpoint']} | {r['rps']:.1f} | {r['p50_ms']:.2f} "
          f"| {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {errors} |")
print()
for b, d in sorted({(r["target"], r["d"]) for r in rows if r["target"] != "baseline"},
                   key=lambda x: (x[0], -x[1])):
    get = lambda e: at.get((b, d, e))
    think, step, embed, floor = get("think"), get("step"), get("embed"), get("floor")
    if not all((think, step, embed, floor)):
        continue
    # The embedding's own p50: the embed request less the HTTP floor.
    emb = embed["p50_ms"] - floor["p50_ms"]
    bound = step["p50_ms"] + emb + 0.5
    tail = think["p50_ms"] + 2.0
    ok = lambda b: "met" if b else "NOT met"
    print(f"{b}, d = {d}: embedding p50 ~ {embed['p50_ms']:.2f} - {floor['p50_ms']:.2f} = {emb:.2f} ms; "
          f"think p50 {think['p50_ms']:.2f} <= step p50 {step['p50_ms']:.2f} + {emb:.2f} + 0.5 "
          f"= {bound:.2f}: {ok(think['p50_ms'] <= bound)}; "
          f"think p99 {think['p99_ms']:.2f} <= p50 + 2 = {tail:.2f}: {ok(think['p99_ms'] <= tail)}")
EOF
  echo "raw: $OUT"
  exit 0
fi

for target in "${TARGETS[@]}"; do
  port="$(free_port)"
  URL[$target]="http://127.0.0.1:$port"
  if [ "$target" = capsule ]; then
    [ -x "$CAPSULE" ] || { echo "no Capsule binary at $CAPSULE (cargo build --release)" >&2; exit 1; }
    data="$TMP/capsule-data"
    "$CAPSULE" init "$data" --json >"$TMP/init.json"
    TOKEN[capsule]="$("$CAPSULE" tokens add --data "$data" --role agent --name bench --json | json_field token)"
    # The models are fetched once into the shared models directory.
    models="${CAPSULE_MODELS:-${CAPSULE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capsule}/models}"
    "$CAPSULE" models fetch --models-dir "$models" >&2
    CAPSULE_MEMORY__MODELS="$models" CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE=0 "$CAPSULE" up --data "$data" \
      --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" --metrics "127.0.0.1:$(free_port)" \
      >"$TMP/capsule.log" 2>&1 &
    PIDS+=($!)
    wait_ready capsule $! "${URL[capsule]}/healthz" "$TMP/capsule.log"
  else
    TOKEN[baseline]="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    THINK_TOKEN="${TOKEN[baseline]}" THINK_BASELINE_LEDGER="$TMP/baseline-ledger.jsonl" \
      "$PY" "$ROOT/benches/think_baseline.py" serve "$port" >"$TMP/baseline.log" 2>&1 &
    PIDS+=($!)
    wait_ready baseline $! "${URL[baseline]}/healthz" "$TMP/baseline.log"
  fi
  # One request by hand: it must succeed, and a wrong token must not.
  reply="$(curl -sf -X POST "${URL[$target]}/v1/think" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer ${TOKEN[$target]}" -d '{"text": "hello from think_bench"}')" \
    || { echo "$target: POST /v1/think failed" >&2; exit 1; }
  echo "$target ready at ${URL[$target]}: $reply"
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "${URL[$target]}/v1/think" \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer wrong' -d '{"text": "x"}')"
  [ "$code" = 401 ] || { echo "$target: a wrong token got $code, not 401" >&2; exit 1; }
done

run_wrk() {  # run_wrk TARGET THREADS CONNECTIONS DURATION -> one JSON line
  THINK_TOKEN="${TOKEN[$1]}" wrk -t"$2" -c"$3" -d"$4" --timeout 10s -s "$LUA" "${URL[$1]}" \
    | grep '^{"requests"'
  # Requests wrk abandoned at the end may still be queued in the server; one
  # more request waits behind them, so the next run starts on an idle server.
  curl -sf -o /dev/null --max-time 120 -X POST "${URL[$1]}/v1/think" \
    -H "Authorization: Bearer ${TOKEN[$1]}" -H 'Content-Type: application/json' -d '{"text": "drain"}'
}

# Warm up at concurrency 1: with a model planner, requests a concurrent
# warm-up left queued would still be running (in no fixed order) when the
# measured runs start.
for target in "${TARGETS[@]}"; do
  run_wrk "$target" 1 1 "$WARMUP" >/dev/null
done

: >"$OUT"
for conns in ${THINK_CONNS:-1 16 64}; do
  threads=$((conns > 1 ? 2 : 1))
  for target in "${TARGETS[@]}"; do
    load="$(cut -d' ' -f1 /proc/loadavg)"  # a busy machine (say, a cargo build) skews everything
    line="$(run_wrk "$target" "$threads" "$conns" "$DURATION")"
    python3 -c 'import json, sys
d = {"target": sys.argv[1], "concurrency": int(sys.argv[2]), "threads": int(sys.argv[3]),
     **json.loads(sys.argv[4]), "load1_before": float(sys.argv[7]), "nproc": int(sys.argv[5]),
     "cpu": sys.argv[6]}
print(json.dumps(d))' "$target" "$conns" "$threads" "$line" "$NPROC" "$CPU" "$load" >>"$OUT"
    echo "  $target c=$conns (load before $load): $line" >&2
  done
done

echo
python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| target | concurrency | requests/s | p50 ms | p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|")
for c in sorted({r["concurrency"] for r in rows}):
    at = {r["target"]: r for r in rows if r["concurrency"] == c}
    for r in at.values():
        errors = str(r["errors"]) + (f" ({r['non2xx']} non-2xx)" if r["non2xx"] else "")
        print(f"| {r['target']} | {c} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {errors} |")
    if "capsule" in at and "baseline" in at:
        cap, base = at["capsule"], at["baseline"]
        ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
        print(f"| capsule / baseline | {c} | {ratio(cap['rps'], base['rps'])} "
              f"| {ratio(base['p50_ms'], cap['p50_ms'])} | {ratio(base['p99_ms'], cap['p99_ms'])} | |")
print()
print("ratio rows: requests/s is capsule / baseline; p50 and p99 are baseline / capsule "
      "(above 1 means capsule is better). errors: wrk's connect/read/write/timeout "
      "errors and replies with status >= 400.")
EOF
echo "raw: $OUT"
