//! The think pipeline (SPEC C1) and the direct kernel step that shares its
//! second half: plan → critic → policy → kernel step → memory → ledger.
//!
//! Order and atomicity: the policy decision is made first; a refusal is
//! recorded and ends the call. An allowed step runs under the kernel lock,
//! which is held until the step's ledger records are queued, so the log
//! order is the kernel's step order; the caller waits for durability after
//! the lock is released. If the memory append or the ledger queueing fails,
//! the kernel is put back to its state before the step and the memory event
//! is retracted: a failed call leaves state as it was.

use crate::critic::{critique, CriticLimits, Rejection};
use crate::plan::{Op, Plan};
use crate::planner::{ModelOutput, PlanError, PlanInput, Planned, Planner, Recalled};
use capsule_kernel::{Kernel, KernelError, Observables, StepOutcome};
use capsule_ledger::{Ledger, LedgerError, Record};
use capsule_memory::vector::{Filter, VectorIndex};
use capsule_memory::{EventStore, MemoryError, NewEvent};
use capsule_models::{Embedder, ModelError};
use capsule_policy::engine::{decision_record, evaluate};
use capsule_policy::{Affect, Decision, DecisionRequest, Lane, Outcome, PolicyEngine, PolicyError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The rationale of every direct kernel step's plan (replay checks it).
pub const DIRECT_STEP_RATIONALE: &str = "direct kernel step";

/// Longest think text, in bytes.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// The cortex's settings.
#[derive(Debug, Clone)]
pub struct CortexConfig {
    /// The policy resource every kernel action names, `kernel:NAME`.
    pub resource: String,
    /// Operations plans may use.
    pub allowed_ops: Vec<Op>,
    /// The planner a think uses when it names none.
    pub default_planner: String,
    /// Affect parameters (SPEC O8) used when a request supplies none; set
    /// by the operator in the configuration, recorded with each decision.
    pub default_affect: Affect,
}

impl Default for CortexConfig {
    fn default() -> Self {
        CortexConfig {
            resource: "kernel:main".into(),
            allowed_ops: Op::ALL.to_vec(),
            default_planner: "hash".into(),
            default_affect: Affect {
                confidence: Some(0.8),
                empathy: Some(0.7),
                safety: Some(0.97),
            },
        }
    }
}

/// One think, as the caller sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinkRequest {
    /// What to think about (≤ 8 KiB). May be empty when `gw` is given.
    #[serde(default)]
    pub text: String,
    /// A workspace vector to use instead of the planner's.
    #[serde(default)]
    pub gw: Option<Vec<f64>>,
    /// Measure after the step (default: the planner decides).
    #[serde(default)]
    pub measure: Option<bool>,
    /// The lane (default prod).
    #[serde(default)]
    pub lane: Option<Lane>,
    /// The planner by name (default: the configured one).
    #[serde(default)]
    pub planner: Option<String>,
    /// Affect parameters for the policy decision (default: the configured ones).
    #[serde(default)]
    pub affect: Option<Affect>,
}

/// What a kernel step did, as replies and the ledger report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: u64,
    pub t: f64,
    pub dt: f64,
    pub entropy: f64,
    pub purity: f64,
    pub trace_error: f64,
    pub valid: bool,
    pub measured_state: Option<usize>,
    /// Negative eigenvalue mass clipped by the positivity projection (SPEC K1).
    pub positivity_correction: f64,
    /// BLAKE3 of the kernel's snapshot after the step (state, clock, RNG):
    /// what replay compares, bit for bit.
    #[serde(default)]
    pub state_digest: String,
}

impl StepResult {
    pub(crate) fn of(o: &StepOutcome, kernel: &Kernel) -> Result<Self> {
        Ok(StepResult {
            step: o.step,
            t: o.t,
            dt: o.dt,
            entropy: o.observables.entropy,
            purity: o.observables.purity,
            trace_error: o.observables.trace_error,
            valid: o.is_valid,
            measured_state: o.measured_state,
            positivity_correction: o.positivity_correction,
            state_digest: state_digest(kernel)?,
        })
    }
}

/// BLAKE3 (hex) of a kernel's snapshot.
pub fn state_digest(kernel: &Kernel) -> Result<String> {
    Ok(blake3::hash(&capsule_kernel::snapshot(kernel)?)
        .to_hex()
        .to_string())
}

/// A policy decision, as replies show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionSummary {
    pub outcome: String,
    pub reason: String,
    pub policies: Vec<String>,
    pub autonomy_rule: Option<u8>,
    pub explanation: String,
    pub would_pass: Option<String>,
    pub mode: String,
}

impl DecisionSummary {
    fn of(d: &Decision) -> Self {
        DecisionSummary {
            outcome: d.outcome.as_str().into(),
            reason: d.reason.clone(),
            policies: d.policies.clone(),
            autonomy_rule: d.autonomy_rule,
            explanation: d.explanation.clone(),
            would_pass: d.would_pass.clone(),
            mode: d.mode.as_str().into(),
        }
    }
}

/// The reply to a think (SPEC C1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkReply {
    #[serde(flatten)]
    pub result: StepResult,
    pub op: Op,
    pub rationale: String,
    pub planner: String,
    pub gw_dim: usize,
    pub decision: DecisionSummary,
    /// The ledger entry of the think; the decision is the entry before it.
    pub ledger_seq: u64,
    /// The episodic-memory event of the think.
    pub event_id: i64,
    /// The glyph id the think is remembered under (BLAKE3 of the text).
    pub glyph: String,
    /// Earlier thinks recalled for this one (top-k by cosine similarity),
    /// as the planner saw them.
    pub recall: Vec<Recalled>,
}

/// Semantic recall (SPEC M2): the embedder and the vector index every
/// think is remembered in, and how many earlier thinks a think recalls.
pub struct Recall {
    pub embedder: Arc<dyn Embedder>,
    pub index: Arc<VectorIndex>,
    pub k: usize,
}

/// Largest k of a memory search.
pub const MAX_SEARCH_K: usize = 100;

/// One result of [`Cortex::search_memory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryHit {
    pub event_id: i64,
    pub score: f32,
    pub kind: String,
    pub lane: String,
    pub glyph: String,
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    /// The remembered text (for thinks).
    pub text: Option<String>,
}

/// The reply to a direct kernel step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReply {
    #[serde(flatten)]
    pub result: StepResult,
    pub decision: DecisionSummary,
    pub ledger_seq: u64,
}

/// Every step the kernel takes, for subscribers (StreamSteps, metrics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepEvent {
    #[serde(flatten)]
    pub result: StepResult,
    pub ledger_seq: u64,
}

/// The kernel's present state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelState {
    pub dimension: usize,
    pub workspace_dim: usize,
    pub step: u64,
    pub t: f64,
    pub dt: f64,
    pub entropy: f64,
    pub purity: f64,
    pub trace_error: f64,
    pub hermiticity_error: f64,
    pub lambda_min: f64,
    pub valid: bool,
    /// Why the kernel refuses to step, when it does.
    pub halted: Option<String>,
    /// Steps whose output needed the positivity projection, over the kernel's life.
    pub positivity_projections: u64,
}

/// Why a call did not complete. Each variant says what a caller should do.
#[derive(Debug, thiserror::Error)]
pub enum CortexError {
    /// The request itself is malformed.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The critic refused the plan (recorded in the ledger).
    #[error("critic refused the plan: {}: {}", .rejection.field, .rejection.reason)]
    Critic {
        rejection: Rejection,
        ledger_seq: u64,
    },
    /// Policy did not allow the action (recorded in the ledger). `reason`
    /// `kill_switch` means the kill switch is armed.
    #[error("policy: {} ({})", .decision.explanation, .decision.outcome)]
    Refused {
        decision: Box<DecisionSummary>,
        ledger_seq: u64,
    },
    /// The kernel refuses to step until an operator resets it.
    #[error("kernel halted at step {step}: {reason}; reset it to continue")]
    Halted {
        step: u64,
        reason: String,
        ledger_seq: u64,
    },
    #[error(transparent)]
    Planner(#[from] PlanError),
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("memory: {0}")]
    Memory(#[from] MemoryError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("policy: {0}")]
    Policy(PolicyError),
}

impl From<PolicyError> for CortexError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid { field, reason } => CortexError::Invalid { field, reason },
            e => CortexError::Policy(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, CortexError>;

/// Hooks for metrics and streaming; every method has a no-op default.
pub trait Observer: Send + Sync {
    /// A policy decision was made (outcome as `Outcome::as_str`).
    fn decision(&self, _outcome: &str) {}
    /// A ledger append became durable after `seconds`.
    fn ledger_append(&self, _seconds: f64) {}
    /// The kernel took a step (after its records are durable).
    fn step(&self, _event: &StepEvent) {}
}

struct NoObserver;
impl Observer for NoObserver {}

/// The think pipeline over one kernel.
pub struct Cortex {
    config: CortexConfig,
    /// What the critic enforces; fixed by the kernel's configuration.
    limits: CriticLimits,
    kernel: Mutex<Kernel>,
    /// The state at the step count it was computed for.
    state_cache: Mutex<Option<KernelState>>,
    policy: Arc<PolicyEngine>,
    ledger: Arc<Ledger>,
    memory: Arc<EventStore>,
    planners: BTreeMap<String, Arc<dyn Planner>>,
    recall: Option<Recall>,
    observer: Arc<dyn Observer>,
}

/// The think-only parts of a step's record.
struct ThinkContext<'a> {
    text: &'a str,
    glyph: String,
    planner: &'a str,
    lane: Lane,
    model: Option<ModelOutput>,
    /// What the caller supplied itself; the plan depends on it.
    caller: crate::replay::CallerInputs,
    /// The text's embedding, stored in the vector index with the event.
    vector: Option<Vec<f32>>,
}

/// What [`Cortex::run`] returns.
struct Executed {
    result: StepResult,
    decision: DecisionSummary,
    ledger_seq: u64,
    event_id: Option<i64>,
}

/// The glyph id of a text: `t_` and the first 16 hex digits of its BLAKE3.
pub fn glyph_of(text: &str) -> String {
    format!("t_{}", &blake3::hash(text.as_bytes()).to_hex()[..16])
}

fn allowed(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Approved | Outcome::AutoApproved)
}

impl Cortex {
    pub fn new(
        config: CortexConfig,
        kernel: Kernel,
        policy: Arc<PolicyEngine>,
        memory: Arc<EventStore>,
    ) -> Result<Cortex> {
        if !config.resource.starts_with("kernel:") {
            return Err(CortexError::Invalid {
                field: "resource".into(),
                reason: format!("{:?} is not of the form kernel:NAME", config.resource),
            });
        }
        let ledger = policy.ledger().clone();
        let limits = CriticLimits {
            workspace_dim: kernel.config().workspace_dim,
            allowed_ops: config.allowed_ops.clone(),
        };
        Ok(Cortex {
            config,
            limits,
            kernel: Mutex::new(kernel),
            state_cache: Mutex::new(None),
            policy,
            ledger,
            memory,
            planners: BTreeMap::new(),
            recall: None,
            observer: Arc::new(NoObserver),
        })
    }

    /// Add a planner under its name (replacing one of the same name).
    pub fn with_planner(mut self, planner: Arc<dyn Planner>) -> Self {
        self.planners.insert(planner.name().to_string(), planner);
        self
    }

    /// Remember every think in `recall.index` and recall for each think.
    pub fn with_recall(mut self, recall: Recall) -> Self {
        self.recall = Some(recall);
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    pub fn policy(&self) -> &Arc<PolicyEngine> {
        &self.policy
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn memory(&self) -> &Arc<EventStore> {
        &self.memory
    }

    /// The planners by name.
    pub fn planner_names(&self) -> Vec<String> {
        self.planners.keys().cloned().collect()
    }

    fn kernel(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Text → plan → critic → policy → kernel step → memory → ledger.
    pub fn think(&self, principal: &str, req: &ThinkRequest) -> Result<ThinkReply> {
        if req.text.len() > MAX_TEXT_BYTES {
            return Err(CortexError::Invalid {
                field: "text".into(),
                reason: format!(
                    "{} bytes exceeds the limit of {MAX_TEXT_BYTES}",
                    req.text.len()
                ),
            });
        }
        if req.text.trim().is_empty() && req.gw.is_none() {
            return Err(CortexError::Invalid {
                field: "text".into(),
                reason: "give a text, a gw, or both".into(),
            });
        }
        let name = req
            .planner
            .as_deref()
            .unwrap_or(&self.config.default_planner);
        let planner = self
            .planners
            .get(name)
            .ok_or_else(|| CortexError::Invalid {
                field: "planner".into(),
                reason: format!(
                    "{name:?} is not configured; known: {}",
                    self.planner_names().join(", ")
                ),
            })?;
        let lane = req.lane.unwrap_or(Lane::Prod);
        let vector = match &self.recall {
            Some(r) if !req.text.trim().is_empty() => Some(r.embedder.embed_one(&req.text)?),
            _ => None,
        };
        let recall = match (&self.recall, &vector) {
            (Some(r), Some(v)) if r.k > 0 => self.recall_for(v, r.k)?,
            _ => Vec::new(),
        };
        let Planned { plan, model } = planner.plan(&PlanInput {
            text: &req.text,
            gw: req.gw.as_deref(),
            measure: req.measure,
            workspace_dim: self.limits.workspace_dim,
            recall: &recall,
        })?;
        self.check(principal, &plan)?;
        let ctx = ThinkContext {
            text: &req.text,
            glyph: glyph_of(&req.text),
            planner: planner.name(),
            lane,
            model,
            caller: crate::replay::CallerInputs {
                gw_given: req.gw.is_some(),
                measure: req.measure,
            },
            vector,
        };
        let glyph = ctx.glyph.clone();
        let done = self.run(principal, &plan, lane, req.affect, Some(ctx))?;
        Ok(ThinkReply {
            result: done.result,
            op: plan.op,
            gw_dim: plan.gw.len(),
            rationale: plan.rationale,
            planner: planner.name().into(),
            decision: done.decision,
            ledger_seq: done.ledger_seq,
            event_id: done.event_id.unwrap_or_default(),
            glyph,
            recall,
        })
    }

    /// The `k` remembered thinks nearest to `vector`.
    fn recall_for(&self, vector: &[f32], k: usize) -> Result<Vec<Recalled>> {
        let filter = Filter {
            kind: Some("think".into()),
            lane: None,
        };
        Ok(self
            .search_vector(vector, k, &filter)?
            .into_iter()
            .map(|h| Recalled {
                event_id: h.event_id,
                score: h.score,
                text: h.text.unwrap_or_default(),
                glyph: h.glyph,
            })
            .collect())
    }

    /// Semantic search of memory: the `k` events nearest to `query`.
    pub fn search_memory(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<MemoryHit>> {
        let Some(r) = &self.recall else {
            return Err(CortexError::Invalid {
                field: "memory".into(),
                reason: "semantic memory is not configured".into(),
            });
        };
        if query.trim().is_empty() || query.len() > MAX_TEXT_BYTES {
            return Err(CortexError::Invalid {
                field: "query".into(),
                reason: format!("must be 1..={MAX_TEXT_BYTES} bytes of text"),
            });
        }
        if k == 0 || k > MAX_SEARCH_K {
            return Err(CortexError::Invalid {
                field: "k".into(),
                reason: format!("must be in 1..={MAX_SEARCH_K}"),
            });
        }
        self.search_vector(&r.embedder.embed_one(query)?, k, filter)
    }

    fn search_vector(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<MemoryHit>> {
        let Some(r) = &self.recall else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for hit in r.index.search(vector, k, filter)? {
            let ev = self.memory.get(hit.key)?;
            out.push(MemoryHit {
                event_id: ev.id,
                score: hit.score,
                text: ev
                    .body
                    .get("text")
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                kind: ev.kind,
                lane: ev.lane,
                glyph: ev.glyph,
                ts: ev.ts,
            });
        }
        Ok(out)
    }

    /// One kernel step under `gw` by `principal`: critic, policy, step, ledger.
    pub fn step(
        &self,
        principal: &str,
        gw: &[f64],
        measure: bool,
        affect: Option<Affect>,
    ) -> Result<StepReply> {
        let plan = Plan {
            op: Op::for_measure(measure),
            gw: gw.to_vec(),
            measure,
            rationale: DIRECT_STEP_RATIONALE.into(),
        };
        self.check(principal, &plan)?;
        let done = self.run(principal, &plan, Lane::Prod, affect, None)?;
        Ok(StepReply {
            result: done.result,
            decision: done.decision,
            ledger_seq: done.ledger_seq,
        })
    }

    /// The critic; a refusal is recorded in the ledger.
    fn check(&self, principal: &str, plan: &Plan) -> Result<()> {
        let Err(rejection) = critique(plan, &self.limits) else {
            return Ok(());
        };
        let mut record = Record::new(principal, "plan.critic", "rejected");
        record.subject = self.config.resource.clone();
        record.reason = format!("{}: {}", rejection.field, rejection.reason);
        record.meta = serde_json::json!({
            "kind": "cortex.critic",
            "field": rejection.field,
            "op": plan.op,
            "gw_dim": plan.gw.len(),
            "gw_digest": plan.gw_digest(),
        });
        let receipt = self.append(record)?;
        Err(CortexError::Critic {
            rejection,
            ledger_seq: receipt.seq,
        })
    }

    fn append(&self, record: Record) -> Result<capsule_ledger::Receipt> {
        let started = Instant::now();
        let receipt = self.ledger.append(record)?;
        self.observer.ledger_append(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// Policy, then the step with its records (see the module doc).
    fn run(
        &self,
        principal: &str,
        plan: &Plan,
        lane: Lane,
        affect: Option<Affect>,
        think: Option<ThinkContext<'_>>,
    ) -> Result<Executed> {
        let request = DecisionRequest {
            principal: principal.into(),
            action: plan.op.as_str().into(),
            resource: self.config.resource.clone(),
            lane,
            level: capsule_policy::SafetyLevel::Low,
            affect: affect.unwrap_or(self.config.default_affect),
            risk: None,
            drift: None,
            args: serde_json::json!({
                "gw_dim": plan.gw.len(),
                "gw_digest": plan.gw_digest(),
                "measure": plan.measure,
            }),
        };
        let circumstances = self.policy.circumstances();
        let decision = evaluate(&self.policy.rules(), &circumstances, &request)?;
        self.observer.decision(decision.outcome.as_str());
        let summary = DecisionSummary::of(&decision);
        let decision_entry = decision_record(&request, &circumstances, &decision);
        if !allowed(decision.outcome) {
            let receipt = self.append(decision_entry)?;
            return Err(CortexError::Refused {
                decision: Box::new(summary),
                ledger_seq: receipt.seq,
            });
        }

        let mut kernel = self.kernel();
        let before = kernel.clone();
        let outcome = match kernel.step(&plan.gw, plan.measure) {
            Ok(o) => o,
            Err(e) => {
                drop(kernel);
                let mut record = Record::new(principal, plan.op.as_str(), "refused");
                record.subject = self.config.resource.clone();
                record.reason = e.to_string();
                record.meta = serde_json::json!({ "kind": "kernel.refused" });
                let started = Instant::now();
                let receipts = self.ledger.append_batch(vec![decision_entry, record])?;
                self.observer.ledger_append(started.elapsed().as_secs_f64());
                let seq = receipts[1].seq;
                return Err(match e {
                    KernelError::Halted { step, reason } => CortexError::Halted {
                        step,
                        reason,
                        ledger_seq: seq,
                    },
                    e => CortexError::Kernel(e),
                });
            }
        };
        let result = match StepResult::of(&outcome, &kernel) {
            Ok(r) => r,
            Err(e) => {
                *kernel = before;
                return Err(e);
            }
        };
        let event = match &think {
            Some(ctx) => {
                let body = serde_json::json!({
                    "principal": principal,
                    "text": ctx.text,
                    "planner": ctx.planner,
                    "model": ctx.model,
                    "plan": plan,
                    "result": result,
                });
                match self.memory.append(NewEvent {
                    kind: "think".into(),
                    lane: ctx.lane.as_str().into(),
                    glyph: ctx.glyph.clone(),
                    payload_ref: None,
                    body,
                }) {
                    Ok(ev) => {
                        if let (Some(r), Some(v)) = (&self.recall, &ctx.vector) {
                            if let Err(e) = r.index.add(ev.id, v, "think", ctx.lane.as_str()) {
                                *kernel = before;
                                let _ = self.memory.retract(ev.id);
                                return Err(e.into());
                            }
                        }
                        Some(ev)
                    }
                    Err(e) => {
                        *kernel = before;
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        let action = if think.is_some() {
            "think"
        } else {
            "kernel.step"
        };
        let mut record = Record::new(
            principal,
            action,
            if outcome.is_valid { "ok" } else { "invalid" },
        );
        record.subject = self.config.resource.clone();
        record.reason = plan.rationale.clone();
        record.meta = serde_json::json!({
            "kind": if think.is_some() { "cortex.think" } else { "kernel.step" },
            "plan": plan,
            "planner": think.as_ref().map(|c| c.planner),
            "model": think.as_ref().map(|c| &c.model),
            "text": think.as_ref().map(|c| c.text),
            "caller": think.as_ref().map(|c| c.caller),
            "glyph": think.as_ref().map(|c| &c.glyph),
            "event_id": event.as_ref().map(|e| e.id),
            "result": result,
            "halted": kernel.halted().map(|h| &h.reason),
        });
        let started = Instant::now();
        let pending = match self.ledger.submit(vec![decision_entry, record]) {
            Ok(p) => p,
            Err(e) => {
                *kernel = before;
                if let Some(ev) = &event {
                    // Best effort: the ledger error is the one to report.
                    let _ = self.memory.retract(ev.id);
                    if let Some(r) = &self.recall {
                        let _ = r.index.remove(ev.id);
                    }
                }
                return Err(e.into());
            }
        };
        let ledger_seq = pending.receipts()[1].seq;
        drop(kernel);
        pending.wait()?;
        self.observer.ledger_append(started.elapsed().as_secs_f64());
        self.observer.step(&StepEvent {
            result: result.clone(),
            ledger_seq,
        });
        Ok(Executed {
            result,
            decision: summary,
            ledger_seq,
            event_id: event.map(|e| e.id),
        })
    }

    /// The kernel's present state (observables cached per step).
    pub fn state(&self) -> Result<KernelState> {
        let kernel = self.kernel();
        let mut cache = self.state_cache.lock().unwrap_or_else(|p| p.into_inner());
        let halted = kernel.halted().map(|h| h.reason.clone());
        if let Some(s) = cache.as_ref() {
            if s.step == kernel.step_count() && s.halted == halted {
                return Ok(s.clone());
            }
        }
        let o: Observables = kernel.state().observables()?;
        let state = KernelState {
            dimension: kernel.config().dim,
            workspace_dim: kernel.config().workspace_dim,
            step: kernel.step_count(),
            t: kernel.time(),
            dt: kernel.dt(),
            entropy: o.entropy,
            purity: o.purity,
            trace_error: o.trace_error,
            hermiticity_error: o.hermiticity_error,
            lambda_min: o.lambda_min,
            valid: o.is_valid() && halted.is_none(),
            halted,
            positivity_projections: kernel.corrections().positivity_projections,
        };
        *cache = Some(state.clone());
        Ok(state)
    }

    /// The full state as a checksummed snapshot (SPEC K7).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(capsule_kernel::snapshot(&self.kernel())?)
    }

    /// Record the start of a session: the kernel's configuration and
    /// state, from which [`crate::replay`] re-runs what follows.
    pub fn record_session_start(&self, actor: &str) -> Result<u64> {
        let kernel = self.kernel();
        let mut record = Record::new(actor, crate::replay::SESSION_START, "ok");
        record.subject = self.config.resource.clone();
        record.reason = format!("session starts at kernel step {}", kernel.step_count());
        record.meta = crate::replay::session_start_meta(&kernel)?;
        let pending = self.ledger.submit(vec![record])?;
        drop(kernel);
        Ok(pending.wait()?[0].seq)
    }

    /// Back to the ground state; clears a halt. Recorded.
    pub fn reset(&self, principal: &str) -> Result<u64> {
        let mut kernel = self.kernel();
        let mut record = Record::new(principal, "kernel.reset", "ok");
        record.subject = self.config.resource.clone();
        record.reason = match kernel.halted() {
            Some(h) => format!("reset after halt at step {}: {}", h.step, h.reason),
            None => format!("reset at step {}", kernel.step_count()),
        };
        record.meta = serde_json::json!({ "kind": "kernel.reset" });
        let before = kernel.clone();
        kernel.reset()?;
        let pending = match self.ledger.submit(vec![record]) {
            Ok(p) => p,
            Err(e) => {
                *kernel = before;
                return Err(e.into());
            }
        };
        drop(kernel);
        Ok(pending.wait()?[0].seq)
    }
}
