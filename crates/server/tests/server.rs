//! The real server on loopback: every acceptance behaviour of the HTTP API,
//! the kill switch and graceful shutdown, and the gRPC service through a
//! client generated from the same .proto.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::load_key_file;
use capsule_ledger::{LogReader, NoteSigner};
use capsule_policy::killswitch::disarm_statement;
use capsule_server::data;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{error_of, set_policy_json, start, start_with, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_think_steps_the_kernel_and_reports_its_decision_and_ledger_entry() {
    let s = start().await;
    let (status, r) = s.think("alice", "the first thought").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["step"], 1);
    assert_eq!(r["valid"], true);
    assert!(r["trace_error"].as_f64().unwrap() <= 1e-9);
    assert!(r["entropy"].as_f64().unwrap() >= 0.0);
    assert!(r["rationale"].as_str().unwrap().contains("hash planner"));
    assert_eq!(r["decision"]["outcome"], "auto_approved");
    assert!(!r["decision"]["explanation"].as_str().unwrap().is_empty());
    assert_eq!(r["gw_dim"], 60);
    let seq = r["ledger_seq"].as_u64().unwrap();
    assert!(r["event_id"].as_i64().unwrap() > 0);
    // The same text gives the same plan.
    let (_, again) = s.think("alice", "the first thought").await;
    assert_eq!(again["op"], r["op"]);
    assert_eq!(again["rationale"], r["rationale"]);
    let (status, state) = s.get("/v1/state", "viewer").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["kernel"]["step"], 2);
    assert_eq!(state["memory_events"], 2);
    let (_, entry) = s
        .get(&format!("/v1/audit?from={seq}&limit=1"), "viewer")
        .await;
    assert_eq!(entry["entries"][0]["action"], "think");
    assert_eq!(entry["entries"][0]["actor"], "agent:alice");
    let (status, proof) = s.get(&format!("/v1/audit/proof/{seq}"), "viewer").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(proof["index"], seq);
    let d2 = again["ledger_seq"].as_u64().unwrap() - 1;
    s.finish(&[seq - 1, d2]).await;
}

/// The durability invariant over HTTP: a think is answered only once its
/// ledger entries are durable, so a think whose group write fails (as a
/// failing disk would) gets 503 and leaves no step, event or entry behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_think_whose_ledger_entry_is_not_durable_is_not_answered_ok() {
    let mut s = start().await;
    let (status, first) = s.think("alice", "a durable thought").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let service = s.service.clone().unwrap();
    let events = service.cortex.memory().count().unwrap();
    let durable = service.ledger.size();
    service
        .ledger
        .inject_write_failure("injected: the disk failed");
    let (status, r) = s.think("alice", "a thought the disk loses").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{r}");
    assert_eq!(error_of(&r).0, "ledger_unavailable", "{r}");
    assert_eq!(s.kernel_step().await, 1);
    assert_eq!(service.cortex.memory().count().unwrap(), events);
    assert_eq!(service.ledger.size(), durable);
    // Nothing after the failure is acknowledged either.
    let (status, _) = s.post("/v1/kernel/step", "alice", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    drop(service);
    // The failed ledger refuses its final checkpoint; the log on disk holds
    // exactly the acknowledged entries.
    let _ = s.running.take().unwrap().stop().await;
    s.service = None;
    let reader = LogReader::open(&data::ledger(&s.data)).unwrap();
    assert_eq!(reader.size(), durable);
    let thinks = (0..reader.size())
        .filter(|&seq| reader.entry(seq).unwrap().record.action == "think")
        .count();
    assert_eq!(thinks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critic_refuses_a_wrong_workspace_with_400_naming_the_field() {
    let s = start_with(&[("CAPSULE_KERNEL__DIM", "64")], |_| {}).await;
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "x", "gw": vec![0.1; 61] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&r), ("critic_rejected", Some("gw")));
    assert!(r["reason"].as_str().unwrap().contains("61"));
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "x", "gw": [0.5, 11.0] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&r), ("critic_rejected", Some("gw[1]")));
    // Malformed JSON names the field too, and nothing stepped.
    let (status, r) = s
        .post("/v1/think", "alice", json!({ "text": "x", "gw": [1, "a"] }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&r), ("invalid_request", Some("gw[1]")));
    let (status, r) = s
        .post("/v1/think", "alice", json!({ "text": "x", "mood": 1 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("mood"));
    assert_eq!(s.kernel_step().await, 0);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_denial_is_403_with_the_explanation_and_is_recorded() {
    let s = start_with(&[], |data| {
        std::fs::write(
            data::policy(data).join("no-measure-for-mallory.cedar"),
            "@id(\"no-measure-for-mallory\")\n\
             forbid (principal == Capsule::Agent::\"mallory\", action == Capsule::Action::\"brain.measure\", resource);\n",
        )
        .unwrap();
    })
    .await;
    let (status, r) = s
        .post(
            "/v1/think",
            "mallory",
            json!({ "text": "look", "measure": true }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(r["error"], "policy_denied");
    assert_eq!(r["decision"]["policies"][0], "no-measure-for-mallory");
    assert!(r["reason"]
        .as_str()
        .unwrap()
        .contains("no-measure-for-mallory"));
    let denied = r["ledger_seq"].as_u64().unwrap();
    // Affect below the thresholds is refused with what would pass.
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "unsure", "affect": { "confidence": 0.2 } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(r["decision"]["autonomy_rule"], 3);
    assert!(r["decision"]["would_pass"]
        .as_str()
        .unwrap()
        .contains("confidence"));
    let low = r["ledger_seq"].as_u64().unwrap();
    // Alice may measure; the denial did not step the kernel.
    let (status, ok) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "look", "measure": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["step"], 1);
    assert!(ok["measured_state"].as_u64().unwrap() < 16);
    let allowed = ok["ledger_seq"].as_u64().unwrap() - 1;
    s.finish(&[denied, low, allowed]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_401_on_every_route() {
    let s = start().await;
    for route in capsule_server::openapi::ROUTES {
        if !route.path.starts_with("/v1") {
            continue;
        }
        let path = route
            .path
            .replace("{seq}", "0")
            .replace("{old}", "0")
            .replace("{new}", "1")
            .replace("{id}", "1");
        let method: reqwest::Method = route.method.to_uppercase().parse().unwrap();
        let (status, headers, body) = s.call(method.clone(), &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body["field"], "authorization");
        assert!(headers.contains_key("www-authenticate"));
    }
    let resp = s
        .http
        .get(format!("{}/v1/state", s.base))
        .bearer_auth("cap_not_a_token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_permission_is_403() {
    let s = start().await;
    let (status, r) = s.think("viewer", "read only").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(r["error"], "forbidden");
    assert!(r["reason"].as_str().unwrap().contains("reader"));
    let (status, _) = s.post("/v1/kill", "alice", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.get("/v1/kernel/dump", "alice").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.post("/v1/kernel/step", "judge", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, dump) = s.get("/v1/kernel/dump", "ops").await;
    assert_eq!(status, StatusCode::OK);
    let bytes = B64.decode(dump["snapshot"].as_str().unwrap()).unwrap();
    assert_eq!(capsule_kernel::restore(&bytes).unwrap().step_count(), 0);
    assert_eq!(s.kernel_step().await, 0);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let s = start_with(&[("CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE", "5")], |_| {}).await;
    for _ in 0..5 {
        assert_eq!(s.get("/v1/state", "viewer").await.0, StatusCode::OK);
    }
    let (status, headers, body) = s
        .call(reqwest::Method::GET, "/v1/state", Some("viewer"), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    // Another token has its own budget.
    assert_eq!(s.get("/v1/state", "alice").await.0, StatusCode::OK);
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("capsule_rate_limited_total 1"),
        "{metrics}"
    );
    s.finish(&[]).await;
}

async fn disarm_body(s: &TestServer) -> Value {
    let (_, status) = s.get("/v1/kill", "ops").await;
    let nonce = status["nonce"].as_str().unwrap().to_string();
    let signer = load_key_file(&data::keys(&s.data).join("operator.pem"), "operator").unwrap();
    json!({
        "signatures": [{
            "key": signer.verifier().to_string(),
            "signature": B64.encode(signer.sign(disarm_statement(&nonce).as_bytes())),
        }],
        "reason": "test over",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_refuses_every_mutating_call_until_disarmed() {
    let s = start().await;
    assert_eq!(s.think("alice", "before").await.0, StatusCode::OK);
    let (status, armed) = s.post("/v1/kill", "ops", json!({ "reason": "test" })).await;
    assert_eq!(status, StatusCode::OK, "{armed}");
    assert_eq!(armed["armed"], true);
    let (status, r) = s.think("alice", "during").await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_eq!(r["error"], "kill_switch");
    let blocked = r["ledger_seq"].as_u64().unwrap();
    let (status, _) = s
        .post("/v1/kernel/step", "alice", json!({ "gw": [0.1] }))
        .await;
    assert_eq!(status, StatusCode::LOCKED);
    let (status, _) = s.post("/v1/kernel/reset", "ops", json!({})).await;
    assert_eq!(status, StatusCode::LOCKED);
    let (status, _, _) = s
        .call(
            reqwest::Method::PUT,
            "/v1/policy/mode",
            Some("ops"),
            Some(json!({ "mode": "autonomous" })),
        )
        .await;
    assert_eq!(status, StatusCode::LOCKED);
    // Reads still work, and the kernel did not move.
    assert_eq!(s.kernel_step().await, 1);
    // A wrong signature does not disarm.
    let mut bad = disarm_body(&s).await;
    bad["signatures"][0]["signature"] = json!(B64.encode([0u8; 64]));
    let (status, _, r) = s
        .call(reqwest::Method::DELETE, "/v1/kill", Some("ops"), Some(bad))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(r["field"], "signatures[0]");
    let body = disarm_body(&s).await;
    let (status, _, r) = s
        .call(reqwest::Method::DELETE, "/v1/kill", Some("ops"), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["armed"], false);
    let (status, r) = s.think("alice", "after").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["step"], 2);
    s.finish(&[blocked]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_trigger_file_stops_the_kernel() {
    let s = start().await;
    std::fs::write(data::state(&s.data).join("KILL"), "stop\n").unwrap();
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = s.think("alice", "t").await.0;
        if status == StatusCode::LOCKED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::LOCKED);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_no_acknowledged_ledger_entry() {
    let s = start().await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let http = s.http.clone();
        let base = s.base.clone();
        let token = s.tokens["alice"].clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1000 {
                let resp = http
                    .post(format!("{base}/v1/think"))
                    .bearer_auth(&token)
                    .json(&json!({ "text": format!("worker {w} thought {i}") }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let v: Value = r.json().await.unwrap();
                        acked.push(v["ledger_seq"].as_u64().unwrap());
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut s = s;
    s.stop().await;
    let data = s.data.clone();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty());
    let dir = data::ledger(&data);
    let reader = LogReader::open(&dir).unwrap();
    for seq in &acked {
        let e = reader.entry(*seq).unwrap();
        assert_eq!(e.record.action, "think");
        assert_eq!(
            reader.entry(seq - 1).unwrap().record.meta["kind"],
            "policy.decision"
        );
    }
    // The final checkpoint covers everything that was written.
    let cp = reader.latest_checkpoint().unwrap().unwrap();
    assert_eq!(cp.size(), reader.size());
    let key = capsule_ledger::keys::KeyStore::new(&dir.join("keys"), "ledger")
        .load_public(1)
        .unwrap();
    capsule_ledger::verify(&dir, &key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_docs_metrics_and_body_limits_answer() {
    let s = start_with(&[("CAPSULE_LIMITS__MAX_BODY_BYTES", "1024")], |_| {}).await;
    let get = |url: String| {
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(
        get(format!("{}/healthz", s.base)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("{}/readyz", s.base)).await.status(),
        StatusCode::OK
    );
    let doc: Value = get(format!("{}/openapi.json", s.base))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/think"]["post"].is_object());
    let page = get(format!("{}/docs", s.base)).await.text().await.unwrap();
    assert!(page.contains("/openapi.json"));
    let (status, r) = s
        .post("/v1/think", "alice", json!({ "text": "x".repeat(2000) }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{r}");
    assert_eq!(r["field"], "body");
    assert_eq!(s.think("alice", "metrics").await.0, StatusCode::OK);
    let m = get(format!("{}/metrics", s.metrics))
        .await
        .text()
        .await
        .unwrap();
    for name in [
        "capsule_kernel_entropy",
        "capsule_kernel_steps_total 1",
        "capsule_think_duration_seconds_count",
        "capsule_policy_decisions_total{outcome=\"auto_approved\"} 1",
        "capsule_ledger_entries",
        "capsule_ledger_append_duration_seconds_count",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_steps_reports_and_streams() {
    use capsule_server::grpc::pb::brain_ai_client::BrainAiClient;
    use capsule_server::grpc::pb::{GetStateRequest, StepRequest, StreamStepsRequest};
    let s = start().await;
    let mut client = BrainAiClient::connect(s.grpc.clone()).await.unwrap();
    fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }
    let auth = |who: &str| s.tokens[who].clone();
    let err = client
        .get_state(tonic::Request::new(GetStateRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut stream = client
        .stream_steps(authed(&auth("viewer"), StreamStepsRequest { limit: 1 }))
        .await
        .unwrap()
        .into_inner();
    let reply = client
        .step(authed(
            &auth("alice"),
            StepRequest {
                global_workspace: vec![0.25; 16],
                measure: true,
                session: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.is_valid);
    assert_eq!(reply.step, 1);
    assert!(reply.measured_state.is_some());
    let streamed = stream.message().await.unwrap().unwrap();
    assert_eq!(streamed.step, 1);
    assert_eq!(streamed.ledger_seq, reply.ledger_seq);
    assert!(
        stream.message().await.unwrap().is_none(),
        "limit 1 ends the stream"
    );
    let err = client
        .step(authed(
            &auth("alice"),
            StepRequest {
                global_workspace: vec![0.1; 61],
                measure: false,
                session: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("gw"), "{}", err.message());
    let state = client
        .get_state(authed(&auth("viewer"), GetStateRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((state.dimension, state.step), (16, 1));
    let decision = reply.ledger_seq - 1;
    drop(client);
    s.finish(&[decision]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_planner_recall_search_and_replay_work_end_to_end() {
    // About the model path, not the guardian: SmolLM2-135M's rationale may
    // stray from the text, which the default drift limit (0.35) blocks.
    let s = start_with(
        &[(
            "CAPSULE_LLM__ANTHROPIC__KEY_ENV",
            "CAPSULE_TEST_UNSET_ANTHROPIC_KEY",
        )],
        |data| {
            set_policy_json(data, "guardian", json!({"max_risk": 0.5, "max_drift": 1.0}));
        },
    )
    .await;
    for text in [
        "the nightly backup finished without errors",
        "the cat sleeps on the warm windowsill",
        "disk usage on the database host is at 91 percent",
    ] {
        let (status, r) = s.think("alice", text).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "Did last night's backup job succeed?", "planner": "local" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["planner"], "local");
    assert_eq!(r["gw_dim"], 60);
    assert!(!r["rationale"].as_str().unwrap().is_empty());
    let recall = r["recall"].as_array().unwrap();
    assert_eq!(recall.len(), 3, "{r}");
    assert_eq!(
        recall[0]["text"],
        "the nightly backup finished without errors"
    );
    assert!(recall[0]["score"].as_f64().unwrap() > recall[1]["score"].as_f64().unwrap());
    let local_seq = r["ledger_seq"].as_u64().unwrap();

    let (status, r) = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "pets napping", "k": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["hits"][0]["text"],
        "the cat sleeps on the warm windowsill"
    );
    let (status, r) = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "x", "k": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&r).1, Some("k"));
    let (status, r) = s
        .post(
            "/v1/memory/search",
            "viewer",
            json!({ "query": "x", "filter": { "kind": "think", "color": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "x", "planner": "oracle" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&r).1, Some("planner"));
    // A remote planner with no key set is refused as the caller's choice
    // (400 naming the planner), not failed as an upstream fault; nothing steps.
    let before = s.kernel_step().await;
    let (status, r) = s
        .post(
            "/v1/think",
            "alice",
            json!({ "text": "x", "planner": "anthropic" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(error_of(&r).1, Some("planner"));
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("CAPSULE_TEST_UNSET_ANTHROPIC_KEY is not set"),
        "{r}"
    );
    assert_eq!(s.kernel_step().await, before);

    let report = s.finish(&[local_seq - 1]).await;
    assert_eq!(report.steps.len(), 4);
    assert_eq!(report.model_replies, 1);
}
