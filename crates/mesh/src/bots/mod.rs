//! Domain bots (SPEC T3): one trait, one bot per topic. A bot turns a task
//! spec into an [`Artifact`]; its error becomes a `failed` task with the
//! reason, and a panic inside it is caught and reported the same way.
//! Knowledge, coding and composite tasks, and bots outside the process
//! (over HTTP), come later behind the same trait.

pub mod calc;
pub mod clinical;
pub mod general;
pub mod kernel;
pub mod medical;

use crate::task::TaskSpec;
use capsule_policy::Lane;
use serde::{Deserialize, Serialize};

/// How a bot checked its own answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// What was checked, e.g. `exact re-evaluation`, `range checks`;
    /// `none` when the bot has no check.
    pub method: String,
    /// `None` when there was nothing to check.
    pub passed: Option<bool>,
}

/// A task's result, stored as an object (namespace RESULT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// The answer as text.
    pub answer: String,
    /// The answer as typed JSON.
    pub data: serde_json::Value,
    pub citations: Vec<serde_json::Value>,
    pub verification: Verification,
    pub bot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What a bot is, for routing and classification.
#[derive(Debug, Clone)]
pub struct BotInfo {
    /// The domain, which is also its topic.
    pub domain: &'static str,
    pub description: &'static str,
    /// Example queries: the classifier compares a query with these.
    pub exemplars: &'static [&'static str],
    /// Words that route a query here when the embedding is unsure.
    pub keywords: &'static [&'static str],
    /// Answers depend on case (units: `Mm` is not `mm`)?
    pub case_sensitive: bool,
    /// May a stored answer serve a similar, different query (SPEC M3)?
    /// Never for answers that depend on exact numbers in the query.
    pub semantic_reuse: bool,
    /// Is a done result the answer to the same task later? Not for the
    /// kernel, whose answer depends on its state.
    pub cacheable: bool,
}

/// Who asked, where.
#[derive(Debug, Clone)]
pub struct BotContext {
    pub principal: String,
    pub lane: Lane,
    pub task_id: String,
}

/// A bot's refusal or failure, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct BotError(pub String);

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait Bot: Send + Sync {
    fn describe(&self) -> &BotInfo;
    fn run(&self, spec: &TaskSpec, ctx: &BotContext) -> Result<Artifact, BotError>;
}

/// A string parameter of a task, if given; an error names it if it is
/// not a string.
pub(crate) fn str_param<'a>(spec: &'a TaskSpec, name: &str) -> Result<Option<&'a str>, BotError> {
    match spec.params.get(name) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(BotError(format!(
            "params.{name}: expected a string, got {other}"
        ))),
    }
}

/// Refuse params a bot does not read, naming the first.
pub(crate) fn only_params(spec: &TaskSpec, known: &[&str]) -> Result<(), BotError> {
    match spec.params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(BotError(format!(
            "params.{k}: unknown parameter (this bot reads {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))),
        None => Ok(()),
    }
}
