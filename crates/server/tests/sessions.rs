//! One kernel per session (SPEC K8 in the service), through the front
//! door: think and step name a session, each session steps its own kernel,
//! `GET /v1/sessions` lists them, a bad name is 400 naming `session`, an
//! evicted session is restored bit for bit, and a run over several
//! sessions replays from the ledger.

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::load_key_file;
use capsule_ledger::NoteSigner;
use capsule_policy::approvals::approval_statement;
use capsule_server::data;
use common::{error_of, start, start_with};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn session<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no session {name} in {list}"))
}

#[tokio::test]
async fn each_session_steps_its_own_kernel_and_the_run_replays() {
    let s = start().await;
    let (st, a1) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": "hello", "session": "a"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{a1}");
    let (st, b1) = s
        .post(
            "/v1/think",
            "alice",
            json!({"text": "hello", "session": "b"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b1}");
    let (st, a2) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.2, 0.1], "session": "a"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{a2}");
    // Each session counts its own steps; the default kernel took none.
    assert_eq!(
        (a1["step"].as_u64(), b1["step"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(a2["step"], 2);
    assert_eq!(s.kernel_step().await, 0);
    // Seeds differ by name: the same think gives different states.
    assert_ne!(a1["state_digest"], b1["state_digest"]);
    let (st, main) = s.think("alice", "hello").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(main["step"], 1);
    assert_ne!(main["state_digest"], a1["state_digest"]);

    let (st, list) = s.get("/v1/sessions", "viewer").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["live"], 3);
    assert_eq!(list["max_live"], 256);
    assert_eq!(session(&list, "a")["steps"], 2);
    assert_eq!(session(&list, "b")["steps"], 1);
    assert_eq!(session(&list, "main")["steps"], 1);
    assert_eq!(session(&list, "a")["state"], "live");
    assert!(session(&list, "a")["snapshot"].is_null());

    // Every step record names its session.
    let steps: Vec<(String, String)> = s
        .entries()
        .await
        .iter()
        .filter(|e| {
            matches!(
                e["meta"]["kind"].as_str(),
                Some("cortex.think" | "kernel.step")
            )
        })
        .map(|e| {
            (
                e["meta"]["session"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("a", "think"),
            ("b", "think"),
            ("a", "kernel.step"),
            ("main", "think")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    let report = s.finish(&[]).await;
    let replayed: Vec<&str> = report.steps.iter().map(|r| r.session.as_str()).collect();
    assert_eq!(replayed, ["a", "b", "a", "main"]);
}

#[tokio::test]
async fn a_bad_session_name_is_400_naming_session() {
    let s = start().await;
    let long = "x".repeat(65);
    for bad in [
        json!(""),
        json!("-a"),
        json!("a b"),
        json!("a/b"),
        json!(long),
        json!("é"),
        json!(5),
    ] {
        for (path, body) in [
            ("/v1/think", json!({"text": "hi", "session": bad})),
            ("/v1/kernel/step", json!({"gw": [0.1], "session": bad})),
        ] {
            let (st, reply) = s.post(path, "alice", body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{path} {bad}: {reply}");
            assert_eq!(error_of(&reply).1, Some("session"), "{path} {bad}: {reply}");
        }
    }
    // The longest and the odd-but-valid names are accepted.
    for good in ["x".repeat(64), "A-1_b.c".into(), "7".into()] {
        let (st, reply) = s
            .post(
                "/v1/kernel/step",
                "alice",
                json!({"gw": [0.1], "session": good}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{good}: {reply}");
    }
    // Nothing was stepped on a refused name.
    let (_, list) = s.get("/v1/sessions", "viewer").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 4, "{list}");
    s.finish(&[]).await;
}

#[tokio::test]
async fn the_sessions_list_needs_a_token_and_any_role_reads_it() {
    let s = start().await;
    let (st, _, _) = s
        .call(reqwest::Method::GET, "/v1/sessions", None, None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for who in ["viewer", "alice", "ops", "judge"] {
        let (st, list) = s.get("/v1/sessions", who).await;
        assert_eq!(st, StatusCode::OK, "{who}");
        assert_eq!(list["sessions"][0]["name"], "main");
    }
    s.finish(&[]).await;
}

/// Step `a`, then `b`, then `a` again on a server; the states after each.
async fn a_b_a(s: &common::TestServer) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, gw) in [("a", [0.3, -0.2]), ("b", [0.1, 0.4]), ("a", [0.5, 0.25])] {
        let (st, r) = s
            .post(
                "/v1/kernel/step",
                "alice",
                json!({"gw": gw, "measure": true, "session": name}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{r}");
        out.push(r);
    }
    out
}

#[tokio::test]
async fn an_evicted_session_is_restored_bit_for_bit() {
    // Room for main and one more: b evicts a, and a's return evicts b.
    let small = start_with(&[("CAPSULE_SESSIONS__MAX_LIVE", "2")], |_| {}).await;
    let roomy = start().await;
    let evicted = a_b_a(&small).await;
    let kept = a_b_a(&roomy).await;
    for (e, k) in evicted.iter().zip(&kept) {
        for field in [
            "step",
            "t",
            "dt",
            "entropy",
            "measured_state",
            "state_digest",
        ] {
            assert_eq!(e[field], k[field], "{field}: {e} vs {k}");
        }
    }
    let (_, list) = small.get("/v1/sessions", "viewer").await;
    assert_eq!(list["live"], 2, "{list}");
    let a = session(&list, "a");
    let b = session(&list, "b");
    assert_eq!(
        (a["state"].as_str(), b["state"].as_str()),
        (Some("live"), Some("snapshotted"))
    );
    assert_eq!(b["steps"], 1);
    // a was snapshotted once (by b's first step), b by a's return.
    let a_id = a["snapshot"].as_str().unwrap().to_string();
    let b_id = b["snapshot"].as_str().unwrap().to_string();
    assert!(a_id.starts_with("kernels_"), "{a_id}");
    // The ledger names each snapshot's object and state digest.
    let entries = small.entries().await;
    let snaps: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "kernel.snapshot")
        .collect();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["meta"]["session"], "a");
    assert_eq!(snaps[0]["meta"]["object"], a_id.as_str());
    assert_eq!(snaps[0]["meta"]["state_digest"], evicted[0]["state_digest"]);
    assert_eq!(snaps[1]["meta"]["object"], b_id.as_str());
    assert_eq!(b["snapshot_seq"], snaps[1]["seq"]);
    // The snapshot is a stored object whose bytes hash to that digest.
    let (st, _, _) = small
        .call(
            reqwest::Method::GET,
            &format!("/v1/objects/{b_id}"),
            Some("viewer"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    roomy.finish(&[]).await;
    let report = small.finish(&[]).await;
    assert_eq!(
        report
            .steps
            .iter()
            .filter(|r| r.plan_check == "snapshot")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_max_live_below_two_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    capsule_server::data::init(&data).unwrap();
    let e = capsule_server::Config::load(
        &capsule_server::data::config(&data),
        vec![("CAPSULE_SESSIONS__MAX_LIVE".into(), "1".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("sessions.max_live:"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_step_remembers_its_session_and_runs_on_its_kernel() {
    let s = start().await;
    let (st, held) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.1, 0.2], "risk": 0.75, "session": "night"}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{held}");
    let id = held["approval_id"].as_i64().unwrap();
    let (_, shown) = s.get(&format!("/v1/approvals/{id}"), "viewer").await;
    assert_eq!(shown["request"]["args"]["session"], "night");
    let digest = shown["digest"].as_str().unwrap().to_string();
    let signer = load_key_file(&data::keys(&s.data).join("approver.pem"), "approver").unwrap();
    let body = json!({
        "key": signer.verifier().to_string(),
        "signature": B64.encode(signer.sign(approval_statement(id, &digest).as_bytes())),
    });
    let (st, signed) = s
        .post(&format!("/v1/approvals/{id}/sign"), "judge", body)
        .await;
    assert_eq!(st, StatusCode::OK, "{signed}");
    assert_eq!(signed["released"]["result"]["step"], 1);
    assert_eq!(s.kernel_step().await, 0, "the default kernel did not step");
    let (_, list) = s.get("/v1/sessions", "viewer").await;
    assert_eq!(session(&list, "night")["steps"], 1);
    // The same step on a fresh server's session gives the same state.
    let other = start().await;
    let (_, direct) = other
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.1, 0.2], "session": "night"}),
        )
        .await;
    assert_eq!(
        signed["released"]["result"]["state_digest"],
        direct["state_digest"]
    );
    other.finish(&[]).await;
    s.finish(&[]).await;
}

#[tokio::test]
async fn an_operator_resets_one_session_and_the_run_replays() {
    let s = start().await;
    for name in ["r", "r", "keep"] {
        let (st, r) = s
            .post(
                "/v1/kernel/step",
                "alice",
                json!({"gw": [0.2], "session": name}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{r}");
    }
    let (st, r) = s
        .post("/v1/kernel/reset", "ops", json!({"session": "r"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (st, r) = s
        .post("/v1/kernel/reset", "ops", json!({"session": "a b"}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(error_of(&r).1, Some("session"));
    let (_, list) = s.get("/v1/sessions", "viewer").await;
    assert_eq!(session(&list, "r")["steps"], 0);
    assert_eq!(session(&list, "keep")["steps"], 1);
    let (st, r) = s
        .post(
            "/v1/kernel/step",
            "alice",
            json!({"gw": [0.2], "session": "r"}),
        )
        .await;
    assert_eq!((st, r["step"].as_u64()), (StatusCode::OK, Some(1)));
    s.finish(&[]).await;
}

#[tokio::test]
async fn grpc_step_takes_an_optional_session() {
    use capsule_server::grpc::pb::brain_ai_client::BrainAiClient;
    use capsule_server::grpc::pb::StepRequest;
    let s = start().await;
    let mut client = BrainAiClient::connect(s.grpc.clone()).await.unwrap();
    let call = |session: Option<&str>| {
        let mut req = tonic::Request::new(StepRequest {
            global_workspace: vec![0.1, 0.2],
            measure: false,
            session: session.map(str::to_string),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", s.tokens["alice"]).parse().unwrap(),
        );
        req
    };
    let reply = client.step(call(Some("g"))).await.unwrap().into_inner();
    assert_eq!(reply.step, 1);
    let reply = client.step(call(Some("g"))).await.unwrap().into_inner();
    assert_eq!(reply.step, 2);
    let reply = client.step(call(None)).await.unwrap().into_inner();
    assert_eq!(reply.step, 1, "the default session is its own kernel");
    let err = client.step(call(Some("no way"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("session:"), "{}", err.message());
    let (_, list) = s.get("/v1/sessions", "viewer").await;
    assert_eq!(session(&list, "g")["steps"], 2);
    s.finish(&[]).await;
}
