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
    assert!(out.contains("ok: 5 entries"), "{out}");
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
