//! `capsule audit` as a user runs it, and the crash test: a writer process
//! killed with SIGKILL at random moments loses no acknowledged entry.

mod common;
use common::ok;

use capsule_ledger::merkle::leaf_hash;
use capsule_ledger::{verify, Ledger, LedgerConfig, VerifierKey};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn capsule(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_capsule"));
    c.arg("audit").arg("--dir").arg(dir);
    c
}

fn append(dir: &Path, n: u32) {
    ok(capsule(dir)
        .args([
            "append",
            "--actor",
            "agent:cli",
            "--action",
            "brain.step",
            "--decision",
            "allow",
        ])
        .args(["--origin", "capsule.test/cli", "--count", &n.to_string()])
        .output()
        .unwrap());
}

fn trusted(dir: &Path) -> VerifierKey {
    VerifierKey::parse(&std::fs::read_to_string(dir.join("keys/ledger-v1.pub")).unwrap()).unwrap()
}

#[test]
fn prove_json_has_the_documented_fields_and_the_proof_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    append(&dir, 9);
    let text = ok(capsule(&dir)
        .args(["prove", "4", "--json"])
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["index"], 4);
    assert_eq!(v["tree_size"], 9);
    let hex32 =
        |v: &Value| <[u8; 32]>::try_from(hex::decode(v.as_str().unwrap()).unwrap()).unwrap();
    let path: Vec<[u8; 32]> = v["inclusion_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(hex32)
        .collect();
    capsule_ledger::merkle::verify_inclusion(
        4,
        9,
        &hex32(&v["leaf_hash"]),
        &path,
        &hex32(&v["root_hash"]),
    )
    .unwrap();
    let cp = v["checkpoint"].as_str().unwrap();
    let pubkey = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "pubkey"])
        .arg(&dir)
        .output()
        .unwrap());
    let key = VerifierKey::parse(&pubkey).unwrap();
    let checkpoint = capsule_ledger::Checkpoint::verify(cp, &key).unwrap();
    assert_eq!(checkpoint.size(), 9);
    assert_eq!(checkpoint.root(), &hex32(&v["root_hash"]));
}

#[test]
fn verify_fails_with_the_location_of_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    append(&dir, 5);
    let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(out.contains("ok: 5 acknowledged entries"), "{out}");
    let seg = dir.join("segments/00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "verify", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["file"]
            .as_str()
            .unwrap()
            .ends_with("segments/00000001.seg"),
        "{v}"
    );
    assert!(v["offset"].as_u64().unwrap() <= 100);
}

#[test]
fn tail_and_consistency_print_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    append(&dir, 6);
    let text = ok(capsule(&dir)
        .args(["tail", "-n", "2", "--json"])
        .output()
        .unwrap());
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    let text = ok(capsule(&dir)
        .args(["consistency", "3", "6", "--json"])
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["old_size"], 3);
    assert!(!v["consistency_path"].as_array().unwrap().is_empty());
    let bad = capsule(&dir)
        .args(["consistency", "3", "60"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exceeds the log size"));
}

#[test]
fn bench_audit_json_prints_name_value_unit_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args([
            "bench",
            "audit",
            "--json",
            "--entries",
            "300",
            "--batch",
            "100",
            "--latency-samples",
            "5",
        ])
        .args(["--proof-entries", "1000", "--proofs", "10", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap());
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["value"].is_number() && v["unit"].is_string(), "{l}");
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    for want in [
        "append_batched_throughput",
        "append_latency_p99",
        "verify_300",
        "inclusion_proof_verify_1k_p50",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == "ratio.append_batched_throughput"));
}

/// SIGKILL a writer with four appending threads at random moments, twenty
/// times over one ledger; after each, every entry it acknowledged is there
/// with the same leaf hash, and verify passes.
#[test]
fn killing_the_writer_at_random_moments_loses_no_acknowledged_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for round in 0..20 {
        let mut child = capsule(&dir)
            .args([
                "append",
                "--actor",
                "agent:crash",
                "--action",
                "test.append",
                "--decision",
                "ok",
            ])
            .args([
                "--origin",
                "capsule.test/crash",
                "--count",
                "100000000",
                "--concurrency",
                "4",
                "--json",
            ])
            .args(["--reason", &format!("round {round}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acked.len();
        for l in lines {
            // A line cut by the kill is not an acknowledgement we saw.
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                acked.push((
                    v["seq"].as_u64().unwrap(),
                    v["leaf_hash"].as_str().unwrap().to_string(),
                ));
            }
        }
        assert!(
            acked.len() > before || round > 0,
            "round {round}: the writer acknowledged nothing"
        );
        let ledger = Ledger::open(&dir, LedgerConfig::default()).unwrap();
        let size = ledger.size();
        eprintln!(
            "round {round}: {} acknowledged, recovery {:?}",
            acked.len(),
            ledger.recovery()
        );
        for (seq, leaf) in &acked {
            assert!(
                *seq < size,
                "round {round}: acknowledged entry {seq} lost (size {size})"
            );
            let entry = ledger.entry(*seq).unwrap();
            assert_eq!(
                &hex::encode(leaf_hash(&entry.encode())),
                leaf,
                "round {round}: entry {seq} changed"
            );
        }
        ledger.close().unwrap();
        drop(ledger);
        verify(&dir, &trusted(&dir))
            .unwrap_or_else(|e| panic!("round {round}: verify failed: {e}"));
    }
    assert!(
        acked.len() > 100,
        "only {} acknowledgements in 20 rounds",
        acked.len()
    );
}

/// `capsule audit verify DIR --json`: exit status and the parsed report.
fn verify_json(dir: &Path) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "verify", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// The issue's trial, five times: a writer with four appending threads is
/// SIGKILLed a fraction of a second into `--count 200000`, and `audit
/// verify` runs before anything reopens the log. It must find the log
/// intact (exit 0) or intact with a tail pending recovery (exit 3), never
/// damaged; after `audit recover` every entry the writer acknowledged is
/// there with its leaf hash and verify exits 0.
#[test]
fn verify_right_after_a_killed_writer_reports_intact_or_a_pending_tail_never_damage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let mut with_tail = 0;
    for trial in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ledger");
        let mut child = capsule(&dir)
            .args([
                "append",
                "--actor",
                "agent:crash",
                "--action",
                "test.append",
                "--decision",
                "ok",
            ])
            .args(["--count", "200000", "--concurrency", "4", "--json"])
            .args(["--origin", "capsule.test/trial"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if lines.is_empty() {
                    let _ = tx.send(());
                }
                lines.push(l);
            }
            lines
        });
        // The clock starts at the first acknowledgement, so the ledger exists.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the writer acknowledged nothing within a minute");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked: Vec<(u64, String)> = reader
            .join()
            .unwrap()
            .iter()
            // A line cut by the kill is not an acknowledgement we saw.
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["seq"].as_u64().unwrap(),
                    v["leaf_hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();

        let (code, v) = verify_json(&dir);
        assert_eq!(v["ok"], true, "trial {trial}: {v}");
        match code {
            Some(0) => assert_eq!(v["status"], "intact", "trial {trial}: {v}"),
            Some(3) => {
                assert_eq!(v["status"], "tail_pending_recovery", "trial {trial}: {v}");
                assert!(v["tail"].is_object(), "trial {trial}: {v}");
                with_tail += 1;
            }
            other => panic!("trial {trial}: verify exited {other:?}: {v}"),
        }
        let verified = v["entries"].as_u64().unwrap();
        assert!(
            acked.iter().all(|(seq, _)| *seq < verified),
            "trial {trial}: an acknowledged entry lies outside the verified prefix of {verified}"
        );

        let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
            .args(["audit", "recover", "--json"])
            .arg(&dir)
            .output()
            .unwrap());
        let rec: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(rec["recovered"], code == Some(3), "trial {trial}: {rec}");
        let reader = capsule_ledger::LogReader::open(&dir).unwrap();
        for (seq, leaf) in &acked {
            let entry = reader
                .entry(*seq)
                .unwrap_or_else(|e| panic!("trial {trial}: acknowledged entry {seq} lost: {e}"));
            assert_eq!(
                &hex::encode(leaf_hash(&entry.encode())),
                leaf,
                "trial {trial}: entry {seq} changed"
            );
        }
        let (code, v) = verify_json(&dir);
        assert_eq!(
            (code, &v["status"]),
            (Some(0), &Value::from("intact")),
            "{v}"
        );
        eprintln!(
            "trial {trial}: {} acknowledged, verify saw {verified} + tail {}",
            acked.len(),
            rec["tail"]
        );
    }
    eprintln!("{with_tail} of 5 trials left a tail pending recovery");
}

/// A writer's crash, made by hand: 20 entries, the last 2 without index
/// slots and half a record after them, no checkpoint past entry 18.
fn crash_by_hand(dir: &Path) -> std::path::PathBuf {
    append(dir, 20);
    let set_len = |p: &Path, len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    set_len(&dir.join("checkpoints"), 8);
    set_len(&dir.join("index"), 18 * 8);
    let seg = dir.join("segments/00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let torn = bytes[16..40].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&seg, &bytes).unwrap();
    seg
}

#[test]
fn verify_exits_3_naming_the_unacknowledged_tail_and_recover_settles_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let seg = crash_by_hand(&dir);
    let seg_len = std::fs::metadata(&seg).unwrap().len();
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("ok: 18 acknowledged entries"), "{text}");
    assert!(text.contains("tail pending recovery"), "{text}");
    assert!(text.contains("entries 18..=19 (2)"), "{text}");
    assert!(
        text.contains(&format!("offset {}: 24 bytes", seg_len - 24)),
        "{text}"
    );
    assert!(text.contains("not acknowledged; will be cut"), "{text}");

    let (code, v) = verify_json(&dir);
    assert_eq!(code, Some(3));
    assert_eq!(v["status"], "tail_pending_recovery");
    assert_eq!(v["entries"], 18);
    assert_eq!(v["tail"]["first_seq"], 18);
    assert_eq!(v["tail"]["entries"], 2);
    assert_eq!(v["tail"]["cut"]["bytes"], 24);
    assert_eq!(v["tail"]["cut"]["offset"], seg_len - 24);
    assert!(v["tail"]["cut"]["file"]
        .as_str()
        .unwrap()
        .ends_with("segments/00000001.seg"));
    // Verify changed nothing.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), seg_len);

    let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "recover"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(
        out.contains("recovered: 20 entries (18 acknowledged"),
        "{out}"
    );
    assert!(out.contains("was cut"), "{out}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), seg_len - 24);
    let (code, v) = verify_json(&dir);
    assert_eq!((code, v["entries"].as_u64()), (Some(0), Some(20)), "{v}");
    let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "recover", "--json"])
        .arg(&dir)
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["recovered"].as_bool(), v["entries"].as_u64()),
        (Some(false), Some(20))
    );
}

#[test]
fn a_flipped_byte_in_the_acknowledged_prefix_is_damage_beside_a_tail_and_recover_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let seg = crash_by_hand(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x04; // inside entry 0's record
    std::fs::write(&seg, &bytes).unwrap();
    let (code, v) = verify_json(&dir);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["status"], "damaged");
    assert!(
        v["file"]
            .as_str()
            .unwrap()
            .ends_with("segments/00000001.seg"),
        "{v}"
    );
    assert_eq!(v["offset"], 16);
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "recover"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("00000001.seg: offset 16"), "{err}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "recover changed the file"
    );
}

#[test]
fn recover_names_a_directory_that_holds_no_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["audit", "recover"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    assert!(err.contains("ledger.json"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// The number of acknowledged entries (0 when there is no ledger).
fn size(dir: &Path) -> u64 {
    capsule_ledger::LogReader::open(dir).map_or(0, |r| r.size())
}

fn append_args(dir: &Path, action: &str, meta: &str) -> std::process::Output {
    capsule(dir)
        .args(["append", "--actor", "agent:forger", "--action", action])
        .args(["--decision", "allow", "--meta", meta])
        .args(["--origin", "capsule.test/cli"])
        .output()
        .unwrap()
}

#[test]
fn append_refuses_engine_only_kinds_naming_the_field_and_appends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    // Refused before anything exists: no ledger is created.
    let out = append_args(&dir, "approval.release", "{}");
    assert!(!out.status.success());
    assert!(!dir.exists(), "a refused append created the ledger");
    append(&dir, 3);
    for (action, meta, field, writer) in [
        (
            "object.delete",
            r#"{"kind":"policy.decision","request":{}}"#,
            "--meta: meta.kind",
            "the policy engine",
        ),
        (
            "approval.release",
            "{}",
            "--action: action",
            "the approval queue",
        ),
        ("kill.disarm", "{}", "--action: action", "the kill switch"),
        (
            "policy.reload",
            "{}",
            "--action: action",
            "the policy engine",
        ),
    ] {
        let out = append_args(&dir, action, meta);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{action} {meta}: {err}");
        assert!(err.contains(field) && err.contains(writer), "{err}");
        assert_eq!(size(&dir), 3, "{action} {meta} was appended");
    }
    let out = append_args(&dir, "object.delete", r#"{"kind":"cortex.think"}"#);
    ok(out);
    assert_eq!(size(&dir), 4);
}
