//! The mesh: submit, route, run, cache, learn (see the crate doc for the
//! path of one task).

use crate::bots::{Artifact, Bot, BotContext, BotError, Verification};
use crate::classify::{Classification, Classifier, DEFAULT_THRESHOLD};
use crate::contract::{crumb, now_ns, Crumb, Glyph, Message, NodeResult};
use crate::db::{Db, TaskRow};
use crate::error::{MeshError, Result};
use crate::fold::{Fold, FoldGuard, FoldLimits, Trip};
use crate::patterns::{self, Layer, Pattern};
use crate::router::{Router, Slot, TopicDepth};
use crate::task::{parse_task_id, TaskRequest, TaskSpec, RESULT_NAMESPACE, TASK_NAMESPACE};
use capsule_ledger::{Ledger, Record};
use capsule_models::{dot, Embedder};
use capsule_policy::approvals::{release_record, Approval, ApprovalQueue, ApprovalRequest};
use capsule_policy::engine::{decision_record, evaluate};
use capsule_policy::{Circumstances, Decision, DecisionRequest, Lane, Outcome, PolicyEngine};
use capsule_store::{Day, Kind, ObjectId, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The mesh's settings (the server's `[mesh]` section).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// DISPATCH_ENABLED: run queued tasks (off: log-only mode).
    pub dispatch: bool,
    /// LEARNING_ENABLED: update pattern memory.
    pub learning: bool,
    /// EXT_ACTIONS_ENABLED: let bots act outside the process. No bot of
    /// this version does; the flag is reported and recorded.
    pub ext_actions: bool,
    /// Queue capacity of each topic.
    pub queue_capacity: usize,
    /// Per-topic capacities that differ from `queue_capacity`.
    pub queue_capacities: HashMap<String, usize>,
    /// Worker threads that run bots.
    pub workers: usize,
    pub classify_threshold: f32,
    pub fold: FoldLimits,
    /// What a 503 tells the client to wait.
    pub retry_after_s: u64,
    /// How often pattern maintenance runs on its own.
    pub maintenance_interval: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            dispatch: true,
            learning: true,
            ext_actions: false,
            queue_capacity: 256,
            queue_capacities: HashMap::new(),
            workers: 2,
            classify_threshold: DEFAULT_THRESHOLD,
            fold: FoldLimits::default(),
            retry_after_s: 1,
            maintenance_interval: Duration::from_secs(3600),
        }
    }
}

/// What the mesh tells the metrics.
pub trait MeshObserver: Send + Sync {
    fn submitted(&self, _domain: &str, _status: &str) {}
    fn finished(&self, _domain: &str, _status: &str, _seconds: f64) {}
    fn published(&self, _topic: &str, _bytes: usize) {}
    fn tripped(&self, _limit: &str) {}
}

struct NoObserver;
impl MeshObserver for NoObserver {}

/// The parts of the service the mesh uses.
pub struct MeshParts {
    pub store: Arc<Store>,
    pub ledger: Arc<Ledger>,
    pub policy: Arc<PolicyEngine>,
    pub approvals: Arc<Mutex<ApprovalQueue>>,
    pub embedder: Arc<dyn Embedder>,
    pub bots: Vec<Arc<dyn Bot>>,
}

pub struct Mesh {
    config: MeshConfig,
    learning: AtomicBool,
    router: Router<dyn Bot>,
    db: Db,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    policy: Arc<PolicyEngine>,
    approvals: Arc<Mutex<ApprovalQueue>>,
    embedder: Arc<dyn Embedder>,
    classifier: Classifier,
    fold: Arc<FoldGuard>,
    /// Cache hits not yet written to the task and pattern tables.
    hits: Mutex<HashMap<String, (u64, i64)>>,
    observer: Arc<dyn MeshObserver>,
    messages: AtomicU64,
    closed: AtomicBool,
}

/// The reply to a submit (202).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubmitReply {
    pub task_id: String,
    /// queued, cache_hit, pending_approval or blocked.
    pub status: String,
    pub domain: String,
    pub classification: Classification,
    pub policy_decision: Decision,
    pub latency_ms: f64,
    pub ledger_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<i64>,
}

/// `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub status: String,
    pub domain: String,
    pub result_id: Option<String>,
    pub result: Option<Value>,
    pub pattern: Option<Value>,
    pub ledger: Vec<u64>,
    pub error: Option<String>,
    pub reused_from: Option<String>,
    pub approval_id: Option<i64>,
    pub duration_ms: Option<f64>,
    pub cache_hits: u64,
    pub trace: Value,
}

/// A layer change made by maintenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChange {
    pub task_id: String,
    pub from: Layer,
    /// `None`: pruned.
    pub to: Option<Layer>,
    pub reason: String,
    pub ledger_seq: u64,
}

/// What a held submit's approval carries (its `args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeldTask {
    kind: String,
    task_id: String,
    domain: String,
    lane: Lane,
}

const HELD_KIND: &str = "task";

/// A decision with what it was made from.
struct Decided {
    request: DecisionRequest,
    circumstances: Circumstances,
    decision: Decision,
}

impl Decided {
    fn allowed(&self) -> bool {
        matches!(
            self.decision.outcome,
            Outcome::Approved | Outcome::AutoApproved
        )
    }

    fn record(&self, task: Value) -> Record {
        let mut r = decision_record(&self.request, &self.circumstances, &self.decision);
        r.meta["task"] = task;
        r
    }
}

/// One submit on its way through: what the task is and what was decided.
struct Submission {
    spec: TaskSpec,
    task_id: String,
    hash: String,
    principal: String,
    lane: Lane,
    user_id: Option<String>,
    classification: Classification,
    decided: Decided,
}

impl Submission {
    fn reply(&self, status: &str, seq: u64) -> SubmitReply {
        SubmitReply {
            task_id: self.task_id.clone(),
            status: status.to_string(),
            domain: self.spec.domain.clone(),
            classification: self.classification.clone(),
            policy_decision: self.decided.decision.clone(),
            latency_ms: 0.0,
            ledger_seq: seq,
            result_id: None,
            reused_from: None,
            approval_id: None,
        }
    }

    /// The task part of the decision record.
    fn meta(&self, status: &str) -> Value {
        json!({
            "task_id": self.task_id,
            "domain": self.spec.domain,
            "status": status,
            "classification": self.classification,
            "user_id": self.user_id,
        })
    }

    /// A new row for this task.
    fn row(&self, status: &str) -> TaskRow {
        let now = now_ns();
        TaskRow {
            hash: self.hash.clone(),
            id: self.task_id.clone(),
            domain: self.spec.domain.clone(),
            status: status.to_string(),
            lane: self.lane.as_str().to_string(),
            principal: self.principal.clone(),
            result_id: None,
            error: None,
            reused_from: None,
            approval_id: None,
            duration_ms: None,
            ledger: Vec::new(),
            trace: Value::Null,
            hits: 0,
            created_ns: now,
            updated_ns: now,
        }
    }
}

impl Mesh {
    /// Open the mesh's database at `path` and register `parts.bots`.
    /// Nothing runs until [`Mesh::start`].
    pub fn open(
        path: &Path,
        config: MeshConfig,
        parts: MeshParts,
        observer: Option<Arc<dyn MeshObserver>>,
    ) -> Result<Arc<Mesh>> {
        let db = Db::open(path)?;
        let router: Router<dyn Bot> = Router::new(config.dispatch);
        let infos: Vec<_> = parts.bots.iter().map(|b| b.describe().clone()).collect();
        for bot in &parts.bots {
            let domain = bot.describe().domain;
            let capacity = config
                .queue_capacities
                .get(domain)
                .copied()
                .unwrap_or(config.queue_capacity);
            router.register(domain, bot.clone(), capacity);
        }
        let classifier = Classifier::new(
            parts.embedder.clone(),
            &infos.iter().collect::<Vec<_>>(),
            config.classify_threshold,
        )?;
        Ok(Arc::new(Mesh {
            learning: AtomicBool::new(config.learning),
            fold: FoldGuard::new(config.fold),
            config,
            router,
            db,
            store: parts.store,
            ledger: parts.ledger,
            policy: parts.policy,
            approvals: parts.approvals,
            embedder: parts.embedder,
            classifier,
            hits: Mutex::new(HashMap::new()),
            observer: observer.unwrap_or_else(|| Arc::new(NoObserver)),
            messages: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    /// Queue again what a stop left queued or running, release approved
    /// task approvals, and start the workers and the maintenance thread.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        for mut row in self.db.tasks_in(&["queued", "running"])? {
            if row.status == "running" {
                // It was interrupted; it runs again from its spec.
                row.status = "queued".into();
                self.db.put_task(&row)?;
            }
            let msg = self.message(&row.id, &row.domain, parse_lane(&row.lane));
            self.router.restore(msg);
        }
        for (id, failed) in self.resume_approvals()? {
            if let Some(why) = failed {
                tracing::warn!(approval = id, %why, "an approved task did not queue at start");
            }
        }
        for n in 0..self.config.workers.max(1) {
            let weak = Arc::downgrade(self);
            std::thread::Builder::new()
                .name(format!("mesh-worker-{n}"))
                .spawn(move || worker(weak))
                .map_err(|e| MeshError::Conflict(format!("starting a worker: {e}")))?;
        }
        let weak = Arc::downgrade(self);
        let every = self.config.maintenance_interval;
        std::thread::Builder::new()
            .name("mesh-maintenance".into())
            .spawn(move || housekeeping(weak, every))
            .map_err(|e| MeshError::Conflict(format!("starting maintenance: {e}")))?;
        Ok(())
    }

    /// Stop the workers (a running bot finishes its task first).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.router.close();
        let _ = self.flush_hits();
    }

    pub fn domains(&self) -> Vec<String> {
        self.router.topics()
    }

    fn bot(&self, domain: &str) -> Result<Arc<dyn Bot>> {
        self.router.node(domain).ok_or_else(|| {
            MeshError::invalid(
                "domain",
                format!(
                    "{domain:?} is not one of {}",
                    self.router.topics().join(", ")
                ),
            )
        })
    }

    fn message(&self, task_id: &str, domain: &str, lane: Lane) -> Message {
        let n = self.messages.fetch_add(1, Ordering::Relaxed);
        let ts = now_ns();
        let hash = task_id.rsplit('_').next().unwrap_or(task_id);
        Message {
            msg_id: format!("{ts:x}-{n:x}"),
            ts,
            lane,
            glyph: Glyph {
                id: hash.to_string(),
                kind: "task".into(),
                version: 1,
                tags: vec![format!("domain:{domain}"), "purpose:task".into()],
            },
            topic: domain.to_string(),
            payload_ref: task_id.to_string(),
        }
    }

    fn publish(&self, slot: Slot<'_, dyn Bot>, msg: Message) {
        self.observer.published(&msg.topic, msg.encoded_len());
        slot.publish(msg);
    }

    fn decide(&self, principal: &str, domain: &str, lane: Lane, task_id: &str) -> Result<Decided> {
        let request = DecisionRequest {
            principal: principal.to_string(),
            action: "task.submit".into(),
            resource: format!("task:{domain}"),
            lane,
            level: None,
            affect: self.policy.affect_for(None)?.0,
            risk: None,
            drift: None,
            args: json!({"kind": HELD_KIND, "task_id": task_id, "domain": domain, "lane": lane}),
        };
        let circumstances = self.policy.circumstances();
        let decision = evaluate(&self.policy.rules(), &circumstances, &request)?;
        Ok(Decided {
            request,
            circumstances,
            decision,
        })
    }

    /// Submit a task (SPEC T1): classify, decide, then answer from the
    /// cache, reuse a similar confident answer, or queue it.
    pub fn submit(&self, principal: &str, req: &TaskRequest) -> Result<SubmitReply> {
        let started = Instant::now();
        req.validate()?;
        let classification = match &req.domain {
            Some(d) => {
                self.bot(d)?;
                Classification::given(d)
            }
            None => self.classifier.classify(&req.query)?,
        };
        let info = self.bot(&classification.domain)?.describe().clone();
        let spec = req.spec(info.domain, !info.case_sensitive);
        let id = spec.id(Day::today());
        let lane = req.lane.unwrap_or(Lane::Prod);
        let task_id = id.to_string();
        let sub = Submission {
            decided: self.decide(principal, info.domain, lane, &task_id)?,
            hash: id.hash().to_string(),
            task_id,
            principal: principal.to_string(),
            lane,
            user_id: req.user_id.clone(),
            classification,
            spec,
        };
        let mut out = match self.db.cached(&sub.hash)? {
            Some((status, Some(result_id))) if status == "done" && info.cacheable => {
                self.answer_hit(&sub, result_id)?
            }
            Some((status, _))
                if ["queued", "running", "pending_approval"].contains(&status.as_str()) =>
            {
                self.answer_pending(&sub, &status)?
            }
            _ => {
                let similar = if info.semantic_reuse && sub.decided.allowed() {
                    self.similar(info.domain, &sub.spec.query)?
                } else {
                    None
                };
                match similar {
                    Some(p) => self.reuse(&sub, &p)?,
                    None if sub.decided.allowed() => self.queue_new(&sub)?,
                    None => self.refuse(&sub)?,
                }
            }
        };
        out.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        self.observer.submitted(&out.domain, &out.status);
        Ok(out)
    }

    /// A done task: the decision and the hit are one record.
    fn answer_hit(&self, sub: &Submission, result_id: String) -> Result<SubmitReply> {
        if !sub.decided.allowed() {
            return self.refuse(sub);
        }
        let mut meta = sub.meta("cache_hit");
        meta["result_id"] = json!(result_id);
        let seq = self.ledger.append(sub.decided.record(meta))?.seq;
        self.count_hit(&sub.hash);
        let mut r = sub.reply("cache_hit", seq);
        r.result_id = Some(result_id);
        Ok(r)
    }

    /// A task already on its way: one run serves every submit.
    fn answer_pending(&self, sub: &Submission, status: &str) -> Result<SubmitReply> {
        if sub.decided.decision.outcome == Outcome::Blocked {
            return self.refuse(sub);
        }
        let shown = if status == "pending_approval" {
            "pending_approval"
        } else {
            "queued"
        };
        let seq = self.ledger.append(sub.decided.record(sub.meta(shown)))?.seq;
        let mut r = sub.reply(shown, seq);
        r.approval_id = self.db.task(&sub.hash)?.and_then(|t| t.approval_id);
        Ok(r)
    }

    /// A submit the decision does not let through: held for approval, or
    /// blocked with the explanation.
    fn refuse(&self, sub: &Submission) -> Result<SubmitReply> {
        if sub.decided.decision.outcome.needs_approval() {
            // The spec is kept now, so the approved task can run from it.
            self.store_spec(sub)?;
            return self.hold(sub);
        }
        let seq = self
            .ledger
            .append(sub.decided.record(sub.meta("blocked")))?
            .seq;
        if self.db.task(&sub.hash)?.is_none() {
            let mut row = sub.row("blocked");
            row.ledger.push(seq);
            self.db.put_task(&row)?;
        }
        Ok(sub.reply("blocked", seq))
    }

    /// Queue the approval, record the decision naming it, mark the task.
    fn hold(&self, sub: &Submission) -> Result<SubmitReply> {
        let request = &sub.decided.request;
        let approval = ApprovalRequest {
            action: request.action.clone(),
            actor: request.principal.clone(),
            resource: request.resource.clone(),
            args: request.args.clone(),
            policy_version: sub.decided.decision.policy_version.clone(),
        };
        let config = self.policy.config();
        let queue = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let approval_id = queue.enqueue_for(
            &approval,
            sub.decided.decision.outcome.as_str(),
            config.approval_quorum,
            config.approval_ttl_s,
        )?;
        let mut meta = sub.meta("pending_approval");
        meta["approval"] = json!({"id": approval_id, "digest": approval.digest()});
        let seq = match self.ledger.append(sub.decided.record(meta)) {
            Ok(r) => r.seq,
            Err(e) => {
                let _ = queue.discard(approval_id);
                return Err(e.into());
            }
        };
        drop(queue);
        let mut row = self
            .db
            .task(&sub.hash)?
            .unwrap_or_else(|| sub.row("pending_approval"));
        if row.status != "done" {
            row.status = "pending_approval".into();
        }
        row.approval_id = Some(approval_id);
        row.ledger.push(seq);
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let mut r = sub.reply("pending_approval", seq);
        r.approval_id = Some(approval_id);
        Ok(r)
    }

    /// A new task: hold a queue place (503 when full, before anything is
    /// written), keep the spec, write the row and the record, publish.
    fn queue_new(&self, sub: &Submission) -> Result<SubmitReply> {
        let slot = self.reserve(&sub.spec.domain)?;
        self.store_spec(sub)?;
        let msg = self.message(&sub.task_id, &sub.spec.domain, sub.lane);
        let mut meta = sub.meta("queued");
        meta["message"] = serde_json::to_value(&msg).expect("plain struct");
        meta["message_bytes"] = json!(msg.encoded_len());
        meta["dispatch"] = json!(self.router.dispatching());
        let mut row = sub.row("queued");
        row.trace = serde_json::to_value([crumb("submit", "router")]).expect("plain struct");
        // The row is written in a transaction that commits only after the
        // record is durable: a failed append leaves no queued row behind.
        let seq = {
            let mut conn = self.db.conn();
            let tx = conn.transaction()?;
            let seq = self.ledger.append(sub.decided.record(meta))?.seq;
            row.ledger.push(seq);
            crate::db::put_task(&tx, &row)?;
            tx.commit()?;
            seq
        };
        self.publish(slot, msg);
        Ok(sub.reply("queued", seq))
    }

    /// A place in `topic`'s queue, or 503.
    fn reserve(&self, topic: &str) -> Result<Slot<'_, dyn Bot>> {
        self.router.reserve(topic).map_err(|f| MeshError::Full {
            topic: f.topic,
            capacity: f.capacity,
            retry_after_s: self.config.retry_after_s,
        })
    }

    /// Keep a task's spec in the store; its ID is the task's.
    fn store_spec(&self, sub: &Submission) -> Result<()> {
        let value = serde_json::to_value(&sub.spec).expect("plain struct");
        let stored = self.store.put_json(TASK_NAMESPACE, Kind::Spec, &value)?;
        debug_assert_eq!(stored.hash().to_string(), sub.hash);
        Ok(())
    }

    /// The most similar confident pattern of `domain`, if one may answer.
    fn similar(&self, domain: &str, query: &str) -> Result<Option<Pattern>> {
        let candidates: Vec<Pattern> = self
            .db
            .patterns(Some(domain), None)?
            .into_iter()
            .filter(|p| p.embedding.is_some() && p.layer != Layer::Archive)
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let q = self.embedder.embed_one(query)?;
        let best = candidates
            .into_iter()
            .map(|p| {
                let s = dot(&q, p.embedding.as_deref().unwrap_or_default());
                (p, s)
            })
            .filter(|(p, s)| patterns::reusable(p, *s))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best.map(|(p, _)| p))
    }

    /// Answer a new query with a similar task's stored result.
    fn reuse(&self, sub: &Submission, source: &Pattern) -> Result<SubmitReply> {
        let mut meta = sub.meta("cache_hit");
        meta["result_id"] = json!(source.result_id);
        meta["reused_from"] = json!(source.task_id);
        let seq = self.ledger.append(sub.decided.record(meta))?.seq;
        let mut row = sub.row("done");
        row.result_id = Some(source.result_id.clone());
        row.reused_from = Some(source.task_id.clone());
        row.ledger.push(seq);
        self.db.put_task(&row)?;
        self.count_hit(&source.hash);
        let mut r = sub.reply("cache_hit", seq);
        r.result_id = Some(source.result_id.clone());
        r.reused_from = Some(source.task_id.clone());
        Ok(r)
    }

    fn count_hit(&self, hash: &str) {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let e = hits.entry(hash.to_string()).or_insert((0, 0));
        e.0 += 1;
        e.1 = now_ns();
    }

    /// Write the counted cache hits to the task and pattern tables.
    pub fn flush_hits(&self) -> Result<()> {
        let taken: Vec<(String, u64, i64)> = {
            let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
            hits.drain().map(|(h, (n, at))| (h, n, at)).collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        let counts: Vec<(String, u64)> = taken.iter().map(|(h, n, _)| (h.clone(), *n)).collect();
        self.db.add_hits(&counts)?;
        self.db.use_patterns(&taken)?;
        Ok(())
    }

    /// Run one queued task (a worker calls this). A task that cannot be
    /// run or recorded (its spec unreadable, the ledger closed) is marked
    /// failed with the reason rather than left running.
    fn work(&self, msg: Message, bot: Arc<dyn Bot>) {
        if let Err(e) = self.execute(&msg, bot.as_ref()) {
            tracing::error!(task = %msg.payload_ref, error = %e, "a task could not be run or recorded");
            if self.closed.load(Ordering::SeqCst) {
                // Shutting down: it stays running and runs again at start.
                return;
            }
            let hash = msg.glyph.id.as_str();
            if let Ok(Some(mut row)) = self.db.task(hash) {
                if row.status == "running" {
                    row.status = "failed".into();
                    row.error = Some(format!("the mesh could not run it: {e}"));
                    row.updated_ns = now_ns();
                    let _ = self.db.put_task(&row);
                }
            }
        }
    }

    fn execute(&self, msg: &Message, bot: &dyn Bot) -> Result<()> {
        let id: ObjectId = parse_task_id(&msg.payload_ref)?;
        let hash = id.hash().to_string();
        let Some(mut row) = self.db.task(&hash)? else {
            return Ok(());
        };
        if row.status != "queued" {
            return Ok(());
        }
        row.status = "running".into();
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let spec: TaskSpec = {
            let (_, value) = self.store.get_json(&id)?;
            serde_json::from_value(value)
                .map_err(|e| MeshError::invalid("spec", format!("{}: {e}", msg.payload_ref)))?
        };
        let node = bot.describe().domain;
        let mut trace: Vec<Crumb> = serde_json::from_value(row.trace.clone()).unwrap_or_default();
        trace.push(crumb("run", node));
        let ctx = BotContext {
            principal: row.principal.clone(),
            lane: msg.lane,
            task_id: row.id.clone(),
        };
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bot.run(&spec, &ctx)))
                .unwrap_or_else(|_| Err(BotError(format!("the {node} bot panicked"))));
        let seconds = started.elapsed().as_secs_f64();
        row.duration_ms = Some(seconds * 1e3);
        let (mut result, artifact) = match outcome {
            Ok(artifact) => {
                let value = serde_json::to_value(&artifact).expect("plain struct");
                let result_id = self
                    .store
                    .put_json(RESULT_NAMESPACE, Kind::Artifact, &value)?;
                trace.push(crumb("store", node));
                let ok = NodeResult {
                    ok: true,
                    reasons: Vec::new(),
                    payload_ref: Some(result_id.to_string()),
                    trace: Vec::new(),
                };
                (ok, Some(artifact))
            }
            Err(e) => {
                let failed = NodeResult {
                    ok: false,
                    reasons: vec![e.0],
                    payload_ref: None,
                    trace: Vec::new(),
                };
                (failed, None)
            }
        };
        let status = if result.ok { "done" } else { "failed" };
        trace.push(crumb(status, node));
        result.trace = trace;
        let mut record = Record::new(&row.principal, "task.result", status);
        record.subject = row.id.clone();
        record.reason = result.reasons.join("; ");
        record.meta = json!({
            "kind": "task.result",
            "task_id": row.id,
            "bot": node,
            "result_id": result.payload_ref,
            "duration_ms": seconds * 1e3,
            "verification": artifact.as_ref().map(|a| &a.verification),
            "model": artifact.as_ref().and_then(|a| a.model.clone()),
            "node_result": result,
            "message": msg,
        });
        let seq = self.ledger.append(record)?.seq;
        row.status = status.into();
        row.result_id = result.payload_ref.clone();
        row.error = result.reasons.first().cloned();
        row.ledger.push(seq);
        row.trace = serde_json::to_value(&result.trace).expect("plain struct");
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        self.observer.finished(node, status, seconds);
        if let Some(a) = artifact {
            self.learn(&row, &spec, &a, bot)?;
        }
        Ok(())
    }

    /// Record a done task as a pattern (SPEC M3), through the fold guard.
    fn learn(&self, row: &TaskRow, spec: &TaskSpec, a: &Artifact, bot: &dyn Bot) -> Result<()> {
        if !self.learning() {
            return Ok(());
        }
        let Some(_fold) = self.guarded(&row.id, self.fold.root())? else {
            return Ok(());
        };
        let embedding = if bot.describe().semantic_reuse {
            Some(self.embedder.embed_one(&spec.query)?)
        } else {
            None
        };
        let mut p = self.db.pattern(&row.hash)?.unwrap_or(Pattern {
            task_id: row.id.clone(),
            hash: row.hash.clone(),
            domain: row.domain.clone(),
            layer: Layer::Immediate,
            confidence_bp: patterns::START_BP,
            usage: 0,
            last_used_ns: 0,
            result_id: String::new(),
            embedding: None,
        });
        p.usage += 1;
        p.last_used_ns = now_ns();
        p.result_id = row.result_id.clone().unwrap_or_default();
        p.embedding = embedding;
        if let Verification {
            passed: Some(passed),
            ..
        } = a.verification
        {
            p.confidence_bp = patterns::adjust(p.confidence_bp, passed);
        }
        self.db.put_pattern(&p)?;
        Ok(())
    }

    /// Admit a memory write, or record the trip and refuse it.
    fn guarded(
        &self,
        task_id: &str,
        admitted: std::result::Result<Fold, Trip>,
    ) -> Result<Option<Fold>> {
        match admitted {
            Ok(f) => Ok(Some(f)),
            Err(trip) => {
                self.observer.tripped(trip.limit);
                let mut r = Record::new("mesh", "memory.fold_guard", "tripped");
                r.subject = task_id.to_string();
                r.reason = trip.reason.clone();
                r.meta = json!({"kind": "memory.fold_guard", "limit": trip.limit, "task_id": task_id, "limits": self.fold.limits()});
                self.ledger.append(r)?;
                Ok(None)
            }
        }
    }

    /// Breaker trips so far.
    pub fn breaker_trips(&self) -> u64 {
        self.fold.trips()
    }

    /// The fold guard, for callers that make linked memory writes.
    pub fn fold_guard(&self) -> &Arc<FoldGuard> {
        &self.fold
    }

    pub fn learning(&self) -> bool {
        self.learning.load(Ordering::SeqCst)
    }

    pub fn dispatching(&self) -> bool {
        self.router.dispatching()
    }

    /// Switch dispatch (recorded). Returns the ledger entry.
    pub fn set_dispatch(&self, on: bool, by: &str) -> Result<u64> {
        let before = self.router.dispatching();
        let mut r = Record::new(by, "mesh.dispatch", if on { "on" } else { "off" });
        r.subject = "mesh".into();
        r.reason = format!(
            "dispatch {} by {by}",
            if on { "enabled" } else { "disabled" }
        );
        r.meta = json!({"kind": "mesh.dispatch", "from": before, "to": on, "queued": self.router.depths()});
        let seq = self.ledger.append(r)?.seq;
        self.router.set_dispatch(on);
        Ok(seq)
    }

    /// Flags and queues, for `/v1/state` and `/v1/mesh`.
    pub fn state(&self) -> Value {
        json!({
            "dispatch_enabled": self.dispatching(),
            "learning_enabled": self.learning(),
            "ext_actions_enabled": self.config.ext_actions,
            "workers": self.config.workers,
            "queues": self.router.depths(),
            "breaker_trips": self.fold.trips(),
        })
    }

    pub fn depths(&self) -> Vec<TopicDepth> {
        self.router.depths()
    }

    pub fn pattern_counts(&self) -> Result<Vec<(String, u64)>> {
        self.db.pattern_counts()
    }

    /// A task by ID (any day's spelling of it).
    pub fn get(&self, id: &str) -> Result<TaskView> {
        let id = parse_task_id(id)?;
        self.flush_hits()?;
        let hash = id.hash().to_string();
        let row = self.db.task(&hash)?.ok_or_else(|| MeshError::NotFound {
            what: format!("no task {id}"),
        })?;
        let result = match &row.result_id {
            Some(r) => {
                let rid: ObjectId = r
                    .parse()
                    .map_err(|e: capsule_store::StoreError| MeshError::Conflict(e.to_string()))?;
                Some(self.store.get_json(&rid)?.1)
            }
            None => None,
        };
        let pattern_hash = match &row.reused_from {
            Some(src) => parse_task_id(src)?.hash().to_string(),
            None => hash.clone(),
        };
        let pattern = self.db.pattern(&pattern_hash)?.map(|p| {
            json!({"layer": p.layer, "confidence": p.confidence(), "usage": p.usage, "task_id": p.task_id})
        });
        Ok(TaskView {
            task_id: row.id,
            status: row.status,
            domain: row.domain,
            result_id: row.result_id,
            result,
            pattern,
            ledger: row.ledger,
            error: row.error,
            reused_from: row.reused_from,
            approval_id: row.approval_id,
            duration_ms: row.duration_ms,
            cache_hits: row.hits,
            trace: row.trace,
        })
    }

    /// User feedback on a done task: moves its pattern's confidence (the
    /// source pattern's, for a reused answer — a linked write).
    pub fn feedback(&self, principal: &str, id: &str, outcome: &str) -> Result<Value> {
        let success = match outcome {
            "success" => true,
            "failure" => false,
            _ => {
                return Err(MeshError::invalid(
                    "outcome",
                    format!("{outcome:?} is not success or failure"),
                ))
            }
        };
        let id = parse_task_id(id)?;
        let hash = id.hash().to_string();
        let mut row = self.db.task(&hash)?.ok_or_else(|| MeshError::NotFound {
            what: format!("no task {id}"),
        })?;
        if row.status != "done" {
            return Err(MeshError::Conflict(format!(
                "task {id} is {}; feedback is for done tasks",
                row.status
            )));
        }
        if !self.learning() {
            return Err(MeshError::Conflict(
                "learning is disabled (mesh.learning / LEARNING_ENABLED); feedback is not applied"
                    .into(),
            ));
        }
        self.flush_hits()?;
        let target = match &row.reused_from {
            Some(src) => parse_task_id(src)?.hash().to_string(),
            None => hash.clone(),
        };
        let mut p = self
            .db
            .pattern(&target)?
            .ok_or_else(|| MeshError::NotFound {
                what: format!("task {id} has no pattern (learning was off, or it was pruned)"),
            })?;
        let Some(root) = self.guarded(&row.id, self.fold.root())? else {
            return Err(MeshError::Conflict(
                "the fold guard refused this memory write".into(),
            ));
        };
        if row.reused_from.is_some() && self.guarded(&row.id, root.link())?.is_none() {
            return Err(MeshError::Conflict(
                "the fold guard refused this memory write".into(),
            ));
        }
        let before = p.confidence();
        p.confidence_bp = patterns::adjust(p.confidence_bp, success);
        self.db.put_pattern(&p)?;
        let mut r = Record::new(principal, "task.feedback", outcome);
        r.subject = row.id.clone();
        r.reason = format!("confidence {before:.2} -> {:.2}", p.confidence());
        r.meta = json!({"kind": "task.feedback", "task_id": row.id, "pattern": p.task_id, "outcome": outcome, "from": before, "to": p.confidence()});
        let seq = self.ledger.append(r)?.seq;
        row.ledger.push(seq);
        self.db.put_task(&row)?;
        let mut view = p.view();
        view["ledger_seq"] = json!(seq);
        Ok(view)
    }

    pub fn patterns(&self, domain: Option<&str>, layer: Option<&str>) -> Result<Vec<Value>> {
        let layer = layer
            .map(|l| {
                Layer::parse(l).ok_or_else(|| {
                    MeshError::invalid(
                        "layer",
                        format!("{l:?} is not immediate, pattern or archive"),
                    )
                })
            })
            .transpose()?;
        if let Some(d) = domain {
            self.bot(d)?;
        }
        self.flush_hits()?;
        Ok(self
            .db
            .patterns(domain, layer)?
            .iter()
            .map(Pattern::view)
            .collect())
    }

    /// Pattern maintenance now.
    pub fn maintain(&self, by: &str) -> Result<Vec<LayerChange>> {
        self.maintain_at(now_ns(), by)
    }

    /// Pattern maintenance as of `now_ns` (tests move the clock): every
    /// layer change is applied and recorded with old and new layer and
    /// the reason, in one ledger batch.
    pub fn maintain_at(&self, now_ns: i64, by: &str) -> Result<Vec<LayerChange>> {
        self.flush_hits()?;
        let mut planned = Vec::new();
        for p in self.db.patterns(None, None)? {
            if let Some((change, reason)) = patterns::maintenance(&p, now_ns) {
                planned.push((p, change, reason));
            }
        }
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let records = planned
            .iter()
            .map(|(p, change, reason)| {
                let to = change.to();
                let mut r = Record::new(by, "pattern.layer", to.map_or("pruned", |l| l.as_str()));
                r.subject = p.task_id.clone();
                r.reason = reason.clone();
                r.meta = json!({"kind": "pattern.layer", "task_id": p.task_id, "from": p.layer, "to": to, "reason": reason, "confidence": p.confidence(), "usage": p.usage});
                r
            })
            .collect();
        let receipts = self.ledger.append_batch(records)?;
        let mut out = Vec::new();
        for ((mut p, change, reason), receipt) in planned.into_iter().zip(receipts) {
            let from = p.layer;
            match change.to() {
                Some(layer) => {
                    p.layer = layer;
                    self.db.put_pattern(&p)?;
                }
                None => self.db.delete_pattern(&p.hash)?,
            }
            out.push(LayerChange {
                task_id: p.task_id,
                from,
                to: change.to(),
                reason,
                ledger_seq: receipt.seq,
            });
        }
        Ok(out)
    }

    /// Does this approval hold a task submit?
    pub fn runs(&self, approval: &Approval) -> bool {
        serde_json::from_value::<HeldTask>(approval.request.args.clone())
            .is_ok_and(|h| h.kind == HELD_KIND)
    }

    /// Queue an approved task, once: claim the approval, queue the task,
    /// record the queueing and the release in one batch, mark it released.
    /// A task already done by then needs no run; the release says so.
    pub fn release(&self, approval_id: i64) -> Result<Value> {
        let mut queue = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let approval = queue.show(approval_id)?;
        let held: HeldTask = serde_json::from_value(approval.request.args.clone())
            .map_err(|e| MeshError::invalid(format!("approval/{approval_id}"), e.to_string()))?;
        if self.policy.kill_switch().is_armed() {
            return Err(MeshError::Conflict(format!(
                "the kill switch is armed; approval {approval_id} stays approved until it is disarmed"
            )));
        }
        let id = parse_task_id(&held.task_id)?;
        let hash = id.hash().to_string();
        let mut row = self.db.task(&hash)?.ok_or_else(|| MeshError::NotFound {
            what: format!("no task {} for approval {approval_id}", held.task_id),
        })?;
        let run = row.status != "done";
        let slot = if run {
            Some(self.reserve(&held.domain)?)
        } else {
            None
        };
        let mut presented = approval.request.clone();
        presented.policy_version = self.policy.rules().version().to_string();
        let approval = queue.claim(approval_id, &presented, &self.ledger)?;
        let msg = self.message(&row.id, &held.domain, held.lane);
        let mut record = Record::new(
            &approval.request.actor,
            "task.submit",
            if run { "queued" } else { "done" },
        );
        record.subject = row.id.clone();
        record.reason = format!("released by approval {approval_id}");
        record.meta = json!({"kind": "task.release", "approval_id": approval_id, "task_id": row.id, "message": msg, "dispatch": self.router.dispatching()});
        let receipts = match self
            .ledger
            .append_batch(vec![record, release_record(&approval)])
        {
            Ok(r) => r,
            Err(e) => {
                let _ = queue.unclaim(approval_id);
                return Err(e.into());
            }
        };
        let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
        if run {
            row.status = "queued".into();
        }
        row.ledger.extend(&seqs);
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let result = json!({"task_id": row.id, "status": row.status, "ledger_seq": seqs[0]});
        queue.finish(approval_id, &result, &seqs)?;
        if let Some(slot) = slot {
            self.publish(slot, msg);
        }
        Ok(result)
    }

    /// Release every approved task approval (after a restart).
    pub fn resume_approvals(&self) -> Result<Vec<(i64, Option<String>)>> {
        let approved = self
            .approvals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(Some("approved"))?;
        if self.policy.kill_switch().is_armed() {
            return Ok(Vec::new());
        }
        Ok(approved
            .into_iter()
            .filter(|a| self.runs(a))
            .map(|a| (a.id, self.release(a.id).err().map(|e| e.to_string())))
            .collect())
    }
}

fn parse_lane(text: &str) -> Lane {
    Lane::parse(text).unwrap_or(Lane::Prod)
}

/// A worker: take messages while the mesh lives.
fn worker(mesh: Weak<Mesh>) {
    loop {
        let Some(m) = mesh.upgrade() else { return };
        if m.closed.load(Ordering::SeqCst) {
            return;
        }
        let next = m.router.next(Duration::from_millis(250));
        if let Some((msg, bot)) = next {
            m.work(msg, bot);
        }
    }
}

/// Flush cache-hit counts every second; maintain patterns every `every`.
fn housekeeping(mesh: Weak<Mesh>, every: Duration) {
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(m) = mesh.upgrade() else { return };
        if m.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = m.flush_hits() {
            tracing::warn!(error = %e, "flushing cache-hit counts");
        }
        if last.elapsed() >= every {
            last = Instant::now();
            match m.maintain("mesh") {
                Ok(changes) if !changes.is_empty() => {
                    tracing::info!(changes = changes.len(), "pattern maintenance")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pattern maintenance"),
            }
        }
    }
}
