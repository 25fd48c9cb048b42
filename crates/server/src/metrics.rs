//! Prometheus metrics (SPEC O2) for what this service runs: the kernel,
//! think latency, policy decisions, the ledger, rate limiting. Served as
//! text on the metrics address (loopback by default).

use capsule_cortex::{Observer, StepEvent};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::broadcast;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub kernel_entropy: Gauge<f64, AtomicU64>,
    pub kernel_purity: Gauge<f64, AtomicU64>,
    pub kernel_trace_error: Gauge<f64, AtomicU64>,
    pub kernel_steps: Counter,
    pub kernel_positivity_corrections: Counter,
    pub think_seconds: Histogram,
    pub decisions: Family<Labels, Counter>,
    pub ledger_entries: Gauge,
    pub ledger_append_seconds: Histogram,
    pub rate_limited: Counter,
    pub requests: Family<Labels, Counter>,
    pub drift_ema: Family<Labels, Gauge<f64, AtomicU64>>,
    pub drift_warnings: Family<Labels, Counter>,
    pub approvals_released: Counter,
    pub approvals_expired: Counter,
    pub tasks: Family<Labels, Counter>,
    pub bot_seconds: Family<Labels, Histogram>,
    pub mesh_publishes: Family<Labels, Counter>,
    pub envelope_bytes: Histogram,
    pub breaker_trips: Family<Labels, Counter>,
    pub queue_depth: Family<Labels, Gauge>,
    pub patterns: Family<Labels, Gauge>,
}

fn bot_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 24))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("capsule");
        let m = Metrics {
            kernel_entropy: Gauge::default(),
            kernel_purity: Gauge::default(),
            kernel_trace_error: Gauge::default(),
            kernel_steps: Counter::default(),
            kernel_positivity_corrections: Counter::default(),
            think_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
            decisions: Family::default(),
            ledger_entries: Gauge::default(),
            ledger_append_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 18)),
            rate_limited: Counter::default(),
            requests: Family::default(),
            drift_ema: Family::default(),
            drift_warnings: Family::default(),
            approvals_released: Counter::default(),
            approvals_expired: Counter::default(),
            tasks: Family::default(),
            bot_seconds: Family::new_with_constructor(bot_histogram),
            mesh_publishes: Family::default(),
            envelope_bytes: Histogram::new(exponential_buckets(16.0, 2.0, 10)),
            breaker_trips: Family::default(),
            queue_depth: Family::default(),
            patterns: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kernel_entropy",
            "von Neumann entropy of the kernel state after its last step (nats)",
            m.kernel_entropy.clone(),
        );
        registry.register(
            "kernel_purity",
            "Tr rho^2 after the last step",
            m.kernel_purity.clone(),
        );
        registry.register(
            "kernel_trace_error",
            "|Tr rho - 1| after the last step",
            m.kernel_trace_error.clone(),
        );
        registry.register("kernel_steps", "kernel steps taken", m.kernel_steps.clone());
        registry.register(
            "kernel_positivity_corrections",
            "steps whose output needed the positivity projection",
            m.kernel_positivity_corrections.clone(),
        );
        registry.register(
            "think_duration_seconds",
            "POST /v1/think latency, request parsed to reply ready",
            m.think_seconds.clone(),
        );
        registry.register(
            "policy_decisions",
            "policy decisions by outcome",
            m.decisions.clone(),
        );
        registry.register(
            "ledger_entries",
            "entries in the audit ledger",
            m.ledger_entries.clone(),
        );
        registry.register(
            "ledger_append_duration_seconds",
            "time from queueing ledger records to their being durable",
            m.ledger_append_seconds.clone(),
        );
        registry.register(
            "rate_limited",
            "requests refused with 429",
            m.rate_limited.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP API requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "drift_ema",
            "per-lane EMA (alpha 0.2) of think drift, 1 - cos(intent, action)",
            m.drift_ema.clone(),
        );
        registry.register(
            "drift_warnings",
            "thinks after which a lane's drift EMA was above 0.20",
            m.drift_warnings.clone(),
        );
        registry.register(
            "approvals_released",
            "approved actions run by the service",
            m.approvals_released.clone(),
        );
        registry.register(
            "approvals_expired",
            "approvals that expired before release",
            m.approvals_expired.clone(),
        );
        registry.register(
            "mesh_tasks",
            "task submits and results by domain and status (queued, cache_hit, pending_approval, blocked; done, failed)",
            m.tasks.clone(),
        );
        registry.register(
            "mesh_bot_duration_seconds",
            "time a bot took to run one task, by domain",
            m.bot_seconds.clone(),
        );
        registry.register(
            "mesh_publishes",
            "messages the router queued, by topic",
            m.mesh_publishes.clone(),
        );
        registry.register(
            "mesh_envelope_bytes",
            "encoded size of each router-to-bot message (IDs only)",
            m.envelope_bytes.clone(),
        );
        registry.register(
            "mesh_breaker_trips",
            "memory writes the fold guard refused, by limit (fanout, depth, window)",
            m.breaker_trips.clone(),
        );
        registry.register(
            "mesh_queue_depth",
            "tasks queued per topic",
            m.queue_depth.clone(),
        );
        registry.register(
            "mesh_patterns",
            "patterns in pattern memory, by layer",
            m.patterns.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Read the mesh's gauges (queue depths, patterns per layer).
    pub fn observe_mesh(&self, mesh: &capsule_mesh::Mesh) {
        for d in mesh.depths() {
            self.queue_depth
                .get_or_create(&vec![("topic".into(), d.topic)])
                .set(d.queued as i64);
        }
        if let Ok(counts) = mesh.pattern_counts() {
            for layer in ["immediate", "pattern", "archive"] {
                let n = counts.iter().find(|(l, _)| l == layer).map_or(0, |c| c.1);
                self.patterns
                    .get_or_create(&vec![("layer".into(), layer.into())])
                    .set(n as i64);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, ledger_size: u64) -> String {
        self.ledger_entries.set(ledger_size as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl capsule_mesh::MeshObserver for Metrics {
    fn submitted(&self, domain: &str, status: &str) {
        self.tasks
            .get_or_create(&vec![
                ("domain".into(), domain.into()),
                ("status".into(), status.into()),
            ])
            .inc();
    }

    fn finished(&self, domain: &str, status: &str, seconds: f64) {
        self.submitted(domain, status);
        self.bot_seconds
            .get_or_create(&vec![("domain".into(), domain.into())])
            .observe(seconds);
    }

    fn published(&self, topic: &str, bytes: usize) {
        self.mesh_publishes
            .get_or_create(&vec![("topic".into(), topic.into())])
            .inc();
        self.envelope_bytes.observe(bytes as f64);
    }

    fn tripped(&self, limit: &str) {
        self.breaker_trips
            .get_or_create(&vec![("limit".into(), limit.into())])
            .inc();
    }
}

/// The cortex observer: updates metrics and fans steps out to StreamSteps.
pub struct StepFanout {
    pub metrics: Arc<Metrics>,
    pub steps: broadcast::Sender<StepEvent>,
}

impl Observer for StepFanout {
    fn decision(&self, outcome: &str) {
        self.metrics
            .decisions
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    fn drift(&self, lane: &str, drift: f64, ema: f64) {
        let labels = vec![("lane".to_string(), lane.to_string())];
        self.metrics.drift_ema.get_or_create(&labels).set(ema);
        if ema > capsule_cortex::pipeline::DRIFT_WARN {
            self.metrics.drift_warnings.get_or_create(&labels).inc();
            tracing::warn!(lane, drift, ema, "drift EMA above 0.20");
        }
    }

    fn ledger_append(&self, seconds: f64) {
        self.metrics.ledger_append_seconds.observe(seconds);
    }

    fn step(&self, e: &StepEvent) {
        let m = &self.metrics;
        m.kernel_steps.inc();
        m.kernel_entropy.set(e.result.entropy);
        m.kernel_purity.set(e.result.purity);
        m.kernel_trace_error.set(e.result.trace_error);
        if e.result.positivity_correction > 0.0 {
            m.kernel_positivity_corrections.inc();
        }
        // No subscribers is not an error.
        let _ = self.steps.send(e.clone());
    }
}
