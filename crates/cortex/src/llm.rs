//! LLM planners (SPEC C2 a, b): a chat model chooses the operation, the
//! measurement and the rationale; the workspace vector comes from the
//! embedding of the input and the rationale, not from the model.
//!
//! A model is anything that answers a [`ChatPrompt`] with text
//! ([`ChatModel`]): the local SmolLM2 (constrained to the plan schema) or a
//! remote provider (OpenAI-compatible, Anthropic). The reply must be one JSON
//! object `{"op": "brain.step"|"brain.measure", "measure": bool,
//! "rationale": "…"}`; [`parse_choice`] checks it and names what is wrong.

use crate::plan::{Op, Plan};
use crate::planner::{ModelOutput, PlanError, PlanInput, Planned, Planner};
use capsule_models::{Embedder, GrammarSpec, LocalChat};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest rationale a model may give, in characters.
pub const MAX_RATIONALE_CHARS: usize = 400;

/// What a planner asks a chat model: a system message and one user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPrompt {
    pub system: String,
    pub user: String,
}

/// A chat model behind an LLM planner.
pub trait ChatModel: Send + Sync {
    /// The planner name callers choose it by (`local`, `openai`, `anthropic`).
    fn name(&self) -> &str;
    /// The model that answers, as recorded with each plan (e.g. the GGUF
    /// file's digest or the provider's model name).
    fn model_id(&self) -> String;
    /// The model's reply text, expected to be the JSON choice. Errors say
    /// which provider failed and why (unreachable, timeout, HTTP status,
    /// missing key); a model that answered with bad JSON is *not* an error
    /// here — [`parse_choice`] reports that.
    fn complete(&self, prompt: &ChatPrompt) -> Result<String, PlanError>;
    /// Why this model cannot answer at all here (e.g. no API key is
    /// configured), known before any call; `None` when it may.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// A free-text answer (no plan schema, no JSON mode), for the task
    /// mesh's general bot. Models that only plan refuse.
    fn answer(&self, _prompt: &ChatPrompt) -> Result<String, PlanError> {
        Err(PlanError {
            planner: self.name().to_string(),
            reason: "this model answers plans only, not free text".into(),
        })
    }
}

/// The part of a plan a model chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub op: Op,
    pub measure: bool,
    pub rationale: String,
}

/// The JSON schema models are asked to follow (JSON mode where a provider
/// has it); the local model's grammar encodes the same shape.
pub fn choice_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "op": {"type": "string", "enum": ["brain.step", "brain.measure"]},
            "measure": {"type": "boolean"},
            "rationale": {"type": "string", "maxLength": MAX_RATIONALE_CHARS}
        },
        "required": ["op", "measure", "rationale"],
        "additionalProperties": false
    })
}

/// Check a model's reply: one JSON object (optionally inside a ```json
/// fence, as chat models like to write) with exactly the three fields, an
/// `op` that agrees with `measure`, and a non-empty rationale within
/// [`MAX_RATIONALE_CHARS`].
pub fn parse_choice(planner: &str, reply: &str) -> Result<Choice, PlanError> {
    let bad = |reason: String| PlanError {
        planner: planner.to_string(),
        reason,
    };
    let text = strip_fence(reply.trim());
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "the model's reply is not JSON ({e}): {:?}",
            truncate(reply, 200)
        ))
    })?;
    let choice: Choice = serde_json::from_value(value).map_err(|e| {
        bad(format!(
            "the model's reply does not follow the plan schema ({e}): {:?}",
            truncate(reply, 200)
        ))
    })?;
    if choice.op != Op::for_measure(choice.measure) {
        return Err(bad(format!(
            "the model chose op {} with measure {}; they disagree",
            choice.op.as_str(),
            choice.measure
        )));
    }
    let n = choice.rationale.chars().count();
    if choice.rationale.trim().is_empty() || n > MAX_RATIONALE_CHARS {
        return Err(bad(format!(
            "rationale has {n} characters; it must be 1..={MAX_RATIONALE_CHARS}"
        )));
    }
    Ok(choice)
}

fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// `s` cut to `max` characters, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Domain separation of the workspace projection's signs.
const PROJECTION_CONTEXT: &str = "capsule cortex gw projection v1";

/// The fixed-seed random projection of SPEC C2 (a): gw\[i\] = Σⱼ sᵢⱼ eⱼ with
/// signs sᵢⱼ = ±1 drawn from BLAKE3's XOF under a fixed key (the same on
/// every machine), scaled to unit norm. Similar embeddings give similar
/// workspace vectors (Johnson–Lindenstrauss).
pub fn project(embedding: &[f32], workspace_dim: usize) -> Vec<f64> {
    let mut xof = blake3::Hasher::new_derive_key(PROJECTION_CONTEXT)
        .update(&(embedding.len() as u64).to_le_bytes())
        .finalize_xof();
    let mut bits = vec![0u8; (workspace_dim * embedding.len()).div_ceil(8)];
    xof.fill(&mut bits);
    let mut gw: Vec<f64> = (0..workspace_dim)
        .map(|i| {
            embedding
                .iter()
                .enumerate()
                .map(|(j, &e)| {
                    let k = i * embedding.len() + j;
                    if bits[k / 8] >> (k % 8) & 1 == 1 {
                        f64::from(e)
                    } else {
                        -f64::from(e)
                    }
                })
                .sum()
        })
        .collect();
    let norm = gw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        gw.iter_mut().for_each(|x| *x /= norm);
    }
    gw
}

/// The instructions every model gets.
const SYSTEM: &str = "You plan one step of a simulated quantum-state kernel that tracks an agent's \
working state. Read the input and answer with one JSON object: \"op\" is \"brain.step\" to evolve the \
state, or \"brain.measure\" to evolve it and then measure it (choose measure when the input asks for a \
decision, a check or a definite answer); \"measure\" is true exactly when op is brain.measure; \
\"rationale\" is one short sentence about the input that explains the choice.";

/// The prompt for a text and what memory recalled for it.
pub fn prompt_for(input: &PlanInput<'_>) -> ChatPrompt {
    let mut user = format!("Input: {}", input.text.trim());
    if !input.recall.is_empty() {
        user.push_str("\nRelated earlier inputs:");
        for r in input.recall {
            let text: String = r.text.chars().take(200).collect();
            user.push_str(&format!("\n- ({:.2}) {}", r.score, text.trim()));
        }
    }
    if let Some(m) = input.measure {
        user.push_str(&format!("\nThe caller asks for measure = {m}."));
    }
    ChatPrompt {
        system: SYSTEM.into(),
        user,
    }
}

/// An LLM planner: the model chooses op, measure and rationale; gw is the
/// caller's, or the projection of the embedding of text and rationale.
pub struct LlmPlanner {
    model: Arc<dyn ChatModel>,
    embedder: Arc<dyn Embedder>,
}

impl LlmPlanner {
    pub fn new(model: Arc<dyn ChatModel>, embedder: Arc<dyn Embedder>) -> Self {
        LlmPlanner { model, embedder }
    }
}

impl Planner for LlmPlanner {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn unavailable(&self) -> Option<String> {
        self.model.unavailable()
    }

    fn plan(&self, input: &PlanInput<'_>) -> Result<Planned, PlanError> {
        let name = self.model.name();
        let reply = self.model.complete(&prompt_for(input))?;
        let choice = parse_choice(name, &reply)?;
        // The caller's measure wins over the model's.
        let measure = input.measure.unwrap_or(choice.measure);
        let gw = match input.gw {
            Some(gw) => gw.to_vec(),
            None => {
                let text = format!("{}\n{}", input.text.trim(), choice.rationale);
                let e = self.embedder.embed_one(&text).map_err(|e| PlanError {
                    planner: name.into(),
                    reason: format!("embedding the input: {e}"),
                })?;
                project(&e, input.workspace_dim)
            }
        };
        Ok(Planned {
            plan: Plan {
                op: Op::for_measure(measure),
                gw,
                measure,
                rationale: choice.rationale,
            },
            model: Some(ModelOutput {
                model_id: self.model.model_id(),
                reply,
            }),
        })
    }
}

/// The local model's output grammar: exactly the choice object, with op
/// and measure agreeing, and a plain-text rationale that cannot break out
/// of its string.
pub const PLAN_GRAMMAR: GrammarSpec = GrammarSpec {
    lark: r#"start: "{\"op\": \"brain.step\", \"measure\": false, \"rationale\": \"" TEXT "\"}"
     | "{\"op\": \"brain.measure\", \"measure\": true, \"rationale\": \"" TEXT "\"}"
TEXT: /[A-Za-z][A-Za-z0-9 ,.;:'()?!-]{0,160}/"#,
    close: "\"}",
};

/// Tokens the local model may generate for one choice; the grammar's
/// closing text ends a rationale cut at this budget.
pub const LOCAL_MAX_TOKENS: usize = 64;

/// Tokens the local model may generate for a free-text answer.
pub const LOCAL_ANSWER_TOKENS: usize = 160;

/// SmolLM2 (or another local GGUF chat model) as a [`ChatModel`].
pub struct LocalModel {
    chat: LocalChat,
}

impl LocalModel {
    pub fn new(chat: LocalChat) -> Self {
        LocalModel { chat }
    }
}

impl ChatModel for LocalModel {
    fn name(&self) -> &str {
        "local"
    }

    fn model_id(&self) -> String {
        self.chat.model_id.clone()
    }

    fn complete(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        self.generate(prompt, LOCAL_MAX_TOKENS, Some(PLAN_GRAMMAR))
    }

    fn answer(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        self.generate(prompt, LOCAL_ANSWER_TOKENS, None)
    }
}

impl LocalModel {
    fn generate(
        &self,
        prompt: &ChatPrompt,
        max_tokens: usize,
        grammar: Option<GrammarSpec>,
    ) -> Result<String, PlanError> {
        let err = |e: capsule_models::ModelError| PlanError {
            planner: "local".into(),
            reason: e.to_string(),
        };
        let text = self
            .chat
            .render(&prompt.system, &prompt.user)
            .map_err(err)?;
        Ok(self
            .chat
            .generate(&text, max_tokens, grammar)
            .map_err(err)?
            .text)
    }
}
