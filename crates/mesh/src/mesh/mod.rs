//! The mesh: submit, route, run, cache, learn (see the crate doc for the
//! path of one task). This module holds the types, opening and the
//! workers; `submit.rs` the submit path, `run.rs` running a task,
//! `learning.rs` feedback and maintenance, `release.rs` approved tasks.

mod learning;
mod release;
mod run;
mod submit;

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
    /// The workers and the housekeeping thread, joined by [`Mesh::close`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
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
            threads: Mutex::new(Vec::new()),
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
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for n in 0..self.config.workers.max(1) {
            let weak = Arc::downgrade(self);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mesh-worker-{n}"))
                    .spawn(move || worker(weak))
                    .map_err(|e| MeshError::Conflict(format!("starting a worker: {e}")))?,
            );
        }
        let weak = Arc::downgrade(self);
        let every = self.config.maintenance_interval;
        threads.push(
            std::thread::Builder::new()
                .name("mesh-maintenance".into())
                .spawn(move || housekeeping(weak, every))
                .map_err(|e| MeshError::Conflict(format!("starting maintenance: {e}")))?,
        );
        Ok(())
    }

    /// Stop taking tasks and wait for the threads: a task a worker is
    /// running finishes (and is recorded) first. When it returns, no mesh
    /// thread holds the mesh, so the ledger and the store can close.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.router.close();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in &threads {
            t.thread().unpark();
        }
        for t in threads {
            let _ = t.join();
        }
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

    /// Breaker trips so far.
    pub fn breaker_trips(&self) -> u64 {
        self.fold.trips()
    }

    /// The fold guard, for callers that make linked memory writes.
    pub fn fold_guard(&self) -> &Arc<FoldGuard> {
        &self.fold
    }

    pub fn learning(&self) -> bool {
        self.config.learning
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
        // `close` unparks it, so a stop never waits out the second.
        std::thread::park_timeout(Duration::from_secs(1));
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
