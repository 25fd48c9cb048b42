//! `capsule store delete` as a user runs it: it deletes on a decision the
//! policy engine recorded (`capsule policy eval --record`), once; it
//! refuses a decision forged with `capsule audit append`, while the kill
//! switch is armed, and a held decision without its approval. A refused
//! delete leaves the object readable and records no deletion.

mod common;
use common::ok;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A policy that lets any agent or operator ask to delete any object.
const PERMIT_DELETE: &str =
    "@id(\"allow-delete\")\npermit(principal, action == Capsule::Action::\"object.delete\", resource);\n";
/// A request the engine allows without review (semi-autonomous mode).
/// The policy.json of these tests: object.delete lowered to MINOR.
const LOWERED_DELETE: &str = r#"{"levels": {"object.delete": "minor"}}"#;
const ALLOWED: &str =
    r#"{"level": "low", "affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99}}"#;
/// A request the engine holds for approval.
const HELD: &str = r#"{"level": "high", "affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99}, "args": {"why": "cleanup"}}"#;

struct Data {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Data {
    /// A data directory whose policies are the defaults plus [`PERMIT_DELETE`].
    fn new() -> Data {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let policy = dir.join("policy");
        std::fs::create_dir_all(&policy).unwrap();
        std::fs::write(
            policy.join("default.cedar"),
            capsule_policy::rules::DEFAULT_POLICIES,
        )
        .unwrap();
        std::fs::write(policy.join("delete.cedar"), PERMIT_DELETE).unwrap();
        // object.delete is SEVERE by default (always held for people);
        // lowered to MINOR here so a `low` request runs without review.
        std::fs::write(policy.join("policy.json"), LOWERED_DELETE).unwrap();
        Data { _tmp: tmp, dir }
    }

    fn capsule(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_capsule"))
            .args(args)
            .arg("--data")
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    /// Store `content`; returns its ID.
    fn put(&self, content: &[u8]) -> String {
        let file = self.dir.join("in.bin");
        std::fs::write(&file, content).unwrap();
        ok(self.capsule(&["store", "put", file.to_str().unwrap()]))
            .trim()
            .to_string()
    }

    fn get(&self, id: &str) -> Output {
        self.capsule(&["store", "get", id])
    }

    /// `capsule policy eval --record` for deleting `id` with `context`.
    fn record(&self, id: &str, context: &str) -> Value {
        let out = ok(self.capsule(&[
            "policy",
            "eval",
            "--principal",
            "agent:alice",
            "--action",
            "object.delete",
            "--resource",
            &format!("object:{id}"),
            "--context",
            context,
            "--record",
            "--json",
        ]));
        serde_json::from_str(&out).unwrap()
    }

    fn delete(&self, id: &str, seq: u64, approval: Option<i64>) -> Output {
        let seq = seq.to_string();
        let mut args = vec!["store", "delete", id, "--decision", &seq];
        let approval = approval.map(|a| a.to_string());
        if let Some(a) = &approval {
            args.extend(["--approval", a]);
        }
        self.capsule(&args)
    }

    /// The stderr of a delete that must fail, after checking that it
    /// changed nothing: the object reads back and no deletion was recorded.
    fn refused(&self, out: Output, id: &str, content: &[u8]) -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the delete succeeded: {err}");
        let back = self.get(id);
        assert_eq!(back.stdout, content, "{err}");
        assert_eq!(self.deletion_entries(), 0, "{err}");
        err
    }

    fn ledger_entries(&self) -> Vec<Value> {
        let tail = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
            .args(["audit", "--dir"])
            .arg(self.dir.join("ledger"))
            .args(["tail", "-n", "1000", "--json"])
            .output()
            .unwrap());
        tail.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn deletion_entries(&self) -> usize {
        self.ledger_entries()
            .iter()
            .filter(|e| e["action"] == "store.delete")
            .count()
    }
}

fn seq(recorded: &Value) -> u64 {
    recorded["recorded"]["ledger_seq"].as_u64().unwrap()
}

#[test]
fn store_delete_on_a_recorded_decision_deletes_once_and_refuses_a_second_use() {
    let data = Data::new();
    let id = data.put(b"to be deleted");
    let decision = data.record(&id, ALLOWED);
    assert_eq!(decision["outcome"], "auto_approved");
    let out = ok(data.delete(&id, seq(&decision), None));
    assert_eq!(out.trim(), format!("deleted {id}"));
    assert!(!data.get(&id).status.success());
    assert_eq!(data.deletion_entries(), 1);

    data.put(b"to be deleted");
    let out = data.delete(&id, seq(&decision), None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already used"), "{err}");
    assert_eq!(data.get(&id).stdout, b"to be deleted");
    assert_eq!(data.deletion_entries(), 1);
}

#[test]
fn store_delete_names_bad_input() {
    let data = Data::new();
    let id = data.put(b"kept");
    let err = data.refused(data.delete("not-an-id", 0, None), &id, b"kept");
    assert!(err.contains("id:"), "{err}");
    let err = data.refused(data.delete(&id, 999, None), &id, b"kept");
    assert!(
        err.contains("decision: ledger entry 999: no such entry"),
        "{err}"
    );
    let out = data.capsule(&["store", "delete", &id, "--decision", "minus-one"]);
    let err = data.refused(out, &id, b"kept");
    assert!(err.contains("--decision"), "{err}");
}

#[test]
fn a_decision_forged_with_audit_append_is_refused_and_the_object_stays() {
    let data = Data::new();
    let id = data.put(b"precious");
    let appended = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "--dir"])
        .arg(data.dir.join("ledger"))
        .args([
            "append",
            "--actor",
            "operator:ops",
            "--action",
            "object.delete",
            "--subject",
            &format!("object:{id}"),
            "--decision",
            "approved",
            "--reason",
            "permitted by allow-delete",
            "--json",
        ])
        .output()
        .unwrap());
    let forged: Value = serde_json::from_str(appended.trim()).unwrap();
    let seq = forged["seq"].as_u64().unwrap();
    let err = data.refused(data.delete(&id, seq, None), &id, b"precious");
    assert!(
        err.contains(&format!(
            "decision: ledger entry {seq}: is not a policy decision"
        )),
        "{err}"
    );
}

#[test]
fn store_delete_is_refused_while_the_kill_switch_is_armed() {
    let data = Data::new();
    let id = data.put(b"still here");
    let decision = data.record(&id, ALLOWED);
    assert_eq!(decision["outcome"], "auto_approved");
    ok(data.capsule(&["kill", "arm", "--reason", "test"]));
    let err = data.refused(data.delete(&id, seq(&decision), None), &id, b"still here");
    assert!(err.contains("the kill switch is armed"), "{err}");
}

#[test]
fn a_held_decision_deletes_with_its_signed_approval_exactly_once() {
    let data = Data::new();
    let keys = data.dir.join("keys");
    let line = ok(data.capsule(&["policy", "keygen", "ann", "--out", keys.to_str().unwrap()]));
    let config =
        serde_json::json!({ "approvers": [line.trim()], "levels": {"object.delete": "minor"} });
    std::fs::write(data.dir.join("policy/policy.json"), config.to_string()).unwrap();
    let id = data.put(b"held");
    let decision = data.record(&id, HELD);
    assert_eq!(decision["outcome"], "pending_review");
    let approval = decision["recorded"]["approval_id"].as_i64().unwrap();

    let err = data.refused(data.delete(&id, seq(&decision), None), &id, b"held");
    assert!(err.contains("waits for an approved approval"), "{err}");
    let err = data.refused(
        data.delete(&id, seq(&decision), Some(approval)),
        &id,
        b"held",
    );
    assert!(
        err.contains(&format!("approval {approval}: is pending, not approved")),
        "{err}"
    );

    ok(data.capsule(&[
        "approvals",
        "sign",
        &approval.to_string(),
        "--key",
        keys.join("ann.pem").to_str().unwrap(),
    ]));
    ok(data.delete(&id, seq(&decision), Some(approval)));
    assert!(!data.get(&id).status.success());
    let shown: Value = serde_json::from_str(&ok(data.capsule(&[
        "approvals",
        "show",
        &approval.to_string(),
    ])))
    .unwrap();
    assert_eq!(shown["status"], "released");
    let entries = data.ledger_entries();
    let deletion = entries
        .iter()
        .find(|e| e["action"] == "store.delete")
        .unwrap();
    assert_eq!(deletion["meta"]["approval_id"], approval);

    data.put(b"held");
    let out = data.delete(&id, seq(&decision), Some(approval));
    assert!(!out.status.success());
    assert_eq!(data.get(&id).stdout, b"held");
}
