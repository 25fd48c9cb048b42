//! `capsule-cortex`: the think pipeline (SPEC C1) — text or a workspace
//! vector in; a plan, a critic's check, a policy decision, one kernel step,
//! an episodic-memory event and ledger entries out.
//!
//! **Owns:** the plan format ([`Plan`], [`Op`]); the critic
//! ([`critique`]); the planner trait and the deterministic hash planner
//! (SPEC C2 c, [`HashPlanner`]); the orchestration of one think or direct
//! kernel step over a shared kernel ([`Cortex`]), including the order of
//! effects and their undo on failure.
//!
//! **Must never:** step the kernel without an allowing policy decision;
//! step it without queueing the ledger records under the same lock (the
//! log order is the step order); reply before those records are durable;
//! fall back silently from one planner to another; know about HTTP, gRPC or
//! the CLI (the server crate adapts it).
//!
//! **Invariants:** every decision the cortex asks for is in the ledger
//! (allowed ones next to the step they allowed); a call that fails after
//! the step leaves kernel and memory as they were before it.

#![forbid(unsafe_code)]

pub mod critic;
pub mod llm;
pub mod pipeline;
pub mod plan;
pub mod planner;

pub use critic::{critique, CriticLimits, Rejection};
pub use llm::{parse_choice, ChatModel, ChatPrompt, Choice};
pub use pipeline::{
    glyph_of, Cortex, CortexConfig, CortexError, DecisionSummary, KernelState, Observer, StepEvent,
    StepReply, StepResult, ThinkReply, ThinkRequest,
};
pub use plan::{Op, Plan};
pub use planner::{HashPlanner, PlanError, PlanInput, Planner};
