#!/usr/bin/env bash
# Vector recall (SPEC M2): Capsule's VectorIndex (usearch HNSW) against
# hnswlib on one data set of clustered unit vectors, same M and
# ef_construction, single-threaded queries, recall@10 against exact ground
# truth, for a list of ef_search values.
#
#   benches/vector_bench.sh
#
# Environment: N (vectors, default 1000000), QUERIES (default 1000), EFS
# (default 16,24,32,40,48,56,64,96,128,192,256), REPEAT (timed rounds per ef,
# median reported, default 3), HNSW_BUILD_THREADS (default 2), VECTOR_VENV
# (default target/bench-venv-vector), VECTOR_BENCH_DIR (default
# target/vector-bench; /dev/shm/... when the disk is short: 1 M needs about
# 7 GiB), REUSE (1: query the indexes an earlier run saved instead of
# building them, to repeat the query measurements). The data set is written
# once to $VECTOR_BENCH_DIR/n$N and reused; indexes and results go beside it.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-1000000}"
QUERIES="${QUERIES:-1000}"
EFS="${EFS:-16,24,32,40,48,56,64,96,128,192,256}"
REPEAT="${REPEAT:-3}"
HNSW_REUSE=()
CAPSULE_REUSE=()
if [ "${REUSE:-0}" = 1 ]; then
  HNSW_REUSE=(--reuse)
  CAPSULE_REUSE=(reuse)
fi
HNSW_BUILD_THREADS="${HNSW_BUILD_THREADS:-2}"
VENV="${VECTOR_VENV:-$ROOT/target/bench-venv-vector}"
DATA="${VECTOR_BENCH_DIR:-$ROOT/target/vector-bench}/n$N"
BENCH="$ROOT/benches/vector_bench.py"

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MEM="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
echo "machine: $(nproc) CPUs, $CPU, $MEM, $(uname -sr)"
echo "data: N=$N × 384, $QUERIES queries, ef in {$EFS}, $REPEAT timed rounds per ef"

cargo build --release --quiet --locked --example vector_bench
BIN="$ROOT/target/release/examples/vector_bench"
read -r M EFC < <("$BIN" params)
echo "HNSW: M=$M ef_construction=$EFC (both libraries)"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy hnswlib
PY="$VENV/bin/python"

STARTED=$SECONDS
"$PY" "$BENCH" gen "$DATA" --n "$N" --queries "$QUERIES"
"$PY" "$BENCH" hnswlib "$DATA" --m "$M" --ef-construction "$EFC" --ef "$EFS" \
  --repeat "$REPEAT" --threads "$HNSW_BUILD_THREADS" --out "$DATA/hnswlib.json" \
  "${HNSW_REUSE[@]}"
"$BIN" run "$DATA" "$EFS" "$REPEAT" "$DATA/capsule.json" "${CAPSULE_REUSE[@]}"
echo
"$PY" "$BENCH" report "$DATA/hnswlib.json" "$DATA/capsule.json"
echo "wall time: $((SECONDS - STARTED)) s (data set, both builds and all queries)"
