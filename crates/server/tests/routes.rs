//! The HTTP API's one error contract, route by route, over a real server
//! on loopback: each route's success path and a bad input (bad path
//! parameter, bad query string, bad or oversized body, wrong role, no
//! token), every rejection JSON `{error, field, reason}` with a 4xx status;
//! unknown routes and methods too. And the OpenAPI document agrees with
//! the router and with the statements the code signs.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::load_key_file;
use capsule_ledger::NoteSigner;
use capsule_policy::approvals::{approval_statement, ApprovalQueue, ApprovalRequest};
use capsule_policy::killswitch::disarm_statement;
use capsule_server::auth::{Role, TokenFile};
use capsule_server::service::Service;
use capsule_server::{data, http, openapi, Config};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Largest body the test servers accept.
const BODY_LIMIT: usize = 4096;

struct TestServer {
    _dir: tempfile::TempDir,
    data: PathBuf,
    base: String,
    tokens: HashMap<&'static str, String>,
    running: capsule_server::Running,
    http: reqwest::Client,
    /// The object stored before the start, and the pending approval.
    object_id: String,
    approval_id: i64,
}

/// What one call answered.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// A server on fresh data with the hash embedder (no model needed), one
/// stored object, one pending approval, and the tokens ops (operator),
/// alice (agent), viewer (reader), judge (approver).
async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = data::init(&data).unwrap();
    let mut tokens = HashMap::new();
    tokens.insert("ops", made.operator_token);
    let tokens_path = data.join("auth/tokens.json");
    let mut file = TokenFile::load(&tokens_path).unwrap();
    for (name, role) in [
        ("alice", Role::Agent),
        ("viewer", Role::Reader),
        ("judge", Role::Approver),
    ] {
        tokens.insert(name, file.add(name, role).unwrap());
    }
    file.save(&tokens_path).unwrap();

    let object_id = {
        let ledger = data::open_ledger(&data).unwrap();
        let keyring = capsule_store::FileKeyring::create(&data::keyring(&data), &[]).unwrap();
        let store =
            capsule_store::Store::open(&data::store(&data), Arc::new(keyring), ledger.clone())
                .unwrap();
        let id = store
            .put("notes", capsule_store::Kind::Blob, b"hello objects")
            .unwrap();
        drop(store);
        ledger.close().unwrap();
        id.to_string()
    };
    let approval_id = ApprovalQueue::open(&data::approvals(&data))
        .unwrap()
        .enqueue(
            &ApprovalRequest {
                action: "fs.write".into(),
                actor: "agent:alice".into(),
                resource: "path:/srv/report".into(),
                args: json!({}),
                policy_version: "test".into(),
            },
            "pending_review",
            1,
        )
        .unwrap();

    let env: Vec<(String, String)> = [
        ("CAPSULE_SERVER__HTTP", "127.0.0.1:0"),
        ("CAPSULE_SERVER__GRPC", "127.0.0.1:0"),
        ("CAPSULE_SERVER__METRICS", "127.0.0.1:0"),
        ("CAPSULE_KERNEL__DIM", "8"),
        ("CAPSULE_MEMORY__EMBEDDER", "hash"),
        ("CAPSULE_LIMITS__MAX_BODY_BYTES", &BODY_LIMIT.to_string()),
        ("CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::load(&data::config(&data), env).unwrap();
    let running = capsule_server::start(Service::open(&data, config).unwrap())
        .await
        .unwrap();
    TestServer {
        _dir: dir,
        data,
        base: format!("http://{}", running.bound.http),
        tokens,
        running,
        http: {
            capsule_models::tls::install_crypto_provider();
            reqwest::Client::new()
        },
        object_id,
        approval_id,
    }
}

impl TestServer {
    /// A call with an optional token and an optional raw body.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        who: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            req = req.bearer_auth(&self.tokens[who]);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, who: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.raw(method, path, Some(who), bytes).await
    }

    async fn get(&self, path: &str, who: &str) -> Answer {
        self.call(Method::GET, path, who, None).await
    }

    async fn post(&self, path: &str, who: &str, body: Value) -> Answer {
        self.call(Method::POST, path, who, Some(body)).await
    }

    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

/// The answer succeeded with `status` and a JSON body.
fn ok(a: &Answer) -> &Value {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.is_object(), "{}", a.body);
    &a.body
}

/// The answer is the JSON error contract: `status` (a 4xx), the code
/// `error`, the named `field`, and a reason in words.
fn rejected(a: &Answer, status: StatusCode, error: &str, field: Option<&str>) {
    assert!(status.is_client_error());
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(
        a.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{}",
        a.body
    );
    assert_eq!(a.body["error"], error, "{}", a.body);
    assert_eq!(a.body["field"].as_str(), field, "{}", a.body);
    assert!(
        !a.body["reason"].as_str().unwrap_or("").is_empty(),
        "{}",
        a.body
    );
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

#[test]
fn the_router_serves_exactly_the_routes_the_openapi_document_lists() {
    let served: Vec<(&str, &str)> = http::endpoints()
        .iter()
        .map(|e| (e.method, e.path))
        .collect();
    let served_set: BTreeSet<_> = served.iter().copied().collect();
    assert_eq!(served.len(), served_set.len(), "a route is served twice");
    let listed: BTreeSet<_> = openapi::ROUTES.iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(
        listed.len(),
        openapi::ROUTES.len(),
        "a route is listed twice"
    );
    assert_eq!(served_set, listed);
    let doc = openapi::document();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let listed: BTreeSet<(String, String)> = listed
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, listed);
}

#[test]
fn every_route_documents_its_success_body_and_each_error_status() {
    let replied: BTreeSet<_> = openapi::REPLIES
        .iter()
        .map(|r| (r.method, r.path))
        .collect();
    let listed: BTreeSet<_> = openapi::ROUTES.iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(replied, listed, "REPLIES and ROUTES name different routes");
    let doc = openapi::document();
    for route in openapi::ROUTES {
        let responses = &doc["paths"][route.path][route.method]["responses"];
        assert!(responses.get("default").is_none(), "{}", route.path);
        for (code, response) in responses.as_object().unwrap() {
            let content = response["content"].as_object().unwrap();
            assert!(
                !content.is_empty(),
                "{} {} {code}",
                route.method,
                route.path
            );
            if code.starts_with('4') {
                assert_eq!(
                    content["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error"
                );
            }
            if let Some(r) = content
                .get("application/json")
                .and_then(|c| c["schema"]["$ref"].as_str())
            {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(doc["components"]["schemas"][name].is_object(), "{name}");
            }
        }
        if route.path.starts_with("/v1/") {
            for code in ["401", "429"] {
                assert!(responses.get(code).is_some(), "{} {code}", route.path);
            }
        }
    }
}

#[test]
fn the_document_states_the_approval_and_disarm_statements_the_code_signs() {
    let doc = openapi::document();
    let text = |method: &str, path: &str| {
        doc["paths"][path][method]["summary"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The document writes a statement with its newlines as \n and with
    // <id>, <digest> and <nonce> in place of the values.
    let shown = |statement: String| statement.replace('\n', "\\n");
    let approval = shown(
        approval_statement(4242, "DIGEST")
            .replace("4242", "<id>")
            .replace("DIGEST", "<digest>"),
    );
    let sign = text("post", "/v1/approvals/{id}/sign");
    assert!(
        sign.contains(&format!("\"{approval}\"")),
        "{approval} is not in: {sign}"
    );
    let disarm = shown(disarm_statement("NONCE").replace("NONCE", "<nonce>"));
    let kill = text("delete", "/v1/kill");
    assert!(
        kill.contains(&format!("\"{disarm}\"")),
        "{disarm} is not in: {kill}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_json_404_and_405() {
    let s = start().await;
    for path in ["/v1/nothing", "/nothing", "/v1/audit/proof/1/2"] {
        let a = s.get(path, "viewer").await;
        rejected(&a, StatusCode::NOT_FOUND, "not_found", Some("path"));
        assert!(a.body["reason"].as_str().unwrap().contains(path));
    }
    let a = s.call(Method::PATCH, "/v1/kill", "ops", None).await;
    rejected(
        &a,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        Some("method"),
    );
    let allow = a.headers["allow"].to_str().unwrap();
    for m in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    let a = s.raw(Method::POST, "/healthz", None, None).await;
    rejected(
        &a,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        Some("method"),
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_routes_answer_and_the_served_document_is_the_documents() {
    let s = start().await;
    let a = s.raw(Method::GET, "/healthz", None, None).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, Some("ok\n")));
    let a = s.raw(Method::GET, "/readyz", None, None).await;
    assert_eq!(ok(&a)["ready"], true);
    let a = s.raw(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(ok(&a), &openapi::document());
    let a = s.raw(Method::GET, "/docs", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.as_str().unwrap().contains("/openapi.json"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_without_a_token_is_401_json() {
    let s = start().await;
    for route in openapi::ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/v1/"))
    {
        let path = route
            .path
            .replace("{seq}", "0")
            .replace("{old}", "0")
            .replace("{new}", "1")
            .replace("{id}", "1");
        let method: Method = route.method.to_uppercase().parse().unwrap();
        let a = s.raw(method, &path, None, None).await;
        rejected(
            &a,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("authorization"),
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_and_memory_search_answer_and_reject_bad_bodies() {
    let s = start().await;
    let a = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "the backup finished" }),
        )
        .await;
    assert_eq!(ok(&a)["step"], 1);
    let a = s
        .post("/v1/think", "alice", json!({ "text": "x", "gw": "up" }))
        .await;
    rejected(&a, BAD, "invalid_request", Some("gw"));
    let a = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "x", "planner": "oracle" }),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("planner"));
    let a = s.post("/v1/think", "viewer", json!({ "text": "x" })).await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);
    let a = s
        .raw(
            Method::POST,
            "/v1/think",
            Some("alice"),
            Some(b"{\"text\": ".to_vec()),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("text"));

    let a = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "backup", "k": 1 }),
        )
        .await;
    assert_eq!(ok(&a)["hits"][0]["text"], "the backup finished");
    let a = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "backup", "k": 0 }),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("k"));
    let a = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "x".repeat(BODY_LIMIT) }),
        )
        .await;
    rejected(
        &a,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        Some("body"),
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_routes_answer_and_reject_bad_input_and_roles() {
    let s = start().await;
    let a = s.get("/v1/state", "viewer").await;
    assert_eq!(ok(&a)["kernel"]["dimension"], 8);
    let a = s.raw(Method::GET, "/v1/state", None, None).await;
    rejected(
        &a,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        Some("authorization"),
    );
    let a = s.get("/v1/kernel/state", "viewer").await;
    assert_eq!(ok(&a)["step"], 0);

    let a = s
        .post("/v1/kernel/step", "alice", json!({ "gw": [0.1, 0.2] }))
        .await;
    assert_eq!(ok(&a)["step"], 1);
    let a = s
        .post("/v1/kernel/step", "alice", json!({ "gw": [1, "a"] }))
        .await;
    rejected(&a, BAD, "invalid_request", Some("gw[1]"));
    let a = s.post("/v1/kernel/step", "judge", json!({})).await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);

    let a = s.get("/v1/kernel/dump", "ops").await;
    assert!(ok(&a)["snapshot"].as_str().is_some());
    let a = s.get("/v1/kernel/dump", "alice").await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);

    let a = s.post("/v1/kernel/reset", "ops", json!({})).await;
    assert_eq!(ok(&a)["reset"], true);
    let a = s.post("/v1/kernel/reset", "alice", json!({})).await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);
    assert_eq!(s.get("/v1/kernel/state", "viewer").await.body["step"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_routes_answer_and_reject_bad_bodies() {
    let s = start().await;
    let a = s.get("/v1/kill", "viewer").await;
    assert_eq!(ok(&a)["armed"], false);
    let a = s.post("/v1/kill", "ops", json!({ "reason": 5 })).await;
    rejected(&a, BAD, "invalid_request", Some("reason"));
    let big = vec![b' '; BODY_LIMIT + 1];
    let a = s
        .raw(Method::POST, "/v1/kill", Some("ops"), Some(big))
        .await;
    rejected(
        &a,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        Some("body"),
    );
    assert_eq!(s.get("/v1/kill", "viewer").await.body["armed"], false);
    // An empty body arms with the default reason.
    let a = s.raw(Method::POST, "/v1/kill", Some("ops"), None).await;
    assert_eq!(ok(&a)["armed"], true);

    let nonce = s.get("/v1/kill", "ops").await.body["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let signer = load_key_file(&data::keys(&s.data).join("operator.pem"), "operator").unwrap();
    let signature = |text: &str| B64.encode(signer.sign(text.as_bytes()));
    let key = signer.verifier().to_string();
    let a = s
        .call(
            Method::DELETE,
            "/v1/kill",
            "ops",
            Some(json!({ "signatures": "none" })),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("signatures"));
    let a = s
        .call(
            Method::DELETE,
            "/v1/kill",
            "ops",
            Some(json!({ "signatures": [{ "key": key, "signature": signature("other") }] })),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("signatures[0]"));
    let a = s
        .call(
            Method::DELETE,
            "/v1/kill",
            "ops",
            Some(json!({ "signatures": [{ "key": key, "signature": signature(&disarm_statement(&nonce)) }] })),
        )
        .await;
    assert_eq!(ok(&a)["armed"], false);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_routes_answer_and_name_the_bad_parameter() {
    let s = start().await;
    let a = s.get("/v1/audit?from=0&limit=2", "viewer").await;
    let size = ok(&a)["size"].as_u64().unwrap();
    assert!(size >= 2, "{}", a.body);
    assert_eq!(a.body["entries"].as_array().unwrap().len(), 2);
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("from=1.5", "from"),
        ("color=red", "color"),
    ] {
        let a = s.get(&format!("/v1/audit?{query}"), "viewer").await;
        rejected(&a, BAD, "invalid_request", Some(field));
    }

    let a = s.get("/v1/audit/checkpoint", "viewer").await;
    assert!(ok(&a)["size"].as_u64().unwrap() >= size);

    let a = s.get("/v1/audit/proof/0", "viewer").await;
    assert_eq!(ok(&a)["index"], 0);
    let a = s.get("/v1/audit/proof/abc", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("seq"));
    assert!(a.body["reason"].as_str().unwrap().contains("abc"));
    let a = s.get("/v1/audit/proof/-1", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("seq"));
    let a = s.get("/v1/audit/proof/1000000", "viewer").await;
    rejected(&a, StatusCode::NOT_FOUND, "not_found", Some("seq"));
    let a = s.get("/v1/audit/proof/0?size=x", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("size"));
    let a = s.get("/v1/audit/proof/0?size=1000000", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("size"));

    let a = s.get("/v1/audit/consistency/1/2", "viewer").await;
    assert_eq!(ok(&a)["new_size"], 2);
    let a = s.get("/v1/audit/consistency/x/2", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("old"));
    let a = s.get("/v1/audit/consistency/1/y", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("new"));
    let a = s.get("/v1/audit/consistency/2/1", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("old"));
    let a = s.get("/v1/audit/consistency/1/1000000", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("new"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_answer_their_bytes_and_reject_malformed_and_unknown_ids() {
    let s = start().await;
    let resp = s
        .http
        .get(format!("{}/v1/objects/{}", s.base, s.object_id))
        .bearer_auth(&s.tokens["viewer"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"hello objects");
    let a = s.get("/v1/objects/not-an-id", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("id"));
    let unknown = format!("notes_20250101_{}", "a".repeat(32));
    let a = s.get(&format!("/v1/objects/{unknown}"), "viewer").await;
    rejected(&a, StatusCode::NOT_FOUND, "not_found", Some("id"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_routes_answer_and_reject_bad_bodies_and_roles() {
    let s = start().await;
    let a = s.get("/v1/policy", "viewer").await;
    assert_eq!(ok(&a)["mode"], "semi_autonomous");

    let a = s
        .call(
            Method::PUT,
            "/v1/policy/mode",
            "ops",
            Some(json!({ "mode": "supervised" })),
        )
        .await;
    assert_eq!(ok(&a)["mode"], "supervised");
    let a = s
        .call(
            Method::PUT,
            "/v1/policy/mode",
            "ops",
            Some(json!({ "mode": "wild" })),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("mode"));
    let a = s
        .call(
            Method::PUT,
            "/v1/policy/mode",
            "alice",
            Some(json!({ "mode": "autonomous" })),
        )
        .await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);
    assert_eq!(
        s.get("/v1/policy", "viewer").await.body["mode"],
        "supervised"
    );

    let request =
        json!({ "principal": "agent:alice", "action": "brain.step", "resource": "kernel:main" });
    let a = s
        .post("/v1/policy/evaluate", "alice", request.clone())
        .await;
    assert_eq!(ok(&a)["recorded"], false);
    let a = s
        .post(
            "/v1/policy/evaluate",
            "alice",
            json!({ "action": "brain.step", "resource": "kernel:main" }),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("principal"));
    assert!(a.body["reason"].as_str().unwrap().contains("principal"));
    let a = s.post("/v1/policy/evaluate", "viewer", request).await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_routes_answer_and_reject_bad_ids_queries_and_signatures() {
    let s = start().await;
    let a = s.get("/v1/approvals", "viewer").await;
    let pending = ok(&a)["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], s.approval_id);
    let digest = pending[0]["digest"].as_str().unwrap().to_string();
    let a = s.get("/v1/approvals?status=archived", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("status"));
    let a = s.get("/v1/approvals?color=red", "viewer").await;
    rejected(&a, BAD, "invalid_request", Some("color"));

    let signer = load_key_file(&data::keys(&s.data).join("approver.pem"), "approver").unwrap();
    let key = signer.verifier().to_string();
    let signed = |id: i64| B64.encode(signer.sign(approval_statement(id, &digest).as_bytes()));
    let id = s.approval_id;
    let a = s
        .post(
            "/v1/approvals/abc/sign",
            "judge",
            json!({ "key": key, "signature": signed(id) }),
        )
        .await;
    rejected(&a, BAD, "invalid_request", Some("id"));
    let a = s
        .post(
            "/v1/approvals/999/sign",
            "judge",
            json!({ "key": key, "signature": signed(999) }),
        )
        .await;
    rejected(&a, StatusCode::NOT_FOUND, "not_found", Some("id"));
    let path = format!("/v1/approvals/{id}/sign");
    let a = s
        .post(&path, "judge", json!({ "key": key, "signature": "short" }))
        .await;
    rejected(&a, BAD, "invalid_request", Some("signature"));
    let a = s.post(&path, "judge", json!({ "key": key })).await;
    rejected(&a, BAD, "invalid_request", Some("signature"));
    let a = s
        .post(
            &path,
            "alice",
            json!({ "key": key, "signature": signed(id) }),
        )
        .await;
    rejected(&a, StatusCode::FORBIDDEN, "forbidden", None);
    let a = s
        .post(
            &path,
            "judge",
            json!({ "key": key, "signature": signed(id + 1) }),
        )
        .await;
    rejected(&a, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(
        s.get("/v1/approvals", "viewer").await.body["approvals"][0]["status"],
        "pending"
    );

    let a = s
        .post(
            &path,
            "judge",
            json!({ "key": key, "signature": signed(id) }),
        )
        .await;
    assert_eq!(ok(&a)["status"], "approved");
    let a = s.get("/v1/approvals?status=approved", "viewer").await;
    assert_eq!(ok(&a)["approvals"][0]["id"], id);
    s.stop().await;
}
