//! `capsule-cortex`: the think pipeline (SPEC C1) — text or a workspace
//! vector in; recall, a plan, a critic's check, a policy decision, one
//! kernel step, an episodic-memory event and ledger entries out.
//!
//! **Owns:** the plan format ([`Plan`], [`Op`]); the critic
//! ([`critique`]); the planner trait and the planners of SPEC C2 — the
//! deterministic hash planner ([`HashPlanner`]), the LLM planners
//! ([`LlmPlanner`]) over the local model ([`LocalModel`], with its output
//! grammar) or a remote provider ([`remote`]: OpenAI-compatible and
//! Anthropic clients with timeouts, retries and backoff); the fixed-seed
//! projection of an embedding to a workspace vector ([`project`]); the
//! orchestration of one think or direct kernel step over a shared kernel
//! ([`Cortex`]), with recall, drift, the order of effects and their undo
//! on failure; held actions queued for approval and run once when a quorum
//! releases them; and replay of a recorded session from the ledger
//! ([`replay`]).
//!
//! **Must never:** step the kernel without an allowing policy decision or
//! an approval released by a quorum (and then only the approved plan,
//! once);
//! step it without queueing the ledger records under the same lock (the
//! log order is the step order); reply before those records are durable;
//! fall back silently from one planner to another; serve HTTP or gRPC or
//! know about the CLI (the server crate adapts it; the remote planners are
//! HTTP *clients* of their providers); call a model during replay.
//!
//! **Invariants:** every decision the cortex asks for is in the ledger
//! (allowed ones next to the step they allowed); a call that fails after
//! the step leaves kernel, memory and the vector index as they were before
//! it; every recorded step carries what replay needs (plan, the caller's
//! inputs, model reply, state digest); a step run for an approval carries
//! its approval id and is followed, in the same ledger batch, by the
//! release entry.

#![forbid(unsafe_code)]

pub mod critic;
pub mod llm;
pub mod pipeline;
pub mod plan;
pub mod planner;
pub mod remote;
pub mod replay;
pub mod sessions;

pub use critic::{critique, CriticLimits, Rejection};
pub use llm::{parse_choice, project, ChatModel, ChatPrompt, Choice, LlmPlanner, LocalModel};
pub use pipeline::{
    glyph_of, state_digest, Cortex, CortexConfig, CortexError, DecisionSummary, KernelState,
    MemoryHit, Observer, Recall, StepEvent, StepReply, StepResult, ThinkReply, ThinkRequest,
    MAX_SEARCH_K,
};
pub use plan::{Op, Plan};
pub use planner::{HashPlanner, ModelOutput, PlanError, PlanInput, Planned, Planner, Recalled};
pub use remote::{AnthropicChat, OpenAiChat, RemoteConfig, RemoteConfigError};
pub use sessions::{SessionInfo, SessionName, SnapshotStore, DEFAULT_SESSION};
