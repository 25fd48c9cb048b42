//! The `capsule` binary, run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn capsule() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capsule"))
}

fn vectors() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/tests/vectors");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("vectors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn kernel_check_passes_every_vector_and_prints_each_error() {
    let files = vectors();
    let out = capsule()
        .args(["kernel", "check"])
        .args(&files)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.ends_with(" ok")).count(),
        files.len(),
        "{text}"
    );
    assert!(text.contains("18 passed, 0 failed"), "{text}");
}

#[test]
fn kernel_check_fails_on_a_hand_edited_expected_value() {
    let src = vectors()
        .into_iter()
        .find(|p| p.ends_with("dephasing_qubit.json"))
        .expect("file");
    let text = std::fs::read_to_string(src).expect("read");
    let edited = text.replace("0.12000000000000002", "0.12000001");
    assert_ne!(text, edited);
    let dir = std::env::temp_dir().join(format!("capsule-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("edited.json");
    std::fs::write(&path, edited).expect("write");
    let out = capsule()
        .args(["kernel", "check"])
        .arg(&path)
        .output()
        .expect("runs");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[test]
fn kernel_run_json_prints_one_valid_object_per_step() {
    let out = capsule()
        .args([
            "kernel",
            "run",
            "--dim",
            "8",
            "--steps",
            "12",
            "--seed",
            "3",
            "--gw",
            "0.5, -0.5",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[11]["step"], 12);
    assert!(lines
        .iter()
        .all(|l| l["is_valid"] == true && l["trace_error"].as_f64().expect("number") <= 1e-12));
}

#[test]
fn kernel_run_rejects_a_bad_workspace_naming_the_value() {
    let out = capsule()
        .args([
            "kernel", "run", "--dim", "8", "--steps", "2", "--gw", "0.1,11",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("global_workspace[1]"));
    let out = capsule()
        .args(["kernel", "run", "--gw", "0.1,abc"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"abc\""));
}

#[test]
fn demo_serves_http_and_grpc_and_ends_with_a_verified_ledger() {
    let out = capsule().arg("demo").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The local planner's think runs, or the guardian refuses its drifting
    // plan; either way the demo says which.
    assert!(
        text.contains("local → brain.")
            || text.contains("local → HTTP 403: the guardian refused the plan"),
        "{text}"
    );
    for expected in [
        "StreamSteps saw step",
        "recalled 0.",
        "→ HTTP 202, approval",
        "2 of 2 signatures, status released",
        "run once on release: kernel step",
        "same plans, same kernel states bit for bit",
        "guest brain.measure      → HTTP 403 blocked",
        "forbidden by deny-system-exec",
        "HTTP 423",
        "thinking resumes",
        "valid.",
        "\"0.1 + 0.2\" → queued (calc by given",
        "= 3/10",
        "the same query again → cache_hit",
        "(medical by embedding",
        "SIMULATION ONLY",
        "by the general bot (",
        "feedback success on the calc task → its pattern's confidence 0.55 → 0.60",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    assert!(text.trim_end().ends_with("ledger verified"), "{text}");
}

#[test]
fn bench_without_reference_prints_json_lines_with_null_reference_fields() {
    let out = capsule()
        .args([
            "bench",
            "kernel",
            "--json",
            "--op",
            "entropy",
            "--dim",
            "16",
            "--no-reference",
            "--rounds",
            "1",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one json line");
    assert_eq!(v["op"], "entropy");
    assert_eq!(v["d"], 16);
    assert!(v["median_ns"].as_f64().expect("number") > 0.0);
    assert!(v["numpy_median_ns"].is_null() && v["ratio"].is_null());
}
