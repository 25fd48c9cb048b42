//! Benchmarks of the local models (run by benches/models_bench.sh):
//!
//!   cargo run --release --example models_bench -- embed
//!   cargo run --release --example models_bench -- llm PROMPT_TOKENS GEN_TOKENS
//!   cargo run --release --example models_bench -- gguf
//!
//! `embed` prints embeddings/s at batch 1 and 32 of Capsule's MiniLM and,
//! in the same run, of candle's `BertModel` on the same weights (what the
//! embedder was before issue 18), rounds interleaved, medians of 7 rounds;
//! and the largest difference between the two paths' vectors;
//! `llm` prints the load time (and the Q4_1 → Q8_0 re-quantization's share
//! of it), prompt-processing and generation tokens/s and the time to first
//! token of SmolLM2 on candle (one thread per physical core, or
//! `CANDLE_NUM_THREADS`; whole prompt processed, no cached first turn;
//! greedy, unconstrained, so the token count is exactly GEN_TOKENS unless
//! the model ends its turn), median of 5 runs, as
//! JSON lines; `gguf` fetches SmolLM2 if needed and prints its GGUF's path
//! (for llama.cpp's own `llama-bench` on the same file).

use capsule_models::fetch::fetch_shared;
use capsule_models::{normalize, Embedder, LocalChat, MiniLm, ModelSpec, MINILM, SMOLLM2};
use std::path::Path;
use std::time::Instant;

fn models(spec: &ModelSpec) -> std::path::PathBuf {
    fetch_shared(spec).expect("fetch")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("embed") => embed(args.get(1).map(String::as_str)),
        Some("gguf") => {
            let file = SMOLLM2.files[0].name;
            println!("{}", SMOLLM2.path(&models(&SMOLLM2), file).display());
        }
        Some("llm") => {
            let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
            llm(n(1, 64), n(2, 64));
        }
        _ => eprintln!(
            "usage: models_bench embed [candle|capsule] | llm [PROMPT_TOKENS GEN_TOKENS] | gguf"
        ),
    }
}

/// The embedder before issue 18: candle's `BertModel`, texts padded to the
/// longest of the batch, the padding masked out of attention and mean.
struct CandleMiniLm {
    model: candle_transformers::models::bert::BertModel,
    tokenizer: tokenizers::Tokenizer,
}

impl CandleMiniLm {
    fn load(models: &Path) -> CandleMiniLm {
        use candle_transformers::models::bert::{BertModel, Config};
        let dir = MINILM.dir(models);
        let config: Config =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: 256,
                ..Default::default()
            }))
            .unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(
            bytes,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        CandleMiniLm {
            model: BertModel::load(vb, &config).unwrap(),
            tokenizer,
        }
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        use candle_core::{DType, Device, Tensor};
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).unwrap();
        let (n, len) = (enc.len(), enc[0].get_ids().len());
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (n, len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (n, len), &Device::Cpu).unwrap();
        let types = ids.zeros_like().unwrap();
        let hidden = self.model.forward(&ids, &types, Some(&mask)).unwrap();
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let summed = hidden.broadcast_mul(&m).unwrap().sum(1).unwrap();
        let mean = summed.broadcast_div(&m.sum(1).unwrap()).unwrap();
        let rows: Vec<Vec<f32>> = mean.to_vec2().unwrap();
        rows.into_iter().map(normalize).collect()
    }
}

/// One embedding path under test.
type EmbedFn<'a> = dyn Fn(&[&str]) + 'a;

/// `only`: `candle` or `capsule` times that path alone (for a profiler).
fn embed(only: Option<&str>) {
    let dir = models(&MINILM);
    let lean = MiniLm::load(&dir).expect("load MiniLM");
    let candle = CandleMiniLm::load(&dir);
    let texts: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "Thought number {i}: the agent checks the backup job and writes a short report."
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Warm-up, and how far apart the two paths' vectors are.
    let a = lean.embed(&refs[..32]).unwrap();
    let b = candle.embed(&refs[..32]);
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("{{\"bench\":\"embed\",\"max_abs_diff_capsule_vs_candle\":{diff:.2e}}}");
    let paths: [(&str, &EmbedFn); 2] = [
        ("candle", &|t: &[&str]| {
            candle.embed(t);
        }),
        ("capsule", &|t: &[&str]| {
            lean.embed(t).unwrap();
        }),
    ];
    for batch in [1usize, 32] {
        let n = if batch == 1 { 64 } else { 256 };
        let mut rates = [vec![f64::NAN], vec![f64::NAN]];
        for round in 0..7 {
            // Alternate which path goes first.
            for k in 0..2 {
                let i = (k + round) % 2;
                if only.is_some_and(|o| o != paths[i].0) {
                    continue;
                }
                let t = Instant::now();
                for chunk in refs[..n].chunks(batch) {
                    paths[i].1(chunk);
                }
                rates[i].push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        let [old, new] = rates.map(|r| median(r.into_iter().filter(|x| !x.is_nan()).collect()));
        for (name, rate) in [(paths[0].0, old), (paths[1].0, new)] {
            println!(
                "{{\"bench\":\"embed\",\"path\":\"{name}\",\"batch\":{batch},\"embeddings_per_s\":{rate:.1},\"ms_per_embedding\":{:.3}}}",
                1e3 / rate
            );
        }
        println!(
            "{{\"bench\":\"embed\",\"batch\":{batch},\"speedup_capsule_over_candle\":{:.2}}}",
            new / old
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
