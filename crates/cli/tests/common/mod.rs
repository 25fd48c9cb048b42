//! Helpers shared by the CLI tests.
#![allow(dead_code)]

use std::process::Output;

/// The stdout of a command that must have succeeded (else fail showing both streams).
pub fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `capsule up` child process and the lines it prints.
pub struct Up {
    pub child: Child,
    pub http: String,
    pub lines: mpsc::Receiver<String>,
}

/// `capsule up --data DATA` on free ports with the hash embedder; `pause`
/// sets CAPSULE_TEST_PAUSE_AT.
pub fn up(data: &Path, pause: Option<&str>) -> Up {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capsule"));
    cmd.args(["up", "--data"])
        .arg(data)
        .args([
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .env("CAPSULE_MEMORY__EMBEDDER", "hash")
        .env_remove("CAPSULE_TEST_PAUSE_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pause {
        cmd.env("CAPSULE_TEST_PAUSE_AT", p);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let http = wait_for(&lines, "http listening on ")
        .trim_start_matches("http listening on ")
        .to_string();
    Up { child, http, lines }
}

/// The first line containing `prefix` (within 60 s of each other).
pub fn wait_for(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line starting {prefix:?} within 60 s"));
        if line.contains(prefix) {
            return line;
        }
    }
}

/// One HTTP call: (status, JSON body); status 0 when nothing answered.
pub fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    capsule_models::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut req = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        // A paused service never answers.
        Err(_) => (0, Value::Null),
    }
}

/// `capsule init --json` in a temporary directory: (its guard, the data
/// directory, the operator token).
pub fn init() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init: Value = serde_json::from_str(&ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["init", "--json"])
        .arg(&data)
        .output()
        .unwrap()))
    .unwrap();
    let token = init["operator_token"].as_str().unwrap().to_string();
    (dir, data, token)
}
