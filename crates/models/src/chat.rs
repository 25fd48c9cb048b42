//! The local chat model (SPEC C2 a): SmolLM2-135M-Instruct from its GGUF,
//! run by llama.cpp through the `llama-cpp-2` bindings, with greedy
//! decoding constrained by a GBNF grammar so the output always parses.
//!
//! Why llama.cpp and not candle: the GGUF's Q4_1 tensors have SIMD kernels
//! in llama.cpp and none in candle (about 9 tokens/s there against llama.cpp's
//! ~10× more on the same two cores); llama.cpp also brings the model's own
//! tokenizer and chat template and a grammar sampler, three mechanisms we
//! would otherwise write by hand.

use crate::error::{ModelError, Result};
use crate::fetch::require;
use crate::registry::SMOLLM2;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Context window for one generation (prompt + output), in tokens.
pub const CONTEXT_TOKENS: u32 = 2048;

/// llama.cpp's process-wide backend, initialised once.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| ModelError::Run {
            model: "llama.cpp".into(),
            reason: format!("backend: {e}"),
        })
}

/// One generation's output and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the call to the first generated token.
    pub time_to_first_token: Duration,
    pub total: Duration,
    /// The output was cut at `max_tokens` (the grammar's closing text was
    /// then appended by the caller's [`GrammarSpec::close`]).
    pub truncated: bool,
}

/// What constrains an output: a GBNF grammar, and the text that completes
/// any prefix of it when the token budget runs out.
#[derive(Debug, Clone, Copy)]
pub struct GrammarSpec {
    pub gbnf: &'static str,
    pub close: &'static str,
}

/// The KV state of a prompt's first chat turn (the system message, the
/// same in every plan prompt), kept so the next prompt that starts with
/// the same tokens restores it instead of processing them again.
struct FirstTurn {
    tokens: Vec<LlamaToken>,
    state: SeqState,
}

/// A GGUF chat model ready to generate.
pub struct LocalChat {
    model: LlamaModel,
    template: LlamaChatTemplate,
    threads: i32,
    /// One generation at a time: llama.cpp's worker threads spin while
    /// they wait, so two generations on the same cores slow each other down
    /// far more than running them in turn. The lock also guards the cached
    /// first turn.
    running: Mutex<Option<FirstTurn>>,
    /// SHA-256 of the GGUF (pinned), recorded with each plan.
    pub model_id: String,
}

impl LocalChat {
    /// Load SmolLM2 from `models/smollm2/` (checked against the pin).
    pub fn load_smollm2(models: &Path, threads: usize) -> Result<LocalChat> {
        require(&SMOLLM2, models)?;
        let file = &SMOLLM2.files[0];
        let mut chat = LocalChat::load(&SMOLLM2.path(models, file.name), threads)?;
        chat.model_id = format!("smollm2-135m-instruct-q4_1@sha256:{}", &file.sha256[..16]);
        Ok(chat)
    }

    /// Load any GGUF chat model that carries a chat template.
    pub fn load(path: &Path, threads: usize) -> Result<LocalChat> {
        let load = |reason: String| ModelError::Load {
            path: path.to_path_buf(),
            reason,
        };
        if threads == 0 {
            return Err(ModelError::Invalid {
                field: "threads".into(),
                reason: "must be at least 1".into(),
            });
        }
        let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
            .map_err(|e| load(e.to_string()))?;
        let template = model
            .chat_template(None)
            .map_err(|e| load(format!("chat template: {e}")))?;
        Ok(LocalChat {
            model,
            template,
            threads: threads as i32,
            running: Mutex::new(None),
            model_id: path.display().to_string(),
        })
    }

    /// The prompt text for a system and a user message, as the model's
    /// chat template renders it, ending where the assistant speaks.
    pub fn render(&self, system: &str, user: &str) -> Result<String> {
        let msg = |role: &str, text: &str| {
            LlamaChatMessage::new(role.into(), text.into()).map_err(|e| ModelError::Invalid {
                field: role.into(),
                reason: e.to_string(),
            })
        };
        self.model
            .apply_chat_template(
                &self.template,
                &[msg("system", system)?, msg("user", user)?],
                true,
            )
            .map_err(|e| self.run(format!("chat template: {e}")))
    }

    /// Process `tokens` at positions from `start` in one batch, with logits
    /// for the last one when `logits`.
    fn decode(
        &self,
        ctx: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch,
        tokens: &[LlamaToken],
        start: usize,
        logits: bool,
    ) -> Result<()> {
        batch.clear();
        let last = tokens.len().saturating_sub(1);
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, (start + i) as i32, &[0], logits && i == last)
                .map_err(|e| self.run(e.to_string()))?;
        }
        ctx.decode(batch)
            .map_err(|e| self.run(format!("decode: {e}")))
    }

    fn run(&self, reason: String) -> ModelError {
        ModelError::Run {
            model: self.model_id.clone(),
            reason,
        }
    }

    /// Greedy generation of at most `max_tokens` tokens from a rendered
    /// prompt, constrained by `grammar` when given. Same prompt, same text.
    ///
    /// The prompt is processed in two parts: its first chat turn (up to and
    /// including the first end-of-turn token) and the rest. The first part's
    /// KV state is kept and restored when the next prompt starts with the
    /// same tokens, which saves processing the system message every time;
    /// the split depends on the prompt alone, so cached or not, the same
    /// prompt gives bit-identical logits.
    pub fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        grammar: Option<GrammarSpec>,
    ) -> Result<Generation> {
        let mut first_turn = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
        if tokens.is_empty() {
            return Err(ModelError::Invalid {
                field: "prompt".into(),
                reason: "empty".into(),
            });
        }
        if tokens.len() + max_tokens > CONTEXT_TOKENS as usize {
            return Err(ModelError::Invalid {
                field: "prompt".into(),
                reason: format!(
                    "{} prompt tokens + {max_tokens} to generate exceed the context of {CONTEXT_TOKENS}",
                    tokens.len()
                ),
            });
        }
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(CONTEXT_TOKENS))
            .with_n_batch(CONTEXT_TOKENS)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| self.run(format!("context: {e}")))?;
        let mut grammar_sampler = grammar
            .map(|g| LlamaSampler::grammar(&self.model, g.gbnf, "root"))
            .transpose()
            .map_err(|e| self.run(format!("grammar: {e}")))?;
        let split = tokens
            .iter()
            .position(|&t| vocab.is_eog(t))
            .map(|i| i + 1)
            .filter(|&s| s < tokens.len())
            .unwrap_or(0);
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        if split > 0 {
            let prefix = &tokens[..split];
            match &*first_turn {
                Some(cached) if cached.tokens == prefix => ctx
                    .state_seq_set(&cached.state, 0)
                    .map_err(|e| self.run(format!("restoring the first turn: {e}")))?,
                _ => {
                    self.decode(&mut ctx, &mut batch, prefix, 0, false)?;
                    let state = ctx
                        .state_seq_get(0, LlamaStateSeqFlags::empty())
                        .map_err(|e| self.run(format!("saving the first turn: {e}")))?;
                    *first_turn = Some(FirstTurn {
                        tokens: prefix.to_vec(),
                        state,
                    });
                }
            }
        }
        self.decode(&mut ctx, &mut batch, &tokens[split..], split, true)?;
        let mut out = Vec::new();
        let mut pos = tokens.len() as i32;
        let mut first = None;
        let mut generated = 0;
        let mut truncated = true;
        while generated < max_tokens {
            let logits = ctx.get_logits_ith(batch.n_tokens() - 1);
            let token = match &mut grammar_sampler {
                None => argmax(logits.iter().copied().enumerate()),
                Some(g) => constrained_argmax(g, logits),
            }
            .ok_or_else(|| self.run("no token is allowed by the grammar".into()))?;
            if let Some(g) = &mut grammar_sampler {
                g.accept(token);
            }
            first.get_or_insert_with(|| started.elapsed());
            if vocab.is_eog(token) {
                truncated = false;
                break;
            }
            generated += 1;
            vocab.token_to_piece_into(token, &mut out, false, None);
            batch.clear();
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| self.run(e.to_string()))?;
            pos += 1;
            ctx.decode(&mut batch)
                .map_err(|e| self.run(format!("decode: {e}")))?;
        }
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if truncated {
            if let Some(g) = grammar {
                text.push_str(g.close);
            }
        }
        Ok(Generation {
            text,
            prompt_tokens: tokens.len(),
            generated_tokens: generated,
            time_to_first_token: first.unwrap_or_else(|| started.elapsed()),
            total: started.elapsed(),
            truncated,
        })
    }
}

/// The highest-logit token of `(id, logit)` pairs (the lowest id on a tie,
/// so the choice never depends on iteration details); `None` when every
/// logit is −∞ or NaN.
fn argmax(logits: impl Iterator<Item = (usize, f32)>) -> Option<LlamaToken> {
    let mut best: Option<(usize, f32)> = None;
    for (i, l) in logits {
        if l.is_finite() && best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| LlamaToken(i as i32))
}

/// Greedy decoding under a grammar: the best token the grammar allows.
/// The grammar is first asked about the unconstrained best token alone —
/// usually allowed, and checking one token is cheap — and only when it is
/// refused about the whole vocabulary (≈ 49 000 tokens, the expensive
/// part). Either way the result is the argmax over the allowed tokens.
fn constrained_argmax(grammar: &mut LlamaSampler, logits: &[f32]) -> Option<LlamaToken> {
    let best = argmax(logits.iter().copied().enumerate())?;
    let mut one = LlamaTokenDataArray::new(
        vec![LlamaTokenData::new(best, logits[best.0 as usize], 0.0)],
        false,
    );
    one.apply_sampler(grammar);
    if one.data[0].logit().is_finite() {
        return Some(best);
    }
    let mut all = LlamaTokenDataArray::from_iter(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
        false,
    );
    all.apply_sampler(grammar);
    argmax(all.data.iter().map(|d| (d.id().0 as usize, d.logit())))
}
