//! The real server on loopback, for the integration tests: a fresh data
//! directory with tokens for every role, started in-process on free ports,
//! called over real HTTP; it can be stopped and started again on the same
//! data.
#![allow(dead_code)]

use capsule_server::auth::{Role, TokenFile};
use capsule_server::service::Service;
use capsule_server::{data, Config};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shared models directory, with both models fetched once.
pub fn models_dir() -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        use capsule_models::fetch::{fetch_shared, shared_models_dir};
        for spec in capsule_models::registry::ALL {
            fetch_shared(&spec).unwrap();
        }
        shared_models_dir().display().to_string()
    })
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub base: String,
    pub grpc: String,
    pub metrics: String,
    pub tokens: HashMap<&'static str, String>,
    pub running: Option<capsule_server::Running>,
    /// The running service, for tests that reach behind the API.
    pub service: Option<std::sync::Arc<Service>>,
    pub env: Vec<(String, String)>,
    pub http: reqwest::Client,
}

/// Start a server on fresh data with tokens ops (operator), alice (agent),
/// mallory (agent), viewer (reader), judge (approver). `prepare` may add
/// policy files; `overrides` are CAPSULE_*__* settings.
pub async fn start_with(overrides: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = data::init(&data).unwrap();
    let mut tokens = HashMap::new();
    tokens.insert("ops", made.operator_token);
    let tokens_path = data.join("auth/tokens.json");
    let mut file = TokenFile::load(&tokens_path).unwrap();
    for (name, role) in [
        ("alice", Role::Agent),
        ("mallory", Role::Agent),
        ("viewer", Role::Reader),
        ("judge", Role::Approver),
    ] {
        tokens.insert(name, file.add(name, role).unwrap());
    }
    file.save(&tokens_path).unwrap();
    prepare(&data);
    let mut env: Vec<(String, String)> = [
        ("CAPSULE_SERVER__HTTP", "127.0.0.1:0"),
        ("CAPSULE_SERVER__GRPC", "127.0.0.1:0"),
        ("CAPSULE_SERVER__METRICS", "127.0.0.1:0"),
        ("CAPSULE_KERNEL__DIM", "16"),
        ("CAPSULE_SECURITY__KILL_SWITCH_POLL_MS", "20"),
        ("CAPSULE_SECURITY__WATCH_POLICY_MS", "50"),
        ("CAPSULE_MEMORY__MODELS", models_dir()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut s = TestServer {
        dir,
        data,
        base: String::new(),
        grpc: String::new(),
        metrics: String::new(),
        tokens,
        running: None,
        service: None,
        env,
        http: {
            capsule_models::tls::install_crypto_provider();
            reqwest::Client::new()
        },
    };
    s.restart().await;
    s
}

pub async fn start() -> TestServer {
    start_with(&[], |_| {}).await
}

impl TestServer {
    /// Start (again) on the same data directory, after a graceful stop.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        // The old service must be gone: it holds the ledger's lock.
        self.service = None;
        let config = Config::load(&data::config(&self.data), self.env.clone()).unwrap();
        let service = Service::open(&self.data, config).unwrap();
        self.service = Some(service.clone());
        let running = capsule_server::start(service).await.unwrap();
        let b = running.bound;
        self.base = format!("http://{}", b.http);
        self.grpc = format!("http://{}", b.grpc);
        self.metrics = format!("http://{}", b.metrics);
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        self.service = None;
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            req = req.bearer_auth(&self.tokens[who]);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    pub async fn post(&self, path: &str, who: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self
            .call(reqwest::Method::POST, path, Some(who), Some(body))
            .await;
        (s, b)
    }

    pub async fn put(&self, path: &str, who: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self
            .call(reqwest::Method::PUT, path, Some(who), Some(body))
            .await;
        (s, b)
    }

    pub async fn get(&self, path: &str, who: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(reqwest::Method::GET, path, Some(who), None).await;
        (s, b)
    }

    pub async fn kernel_step(&self) -> u64 {
        self.get("/v1/kernel/state", "viewer").await.1["step"]
            .as_u64()
            .unwrap()
    }

    pub async fn think(&self, who: &str, text: &str) -> (StatusCode, Value) {
        self.post("/v1/think", who, serde_json::json!({ "text": text }))
            .await
    }

    /// Stop gracefully; check the ledger verifies, that every decision the
    /// server reported is in it, and that its session replays bit for bit.
    pub async fn finish(mut self, decisions: &[u64]) -> capsule_cortex::replay::ReplayReport {
        self.stop().await;
        let dir = data::ledger(&self.data);
        let reader = capsule_ledger::LogReader::open(&dir).unwrap();
        let key = capsule_ledger::keys::KeyStore::new(&dir.join("keys"), "ledger")
            .load_public(1)
            .unwrap();
        capsule_ledger::verify(&dir, &key).unwrap();
        for &seq in decisions {
            let e = reader.entry(seq).unwrap();
            assert_eq!(e.record.meta["kind"], "policy.decision", "entry {seq}");
        }
        let report =
            capsule_cortex::replay::replay(reader.size(), 0, |seq| reader.entry(seq)).unwrap();
        assert!(report.matches(), "{report:?}");
        report
    }

    /// The Prometheus text the metrics listener serves now.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The ledger entries so far (read through the API).
    pub async fn entries(&self) -> Vec<Value> {
        let (_, page) = self.get("/v1/audit?from=0&limit=1000", "viewer").await;
        page["entries"].as_array().cloned().unwrap_or_default()
    }
}

/// Set `key` of DATA/policy/policy.json to `value` (the rest is kept).
pub fn set_policy_json(data: &Path, key: &str, value: Value) {
    let path = data::policy(data).join("policy.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

pub fn error_of(body: &Value) -> (&str, Option<&str>) {
    (body["error"].as_str().unwrap(), body["field"].as_str())
}

/// Sign approval `id` with the approver key `capsule init` made.
pub async fn sign(s: &TestServer, id: i64) -> (StatusCode, Value) {
    use base64::{engine::general_purpose::STANDARD as B64, Engine};
    use capsule_ledger::NoteSigner;
    let (_, a) = s.get(&format!("/v1/approvals/{id}"), "viewer").await;
    let digest = a["digest"].as_str().unwrap().to_string();
    let signer =
        capsule_ledger::keys::load_key_file(&data::keys(&s.data).join("approver.pem"), "approver")
            .unwrap();
    let body = serde_json::json!({
        "key": signer.verifier().to_string(),
        "signature": B64.encode(signer.sign(
            capsule_policy::approvals::approval_statement(id, &digest).as_bytes()
        )),
    });
    s.post(&format!("/v1/approvals/{id}/sign"), "judge", body)
        .await
}
