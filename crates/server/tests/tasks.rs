//! The task mesh through the service's own API: submit, fetch by ID, the
//! cache, held tasks, log-only mode, back-pressure, pattern memory, reuse
//! and the fold guard.

mod common;

use common::{error_of, set_policy_json, sign, start, start_with, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn submit(s: &TestServer, body: Value) -> (StatusCode, Value) {
    s.post("/v1/tasks", "alice", body).await
}

/// Poll until the task is done or failed (waiting out the rate limit).
async fn finished(s: &TestServer, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, t) = s.get(&format!("/v1/tasks/{id}"), "viewer").await;
        assert!(started.elapsed() < Duration::from_secs(120), "{t}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{t}");
        if t["status"] == "done" || t["status"] == "failed" {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(s: &TestServer, body: Value) -> Value {
    let (status, r) = submit(s, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    finished(s, r["task_id"].as_str().unwrap()).await
}

fn entries_of<'a>(entries: &'a [Value], action: &str, subject: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action && e["subject"] == subject)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calc_task_runs_once_and_the_same_query_is_a_cache_hit_for_anyone() {
    let s = start().await;
    let (status, r) = submit(&s, json!({"query": "0.1 +   0.2", "domain": "calc"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "queued");
    assert_eq!(
        r["classification"],
        json!({"domain": "calc", "confidence": 1.0, "method": "given"})
    );
    assert_eq!(r["policy_decision"]["outcome"], "auto_approved");
    let id = r["task_id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("TASK_") && id.len() == 4 + 1 + 8 + 1 + 32,
        "{id}"
    );
    let t = finished(&s, &id).await;
    assert_eq!(t["status"], "done", "{t}");
    assert_eq!(t["result"]["bot"], "calc");
    assert_eq!(t["result"]["data"]["exact"], "3/10");
    assert_eq!(t["result"]["data"]["decimal"], "0.3");
    assert_eq!(t["result"]["verification"]["passed"], true);
    assert_eq!(t["pattern"]["layer"], "immediate");
    let result_id = t["result_id"].as_str().unwrap().to_string();

    // Another user, other spacing: the same task, answered from the cache.
    let (status, again) = s
        .post(
            "/v1/tasks",
            "mallory",
            json!({"query": " 0.1 + 0.2 ", "domain": "calc", "user_id": "m"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "cache_hit");
    assert_eq!(again["task_id"], id);
    assert_eq!(again["result_id"], result_id);
    let entries = s.entries().await;
    let results = entries_of(&entries, "task.result", &id);
    assert_eq!(results.len(), 1, "the bot ran once");
    let node = &results[0]["meta"]["node_result"];
    assert_eq!(node["ok"], true);
    assert_eq!(node["payload_ref"], result_id);
    let stages: Vec<(&str, &str)> = node["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["stage"].as_str().unwrap(), c["node"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("submit", "router"),
            ("run", "calc"),
            ("store", "calc"),
            ("done", "calc")
        ]
    );
    assert_eq!(results[0]["meta"]["message"]["payload_ref"], id.as_str());
    let hit = &entries[again["ledger_seq"].as_u64().unwrap() as usize];
    assert_eq!(hit["action"], "task.submit");
    assert_eq!(hit["meta"]["task"]["status"], "cache_hit");
    assert_eq!(hit["meta"]["kind"], "policy.decision");
    let t = finished(&s, &id).await;
    assert_eq!(t["cache_hits"], 1);
    // The stored artifact is the object the result ID names.
    let (status, _) = s.get(&format!("/v1/objects/{result_id}"), "viewer").await;
    assert_eq!(status, StatusCode::OK);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medical_and_general_tasks_are_classified_answered_and_labelled() {
    let s = start().await;
    let (_, r) = submit(&s, json!({"query": "BMI for 70 kg, 1.75 m"})).await;
    assert_eq!(r["domain"], "medical", "{r}");
    assert_eq!(r["classification"]["method"], "embedding");
    assert!(r["classification"]["confidence"].as_f64().unwrap() > 0.5);
    let t = finished(&s, r["task_id"].as_str().unwrap()).await;
    assert_eq!(t["status"], "done", "{t}");
    assert_eq!(t["result"]["label"], "SIMULATION ONLY — not medical advice");
    assert!(
        t["result"]["answer"].as_str().unwrap().contains("22.86"),
        "{t}"
    );
    // The same formula with another weight: another task, another answer.
    let other = run(&s, json!({"query": "BMI for 80 kg, 1.75 m"})).await;
    assert!(
        other["result"]["answer"]
            .as_str()
            .unwrap()
            .contains("26.12"),
        "{other}"
    );
    assert!(other["reused_from"].is_null());

    let out_of_range = run(
        &s,
        json!({"query": "BMI for 700 kg, 1.75 m", "domain": "medical"}),
    )
    .await;
    assert_eq!(out_of_range["status"], "failed");
    assert!(
        out_of_range["error"].as_str().unwrap().contains("weight"),
        "{out_of_range}"
    );

    let t = run(&s, json!({"query": "What is the capital of France?"})).await;
    assert_eq!(t["domain"], "general", "{t}");
    assert_eq!(t["status"], "done", "{t}");
    assert!(
        t["result"]["model"]
            .as_str()
            .unwrap()
            .starts_with("smollm2"),
        "{t}"
    );
    assert!(!t["result"]["answer"].as_str().unwrap().is_empty());
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_task_steps_the_kernel_through_the_think_pipeline_each_time() {
    let s = start().await;
    let before = s.kernel_step().await;
    let body = json!({"query": "measure the brain state", "domain": "kernel"});
    let t = run(&s, body.clone()).await;
    assert_eq!(t["status"], "done", "{t}");
    assert_eq!(t["result"]["data"]["op"], "brain.measure");
    assert_eq!(s.kernel_step().await, before + 1);
    // Not cacheable: its answer depends on the state.
    let (_, again) = submit(&s, body).await;
    assert_eq!(again["status"], "queued");
    finished(&s, again["task_id"].as_str().unwrap()).await;
    assert_eq!(s.kernel_step().await, before + 2);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_runs_after_approval_once() {
    let s = start_with(&[], |data| {
        set_policy_json(data, "levels", json!({"task.submit": "severe"}));
    })
    .await;
    let (status, r) = submit(&s, json!({"query": "2^10", "domain": "calc"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "pending_approval");
    assert_eq!(r["policy_decision"]["outcome"], "requires_human");
    let id = r["task_id"].as_str().unwrap().to_string();
    let approval = r["approval_id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, t) = s.get(&format!("/v1/tasks/{id}"), "viewer").await;
    assert_eq!(t["status"], "pending_approval", "nothing ran: {t}");
    let (_, a) = s.get(&format!("/v1/approvals/{approval}"), "viewer").await;
    assert_eq!(a["request"]["args"]["task_id"], id);

    let (status, signed) = sign(&s, approval).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["status"], "released");
    assert_eq!(signed["released"]["task_id"], id);
    let t = finished(&s, &id).await;
    assert_eq!(t["result"]["data"]["exact"], "1024", "{t}");
    let (status, _) = sign(&s, approval).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let entries = s.entries().await;
    assert_eq!(entries_of(&entries, "task.result", &id).len(), 1);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_only_mode_queues_and_dispatch_runs_the_backlog_even_after_a_restart() {
    let mut s = start_with(&[("DISPATCH_ENABLED", "false")], |_| {}).await;
    let (_, state) = s.get("/v1/state", "viewer").await;
    assert_eq!(state["mesh"]["dispatch_enabled"], false);
    assert_eq!(state["mesh"]["learning_enabled"], true);
    assert_eq!(state["mesh"]["ext_actions_enabled"], false);
    let mut ids = Vec::new();
    for q in ["1 + 1", "2 * 3", "7 / 2"] {
        let (_, r) = submit(&s, json!({"query": q, "domain": "calc"})).await;
        assert_eq!(r["status"], "queued");
        let entry = &s.entries().await[r["ledger_seq"].as_u64().unwrap() as usize];
        assert_eq!(entry["meta"]["task"]["dispatch"], false, "{entry}");
        assert!(entry["meta"]["task"]["message"]["payload_ref"].is_string());
        ids.push(r["task_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        let (_, t) = s.get(&format!("/v1/tasks/{id}"), "viewer").await;
        assert_eq!(t["status"], "queued");
    }
    // The backlog survives a restart.
    s.restart().await;
    let (_, mesh) = s.get("/v1/mesh", "viewer").await;
    let calc = mesh["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["topic"] == "calc")
        .unwrap()
        .clone();
    assert_eq!(calc["queued"], 3, "{mesh}");
    let (status, r) = s
        .put("/v1/mesh/dispatch", "alice", json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    let (status, r) = s
        .put("/v1/mesh/dispatch", "ops", json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    for id in &ids {
        assert_eq!(finished(&s, id).await["status"], "done");
    }
    let entries = s.entries().await;
    let switch = &entries[r["ledger_seq"].as_u64().unwrap() as usize];
    assert_eq!(switch["action"], "mesh.dispatch");
    assert_eq!(switch["meta"]["to"], true);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing() {
    let s = start_with(
        &[
            ("DISPATCH_ENABLED", "false"),
            ("CAPSULE_MESH__QUEUE_CAPACITY", "2"),
        ],
        |_| {},
    )
    .await;
    for q in ["1 + 2", "3 + 4"] {
        let (status, r) = submit(&s, json!({"query": q, "domain": "calc"})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    }
    let size = s.entries().await.len();
    let (status, headers, body) = s
        .call(
            reqwest::Method::POST,
            "/v1/tasks",
            Some("alice"),
            Some(json!({"query": "5 + 6", "domain": "calc"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(&body), ("queue_full", Some("domain")));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(s.entries().await.len(), size, "nothing was recorded");
    // A cache hit needs no queue place; another topic has its own.
    let (status, _) = submit(
        &s,
        json!({"query": "BMI for 70 kg, 1.75 m", "domain": "medical"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, _) = s
        .put("/v1/mesh/dispatch", "ops", json!({"enabled": true}))
        .await;
    let t = run(&s, json!({"query": "5 + 6", "domain": "calc"})).await;
    assert_eq!(t["result"]["data"]["exact"], "11");
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_input_gets_a_clear_error_and_changes_nothing() {
    let s = start().await;
    let size = s.entries().await.len();
    let cases = [
        (json!({}), "query"),
        (json!({"query": ""}), "query"),
        (json!({"query": "x", "domain": "astrology"}), "domain"),
        (json!({"query": "x", "lane": "fast"}), "lane"),
        (json!({"query": "x", "params": [1]}), "params"),
        (json!({"query": "x", "class_path": "a b"}), "class_path"),
        (json!({"query": "x", "colour": "red"}), "colour"),
        (json!({"query": "x".repeat(5000)}), "query"),
    ];
    for (body, field) in cases {
        let (status, r) = submit(&s, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {r}");
        assert_eq!(r["field"], field, "{body}: {r}");
    }
    let (status, r) = s.post("/v1/tasks", "viewer", json!({"query": "1+1"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    for (path, status_want, field) in [
        ("/v1/tasks/nope", StatusCode::BAD_REQUEST, "id"),
        (
            "/v1/tasks/RESULT_20261207_abcdefghijklmnopqrstuvwxyz234567",
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            "/v1/tasks/TASK_20261207_abcdefghijklmnopqrstuvwxyz234567",
            StatusCode::NOT_FOUND,
            "id",
        ),
        ("/v1/patterns?layer=attic", StatusCode::BAD_REQUEST, "layer"),
        (
            "/v1/patterns?domain=astrology",
            StatusCode::BAD_REQUEST,
            "domain",
        ),
    ] {
        let (status, r) = s.get(path, "viewer").await;
        assert_eq!(status, status_want, "{path}: {r}");
        assert_eq!(r["field"], field, "{path}: {r}");
    }
    assert_eq!(s.entries().await.len(), size, "no bad request was recorded");
    // A calc error names the position; the task fails, the service does not.
    let t = run(&s, json!({"query": "3 m + 2 s", "domain": "calc"})).await;
    assert_eq!(t["status"], "failed");
    assert!(t["error"].as_str().unwrap().contains("position"), "{t}");
    let (status, r) = s
        .post(
            &format!("/v1/tasks/{}/feedback", t["task_id"].as_str().unwrap()),
            "alice",
            json!({"outcome": "success"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    let (status, r) = s
        .post(
            &format!("/v1/tasks/{}/feedback", t["task_id"].as_str().unwrap()),
            "alice",
            json!({"outcome": "great"}),
        )
        .await;
    assert_eq!(
        (status, r["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("outcome")),
        "{r}"
    );
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_moves_confidence_and_maintenance_promotes_with_a_recorded_reason() {
    let s = start().await;
    let body = json!({"query": "17 * 23", "domain": "calc"});
    let t = run(&s, body.clone()).await;
    let id = t["task_id"].as_str().unwrap().to_string();
    // The bot's own verification passed: 0.5 + 0.05.
    assert_eq!(t["pattern"]["confidence"], 0.55);
    for _ in 0..2 {
        assert_eq!(submit(&s, body.clone()).await.1["status"], "cache_hit");
    }
    let mut confidence = 0.0;
    for _ in 0..4 {
        let (status, r) = s
            .post(
                &format!("/v1/tasks/{id}/feedback"),
                "alice",
                json!({"outcome": "success"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        confidence = r["pattern"]["confidence"].as_f64().unwrap();
    }
    assert_eq!(confidence, 0.75);
    let (status, r) = s.post("/v1/patterns/maintain", "alice", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    let (status, r) = s.post("/v1/patterns/maintain", "ops", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let change = &r["changes"][0];
    assert_eq!(change["task_id"], id);
    assert_eq!(
        (change["from"].as_str(), change["to"].as_str()),
        (Some("immediate"), Some("pattern"))
    );
    let entry = &s.entries().await[change["ledger_seq"].as_u64().unwrap() as usize];
    assert_eq!(entry["action"], "pattern.layer");
    assert_eq!(entry["meta"]["from"], "immediate");
    assert_eq!(entry["meta"]["to"], "pattern");
    assert!(
        entry["reason"].as_str().unwrap().contains("usage 3"),
        "{entry}"
    );
    let (_, list) = s.get("/v1/patterns?layer=pattern", "viewer").await;
    assert_eq!(list["patterns"][0]["task_id"], id);
    // A failure takes 0.10.
    let (_, r) = s
        .post(
            &format!("/v1/tasks/{id}/feedback"),
            "alice",
            json!({"outcome": "failure"}),
        )
        .await;
    assert_eq!(r["pattern"]["confidence"], 0.65);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confident_general_answer_serves_a_paraphrase_but_never_a_medical_query() {
    let s = start().await;
    let first = run(
        &s,
        json!({"query": "What is the capital of France?", "domain": "general"}),
    )
    .await;
    let bmi = run(
        &s,
        json!({"query": "BMI for 70 kg, 1.75 m", "domain": "medical"}),
    )
    .await;
    for t in [&first, &bmi] {
        for _ in 0..5 {
            let (status, r) = s
                .post(
                    &format!("/v1/tasks/{}/feedback", t["task_id"].as_str().unwrap()),
                    "alice",
                    json!({"outcome": "success"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{r}");
        }
    }
    let (_, r) = submit(
        &s,
        json!({"query": "what's the capital of france", "domain": "general"}),
    )
    .await;
    assert_eq!(r["status"], "cache_hit", "{r}");
    assert_eq!(r["reused_from"], first["task_id"]);
    let reused = finished(&s, r["task_id"].as_str().unwrap()).await;
    assert_eq!(reused["result"], first["result"]);
    assert_eq!(reused["reused_from"], first["task_id"]);

    // Numbers matter in medicine: a near-identical query is computed.
    let (_, r) = submit(
        &s,
        json!({"query": "BMI for 80 kg, 1.75 m", "domain": "medical"}),
    )
    .await;
    assert_eq!(r["status"], "queued", "{r}");
    let t = finished(&s, r["task_id"].as_str().unwrap()).await;
    assert!(t["reused_from"].is_null());
    assert!(
        t["result"]["answer"].as_str().unwrap().contains("26.12"),
        "{t}"
    );
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fold_guard_trips_past_its_window_and_counts() {
    let s = start_with(
        &[
            ("CAPSULE_MESH__FOLD_MAX_PER_WINDOW", "2"),
            ("CAPSULE_MESH__FOLD_WINDOW_MS", "60000"),
        ],
        |_| {},
    )
    .await;
    let mut ids = Vec::new();
    for q in ["1 + 1", "1 + 2", "1 + 3"] {
        let t = run(&s, json!({"query": q, "domain": "calc"})).await;
        assert_eq!(t["status"], "done");
        ids.push(t);
    }
    assert!(ids[1]["pattern"].is_object());
    assert!(
        ids[2]["pattern"].is_null(),
        "the third write was refused: {}",
        ids[2]
    );
    let entries = s.entries().await;
    let trips: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "memory.fold_guard")
        .collect();
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0]["meta"]["limit"], "window");
    assert_eq!(trips[0]["subject"], ids[2]["task_id"]);
    let (_, mesh) = s.get("/v1/mesh", "viewer").await;
    assert_eq!(mesh["breaker_trips"], 1);
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("capsule_mesh_breaker_trips_total{limit=\"window\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_mesh_envelope_bytes_count 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_mesh_tasks_total{domain=\"calc\",status=\"done\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_mesh_patterns{layer=\"immediate\"} 2"),
        "{metrics}"
    );
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_submit_is_recorded_with_its_explanation() {
    let s = start().await;
    std::fs::write(
        capsule_server::data::policy(&s.data).join("no-kernel-tasks.cedar"),
        "@id(\"no-kernel-tasks\")\nforbid (principal, action == Capsule::Action::\"task.submit\", resource == Capsule::Task::\"kernel\");\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = s.kernel_step().await;
    let (status, r) = submit(&s, json!({"query": "step the brain", "domain": "kernel"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "blocked");
    assert!(
        r["policy_decision"]["explanation"]
            .as_str()
            .unwrap()
            .contains("no-kernel-tasks"),
        "{r}"
    );
    let (_, t) = s
        .get(
            &format!("/v1/tasks/{}", r["task_id"].as_str().unwrap()),
            "viewer",
        )
        .await;
    assert_eq!(t["status"], "blocked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.kernel_step().await, before);
    s.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_off_keeps_pattern_memory_unchanged() {
    let s = start_with(&[("LEARNING_ENABLED", "false")], |_| {}).await;
    let t = run(&s, json!({"query": "9 - 4", "domain": "calc"})).await;
    assert!(t["pattern"].is_null(), "{t}");
    let (status, r) = s
        .post(
            &format!("/v1/tasks/{}/feedback", t["task_id"].as_str().unwrap()),
            "alice",
            json!({"outcome": "success"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    let (_, list) = s.get("/v1/patterns", "viewer").await;
    assert_eq!(list["patterns"], json!([]));
    s.finish(&[]).await;
}
