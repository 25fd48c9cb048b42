//! Replay (SPEC M1): re-run a recorded session from the audit ledger
//! without any model, recompute every plan that the record determines,
//! and report each field that comes out different, naming the entry.
//!
//! A session starts at a `service.start` record, which carries the kernel
//! configuration and the digest of the initial state. After it, every
//! `cortex.think` and `kernel.step` record carries the plan that was
//! executed, the caller's own inputs (`caller`: whether it gave gw, the
//! measure it asked for), the text, the planner and, for model planners,
//! the model's raw reply, and the step result with the digest of the
//! kernel's snapshot after the step; every `kernel.reset` resets. Replay
//! rebuilds the kernel from the configuration and, entry by entry in log
//! order, replays the plan, steps the kernel under the *replayed* plan and
//! compares. What is recomputed, by planner:
//!
//! - **hash planner**: the whole plan — op, measure, gw and rationale — is
//!   recomputed by [`HashPlanner`] from the recorded text and caller
//!   inputs (its plan depends on nothing else; recall is not an input)
//!   and compared value by value (`plan.gw[3]`).
//! - **model planners**: the recorded reply is re-parsed with
//!   [`parse_choice`]; op, measure and rationale are recomputed from it
//!   and the caller's measure exactly as the planner did and compared. gw
//!   is the caller's when it gave one; otherwise it is the projection of
//!   the embedding of text and rationale ([`crate::llm::project`]), and
//!   the embedding needs the embedding model, which replay never loads.
//!   So a model gw is not recomputed; replay checks what the record
//!   determines without a model: its length is the kernel's workspace
//!   dimension and it has unit norm, as every projection has. A changed
//!   model gw is still caught by the decision check below and by the state
//!   digest of the step it drove.
//! - **direct kernel steps**: gw and measure are the caller's; op must be
//!   the one measure implies and the rationale the fixed
//!   [`DIRECT_STEP_RATIONALE`].
//!
//! For every step, when the entry just before it is a policy decision by
//! the same actor on the same resource (the pipeline records the allowing
//! decision there), the decision's action, `gw_digest` and `measure` must
//! be those of the recorded plan: an independent record of what was
//! authorised, and the one check of a model gw's values. The kernel
//! result (step, time, observables, the measured state and the state
//! digest) is then compared field by field (`result.state_digest`).
//!
//! Sessions (SPEC K8): every step record names its session (`meta.session`,
//! `main` when absent), and replay keeps one kernel per session, made on
//! the session's first step from the recorded configuration with the
//! session's seed ([`crate::sessions::session_seed`]); each step runs on
//! its own session's kernel. A `kernel.snapshot` record (an eviction)
//! changes no state: replay checks that the session's replayed kernel has
//! the recorded state digest at that point (`state_digest`).
//!
//! Mismatches name the entry's seq and the field; after the first
//! difference in kernel state, later states follow the replayed kernel,
//! so the first mismatch is the one to read.

use crate::llm::parse_choice;
use crate::pipeline::{state_digest, StepResult, DIRECT_STEP_RATIONALE};
use crate::plan::{Op, Plan};
use crate::planner::{HashPlanner, ModelOutput, PlanInput, Planner};
use crate::sessions::{session_config, SessionName, SNAPSHOT_ACTION};
use capsule_kernel::{Kernel, KernelConfig};
use capsule_ledger::AuditEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The ledger action of a session start.
pub const SESSION_START: &str = "service.start";

/// Most per-index `plan.gw[i]` mismatches listed for one entry; the rest
/// are counted in one more mismatch.
pub const MAX_GW_MISMATCHES: usize = 8;

/// How far a model gw's norm may be from 1 (the projection divides by the
/// norm, leaving an error of a few ulps).
pub const UNIT_NORM_TOLERANCE: f64 = 1e-9;

/// The record that opens a session.
pub fn session_start_meta(kernel: &Kernel) -> crate::pipeline::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "kind": SESSION_START,
        "kernel": kernel.config(),
        "state_digest": state_digest(kernel)?,
    }))
}

/// What the caller of a think supplied itself, recorded with the think
/// (`meta.caller`) because the plan depends on it: a caller's gw is used
/// as given, a caller's measure wins over the planner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerInputs {
    /// The caller gave the workspace vector (it is the plan's gw).
    pub gw_given: bool,
    /// The measure the caller asked for, if any.
    pub measure: Option<bool>,
}

/// One field in which the replay differs from the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The ledger entry.
    pub seq: u64,
    /// The field: `plan.gw[3]`, `plan.rationale`, `result.state_digest`,
    /// `model.reply`, …
    pub field: String,
    /// The recorded value, as JSON text (or in words).
    pub recorded: String,
    /// What the replay gives, as JSON text (or in words).
    pub replayed: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {}: {}: recorded {}, replayed {}",
            self.seq, self.field, self.recorded, self.replayed
        )
    }
}

/// One replayed operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub seq: u64,
    pub action: String,
    /// The session whose kernel it ran on.
    pub session: String,
    pub op: Option<Op>,
    /// How its plan was replayed: `recomputed` (hash planner), `reparsed`
    /// (model reply), `caller` (direct step), or `reset`.
    pub plan_check: &'static str,
    /// The kernel's step after it.
    pub step: u64,
    pub entropy: f64,
    pub state_digest: String,
    /// Re-run only to reach the state at `from`.
    pub warmup: bool,
    /// Empty when the replay agrees with the record.
    pub mismatches: Vec<Mismatch>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The session's start record.
    pub session_seq: u64,
    /// The operations at or after `from`, in log order, and those before
    /// it that differ.
    pub steps: Vec<Replayed>,
    /// Operations before `from` re-run to reach its state.
    pub warmup: usize,
    /// Hash-planner plans recomputed from their text.
    pub plans_recomputed: usize,
    /// Plans whose model reply was re-parsed and compared with the plan.
    pub model_replies: usize,
}

impl ReplayReport {
    /// Everything replayed agrees with the record.
    pub fn matches(&self) -> bool {
        self.steps.iter().all(|s| s.mismatches.is_empty())
    }

    /// Every mismatch, in log order.
    pub fn mismatches(&self) -> impl Iterator<Item = &Mismatch> {
        self.steps.iter().flat_map(|s| &s.mismatches)
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

/// The parts of a think or kernel-step record replay reads; other fields
/// are ignored.
#[derive(Deserialize)]
struct StepMeta {
    plan: Plan,
    result: StepResult,
    #[serde(default)]
    model: Option<ModelOutput>,
    #[serde(default)]
    planner: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caller: Option<CallerInputs>,
    #[serde(default)]
    session: SessionName,
}

/// The parts of a `kernel.snapshot` or `kernel.reset` record replay reads.
#[derive(Deserialize)]
struct SessionMeta {
    #[serde(default)]
    session: SessionName,
    #[serde(default)]
    state_digest: Option<String>,
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
    let main = Kernel::new(s.kernel.clone()).map_err(|source| ReplayError::Kernel {
        seq: session_seq,
        source,
    })?;
    let digest =
        |k: &Kernel, seq: u64| state_digest(k).map_err(|e| bad(seq, format!("state digest: {e}")));
    if digest(&main, session_seq)? != s.state_digest {
        return Err(bad(
            session_seq,
            "the initial kernel state differs from the recorded one".into(),
        ));
    }
    let mut report = ReplayReport {
        session_seq,
        steps: Vec::new(),
        warmup: 0,
        plans_recomputed: 0,
        model_replies: 0,
    };
    let mut kernels = BTreeMap::from([(SessionName::default(), main)]);
    let mut previous: Option<AuditEntry> = None;
    for seq in session_seq + 1..size {
        let e = entry(seq)?;
        let r = &e.record;
        if r.action == SESSION_START {
            break;
        }
        let kind = r.meta.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let done = match kind {
            "cortex.think" | "kernel.step" => {
                let m: StepMeta = serde_json::from_value(r.meta.clone())
                    .map_err(|e| bad(seq, format!("{kind} record: {e}")))?;
                let mut kernel = take_kernel(&mut kernels, &s.kernel, &m.session, seq)?;
                let mut out = Diff {
                    seq,
                    mismatches: Vec::new(),
                };
                let (plan, plan_check) = if kind == "kernel.step" {
                    (replay_direct_step(&m, &mut out), "caller")
                } else if m.planner.as_deref() == Some(HashPlanner.name()) {
                    report.plans_recomputed += 1;
                    let plan = replay_hash_plan(&m, kernel.config().workspace_dim, &mut out)
                        .map_err(|reason| bad(seq, reason))?;
                    (plan, "recomputed")
                } else {
                    report.model_replies += 1;
                    let plan = replay_model_plan(&m, kernel.config().workspace_dim, &mut out);
                    (plan, "reparsed")
                };
                if let Some(d) = previous.as_ref().filter(|d| d.seq + 1 == seq) {
                    check_decision(d, &e, &m.plan, &m.session, &mut out);
                }
                let replayed = match kernel.step(&plan.gw, plan.measure) {
                    Ok(o) => {
                        let again = StepResult::of(&o, &kernel)
                            .map_err(|e| bad(seq, format!("step result: {e}")))?;
                        compare_results(&m.result, &again, &mut out);
                        Replayed {
                            seq,
                            action: r.action.clone(),
                            session: m.session.to_string(),
                            op: Some(plan.op),
                            plan_check,
                            step: again.step,
                            entropy: again.entropy,
                            state_digest: again.state_digest,
                            warmup: seq < from,
                            mismatches: out.mismatches,
                        }
                    }
                    Err(refused) => {
                        out.push(
                            "result",
                            "a completed step".into(),
                            format!("the kernel refuses the replayed plan: {refused}"),
                        );
                        Replayed {
                            seq,
                            action: r.action.clone(),
                            session: m.session.to_string(),
                            op: Some(plan.op),
                            plan_check,
                            step: kernel.step_count(),
                            entropy: f64::NAN,
                            state_digest: digest(&kernel, seq)?,
                            warmup: seq < from,
                            mismatches: out.mismatches,
                        }
                    }
                };
                kernels.insert(m.session, kernel);
                replayed
            }
            "kernel.reset" | SNAPSHOT_ACTION => {
                let m: SessionMeta = serde_json::from_value(r.meta.clone())
                    .map_err(|e| bad(seq, format!("{kind} record: {e}")))?;
                let mut kernel = take_kernel(&mut kernels, &s.kernel, &m.session, seq)?;
                let mut out = Diff {
                    seq,
                    mismatches: Vec::new(),
                };
                if kind == "kernel.reset" {
                    kernel
                        .reset()
                        .map_err(|source| ReplayError::Kernel { seq, source })?;
                }
                let now = digest(&kernel, seq)?;
                if let Some(recorded) = &m.state_digest {
                    out.value("state_digest", recorded, &now);
                }
                let replayed = Replayed {
                    seq,
                    action: r.action.clone(),
                    session: m.session.to_string(),
                    op: None,
                    plan_check: if kind == "kernel.reset" {
                        "reset"
                    } else {
                        "snapshot"
                    },
                    step: kernel.step_count(),
                    entropy: f64::NAN,
                    state_digest: now,
                    warmup: seq < from,
                    mismatches: out.mismatches,
                };
                kernels.insert(m.session, kernel);
                replayed
            }
            _ => {
                previous = Some(e);
                continue;
            }
        };
        previous = Some(e);
        if done.warmup {
            report.warmup += 1;
            if done.mismatches.is_empty() {
                continue;
            }
        }
        report.steps.push(done);
    }
    Ok(report)
}

/// A session's replayed kernel, taken out of `kernels` (put it back after
/// the step); made from the recorded configuration on the session's first
/// use.
fn take_kernel(
    kernels: &mut BTreeMap<SessionName, Kernel>,
    base: &KernelConfig,
    name: &SessionName,
    seq: u64,
) -> Result<Kernel, ReplayError> {
    match kernels.remove(name) {
        Some(k) => Ok(k),
        None => Kernel::new(session_config(base, name))
            .map_err(|source| ReplayError::Kernel { seq, source }),
    }
}

/// The mismatches of one entry as they are found.
struct Diff {
    seq: u64,
    mismatches: Vec<Mismatch>,
}

impl Diff {
    fn push(&mut self, field: &str, recorded: String, replayed: String) {
        self.mismatches.push(Mismatch {
            seq: self.seq,
            field: field.into(),
            recorded,
            replayed,
        });
    }

    /// Record a mismatch when the two values differ, both shown as JSON.
    fn value<T: Serialize + PartialEq>(&mut self, field: &str, recorded: &T, replayed: &T) {
        if recorded != replayed {
            self.push(field, json_text(recorded), json_text(replayed));
        }
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// The caller's inputs of a think; records made before they were recorded
/// are read from the plan itself (a caller's gw is the plan's, a caller's
/// measure is the plan's), so for those records these two facts are taken
/// on trust.
fn caller_of(m: &StepMeta, hash_rationale: bool) -> CallerInputs {
    if let Some(c) = m.caller {
        return c;
    }
    let r = &m.plan.rationale;
    if hash_rationale {
        CallerInputs {
            gw_given: r.contains("the caller's workspace vector"),
            measure: r
                .ends_with("measurement as the caller asked")
                .then_some(m.plan.measure),
        }
    } else {
        CallerInputs {
            gw_given: false,
            measure: Some(m.plan.measure),
        }
    }
}

/// The hash planner's plan for the recorded text and caller inputs; every
/// field compared with the recorded plan.
fn replay_hash_plan(m: &StepMeta, workspace_dim: usize, out: &mut Diff) -> Result<Plan, String> {
    let Some(text) = m.text.as_deref() else {
        out.push(
            "text",
            "null".into(),
            "the text a hash plan is recomputed from".into(),
        );
        return Ok(m.plan.clone());
    };
    if let Some(model) = &m.model {
        out.push(
            "model",
            json_text(model),
            "null (the hash planner calls no model)".into(),
        );
    }
    let caller = caller_of(m, true);
    let planned = HashPlanner
        .plan(&PlanInput {
            text,
            gw: caller.gw_given.then_some(m.plan.gw.as_slice()),
            measure: caller.measure,
            workspace_dim,
            recall: &[],
        })
        .map_err(|e| e.to_string())?;
    compare_plans(&m.plan, &planned.plan, out);
    Ok(planned.plan)
}

/// The plan a model planner made from the recorded reply: the reply's op,
/// measure (unless the caller chose) and rationale; the recorded gw,
/// checked for what its source determines (see the module doc).
fn replay_model_plan(m: &StepMeta, workspace_dim: usize, out: &mut Diff) -> Plan {
    let recorded = &m.plan;
    let planner = m.planner.as_deref().unwrap_or("model");
    let Some(model) = &m.model else {
        out.push(
            "model",
            "null".into(),
            format!("the reply of planner {planner:?}, which a model plan needs"),
        );
        return recorded.clone();
    };
    let choice = match parse_choice(planner, &model.reply) {
        Ok(c) => c,
        Err(e) => {
            out.push("model.reply", json_text(&model.reply), e.to_string());
            return recorded.clone();
        }
    };
    let caller = caller_of(m, false);
    let measure = caller.measure.unwrap_or(choice.measure);
    let replayed = Plan {
        op: Op::for_measure(measure),
        gw: recorded.gw.clone(),
        measure,
        rationale: choice.rationale,
    };
    compare_plans(recorded, &replayed, out);
    if !caller.gw_given {
        check_projection(&recorded.gw, workspace_dim, out);
    }
    replayed
}

/// A direct step's plan is the caller's gw and measure with the op the
/// measure implies and the fixed rationale.
fn replay_direct_step(m: &StepMeta, out: &mut Diff) -> Plan {
    let replayed = Plan {
        op: Op::for_measure(m.plan.measure),
        gw: m.plan.gw.clone(),
        measure: m.plan.measure,
        rationale: DIRECT_STEP_RATIONALE.into(),
    };
    compare_plans(&m.plan, &replayed, out);
    replayed
}

fn compare_plans(recorded: &Plan, replayed: &Plan, out: &mut Diff) {
    out.value("plan.op", &recorded.op, &replayed.op);
    out.value("plan.measure", &recorded.measure, &replayed.measure);
    compare_gw(&recorded.gw, &replayed.gw, out);
    out.value("plan.rationale", &recorded.rationale, &replayed.rationale);
}

/// gw value by value (bit for bit: `to_bits`, so -0.0 ≠ 0.0 and a NaN
/// equals itself), at most [`MAX_GW_MISMATCHES`] listed.
fn compare_gw(recorded: &[f64], replayed: &[f64], out: &mut Diff) {
    if recorded.len() != replayed.len() {
        out.push(
            "plan.gw",
            format!("{} values", recorded.len()),
            format!("{} values", replayed.len()),
        );
        return;
    }
    let differing: Vec<usize> = (0..recorded.len())
        .filter(|&i| recorded[i].to_bits() != replayed[i].to_bits())
        .collect();
    for &i in differing.iter().take(MAX_GW_MISMATCHES) {
        out.push(
            &format!("plan.gw[{i}]"),
            recorded[i].to_string(),
            replayed[i].to_string(),
        );
    }
    if differing.len() > MAX_GW_MISMATCHES {
        out.push(
            "plan.gw",
            format!("{} more values", differing.len() - MAX_GW_MISMATCHES),
            "other values".into(),
        );
    }
}

/// What a projected gw must be without knowing the embedding: the
/// workspace's length and unit norm.
fn check_projection(gw: &[f64], workspace_dim: usize, out: &mut Diff) {
    if gw.len() != workspace_dim {
        out.push(
            "plan.gw",
            format!("{} values", gw.len()),
            format!("a projection of {workspace_dim} values (the workspace dimension)"),
        );
        return;
    }
    let norm = gw.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Written so that a NaN norm is not unit.
    let unit = (norm - 1.0).abs() <= UNIT_NORM_TOLERANCE;
    if !unit {
        out.push(
            "plan.gw",
            format!("norm {norm}"),
            "a projection of norm 1".into(),
        );
    }
}

/// The policy decision recorded just before a step names the action, the
/// gw digest and the measure it allowed; they must be the plan's. An
/// entry that is not a decision by the step's actor on the step's
/// resource is not compared.
fn check_decision(
    d: &AuditEntry,
    step: &AuditEntry,
    plan: &Plan,
    session: &SessionName,
    out: &mut Diff,
) {
    let meta = &d.record.meta;
    if meta.get("kind").and_then(|k| k.as_str()) != Some("policy.decision")
        || d.record.actor != step.record.actor
        || d.record.subject != step.record.subject
    {
        return;
    }
    let request = &meta["request"];
    let decided = |by: String| format!("{by} (the decision at seq {})", d.seq);
    if let Some(action) = request["action"].as_str() {
        if action != plan.op.as_str() {
            out.push("plan.op", json_text(&plan.op), decided(json_text(&action)));
        }
    }
    let args = &request["args"];
    if let Some(allowed) = args["gw_digest"].as_str() {
        let digest = plan.gw_digest();
        if allowed != digest {
            out.push(
                "plan.gw",
                format!("gw_digest {digest}"),
                decided(format!("gw_digest {allowed}")),
            );
        }
    }
    if let Some(allowed) = args["session"].as_str() {
        if allowed != session.as_str() {
            out.push("session", json_text(&session), decided(json_text(&allowed)));
        }
    }
    if let Some(allowed) = args["measure"].as_bool() {
        if allowed != plan.measure {
            out.push(
                "plan.measure",
                plan.measure.to_string(),
                decided(allowed.to_string()),
            );
        }
    }
}

/// Every field of the step result, as `result.FIELD`.
fn compare_results(recorded: &StepResult, again: &StepResult, out: &mut Diff) {
    let a = serde_json::to_value(recorded).unwrap_or_default();
    let b = serde_json::to_value(again).unwrap_or_default();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            let vb = b.get(k).unwrap_or(&serde_json::Value::Null);
            if va != vb {
                out.push(&format!("result.{k}"), va.to_string(), vb.to_string());
            }
        }
    }
}
