//! `capsule policy`, `capsule kill` and `capsule approvals` as a user runs them.

mod common;
use common::ok;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn capsule(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

fn eval(data: &Path, action: &str, resource: &str, context: &str) -> Value {
    let out = ok(capsule(
        &[
            "policy",
            "eval",
            "--principal",
            "agent:alice",
            "--action",
            action,
            "--resource",
            resource,
            "--context",
            context,
            "--json",
        ],
        data,
    ));
    serde_json::from_str(&out).unwrap()
}

/// Make key DATA/keys/NAME.pem and list it in DATA/policy/policy.json
/// under `role` (`operators` or `approvers`).
fn register_key(data: &Path, name: &str, role: &str) {
    let keys = data.join("keys");
    let line = ok(capsule(
        &["policy", "keygen", name, "--out", keys.to_str().unwrap()],
        data,
    ));
    std::fs::create_dir_all(data.join("policy")).unwrap();
    let config = serde_json::json!({ role: [line.trim()] });
    std::fs::write(data.join("policy/policy.json"), config.to_string()).unwrap();
}

#[test]
fn policy_check_rejects_a_malformed_file_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.cedar"),
        "permit(principal, action, resource);\nforbid(principal action, resource);\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["policy", "check"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p.cedar line 2"), "{text}");
    std::fs::write(
        tmp.path().join("p.cedar"),
        capsule_policy::rules::DEFAULT_POLICIES,
    )
    .unwrap();
    let text = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["policy", "check"])
        .arg(tmp.path())
        .output()
        .unwrap());
    assert!(text.starts_with("ok: 5 policies"), "{text}");
}

#[test]
fn policy_eval_json_explains_the_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let affect = r#"{"affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99}}"#;
    let v = eval(
        tmp.path(),
        "fs.write",
        "path:/var/log/capsule/../../etc/passwd",
        affect,
    );
    assert_eq!(v["outcome"], "blocked");
    assert_eq!(v["policies"], serde_json::json!(["deny-fs-write"]));
    assert!(v["would_pass"].is_string());
    let v = eval(tmp.path(), "brain.step", "kernel:main", affect);
    assert_eq!(
        (v["outcome"].as_str(), v["autonomy_rule"].as_u64()),
        (Some("auto_approved"), Some(6))
    );
    let v = eval(tmp.path(), "brain.step", "kernel:main", "{}");
    assert_eq!(
        (v["outcome"].as_str(), v["autonomy_rule"].as_u64()),
        (Some("blocked"), Some(3)),
        "missing affect counts as 0"
    );
}

#[test]
fn the_cli_arms_the_kill_switch_and_an_operator_key_disarms_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let affect = r#"{"affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99}}"#;
    ok(capsule(&["kill", "arm", "--reason", "test"], data));
    let v = eval(data, "brain.step", "kernel:main", affect);
    assert_eq!(
        (v["outcome"].as_str(), v["reason"].as_str()),
        (Some("blocked"), Some("kill_switch"))
    );
    let status: Value =
        serde_json::from_str(&ok(capsule(&["kill", "status", "--json"], data))).unwrap();
    assert_eq!(status["armed"], true);
    assert!(status["by"].as_str().unwrap().starts_with("cli:"));
    // An operator key, registered in policy.json, disarms.
    let keys = data.join("keys");
    register_key(data, "ops", "operators");
    let stranger = ok(capsule(
        &["policy", "keygen", "eve", "--out", keys.to_str().unwrap()],
        data,
    ));
    assert!(!stranger.is_empty());
    let refused = capsule(
        &[
            "kill",
            "disarm",
            "--key",
            keys.join("eve.pem").to_str().unwrap(),
        ],
        data,
    );
    assert!(!refused.status.success());
    ok(capsule(
        &[
            "kill",
            "disarm",
            "--key",
            keys.join("ops.pem").to_str().unwrap(),
        ],
        data,
    ));
    assert_eq!(
        eval(data, "brain.step", "kernel:main", affect)["outcome"],
        "auto_approved"
    );
    let tail = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "--dir"])
        .arg(data.join("ledger"))
        .args(["tail", "--json"])
        .output()
        .unwrap());
    let entries: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let arm = entries.iter().find(|e| e["action"] == "kill.arm").unwrap();
    assert!(arm["actor"].as_str().unwrap().starts_with("cli:"));
    let disarm = entries
        .iter()
        .find(|e| e["action"] == "kill.disarm")
        .unwrap();
    assert_eq!(disarm["actor"], "operator:ops");
}

#[test]
fn a_recorded_critical_action_waits_for_an_approver_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let keys = data.join("keys");
    register_key(data, "ann", "approvers");
    let ctx = r#"{"level": "critical", "affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99}, "args": {"steps": 3}}"#;
    let out = ok(capsule(
        &[
            "policy",
            "eval",
            "--principal",
            "agent:alice",
            "--action",
            "brain.step",
            "--resource",
            "kernel:main",
            "--context",
            ctx,
            "--record",
            "--json",
        ],
        data,
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "requires_human");
    let id = v["recorded"]["approval_id"].as_i64().unwrap();
    let list = ok(capsule(&["approvals", "list", "--json"], data));
    assert_eq!(list.lines().count(), 1);
    let signed = ok(capsule(
        &[
            "approvals",
            "sign",
            &id.to_string(),
            "--key",
            keys.join("ann.pem").to_str().unwrap(),
        ],
        data,
    ));
    assert!(signed.contains("1 of 1 signatures, approved"), "{signed}");
    let shown: Value =
        serde_json::from_str(&ok(capsule(&["approvals", "show", &id.to_string()], data))).unwrap();
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["request"]["args"]["steps"], 3);
}

#[test]
fn policy_show_levels_lists_every_action_with_its_risk_level_and_source() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let text = ok(capsule(&["policy", "show", "levels"], data));
    let line = |action: &str, text: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{action} ")))
            .unwrap_or_else(|| panic!("no {action} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("object.delete", &text),
        "object.delete SEVERE 0.75 HIGH built in"
    );
    assert_eq!(
        line("system.exec", &text),
        "system.exec CATASTROPHIC 1 CRITICAL built in"
    );
    assert_eq!(
        line("brain.step", &text),
        "brain.step MINOR 0.25 LOW built in"
    );
    std::fs::create_dir_all(data.join("policy")).unwrap();
    std::fs::write(
        data.join("policy/policy.json"),
        r#"{"levels": {"brain.step": "moderate"}}"#,
    )
    .unwrap();
    let rows: Value =
        serde_json::from_str(&ok(capsule(&["policy", "show", "levels", "--json"], data))).unwrap();
    let step = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "brain.step")
        .unwrap();
    assert_eq!(step["level"], "medium");
    assert_eq!(step["source"], "policy_json");
    // An override naming no action of the schema is refused, naming it.
    std::fs::write(
        data.join("policy/policy.json"),
        r#"{"levels": {"brain.stepp": "minor"}}"#,
    )
    .unwrap();
    let out = capsule(&["policy", "show", "levels"], data);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("levels.brain.stepp"), "{err}");
}

#[test]
fn policy_modification_writes_policy_json_and_records_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .arg("init")
        .arg(&data)
        .output()
        .unwrap());
    let out = ok(capsule(&["policy", "modification", "on"], &data));
    assert!(out.contains("modification_enabled = true"), "{out}");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(data.join("policy/policy.json")).unwrap()).unwrap();
    assert_eq!(cfg["modification_enabled"], true);
    assert_eq!(
        cfg["approvers"].as_array().unwrap().len(),
        1,
        "the rest is kept"
    );
    let tail = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "--dir"])
        .arg(data.join("ledger"))
        .args(["tail", "-n", "1", "--json"])
        .output()
        .unwrap());
    assert!(tail.contains("policy.modification"), "{tail}");
    let out = capsule(&["policy", "modification", "maybe"], &data);
    assert!(!out.status.success());
    ok(capsule(&["policy", "modification", "off"], &data));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(data.join("policy/policy.json")).unwrap()).unwrap();
    assert_eq!(cfg["modification_enabled"], false);
}
