//! LLM planners (SPEC C2 a, b): a chat model chooses the operation, the
//! measurement and the rationale; the workspace vector comes from the
//! embedding of the input and the rationale, not from the model.
//!
//! A model is anything that answers a [`ChatPrompt`] with text
//! ([`ChatModel`]): the local SmolLM2 (constrained to the plan schema) or a
//! remote provider (OpenAI-compatible, Anthropic). The reply must be one JSON
//! object `{"op": "brain.step"|"brain.measure", "measure": bool,
//! "rationale": "…"}`; [`parse_choice`] checks it and names what is wrong.

use crate::plan::Op;
use crate::planner::PlanError;
use serde::{Deserialize, Serialize};

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

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
