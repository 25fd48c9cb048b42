//! Replay (SPEC M1): re-run a recorded session from the audit ledger
//! without any model, and check that every plan and every kernel state
//! comes out the same, bit for bit.
//!
//! A session starts at a `service.start` record, which carries the kernel
//! configuration and the digest of the initial state. After it, every
//! `cortex.think` and `kernel.step` record carries the plan that was
//! executed (and, for model planners, the model's raw reply) and the step
//! result with the digest of the kernel's snapshot after the step; every
//! `kernel.reset` resets. Replay rebuilds the kernel from the configuration,
//! applies the same operations in log order, and compares.

use crate::llm::parse_choice;
use crate::pipeline::{state_digest, StepResult};
use crate::plan::{Op, Plan};
use crate::planner::ModelOutput;
use capsule_kernel::{Kernel, KernelConfig};
use capsule_ledger::AuditEntry;
use serde::{Deserialize, Serialize};

/// The ledger action of a session start.
pub const SESSION_START: &str = "service.start";

/// The record that opens a session.
pub fn session_start_meta(kernel: &Kernel) -> crate::pipeline::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "kind": SESSION_START,
        "kernel": kernel.config(),
        "state_digest": state_digest(kernel)?,
    }))
}

/// One replayed operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub seq: u64,
    pub action: String,
    pub op: Option<Op>,
    /// The kernel's step after it.
    pub step: u64,
    pub entropy: f64,
    pub state_digest: String,
    /// Empty when the replay agrees with the record.
    pub mismatches: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The session's start record.
    pub session_seq: u64,
    /// The operations at or after `from`, in log order.
    pub steps: Vec<Replayed>,
    /// Operations before `from` re-run to reach its state.
    pub warmup: usize,
    /// Plans whose model reply was re-checked against the plan.
    pub model_replies: usize,
}

impl ReplayReport {
    pub fn matches(&self) -> bool {
        self.steps.iter().all(|s| s.mismatches.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the ledger holds no session around entry {0}: replay needs the {SESSION_START} record that opens one")]
    NoSession(u64),
    #[error("entry {seq}: {reason}")]
    Record { seq: u64, reason: String },
    #[error("entry {seq}: kernel: {source}")]
    Kernel {
        seq: u64,
        source: capsule_kernel::KernelError,
    },
    #[error("reading the ledger: {0}")]
    Ledger(#[from] capsule_ledger::LedgerError),
}

#[derive(Deserialize)]
struct Start {
    kernel: KernelConfig,
    state_digest: String,
}

#[derive(Deserialize)]
struct StepMeta {
    plan: Plan,
    result: StepResult,
    #[serde(default)]
    model: Option<ModelOutput>,
    #[serde(default)]
    planner: Option<String>,
}

/// Replay the session that contains entry `from` (or, when `from` lies
/// before every session, the first session), reading entries with `entry`
/// for seq in `0..size`. Operations before `from` are re-run to reach its
/// state and reported only when they differ.
pub fn replay(
    size: u64,
    from: u64,
    entry: impl Fn(u64) -> capsule_ledger::Result<AuditEntry>,
) -> Result<ReplayReport, ReplayError> {
    if from >= size {
        return Err(ReplayError::Record {
            seq: from,
            reason: format!("the ledger has {size} entries"),
        });
    }
    // The session that contains `from`: the nearest start at or before it,
    // else the first one after it.
    let mut start = None;
    for seq in (0..=from).rev().chain(from + 1..size) {
        let e = entry(seq)?;
        if e.record.action == SESSION_START {
            start = Some(e);
            break;
        }
    }
    let start = start.ok_or(ReplayError::NoSession(from))?;
    let session_seq = start.seq;
    let bad = |seq: u64, reason: String| ReplayError::Record { seq, reason };
    let s: Start = serde_json::from_value(start.record.meta.clone())
        .map_err(|e| bad(session_seq, format!("session start: {e}")))?;
    let kernel_err = |seq: u64| move |source| ReplayError::Kernel { seq, source };
    let mut kernel = Kernel::new(s.kernel).map_err(kernel_err(session_seq))?;
    let digest =
        |k: &Kernel, seq: u64| state_digest(k).map_err(|e| bad(seq, format!("state digest: {e}")));
    if digest(&kernel, session_seq)? != s.state_digest {
        return Err(bad(
            session_seq,
            "the initial kernel state differs from the recorded one".into(),
        ));
    }
    let mut report = ReplayReport {
        session_seq,
        steps: Vec::new(),
        warmup: 0,
        model_replies: 0,
    };
    for seq in session_seq + 1..size {
        let e = entry(seq)?;
        let r = &e.record;
        if r.action == SESSION_START {
            break;
        }
        let kind = r.meta.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let mut done = match kind {
            "cortex.think" | "kernel.step" => {
                let m: StepMeta = serde_json::from_value(r.meta.clone())
                    .map_err(|e| bad(seq, format!("step record: {e}")))?;
                let mut mismatches = Vec::new();
                if let Some(model) = &m.model {
                    report.model_replies += 1;
                    check_model_reply(&m, model, &mut mismatches);
                }
                let o = kernel
                    .step(&m.plan.gw, m.plan.measure)
                    .map_err(kernel_err(seq))?;
                let again = StepResult::of(&o, &kernel)
                    .map_err(|e| bad(seq, format!("step result: {e}")))?;
                compare(&m.result, &again, &mut mismatches);
                Replayed {
                    seq,
                    action: r.action.clone(),
                    op: Some(m.plan.op),
                    step: again.step,
                    entropy: again.entropy,
                    state_digest: again.state_digest,
                    mismatches,
                }
            }
            "kernel.reset" => {
                kernel.reset().map_err(kernel_err(seq))?;
                Replayed {
                    seq,
                    action: r.action.clone(),
                    op: None,
                    step: kernel.step_count(),
                    entropy: f64::NAN,
                    state_digest: digest(&kernel, seq)?,
                    mismatches: Vec::new(),
                }
            }
            _ => continue,
        };
        if seq < from {
            report.warmup += 1;
            if !done.mismatches.is_empty() {
                done.mismatches.insert(0, "(before --from)".into());
                report.steps.push(done);
            }
        } else {
            report.steps.push(done);
        }
    }
    Ok(report)
}

/// The model's recorded reply must parse to the plan's choice (the caller's
/// measure, when given, may override the model's).
fn check_model_reply(m: &StepMeta, model: &ModelOutput, out: &mut Vec<String>) {
    let planner = m.planner.as_deref().unwrap_or("model");
    match parse_choice(planner, &model.reply) {
        Ok(c) if c.rationale == m.plan.rationale => {}
        Ok(c) => out.push(format!(
            "the recorded reply gives rationale {:?}, the plan has {:?}",
            c.rationale, m.plan.rationale
        )),
        Err(e) => out.push(format!("the recorded reply does not parse: {e}")),
    }
}

fn compare(recorded: &StepResult, again: &StepResult, out: &mut Vec<String>) {
    let a = serde_json::to_value(recorded).unwrap_or_default();
    let b = serde_json::to_value(again).unwrap_or_default();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            let vb = &b[k];
            if va != vb {
                out.push(format!("{k}: recorded {va}, replayed {vb}"));
            }
        }
    }
}
