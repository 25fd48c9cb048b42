//! `capsule store` and `capsule bench store` as a user runs them.

mod common;
use common::ok;

use serde_json::Value;
use std::process::Command;

#[test]
fn put_get_verify_and_a_damaged_cube_in_quarantine() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_capsule"))
            .arg("store")
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap()
    };
    let file = tmp.path().join("in.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let id = ok(run(&["put", file.to_str().unwrap(), "--ns", "my_files"]))
        .trim()
        .to_string();
    assert!(id.starts_with("my_files_"), "{id}");
    let out = tmp.path().join("out.bin");
    ok(run(&["get", &id, "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let stat: Value = serde_json::from_str(&ok(run(&["stat", &id]))).unwrap();
    assert_eq!(stat["length"], 200_000);
    let cube = std::fs::read_dir(data.join("store/cubes/my_files"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut raw = std::fs::read(&cube).unwrap();
    raw[1000] ^= 4;
    std::fs::write(&cube, &raw).unwrap();
    let verify = run(&["verify", "--all"]);
    assert_eq!(verify.status.code(), Some(1));
    let q = ok(run(&["quarantine", "list", "--json"]));
    let entry: Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
    assert!(
        entry["reason"].as_str().unwrap().contains("HMAC"),
        "{entry}"
    );
    assert!(!run(&["get", &id]).status.success());
    let bad = run(&["stat", "not-an-id"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("id:"));
}

#[test]
fn bench_store_json_prints_name_value_unit_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["bench", "store", "--json", "--bytes", "4194304", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap());
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for want in ["raw_sequential_write", "put_4KiB_plain", "get_4MiB_secret"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
}
