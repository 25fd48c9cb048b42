//! Benchmarks of the local models (run by benches/models_bench.sh):
//!
//!   cargo run --release --example models_bench -- embed
//!   cargo run --release --example models_bench -- llm PROMPT_TOKENS GEN_TOKENS
//!   cargo run --release --example models_bench -- gguf
//!
//! `embed` prints embeddings/s at batch 1 and 32 (median of 5 rounds);
//! `llm` prints the load time (and the Q4_1 → Q8_0 re-quantization's share
//! of it), prompt-processing and generation tokens/s and the time to first
//! token of SmolLM2 on candle (one thread per physical core, or
//! `CANDLE_NUM_THREADS`; whole prompt processed, no cached first turn;
//! greedy, unconstrained, so the token count is exactly GEN_TOKENS unless
//! the model ends its turn), median of 5 runs, as
//! JSON lines; `gguf` fetches SmolLM2 if needed and prints its GGUF's path
//! (for llama.cpp's own `llama-bench` on the same file).

use capsule_models::fetch::fetch_shared;
use capsule_models::{Embedder, LocalChat, MiniLm, ModelSpec, MINILM, SMOLLM2};
use std::time::Instant;

fn models(spec: &ModelSpec) -> std::path::PathBuf {
    fetch_shared(spec).expect("fetch")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("embed") => embed(),
        Some("gguf") => {
            let file = SMOLLM2.files[0].name;
            println!("{}", SMOLLM2.path(&models(&SMOLLM2), file).display());
        }
        Some("llm") => {
            let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
            llm(n(1, 64), n(2, 64));
        }
        _ => eprintln!("usage: models_bench embed | llm [PROMPT_TOKENS GEN_TOKENS] | gguf"),
    }
}

fn embed() {
    let m = MiniLm::load(&models(&MINILM)).expect("load MiniLM");
    let texts: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "Thought number {i}: the agent checks the backup job and writes a short report."
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    m.embed(&refs[..32]).unwrap(); // warm-up
    for batch in [1usize, 32] {
        let rounds: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let n = if batch == 1 { 64 } else { 256 };
                for chunk in refs[..n].chunks(batch) {
                    m.embed(chunk).unwrap();
                }
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        println!(
            "{{\"bench\":\"embed\",\"batch\":{batch},\"embeddings_per_s\":{:.1}}}",
            median(rounds)
        );
    }
}

fn llm(prompt_tokens: usize, gen_tokens: usize) {
    let chat = LocalChat::load_smollm2(&models(&SMOLLM2)).expect("load SmolLM2");
    let load = &chat.load_report;
    // A prompt of about `prompt_tokens` tokens (one word ≈ one token here).
    let words: Vec<String> = (0..prompt_tokens.saturating_sub(12))
        .map(|i| ["state", "kernel", "ledger", "policy"][i % 4].to_string())
        .collect();
    // Every run gets its own system message (same length), so no run
    // restores a cached first turn: the whole prompt is processed each time.
    let prompt = |run: usize| {
        chat.render(
            &format!("You are a helpful assistant (run {run})."),
            &words.join(" "),
        )
        .unwrap()
    };
    chat.generate(&prompt(0), 8, None).unwrap(); // warm-up
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    let mut ttft = Vec::new();
    let mut n_prompt = 0;
    let mut n_gen = 0;
    for run in 1..=5 {
        let g = chat.generate(&prompt(run), gen_tokens, None).unwrap();
        n_prompt = g.prompt_tokens;
        n_gen = g.generated_tokens;
        let first = g.time_to_first_token.as_secs_f64();
        pp.push(g.prompt_tokens as f64 / first);
        // Each generated token costs one decode after the first sample.
        tg.push(g.generated_tokens as f64 / (g.total.as_secs_f64() - first));
        ttft.push(first * 1e3);
    }
    println!(
        "{{\"bench\":\"llm\",\"load_ms\":{:.1},\"requantize_ms\":{:.1},\"requantized_tensors\":{},\"prompt_tokens\":{n_prompt},\"generated_tokens\":{n_gen},\"prompt_tokens_per_s\":{:.1},\"gen_tokens_per_s\":{:.1},\"ttft_ms\":{:.2}}}",
        load.total_time.as_secs_f64() * 1e3,
        load.requantize_time.as_secs_f64() * 1e3,
        load.requantized_tensors,
        median(pp),
        median(tg),
        median(ttft)
    );
}
