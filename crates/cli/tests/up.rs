//! `capsule up` on a data directory that has lost its ledger: refused,
//! naming the path, instead of starting over with an empty log.

mod common;
use common::ok;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `capsule up --data DATA` on loopback ports; if it is still running
/// after a minute it started when it should not have: kill it and fail.
fn up(data: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["up", "--data"])
        .arg(data)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("capsule up started on a data directory without its ledger");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn init(data: &Path) {
    ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .arg("init")
        .arg(data)
        .output()
        .unwrap());
    assert!(data.join("ledger/ledger.json").exists());
}

#[test]
fn up_refuses_an_initialised_data_directory_whose_ledger_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let ledger = data.join("ledger");
    std::fs::remove_dir_all(&ledger).unwrap();
    let out = up(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&ledger.display().to_string()), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(!ledger.exists(), "up made a new ledger");
}

#[test]
fn up_refuses_an_initialised_data_directory_whose_ledger_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let ledger = data.join("ledger");
    std::fs::remove_dir_all(&ledger).unwrap();
    std::fs::create_dir(&ledger).unwrap();
    let out = up(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&ledger.display().to_string()), "{err}");
    assert_eq!(std::fs::read_dir(&ledger).unwrap().count(), 0);
}
