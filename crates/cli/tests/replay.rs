//! `capsule replay --data D` run as a user runs it, over a session the
//! service recorded and over copies of it with one recorded value
//! changed: exit 0 when everything agrees, exit 1 naming the entry and
//! the field when something differs, a clear error for bad input.

use capsule_ledger::{AuditEntry, Ledger, LedgerConfig, LogReader};
use capsule_server::service::Service;
use capsule_server::{data, Config};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn capsule() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capsule"))
}

fn replay(data: &Path, extra: &[&str]) -> Output {
    capsule()
        .arg("replay")
        .arg("--data")
        .arg(data)
        .args(extra)
        .output()
        .expect("runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A data directory in which the service recorded a session of hash
/// thinks and a direct step; returns it and the seq of one think.
fn recorded(root: &Path) -> (PathBuf, u64) {
    let dir = root.join("data");
    data::init(&dir).expect("init");
    let env = [
        ("CAPSULE_MEMORY__EMBEDDER", "hash"),
        ("CAPSULE_KERNEL__DIM", "8"),
        ("CAPSULE_KERNEL__WORKSPACE_DIM", "8"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::load(&data::config(&dir), env).expect("config");
    let svc = Service::open(&dir, config).expect("service");
    let think = |text: &str| capsule_cortex::ThinkRequest {
        text: text.into(),
        ..Default::default()
    };
    svc.cortex.think("agent:a", &think("first")).expect("think");
    let second = svc
        .cortex
        .think("agent:a", &think("second"))
        .expect("think");
    svc.cortex
        .step(
            "agent:a",
            &[0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0],
            true,
            None,
            None,
        )
        .expect("step");
    svc.cortex.think("agent:a", &think("third")).expect("think");
    svc.ledger.close().expect("close");
    (dir, second.ledger_seq)
}

/// The session's ledger re-appended into a new data directory with
/// `change` applied to every entry (a ledger cannot be edited in place).
fn copy_with(src: &Path, root: &Path, change: impl Fn(&mut AuditEntry)) -> PathBuf {
    let from = LogReader::open(&data::ledger(src)).expect("open");
    let dir = root.join("copy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let to = Ledger::create(
        &data::ledger(&dir),
        &data::new_origin().unwrap(),
        LedgerConfig::default(),
    )
    .expect("create");
    for seq in 0..from.size() {
        let mut e = from.entry(seq).expect("entry");
        change(&mut e);
        to.append(e.record).expect("append");
    }
    to.close().expect("close");
    dir
}

#[test]
fn capsule_replay_exits_0_for_a_recorded_session_and_its_faithful_copy() {
    let root = tempfile::tempdir().expect("tmp");
    let (dir, _) = recorded(root.path());
    let copy = copy_with(&dir, root.path(), |_| {});
    for d in [&dir, &copy] {
        let out = replay(d, &[]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("3 hash plans recomputed"), "{text}");
        assert!(text.contains("replay matches the record"), "{text}");
        let out = replay(d, &["--json"]);
        assert_eq!(out.status.code(), Some(0));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            (v["matches"].clone(), v["mismatches"].clone()),
            (json!(true), json!([]))
        );
    }
}

#[test]
fn capsule_replay_exits_1_naming_the_entry_and_index_of_a_changed_gw() {
    let root = tempfile::tempdir().expect("tmp");
    let (dir, seq) = recorded(root.path());
    let copy = copy_with(&dir, root.path(), |e| {
        if e.seq == seq {
            e.record.meta["plan"]["gw"][3] = json!(0.25);
        }
    });
    let out = replay(&copy, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("seq {seq}: plan.gw[3]: recorded 0.25, replayed ")),
        "{text}"
    );
    assert!(text.contains("replay DIFFERS from the record"), "{text}");
    let out = replay(&copy, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["matches"], json!(false));
    let first = v["mismatches"][0].as_str().expect("a mismatch");
    assert!(
        first.starts_with(&format!("seq {seq}: plan.gw[3]: recorded 0.25")),
        "{v:#}"
    );
}

#[test]
fn capsule_replay_exits_1_naming_the_entry_of_a_changed_state_digest() {
    let root = tempfile::tempdir().expect("tmp");
    let (dir, seq) = recorded(root.path());
    let changed = "0".repeat(64);
    let copy = copy_with(&dir, root.path(), |e| {
        if e.seq == seq {
            e.record.meta["result"]["state_digest"] = json!(changed);
        }
    });
    let out = replay(&copy, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let found = v["mismatches"].as_array().expect("mismatches");
    assert_eq!(found.len(), 1, "{v:#}");
    let m = found[0].as_str().expect("text");
    assert!(
        m.starts_with(&format!(
            "seq {seq}: result.state_digest: recorded \"{changed}\", replayed \""
        )),
        "{m}"
    );
}

#[test]
fn capsule_replay_refuses_a_missing_ledger_or_an_entry_beyond_it() {
    let root = tempfile::tempdir().expect("tmp");
    let out = replay(&root.path().join("nowhere"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the ledger of"), "{err}");

    let (dir, _) = recorded(root.path());
    let out = replay(&dir, &["--from", "100000"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 100000: the ledger has"), "{err}");
}
