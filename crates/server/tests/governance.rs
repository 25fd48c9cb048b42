//! Governance through the service's own API: the risk table, the guardian,
//! the affect parameters, held actions run once after approval, expiry,
//! and settings that survive a restart.

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::load_key_file;
use capsule_ledger::NoteSigner;
use capsule_policy::approvals::approval_statement;
use capsule_server::data;
use common::{error_of, set_policy_json, sign, start, start_with};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Sign approvals `ids` in DATA/approvals.db with the approver key, the
/// service being stopped.
fn sign_offline(data: &std::path::Path, ids: &[i64]) {
    use capsule_policy::approvals::ApprovalQueue;
    let ledger = data::open_ledger(data).unwrap();
    let mut q = ApprovalQueue::open(&data::approvals(data)).unwrap();
    let signer = load_key_file(&data::keys(data).join("approver.pem"), "approver").unwrap();
    let keys = data::load_policy(data).unwrap().1.approver_keys().unwrap();
    for &id in ids {
        let digest = q.show(id).unwrap().digest;
        let sig = B64.encode(signer.sign(approval_statement(id, &digest).as_bytes()));
        q.sign(id, &signer.verifier().to_string(), &sig, &keys, &ledger)
            .unwrap();
    }
    ledger.close().unwrap();
}

fn count(entries: &[Value], action: &str, approval: i64) -> usize {
    entries
        .iter()
        .filter(|e| e["action"] == action && e["meta"]["approval_id"] == approval)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_decision_names_its_level_risk_and_their_source() {
    let s = start().await;
    let (status, b) = s.post("/v1/think", "alice", json!({"text": "hello"})).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["decision"]["assessment"],
        json!({"risk": 0.25, "level": "low", "source": "built_in"})
    );
    assert_eq!(b["decision"]["drift"]["source"], "text_only");
    let (status, b) = s
        .post("/v1/think", "alice", json!({"text": "hello", "risk": 0.4}))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["decision"]["assessment"],
        json!({"risk": 0.4, "level": "medium", "source": "stated"})
    );
    let (status, b) = s
        .post("/v1/think", "alice", json!({"text": "hello", "risk": 0.1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(error_of(&b), ("invalid_request", Some("risk")));
    assert!(b["reason"].as_str().unwrap().contains("never a lower one"));
    let seq = s
        .entries()
        .await
        .iter()
        .rev()
        .find(|e| e["meta"]["kind"] == "policy.decision")
        .unwrap()["meta"]["decision"]["assessment"]
        .clone();
    assert_eq!(seq["source"], "stated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_severe_step_is_held_for_the_quorum_and_runs_once_after_signing() {
    let s = start().await;
    let before = s.kernel_step().await;
    let (status, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.1, 0.2], "risk": 0.75}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    assert_eq!(held["status"], "pending");
    assert_eq!(held["quorum"], 1);
    assert_eq!(held["decision"]["outcome"], "requires_human");
    assert_eq!(held["decision"]["reason"], "guardian_risk");
    assert_eq!(held["digest"].as_str().unwrap().len(), 64);
    assert_eq!(s.kernel_step().await, before, "nothing ran yet");
    let id = held["approval_id"].as_i64().unwrap();
    let (_, shown) = s.get(&format!("/v1/approvals/{id}"), "viewer").await;
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["request"]["args"]["plan"]["gw"], json!([0.1, 0.2]));

    let (status, signed) = sign(&s, id).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["status"], "released");
    assert_eq!(signed["released"]["result"]["step"], before + 1);
    assert_eq!(s.kernel_step().await, before + 1);
    // Signing again runs nothing more.
    let (status, again) = sign(&s, id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(s.kernel_step().await, before + 1);

    let (_, shown) = s.get(&format!("/v1/approvals/{id}"), "viewer").await;
    assert_eq!(shown["status"], "released");
    assert_eq!(shown["signatures"].as_array().unwrap().len(), 1);
    let seqs = shown["ledger_seqs"].as_array().unwrap().clone();
    assert_eq!(seqs.len(), 2, "{shown}");
    let entries = s.entries().await;
    assert_eq!(count(&entries, "kernel.step", id), 1);
    assert_eq!(count(&entries, "approval.release", id), 1);
    let step = &entries[seqs[0].as_u64().unwrap() as usize];
    assert_eq!(step["action"], "kernel.step");
    assert_eq!(step["meta"]["plan"]["gw"], json!([0.1, 0.2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_think_runs_as_approved_and_is_remembered() {
    let s = start().await;
    let (_, st) = s.get("/v1/state", "viewer").await;
    let events = st["memory_events"].as_u64().unwrap();
    let (status, held) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": "rotate the signing keys", "risk": 0.9}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    let id = held["approval_id"].as_i64().unwrap();
    let (status, signed) = sign(&s, id).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["status"], "released");
    let (_, st) = s.get("/v1/state", "viewer").await;
    assert_eq!(st["memory_events"].as_u64().unwrap(), events + 1);
    let entries = s.entries().await;
    let think = entries
        .iter()
        .find(|e| e["action"] == "think" && e["meta"]["approval_id"] == id)
        .unwrap();
    assert_eq!(think["meta"]["text"], "rotate the signing keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_set_voids_an_approval_before_it_runs() {
    let s = start().await;
    let (_, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.3], "risk": 0.75}),
        )
        .await;
    let id = held["approval_id"].as_i64().unwrap();
    let before = s.kernel_step().await;
    std::fs::write(
        data::policy(&s.data).join("extra.cedar"),
        "@id(\"no-net\")\nforbid (principal, action == Capsule::Action::\"net.open\", resource);\n",
    )
    .unwrap();
    let v0 = s.get("/v1/policy", "viewer").await.1["version"].clone();
    for _ in 0..100 {
        if s.get("/v1/policy", "viewer").await.1["version"] != v0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, b) = sign(&s, id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("policy_version changed"),
        "{b}"
    );
    assert_eq!(s.kernel_step().await, before);
    assert_eq!(
        s.get(&format!("/v1/approvals/{id}"), "viewer").await.1["status"],
        "void"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_affect_thresholds_block_a_step_and_a_request_may_not_raise_a_value() {
    let s = start().await;
    let (status, b) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": "go", "affect": {"safety": 0.5}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["decision"]["outcome"], "blocked");
    assert_eq!(b["decision"]["autonomy_rule"], 3);
    assert!(
        b["reason"].as_str().unwrap().contains("safety 0.5 < 0.95"),
        "{b}"
    );
    let (status, b) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": "go", "affect": {"confidence": 0.99}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(error_of(&b), ("invalid_request", Some("affect.confidence")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affect_parameters_are_state_that_operators_change_and_a_restart_keeps() {
    let mut s = start().await;
    let (status, a) = s.get("/v1/affect", "viewer").await;
    assert_eq!(status, StatusCode::OK);
    let params = a["parameters"].as_array().unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "confidence",
            "empathy",
            "curiosity",
            "safety",
            "urgency",
            "optimism",
            "caution"
        ]
    );
    assert_eq!(params[3]["threshold"], 0.95);
    assert_eq!(params[3]["source"], "config");
    let (status, b) = s.put("/v1/affect", "alice", json!({"safety": 0.99})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    let (status, b) = s.put("/v1/affect", "ops", json!({"safety": 2.0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(error_of(&b).1, Some("affect.safety"));
    let (status, b) = s.put("/v1/affect", "ops", json!({"safety": 0.9})).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["parameters"][3]["source"], "operator");
    // Below its threshold now: every think is blocked by rule 3.
    let (status, b) = s.post("/v1/think", "alice", json!({"text": "go"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["decision"]["autonomy_rule"], 3);
    assert!(s
        .entries()
        .await
        .iter()
        .any(|e| e["action"] == "policy.affect"));
    s.restart().await;
    let (_, a) = s.get("/v1/affect", "viewer").await;
    assert_eq!(a["parameters"][3]["value"], 0.9);
    assert_eq!(a["parameters"][3]["source"], "operator");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_modification_survive_a_restart_and_policy_json_reloads() {
    let mut s = start().await;
    let (status, b) = s
        .put("/v1/policy/mode", "ops", json!({"mode": "supervised"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, b) = s
        .put("/v1/policy/modification", "ops", json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, b) = s
        .put(
            "/v1/policy/modification",
            "alice",
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    let (status, b) = s
        .put("/v1/policy/modification", "ops", json!({"enabled": "yes"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(error_of(&b).1, Some("enabled"));
    let entries = s.entries().await;
    assert!(entries.iter().any(|e| e["action"] == "policy.mode"));
    assert!(entries.iter().any(|e| e["action"] == "policy.modification"));
    s.restart().await;
    let (_, p) = s.get("/v1/policy", "viewer").await;
    assert_eq!(p["mode"], "supervised");
    assert_eq!(p["modification_enabled"], true);

    // An edit of policy.json reloads like a .cedar file.
    set_policy_json(&s.data, "mode", json!("autonomous"));
    let mut mode = Value::Null;
    for _ in 0..100 {
        mode = s.get("/v1/policy", "viewer").await.1["mode"].clone();
        if mode == "autonomous" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mode, "autonomous");
    // A bad one is refused and recorded; the active settings stay.
    std::fs::write(
        data::policy(&s.data).join("policy.json"),
        b"{\"mode\": \"reckless\"}",
    )
    .unwrap();
    let mut rejected = false;
    for _ in 0..100 {
        rejected = s
            .entries()
            .await
            .iter()
            .any(|e| e["action"] == "policy.reload" && e["decision"] == "rejected");
        if rejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejected);
    assert_eq!(s.get("/v1/policy", "viewer").await.1["mode"], "autonomous");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_expires_after_its_time_to_live_and_is_recorded() {
    let s = start_with(&[], |data| {
        set_policy_json(data, "approval_ttl_s", json!(1));
    })
    .await;
    let (status, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.1], "risk": 0.75}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    let id = held["approval_id"].as_i64().unwrap();
    let mut status_now = Value::Null;
    for _ in 0..60 {
        status_now = s.get(&format!("/v1/approvals/{id}"), "viewer").await.1["status"].clone();
        if status_now == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_now, "expired");
    assert_eq!(
        s.entries()
            .await
            .iter()
            .filter(|e| e["action"] == "approval.expire" && e["meta"]["approval_id"] == id)
            .count(),
        1
    );
    let (status, b) = sign(&s, id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_waits_while_the_kill_switch_is_armed() {
    let s = start().await;
    let (_, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.1], "risk": 0.75}),
        )
        .await;
    let id = held["approval_id"].as_i64().unwrap();
    let before = s.kernel_step().await;
    let (status, _) = s.post("/v1/kill", "ops", json!({"reason": "test"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, b) = sign(&s, id).await;
    assert_eq!(status, StatusCode::LOCKED, "{b}");
    assert_eq!(s.kernel_step().await, before);
    assert_eq!(
        s.get(&format!("/v1/approvals/{id}"), "viewer").await.1["status"],
        "pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_grpc_step_names_its_approval() {
    use capsule_server::grpc::pb::brain_ai_client::BrainAiClient;
    use capsule_server::grpc::pb::StepRequest;
    let s = start_with(&[], |data| {
        set_policy_json(data, "levels", json!({"brain.step": "severe"}));
    })
    .await;
    let mut client = BrainAiClient::connect(s.grpc.clone()).await.unwrap();
    let mut req = tonic::Request::new(StepRequest {
        global_workspace: vec![0.1],
        measure: false,
        session: None,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", s.tokens["alice"]).parse().unwrap(),
    );
    let err = client.step(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .starts_with("held for approval: approval_id 1 "),
        "{}",
        err.message()
    );
    let (_, shown) = s.get("/v1/approvals/1", "viewer").await;
    assert_eq!(shown["request"]["action"], "brain.step");
    assert_eq!(shown["request"]["args"]["kind"], "kernel.step");
    let (status, signed) = sign(&s, 1).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["status"], "released");
}

/// An OpenAI-compatible provider on loopback that answers each chat
/// completion with the next plan in `plans` (op, measure, rationale).
async fn provider(plans: Vec<&'static str>) -> String {
    use axum::{routing::post, Json, Router};
    use std::sync::{Arc, Mutex};
    let plans = Arc::new(Mutex::new(plans.into_iter()));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let plans = plans.clone();
            async move {
                let rationale = plans.lock().unwrap().next().unwrap_or("nothing left");
                let content = json!({"op": "brain.step", "measure": false, "rationale": rationale});
                Json(json!({"choices": [{"message": {"content": content.to_string()}, "finish_reason": "stop"}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_drifts_from_its_intent_is_blocked_and_does_not_lock_the_lane() {
    let url = provider(vec![
        "Compose a sonnet about purple giraffes dancing in the rain.",
        "Check whether last night's database backup finished and is healthy.",
    ])
    .await;
    // SAFETY of the test: one variable of this test's own name, set before
    // the service reads it.
    std::env::set_var("CAPSULE_GOVERNANCE_TEST_KEY", "test-key");
    let s = start_with(
        &[
            ("CAPSULE_LLM__OPENAI__BASE_URL", url.as_str()),
            (
                "CAPSULE_LLM__OPENAI__KEY_ENV",
                "CAPSULE_GOVERNANCE_TEST_KEY",
            ),
            ("CAPSULE_LLM__OPENAI__MAX_RETRIES", "0"),
        ],
        |_| {},
    )
    .await;
    let text = "Is last night's database backup healthy?";
    let before = s.kernel_step().await;
    let (status, b) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": text, "planner": "openai"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["decision"]["reason"], "guardian_drift");
    assert_eq!(b["decision"]["drift"]["source"], "embedding");
    let blocked = b["decision"]["drift"]["value"].as_f64().unwrap();
    assert!(blocked > 0.35, "{b}");
    assert_eq!(s.kernel_step().await, before);
    let (_, st) = s.get("/v1/state", "viewer").await;
    assert_eq!(st["drift"]["prod"]["last"].as_f64().unwrap(), blocked);
    assert_eq!(st["drift"]["prod"]["warn"], true);

    // The next step is judged on its own drift, not the lane's average.
    let (status, b) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": text, "planner": "openai"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let ok = b["decision"]["drift"]["value"].as_f64().unwrap();
    assert!(ok < 0.35, "{b}");
    let (_, st) = s.get("/v1/state", "viewer").await;
    let ema = st["drift"]["prod"]["ema"].as_f64().unwrap();
    assert!((ema - (0.2 * ok + 0.8 * blocked)).abs() < 1e-9, "{st}");
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("capsule_drift_ema{lane=\"prod\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_signed_while_stopped_runs_at_start_or_is_voided_without_stopping_the_start() {
    let mut s = start().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, held) = s
            .post(
                "/v1/kernel/step",
                "alice",
                json!({"gw": [0.2], "risk": 0.75}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{held}");
        ids.push(held["approval_id"].as_i64().unwrap());
    }
    s.stop().await;
    // Signed offline (as `capsule approvals sign` without a token does).
    sign_offline(&s.data, &ids);
    s.restart().await;
    // Both ran at start, once each.
    let entries = s.entries().await;
    for &id in &ids {
        assert_eq!(
            s.get(&format!("/v1/approvals/{id}"), "viewer").await.1["status"],
            "released"
        );
        assert_eq!(count(&entries, "kernel.step", id), 1);
    }
    // One approved while stopped under rules that then change: voided at
    // start, and the service still starts.
    let (_, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.3], "risk": 0.75}),
        )
        .await;
    let id = held["approval_id"].as_i64().unwrap();
    s.stop().await;
    sign_offline(&s.data, &[id]);
    std::fs::write(
        data::policy(&s.data).join("extra.cedar"),
        "@id(\"no-net\")\nforbid (principal, action == Capsule::Action::\"net.open\", resource);\n",
    )
    .unwrap();
    s.restart().await;
    assert_eq!(
        s.get(&format!("/v1/approvals/{id}"), "viewer").await.1["status"],
        "void"
    );
    assert_eq!(count(&s.entries().await, "kernel.step", id), 0);
    s.stop().await;
}
