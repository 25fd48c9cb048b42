//! The think pipeline (SPEC C1) and the direct kernel step that shares its
//! second half: plan → critic → policy → kernel step → memory → ledger.
//!
//! Order and atomicity: the policy decision is made first; a refusal is
//! recorded and ends the call. An allowed step runs under the kernel lock,
//! which is held until the step's ledger records are queued, so the log
//! order is the kernel's step order; the caller waits for durability after
//! the lock is released. If the memory append, the ledger queueing or the
//! durable write fails, the kernel is put back to its state before the step
//! and the memory event and vector are removed: a failed call leaves state
//! as it was.
//!
//! Held actions: a decision of `pending_review` or `requires_human` queues
//! the action — its plan and everything needed to run it as approved — in
//! the approval queue and answers [`CortexError::Held`]. Once a quorum has
//! signed, [`Cortex::release`] runs exactly that action once (see
//! `capsule_policy::approvals` for how a crash cannot duplicate it).
//!
//! Sessions: each think and step runs on its session's kernel
//! ([`crate::sessions`]); the kernel lock above is that session's, so
//! different sessions step in parallel. Policy, the kill switch and
//! approvals apply per action as for the default session; a held action
//! remembers its session and runs on that session's kernel when released.

use crate::critic::{critique, CriticLimits, Rejection};
use crate::plan::{Op, Plan};
use crate::planner::{ModelOutput, PlanError, PlanInput, Planned, Planner, Recalled};
use crate::sessions::{SessionInfo, SessionName, Sessions, SnapshotStore};
use capsule_kernel::{Kernel, KernelError, Observables, StepOutcome};
use capsule_ledger::{Ledger, LedgerError, Record};
use capsule_memory::vector::{Filter, VectorIndex};
use capsule_memory::{EventStore, MemoryError, NewEvent};
use capsule_models::{Embedder, ModelError};
use capsule_policy::approvals::{release_record, Approval, ApprovalQueue, ApprovalRequest};
use capsule_policy::engine::{decision_record, evaluate};
use capsule_policy::{
    Affect, Assessment, Decision, DecisionRequest, Lane, PolicyEngine, PolicyError,
};
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
}

impl Default for CortexConfig {
    fn default() -> Self {
        CortexConfig {
            resource: "kernel:main".into(),
            allowed_ops: Op::ALL.to_vec(),
            default_planner: "hash".into(),
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
    /// Affect parameters for the policy decision; each may lower the
    /// current value (GET /v1/affect), never raise it.
    #[serde(default)]
    pub affect: Option<Affect>,
    /// A risk in [0, 1] the think states for itself, at least its action's
    /// risk from the table (a higher one may send it to review).
    #[serde(default)]
    pub risk: Option<f64>,
    /// The session whose kernel steps (default `main`).
    #[serde(default)]
    pub session: Option<SessionName>,
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
    /// Level and risk, and where they came from (the table or the step).
    pub assessment: Assessment,
    /// The step's drift and how it was measured.
    pub drift: Drift,
}

impl DecisionSummary {
    fn of(d: &Decision, drift: &Drift) -> Self {
        DecisionSummary {
            outcome: d.outcome.as_str().into(),
            reason: d.reason.clone(),
            policies: d.policies.clone(),
            autonomy_rule: d.autonomy_rule,
            explanation: d.explanation.clone(),
            would_pass: d.would_pass.clone(),
            mode: d.mode.as_str().into(),
            assessment: d.assessment,
            drift: drift.clone(),
        }
    }
}

/// Drift of a step (SPEC N4): 1 − cos(intent, action), clamped to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub value: f64,
    /// `embedding`: 1 − cos(embedding of the request text, embedding of
    /// the plan's op and rationale), for LLM planners; `text_only`: 0, the
    /// plan is derived from the text alone (hash planner) or given (gw);
    /// `no_text`: 0, a direct kernel step has no stated intent.
    pub source: String,
}

impl Drift {
    fn zero(source: &str) -> Drift {
        Drift {
            value: 0.0,
            source: source.into(),
        }
    }
}

/// The per-lane drift average (EMA, α = [`DRIFT_ALPHA`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftLane {
    pub ema: f64,
    pub last: f64,
    pub steps: u64,
    /// The EMA is above [`DRIFT_WARN`].
    pub warn: bool,
}

/// Smoothing of the per-lane drift EMA.
pub const DRIFT_ALPHA: f64 = 0.2;
/// The EMA above which drift is reported as a warning (metric and log).
pub const DRIFT_WARN: f64 = 0.20;

/// An action waiting for approval, as the 202 reply shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldAction {
    pub approval_id: i64,
    pub digest: String,
    pub quorum: u32,
    pub status: String,
    pub decision: DecisionSummary,
    /// The ledger entry of the decision that held it.
    pub ledger_seq: u64,
}

/// What running an approved action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub approval_id: i64,
    pub result: StepResult,
    /// The ledger entry of the action (the release entry follows it).
    pub ledger_seq: u64,
    pub release_seq: u64,
    pub event_id: Option<i64>,
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
    /// Policy held the action for approval (recorded in the ledger, queued).
    #[error("held for approval {}: {}", .0.approval_id, .0.decision.explanation)]
    Held(Box<HeldAction>),
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
    /// A session's kernel could not be evicted or restored.
    #[error("session {session}: {reason}")]
    Snapshot { session: String, reason: String },
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
    /// A think's drift was measured; `ema` is its lane's average after it.
    fn drift(&self, _lane: &str, _drift: f64, _ema: f64) {}
}

struct NoObserver;
impl Observer for NoObserver {}

/// The think pipeline over one kernel.
pub struct Cortex {
    config: CortexConfig,
    /// What the critic enforces; fixed by the kernel's configuration.
    limits: CriticLimits,
    /// The kernels by session; the default session's is `kernel()`.
    sessions: Sessions,
    /// The state at the step count it was computed for.
    state_cache: Mutex<Option<KernelState>>,
    policy: Arc<PolicyEngine>,
    ledger: Arc<Ledger>,
    memory: Arc<EventStore>,
    planners: BTreeMap<String, Arc<dyn Planner>>,
    recall: Option<Recall>,
    observer: Arc<dyn Observer>,
    /// Held actions wait here; without a queue a held decision is refused.
    approvals: Option<Arc<Mutex<ApprovalQueue>>>,
    drift: Mutex<BTreeMap<String, DriftLane>>,
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
    /// Every ledger entry the execution appended, in order.
    seqs: Vec<u64>,
    event_id: Option<i64>,
}

/// What a call asks of policy besides the plan.
#[derive(Debug, Clone, Default)]
struct Asked {
    affect: Option<Affect>,
    risk: Option<f64>,
}

/// Stop here, forever, when `CAPSULE_TEST_PAUSE_AT` names this point: the
/// crash tests kill the process while it waits (SIGKILL) to show that a
/// release cannot be duplicated by a crash at that point.
fn pause_point(name: &str) {
    if std::env::var("CAPSULE_TEST_PAUSE_AT").is_ok_and(|v| v == name) {
        eprintln!("capsule: paused at {name} (CAPSULE_TEST_PAUSE_AT)");
        loop {
            std::thread::park();
        }
    }
}

/// The glyph id of a text: `t_` and the first 16 hex digits of its BLAKE3.
pub fn glyph_of(text: &str) -> String {
    format!("t_{}", &blake3::hash(text.as_bytes()).to_hex()[..16])
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
        let sessions = Sessions::new(kernel, config.resource.clone(), ledger.clone());
        Ok(Cortex {
            config,
            limits,
            sessions,
            state_cache: Mutex::new(None),
            policy,
            ledger,
            memory,
            planners: BTreeMap::new(),
            recall: None,
            observer: Arc::new(NoObserver),
            approvals: None,
            drift: Mutex::new(BTreeMap::new()),
        })
    }

    /// Keep at most `max_live` session kernels in memory, evicting the
    /// least recently used to `store` (see [`crate::sessions`]).
    pub fn with_sessions(
        mut self,
        max_live: usize,
        store: Option<Arc<dyn SnapshotStore>>,
    ) -> Result<Self> {
        self.sessions.set_limit(max_live, store)?;
        Ok(self)
    }

    /// Every session known to this run, by name.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.list()
    }

    /// Queue held actions in `queue` (and run them once approved).
    pub fn with_approvals(mut self, queue: Arc<Mutex<ApprovalQueue>>) -> Self {
        self.approvals = Some(queue);
        self
    }

    /// The per-lane drift averages.
    pub fn drift(&self) -> BTreeMap<String, DriftLane> {
        self.drift.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Measure a think's drift and fold it into its lane's EMA.
    fn measure_drift(
        &self,
        text: &str,
        vector: Option<&[f32]>,
        planned: &Planned,
        lane: Lane,
    ) -> Result<Drift> {
        let drift = match (&self.recall, vector, &planned.model) {
            (Some(r), Some(intent), Some(_)) => {
                let action = r.embedder.embed_one(&format!(
                    "{} {}",
                    planned.plan.op.as_str(),
                    planned.plan.rationale
                ))?;
                Drift {
                    value: (1.0 - cosine(intent, &action)).clamp(0.0, 1.0),
                    source: "embedding".into(),
                }
            }
            _ if text.trim().is_empty() => Drift::zero("no_text"),
            _ => Drift::zero("text_only"),
        };
        let mut lanes = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        let entry = lanes.entry(lane.as_str().to_string()).or_insert(DriftLane {
            ema: drift.value,
            last: drift.value,
            steps: 0,
            warn: false,
        });
        if entry.steps > 0 {
            entry.ema = DRIFT_ALPHA * drift.value + (1.0 - DRIFT_ALPHA) * entry.ema;
        }
        entry.last = drift.value;
        entry.steps += 1;
        entry.warn = entry.ema > DRIFT_WARN;
        let ema = entry.ema;
        drop(lanes);
        self.observer.drift(lane.as_str(), drift.value, ema);
        Ok(drift)
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
        crate::sessions::lock(self.sessions.main())
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
        if let Some(why) = planner.unavailable() {
            return Err(CortexError::Invalid {
                field: "planner".into(),
                reason: format!("{name} is not available here: {why}"),
            });
        }
        let lane = req.lane.unwrap_or(Lane::Prod);
        let vector = match &self.recall {
            Some(r) if !req.text.trim().is_empty() => Some(r.embedder.embed_one(&req.text)?),
            _ => None,
        };
        let recall = match (&self.recall, &vector) {
            (Some(r), Some(v)) if r.k > 0 => self.recall_for(v, r.k)?,
            _ => Vec::new(),
        };
        let planned = planner.plan(&PlanInput {
            text: &req.text,
            gw: req.gw.as_deref(),
            measure: req.measure,
            workspace_dim: self.limits.workspace_dim,
            recall: &recall,
        })?;
        let drift = self.measure_drift(&req.text, vector.as_deref(), &planned, lane)?;
        let Planned { plan, model } = planned;
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
        let asked = Asked {
            affect: req.affect,
            risk: req.risk,
        };
        let session = req.session.clone().unwrap_or_default();
        let done = self.run(principal, &session, &plan, lane, &asked, drift, Some(ctx))?;
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

    /// One kernel step under `gw` by `principal`: critic, policy, step,
    /// ledger. `risk` may raise the step's risk above its action's.
    pub fn step(
        &self,
        principal: &str,
        gw: &[f64],
        measure: bool,
        affect: Option<Affect>,
        risk: Option<f64>,
    ) -> Result<StepReply> {
        self.step_in(
            &SessionName::default(),
            principal,
            gw,
            measure,
            affect,
            risk,
        )
    }

    /// [`Cortex::step`] on `session`'s kernel.
    pub fn step_in(
        &self,
        session: &SessionName,
        principal: &str,
        gw: &[f64],
        measure: bool,
        affect: Option<Affect>,
        risk: Option<f64>,
    ) -> Result<StepReply> {
        let plan = Plan {
            op: Op::for_measure(measure),
            gw: gw.to_vec(),
            measure,
            rationale: DIRECT_STEP_RATIONALE.into(),
        };
        self.check(principal, &plan)?;
        let asked = Asked { affect, risk };
        let done = self.run(
            principal,
            session,
            &plan,
            Lane::Prod,
            &asked,
            Drift::zero("no_text"),
            None,
        )?;
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
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        principal: &str,
        session: &SessionName,
        plan: &Plan,
        lane: Lane,
        asked: &Asked,
        drift: Drift,
        think: Option<ThinkContext<'_>>,
    ) -> Result<Executed> {
        let (affect, _) = self.policy.affect_for(asked.affect.as_ref())?;
        let request = DecisionRequest {
            principal: principal.into(),
            action: plan.op.as_str().into(),
            resource: self.config.resource.clone(),
            lane,
            level: None,
            affect,
            risk: asked.risk,
            drift: Some(drift.value),
            args: serde_json::json!({
                "gw_dim": plan.gw.len(),
                "gw_digest": plan.gw_digest(),
                "measure": plan.measure,
                "session": session,
            }),
        };
        let circumstances = self.policy.circumstances();
        let decision = evaluate(&self.policy.rules(), &circumstances, &request)?;
        self.observer.decision(decision.outcome.as_str());
        let summary = DecisionSummary::of(&decision, &drift);
        let mut decision_entry = decision_record(&request, &circumstances, &decision);
        decision_entry.meta["drift"] = serde_json::json!(drift);
        if decision.outcome.needs_approval() {
            if let Some(queue) = &self.approvals {
                let held = HeldArgs {
                    kind: if think.is_some() {
                        "think"
                    } else {
                        "kernel.step"
                    }
                    .into(),
                    plan: plan.clone(),
                    lane,
                    risk: asked.risk,
                    drift,
                    text: think.as_ref().map(|c| c.text.to_string()),
                    planner: think.as_ref().map(|c| c.planner.to_string()),
                    model: think.as_ref().and_then(|c| c.model.clone()),
                    caller: think.as_ref().map(|c| c.caller),
                    session: (!session.is_default()).then(|| session.clone()),
                };
                let args = serde_json::to_value(&held).map_err(|e| CortexError::Invalid {
                    field: "approval".into(),
                    reason: e.to_string(),
                })?;
                return Err(self.hold(queue, &request, &decision, summary, decision_entry, args));
            }
        }
        if !decision.outcome.allows() {
            let receipt = self.append(decision_entry)?;
            return Err(CortexError::Refused {
                decision: Box::new(summary),
                ledger_seq: receipt.seq,
            });
        }
        self.execute(
            principal,
            session,
            plan,
            think,
            summary,
            vec![decision_entry],
            None,
        )
    }

    /// Queue a held action and record its decision (naming the approval).
    fn hold(
        &self,
        queue: &Mutex<ApprovalQueue>,
        request: &DecisionRequest,
        decision: &Decision,
        summary: DecisionSummary,
        mut decision_entry: Record,
        args: serde_json::Value,
    ) -> CortexError {
        let approval = ApprovalRequest {
            action: request.action.clone(),
            actor: request.principal.clone(),
            resource: request.resource.clone(),
            args,
            policy_version: decision.policy_version.clone(),
        };
        let config = self.policy.config();
        let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
        let id = match queue.enqueue_for(
            &approval,
            decision.outcome.as_str(),
            config.approval_quorum,
            config.approval_ttl_s,
        ) {
            Ok(id) => id,
            Err(e) => return e.into(),
        };
        decision_entry.meta["approval"] =
            serde_json::json!({"id": id, "digest": approval.digest()});
        match self.append(decision_entry) {
            Ok(receipt) => CortexError::Held(Box::new(HeldAction {
                approval_id: id,
                digest: approval.digest(),
                quorum: config.approval_quorum,
                status: "pending".into(),
                decision: summary,
                ledger_seq: receipt.seq,
            })),
            Err(e) => {
                // Unrecorded, so it must not wait either.
                let _ = queue.discard(id);
                e
            }
        }
    }

    /// Run an approved action from the queue, exactly once: claim it, run
    /// the plan it holds as it was approved, append its record and the
    /// release entry in one batch, mark it released. Refused while the
    /// kill switch is armed (it stays approved).
    pub fn release(&self, id: i64) -> Result<Released> {
        let Some(queue) = &self.approvals else {
            return Err(CortexError::Invalid {
                field: "approval".into(),
                reason: "this cortex has no approval queue".into(),
            });
        };
        let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
        let approval = queue.show(id)?;
        let held = HeldArgs::parse(&approval)?;
        let mut presented = approval.request.clone();
        presented.policy_version = self.policy.rules().version().to_string();
        if self.policy.kill_switch().is_armed() {
            let (d, receipt) = self.policy.decide_and_record(&DecisionRequest {
                principal: approval.request.actor.clone(),
                action: approval.request.action.clone(),
                resource: approval.request.resource.clone(),
                lane: held.lane,
                level: None,
                affect: self.policy.affect_for(None)?.0,
                risk: held.risk,
                drift: None,
                args: serde_json::json!({}),
            })?;
            return Err(CortexError::Refused {
                decision: Box::new(DecisionSummary::of(&d, &held.drift)),
                ledger_seq: receipt.seq,
            });
        }
        let approval = queue.claim(id, &presented, &self.ledger)?;
        pause_point("release.claimed");
        let think = match &held.text {
            Some(text) => Some(ThinkContext {
                text,
                glyph: glyph_of(text),
                planner: held.planner.as_deref().unwrap_or("hash"),
                lane: held.lane,
                model: held.model.clone(),
                caller: held.caller.unwrap_or(crate::replay::CallerInputs {
                    gw_given: false,
                    measure: None,
                }),
                vector: match &self.recall {
                    Some(r) if !text.trim().is_empty() => Some(r.embedder.embed_one(text)?),
                    _ => None,
                },
            }),
            None => None,
        };
        let config = self.policy.config();
        let summary = DecisionSummary {
            outcome: "released".into(),
            reason: "approval".into(),
            policies: Vec::new(),
            autonomy_rule: None,
            explanation: format!(
                "{} held it; released by {} approver signature(s) over digest {}",
                approval.outcome,
                approval.approvers.len(),
                approval.digest
            ),
            would_pass: None,
            mode: config.mode.as_str().into(),
            assessment: config.levels.assess(&approval.request.action, held.risk)?,
            drift: held.drift.clone(),
        };
        let session = held.session.clone().unwrap_or_default();
        let done = match self.execute(
            &approval.request.actor,
            &session,
            &held.plan,
            think,
            summary,
            Vec::new(),
            Some(&approval),
        ) {
            Ok(done) => done,
            Err(e) => {
                // Nothing ran (the step and its records were undone).
                let _ = queue.unclaim(id);
                return Err(e);
            }
        };
        pause_point("release.appended");
        let release_seq = *done.seqs.last().unwrap_or(&done.ledger_seq);
        let released = Released {
            approval_id: id,
            result: done.result,
            ledger_seq: done.ledger_seq,
            release_seq,
            event_id: done.event_id,
        };
        queue.finish(
            id,
            &serde_json::to_value(&released).unwrap_or_default(),
            &done.seqs,
        )?;
        Ok(released)
    }

    /// Can this cortex run `approval`'s action (a held think or step)?
    pub fn runs(&self, approval: &Approval) -> bool {
        self.approvals.is_some() && HeldArgs::parse(approval).is_ok()
    }

    /// After a restart: settle the actions a crash interrupted (see
    /// `ApprovalQueue::recover`) and run every approved action the service
    /// can run that has not run yet, unless the kill switch is armed.
    /// Returns each id it tried with why it did not run, if it did not (a
    /// changed rule set voids it, a halted kernel refuses it): one action
    /// that cannot run must not keep the service from starting.
    pub fn resume_approvals(&self) -> Result<Vec<(i64, Option<String>)>> {
        let Some(queue) = &self.approvals else {
            return Ok(Vec::new());
        };
        let approved = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.recover(&self.ledger)?;
            q.list(Some("approved"))?
        };
        let mut ran = Vec::new();
        if self.policy.kill_switch().is_armed() {
            return Ok(ran);
        }
        for a in approved {
            if HeldArgs::parse(&a).is_ok() {
                ran.push((a.id, self.release(a.id).err().map(|e| e.to_string())));
            }
        }
        Ok(ran)
    }

    /// The step and its records (see the module doc). `before` are records
    /// that precede the step's own (its decision); `approval`, when the
    /// step runs an approved action, adds `approval_id` to the step's
    /// record and the release entry after it, in the same batch.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        principal: &str,
        session: &SessionName,
        plan: &Plan,
        think: Option<ThinkContext<'_>>,
        summary: DecisionSummary,
        before_records: Vec<Record>,
        approval: Option<&Approval>,
    ) -> Result<Executed> {
        let slot = self.sessions.acquire(session)?;
        let mut kernel = crate::sessions::lock(&slot);
        let before = kernel.clone();
        let outcome = match kernel.step(&plan.gw, plan.measure) {
            Ok(o) => o,
            Err(e) => {
                drop(kernel);
                let mut record = Record::new(principal, plan.op.as_str(), "refused");
                record.subject = self.config.resource.clone();
                record.reason = e.to_string();
                record.meta = serde_json::json!({ "kind": "kernel.refused", "session": session });
                let started = Instant::now();
                let mut records = before_records;
                records.push(record);
                let receipts = self.ledger.append_batch(records)?;
                self.observer.ledger_append(started.elapsed().as_secs_f64());
                let seq = receipts.last().map_or(0, |r| r.seq);
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
            "drift": summary.drift,
            "assessment": summary.assessment,
            "session": session,
        });
        if let Some(a) = approval {
            record.meta["approval_id"] = serde_json::json!(a.id);
        }
        let own = before_records.len();
        let mut records = before_records;
        records.push(record);
        records.extend(approval.map(release_record));
        let undo_memory = |event: &Option<capsule_memory::Event>| {
            if let Some(ev) = event {
                // Best effort: the ledger error is the one to report.
                let _ = self.memory.retract(ev.id);
                if let Some(r) = &self.recall {
                    let _ = r.index.remove(ev.id);
                }
            }
        };
        let started = Instant::now();
        let pending = match self.ledger.submit(records) {
            Ok(p) => p,
            Err(e) => {
                *kernel = before;
                undo_memory(&event);
                return Err(e.into());
            }
        };
        let seqs: Vec<u64> = pending.receipts().iter().map(|r| r.seq).collect();
        let ledger_seq = seqs[own];
        drop(kernel);
        if let Err(e) = pending.wait() {
            // Not durable, so it did not happen. A failed ledger fails every
            // later write too, so each step queued after this one is being
            // undone as well: restore only when the kernel is past this
            // step's starting point, so the earliest such state wins.
            let mut kernel = crate::sessions::lock(&slot);
            if kernel.step_count() > before.step_count() {
                *kernel = before;
            }
            drop(kernel);
            undo_memory(&event);
            return Err(e.into());
        }
        self.observer.ledger_append(started.elapsed().as_secs_f64());
        self.observer.step(&StepEvent {
            result: result.clone(),
            ledger_seq,
        });
        Ok(Executed {
            result,
            decision: summary,
            ledger_seq,
            seqs,
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
        self.reset_in(&SessionName::default(), principal)
    }

    /// [`Cortex::reset`] of `session`'s kernel.
    pub fn reset_in(&self, session: &SessionName, principal: &str) -> Result<u64> {
        let slot = self.sessions.acquire(session)?;
        let mut kernel = crate::sessions::lock(&slot);
        let mut record = Record::new(principal, "kernel.reset", "ok");
        record.subject = self.config.resource.clone();
        record.reason = match kernel.halted() {
            Some(h) => format!("reset after halt at step {}: {}", h.step, h.reason),
            None => format!("reset at step {}", kernel.step_count()),
        };
        record.meta = serde_json::json!({ "kind": "kernel.reset", "session": session });
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

/// Cosine similarity of two vectors (0 when either is zero).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// The action a held approval carries (its `args`): written by
/// [`Cortex::run`] when policy holds it, read back by [`Cortex::release`].
#[derive(Serialize, Deserialize)]
struct HeldArgs {
    /// `think` or `kernel.step`.
    kind: String,
    plan: Plan,
    lane: Lane,
    risk: Option<f64>,
    drift: Drift,
    text: Option<String>,
    planner: Option<String>,
    model: Option<ModelOutput>,
    caller: Option<crate::replay::CallerInputs>,
    /// The session whose kernel it runs on; absent for the default one
    /// (so a default-session approval's digest is as before sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<SessionName>,
}

impl HeldArgs {
    fn parse(a: &Approval) -> Result<HeldArgs> {
        let invalid = |reason: String| CortexError::Invalid {
            field: format!("approval/{}", a.id),
            reason,
        };
        let args: HeldArgs = serde_json::from_value(a.request.args.clone())
            .map_err(|e| invalid(format!("not an action the service runs: {e}")))?;
        if args.kind != "think" && args.kind != "kernel.step" {
            return Err(invalid(format!(
                "{:?} is not an action the service runs",
                args.kind
            )));
        }
        if args.plan.op.as_str() != a.request.action {
            return Err(invalid("the plan's op is not the approved action".into()));
        }
        Ok(args)
    }
}
