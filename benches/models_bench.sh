#!/usr/bin/env bash
# Local model speed (issues 8, 18): SmolLM2-135M-Instruct through Capsule's
# LocalChat (candle's quantized llama, the Q4_1 matrices re-quantized to
# Q8_0 at load) beside llama.cpp's own `llama-bench` on the same GGUF file,
# the same machine and the same thread count, interleaved; then the local
# planner's replies to the demo's prompts, and MiniLM embeddings/s at batch
# 1 and 32.
#
#   benches/models_bench.sh
#
# Environment: THREADS (llama-bench's threads, default: the physical cores,
# which is what candle uses), PROMPT (about this many prompt tokens,
# default 64; llama-bench gets the exact count Capsule's prompt has), GEN
# (generated tokens, default 64), ROUNDS (interleaved pairs, default 5; each
# side does 5 timed runs per round and reports its median), LLAMA_BENCH_DIR
# (default target/llama-bench: where llama.cpp is unpacked and built).
#
# llama.cpp comes from the llama-cpp-python 0.3.36 source distribution on
# PyPI (it vendors the whole llama.cpp tree, llama-bench included; the
# sources inside the llama-cpp-sys-2 crate leave the tools out), pinned by
# SHA-256, and is built with cmake's defaults (GGML_NATIVE=ON: what a user
# who builds llama.cpp gets). cmake is installed with apt-get when missing:
# only this benchmark needs it, never Capsule's build.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
THREADS="${THREADS:-$(lscpu -p=CORE | grep -v '^#' | sort -u | wc -l)}"
PROMPT="${PROMPT:-64}"
GEN="${GEN:-64}"
ROUNDS="${ROUNDS:-5}"
WORK="${LLAMA_BENCH_DIR:-$ROOT/target/llama-bench}"
SDIST_VERSION=0.3.36
SDIST_URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$SDIST_VERSION.tar.gz"
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MEM="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
echo "machine: $(nproc) CPUs, $CPU, $MEM, $(uname -sr)"

# --- llama.cpp's llama-bench ---------------------------------------------
mkdir -p "$WORK"
SDIST="$WORK/llama_cpp_python-$SDIST_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  echo "fetching llama-cpp-python $SDIST_VERSION (source, for llama.cpp) …"
  curl -fsSL -o "$SDIST.part" "$SDIST_URL"
  mv "$SDIST.part" "$SDIST"
fi
echo "$SDIST_SHA256  $SDIST" | sha256sum -c --quiet
SRC="$WORK/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
[ -d "$SRC" ] || tar xzf "$SDIST" -C "$WORK"
LLAMA_BENCH="$WORK/build/bin/llama-bench"
if [ ! -x "$LLAMA_BENCH" ]; then
  if ! command -v cmake >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
  fi
  echo "building llama-bench (cmake defaults, Release) …"
  if ! { cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DBUILD_SHARED_LIBS=OFF &&
    cmake --build "$WORK/build" --target llama-bench -j "$(nproc)"; } >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    echo "building llama-bench failed; the whole log is $WORK/build.log" >&2
    exit 1
  fi
fi

# --- Capsule's side ------------------------------------------------------
cargo build --release --quiet --locked --example models_bench
BIN="$ROOT/target/release/examples/models_bench"
GGUF="$("$BIN" gguf)"
echo "model: $GGUF"
echo "threads $THREADS, prompt $PROMPT tokens, generate $GEN tokens, $ROUNDS interleaved rounds"

OUT="$WORK/results.jsonl"
: >"$OUT"
for r in $(seq 1 "$ROUNDS"); do
  line="$("$BIN" llm "$PROMPT" "$GEN")"
  echo "$line" | sed "s/^{/{\"round\":$r,/" >>"$OUT"
  # llama-bench processes exactly as many prompt tokens as the chat-template
  # rendering of Capsule's prompt has.
  n_prompt="$(echo "$line" | grep -o '"prompt_tokens":[0-9]*' | cut -d: -f2)"
  # --repack 0: on CPUs with AMX (Sapphire Rapids and later) the native
  # build's AMX path crashes in this VM (SIGSEGV in ggml_backend_amx_mul_mat);
  # Q4_1 has no AMX kernel anyway, so the CPU path is the one measured.
  "$LLAMA_BENCH" -m "$GGUF" -p "$n_prompt" -n "$GEN" -t "$THREADS" -r 5 --repack 0 -o jsonl \
    | sed "s/^{/{\"round\":$r,\"bench\":\"llama-bench\",/" >>"$OUT"
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours = {r["round"]: r for r in rows if r["bench"] == "llm"}
pp, tg = {}, {}
for r in rows:
    if r["bench"] != "llama-bench":
        continue
    if r["n_prompt"] > 0 and r["n_gen"] == 0:
        pp[r["round"]] = r["avg_ts"]
    elif r["n_gen"] > 0 and r["n_prompt"] == 0:
        tg[r["round"]] = r["avg_ts"]
print()
print("| round | capsule gen tok/s | llama.cpp gen tok/s | ratio | capsule prompt tok/s | llama.cpp prompt tok/s | ratio | capsule TTFT |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
g_ratio, p_ratio = [], []
for k in sorted(ours):
    o = ours[k]
    g_ratio.append(o["gen_tokens_per_s"] / tg[k])
    p_ratio.append(o["prompt_tokens_per_s"] / pp[k])
    print(f"| {k} | {o['gen_tokens_per_s']:.1f} | {tg[k]:.1f} | {g_ratio[-1]:.2f}× "
          f"| {o['prompt_tokens_per_s']:.0f} | {pp[k]:.0f} | {p_ratio[-1]:.2f}× | {o['ttft_ms']:.1f} ms |")
med = statistics.median
o = list(ours.values())
n_prompt = o[0]["prompt_tokens"]
print()
print(f"medians: generation {med(r['gen_tokens_per_s'] for r in o):.1f} vs {med(tg.values()):.1f} tok/s "
      f"(ratio {med(g_ratio):.2f}×, target ≥ 0.80×); prompt {med(r['prompt_tokens_per_s'] for r in o):.0f} vs "
      f"{med(pp.values()):.0f} tok/s (ratio {med(p_ratio):.2f}×)")
print(f"time to first token ({n_prompt}-token prompt): capsule {med(r['ttft_ms'] for r in o):.1f} ms; "
      f"llama.cpp's prompt time for the same length {1e3 * n_prompt / med(pp.values()):.1f} ms")
EOF

# --- The local planner's replies to the demo's prompts -------------------
echo
echo "plans of the demo's prompts (SmolLM2 under the plan grammar):"
cargo run --release --quiet --locked -p capsule-cortex --example plans

# --- MiniLM embeddings ---------------------------------------------------
echo
"$BIN" embed
