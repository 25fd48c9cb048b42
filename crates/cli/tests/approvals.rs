//! An approved action runs exactly once across crashes: `capsule up` is
//! killed (SIGKILL) at each point between the SQLite commit of the claim
//! and the ledger append of the release, restarted, and the ledger holds
//! exactly one execution and one release entry.

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::load_key_file;
use capsule_ledger::{LogReader, NoteSigner};
use capsule_policy::approvals::approval_statement;
use common::{call, init, ok, up, wait_for};
use serde_json::{json, Value};
use std::process::{Child, Command};

fn crash_at(point: &str) {
    let (_dir, data, token) = init();

    let mut first = up(&data, Some(point));
    let base = format!("http://{}", first.http);
    let (status, held) = call(
        "POST",
        &format!("{base}/v1/kernel/step"),
        &token,
        Some(json!({"gw": [0.25, -0.5], "risk": 0.75})),
    );
    assert_eq!(status, 202, "{held}");
    let id = held["approval_id"].as_i64().unwrap();
    let signer = load_key_file(&data.join("keys/approver.pem"), "approver").unwrap();
    let digest = held["digest"].as_str().unwrap().to_string();
    let body = json!({
        "key": signer.verifier().to_string(),
        "signature": B64.encode(signer.sign(approval_statement(id, &digest).as_bytes())),
    });
    let sign_url = format!("{base}/v1/approvals/{id}/sign");
    let signer_token = token.clone();
    std::thread::spawn(move || call("POST", &sign_url, &signer_token, Some(body)));
    wait_for(&first.lines, &format!("paused at {point}"));
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    // Restart: the interrupted release is settled (or run) once.
    let mut second = up(&data, None);
    let (status, shown) = call(
        "GET",
        &format!("http://{}/v1/approvals/{id}", second.http),
        &token,
        None,
    );
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "released", "{point}: {shown}");
    unsafe_free_sigterm(&mut second.child);
    let reader = LogReader::open(&data.join("ledger")).unwrap();
    let entries: Vec<_> = (0..reader.size())
        .map(|s| reader.entry(s).unwrap())
        .collect();
    let with_id = |action: &str| {
        entries
            .iter()
            .filter(|e| e.record.action == action && e.record.meta["approval_id"] == id)
            .count()
    };
    assert_eq!(with_id("kernel.step"), 1, "{point}: one execution");
    assert_eq!(with_id("approval.release"), 1, "{point}: one release entry");
}

/// Stop gracefully with SIGTERM (through the `kill` command: no unsafe here).
fn unsafe_free_sigterm(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

#[test]
fn a_crash_after_the_claim_commit_runs_the_action_once_after_restart() {
    crash_at("release.claimed");
}

#[test]
fn a_crash_after_the_ledger_append_releases_once_after_restart() {
    crash_at("release.appended");
}

#[test]
fn capsule_approvals_sign_through_the_service_runs_the_held_step_once() {
    let (_dir, data, operator) = init();
    let judge: Value = serde_json::from_str(&ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args([
            "tokens", "add", "--role", "approver", "--name", "judge", "--json", "--data",
        ])
        .arg(&data)
        .output()
        .unwrap()))
    .unwrap();
    let judge = judge["token"].as_str().unwrap();
    let mut service = up(&data, None);
    let base = format!("http://{}", service.http);
    let (status, held) = call(
        "POST",
        &format!("{base}/v1/kernel/step"),
        &operator,
        Some(json!({"gw": [0.1], "risk": 0.75})),
    );
    assert_eq!(status, 202, "{held}");
    let id = held["approval_id"].as_i64().unwrap().to_string();
    let sign = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_capsule"))
            .args(["approvals", "sign", &id, "--key"])
            .arg(data.join("keys/approver.pem"))
            .args(["--url", &base, "--token", token, "--data"])
            .arg(&data)
            .env_remove("CAPSULE_TOKEN")
            .output()
            .unwrap()
    };
    // An unknown token is refused by the service (401).
    let out = sign("not-a-token");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let text = ok(sign(judge));
    assert!(text.contains("1 of 1 signatures, released"), "{text}");
    assert!(text.contains("ran once: kernel step 1"), "{text}");
    let out = sign(judge);
    assert!(!out.status.success(), "a second sign runs nothing");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{out:?}"
    );
    unsafe_free_sigterm(&mut service.child);
}
