#!/usr/bin/env bash
# Think throughput over sessions (SPEC K8 in the service; issue 18 item 7):
# wrk at THINK_CONNS connections (default 16) against one Capsule, the thinks
# all on the default session ("one shared session") or spread over
# THINK_SESSIONS sessions (default 16, round robin per request), alternating
# ROUNDS times (default 3). For each run: requests/s, latency, and the CPU
# utilisation of the whole machine (/proc/stat: busy / total jiffies over the
# run, in % of all CPUs) and of the Capsule process (/proc/PID/stat utime +
# stime, in CPUs).
#
#   cargo build --release -p capsule-cli --locked && benches/think_sessions_bench.sh
#
# Environment: CAPSULE (binary, default target/release/capsule), DURATION
# (per run, default 10s), WARMUP (default 3s). Raw JSON lines go to
# target/think-sessions-bench.jsonl. Needs wrk.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CAPSULE="${CAPSULE:-$ROOT/target/release/capsule}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNS="${THINK_CONNS:-16}"
SESSIONS="${THINK_SESSIONS:-16}"
ROUNDS="${ROUNDS:-3}"
LUA="$ROOT/benches/think_wrk.lua"
OUT="$ROOT/target/think-sessions-bench.jsonl"

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
NPROC="$(nproc)"
echo "machine: $NPROC CPUs, $CPU, $(uname -sr)"
echo "wrk -c$CONNS, $DURATION per run (warm-up $WARMUP), $ROUNDS rounds of 1 vs $SESSIONS sessions"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$CAPSULE" ] || { echo "no Capsule binary at $CAPSULE (cargo build --release -p capsule-cli)" >&2; exit 1; }

TMP="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
URL="http://127.0.0.1:$port"
data="$TMP/capsule-data"
"$CAPSULE" init "$data" --json >"$TMP/init.json"
TOKEN="$("$CAPSULE" tokens add --data "$data" --role agent --name bench --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
models="${CAPSULE_MODELS:-${CAPSULE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capsule}/models}"
"$CAPSULE" models fetch --models-dir "$models" >&2
CAPSULE_MEMORY__MODELS="$models" CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE=0 "$CAPSULE" up --data "$data" \
  --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" --metrics "127.0.0.1:$(free_port)" \
  >"$TMP/capsule.log" 2>&1 &
PID=$!
deadline=$((SECONDS + 60))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz" || true)" = 200 ]; do
  kill -0 "$PID" 2>/dev/null || { echo "capsule exited; its log:" >&2; cat "$TMP/capsule.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "capsule not ready after 60 s" >&2; exit 1; }
  sleep 0.2
done
curl -sf -X POST "$URL/v1/think" -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
  -d '{"text": "hello", "session": "s0"}' >/dev/null || { echo "POST /v1/think with a session failed" >&2; exit 1; }

# cpu_sample -> "busy total proc" jiffies (machine busy, machine total, capsule utime+stime)
cpu_sample() {
  local line
  line="$(grep '^cpu ' /proc/stat)"
  # shellcheck disable=SC2086
  set -- $line
  local busy=$(( $2 + $3 + $4 + $7 + $8 + $9 )) total=$(( $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 ))
  local proc
  proc="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
  echo "$busy $total $proc"
}
run() {  # run SESSIONS DURATION -> one JSON line
  local before after
  before="$(cpu_sample)"
  local line
  line="$(THINK_SESSIONS="$1" THINK_TOKEN="$TOKEN" wrk -t2 -c"$CONNS" -d"$2" --timeout 10s -s "$LUA" "$URL" \
    | grep '^{"requests"')"
  after="$(cpu_sample)"
  # Let requests wrk abandoned drain before the next run.
  curl -sf -o /dev/null --max-time 120 -X POST "$URL/v1/think" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"text": "drain"}'
  python3 -c 'import json, os, sys
b, a = [list(map(int, s.split())) for s in sys.argv[3:5]]
hz = os.sysconf("SC_CLK_TCK")
d = json.loads(sys.argv[2])
busy, total, proc = a[0] - b[0], a[1] - b[1], a[2] - b[2]
d.update(sessions=int(sys.argv[1]), machine_cpu_pct=round(100 * busy / total, 1),
         capsule_cpus=round(proc / hz / d["duration_s"], 2), nproc=int(sys.argv[5]),
         load1_before=float(sys.argv[6]))
print(json.dumps(d))' "$1" "$line" "$before" "$after" "$NPROC" "$(cut -d' ' -f1 /proc/loadavg)"
}

run 0 "$WARMUP" >/dev/null
run "$SESSIONS" "$WARMUP" >/dev/null
: >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for s in 0 "$SESSIONS"; do
    line="$(run "$s" "$DURATION")"
    echo "$line" >>"$OUT"
    echo "  round $round, sessions $s: $line" >&2
  done
done
echo
python3 - "$OUT" "$SESSIONS" "$CONNS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n, c = int(sys.argv[2]), sys.argv[3]
print(f"| sessions | connections | requests/s (median) | runs | p50 ms | p99 ms | machine CPU % | capsule CPUs | errors |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
med = {}
for s in (0, n):
    rs = [r for r in rows if r["sessions"] == s]
    m = statistics.median(r["rps"] for r in rs)
    med[s] = m
    name = "1 (default, shared)" if s == 0 else str(s)
    runs = ", ".join("%.0f" % r["rps"] for r in rs)
    med_of = lambda k: statistics.median(r[k] for r in rs)
    errors = sum(r["errors"] + r["non2xx"] for r in rs)
    print(f"| {name} | {c} | {m:.1f} | {runs} | {med_of('p50_ms'):.2f} | {med_of('p99_ms'):.2f} "
          f"| {med_of('machine_cpu_pct'):.0f} | {med_of('capsule_cpus'):.2f} | {errors} |")
print()
print(f"ratio {n} sessions / 1 shared session: {med[n] / med[0]:.2f}x (target >= 1.5x)")
PY
echo "raw: $OUT"
