//! `capsule task` and `capsule patterns` against a running `capsule up`:
//! submit, wait, get, the cache, feedback, listing, maintenance, and bad
//! input refused with the field named.

mod common;

use common::{init, ok, up};
use serde_json::Value;
use std::process::{Command, Output};

fn capsule(http: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(args)
        .env("CAPSULE_URL", format!("http://{http}"))
        .env("CAPSULE_TOKEN", token)
        .output()
        .unwrap()
}

fn json_of(out: Output) -> Value {
    serde_json::from_str(ok(out).trim()).unwrap()
}

#[test]
fn tasks_through_the_cli() {
    // The general bot needs SmolLM2 in the per-user models directory.
    ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args(["models", "fetch", "smollm2"])
        .output()
        .unwrap());
    let (_dir, data, ops) = init();
    let agent: Value = serde_json::from_str(&ok(Command::new(env!("CARGO_BIN_EXE_capsule"))
        .args([
            "tokens", "add", "--role", "agent", "--name", "alice", "--json", "--data",
        ])
        .arg(&data)
        .output()
        .unwrap()))
    .unwrap();
    let alice = agent["token"].as_str().unwrap().to_string();
    let mut service = up(&data, None);
    let http = service.http.clone();

    let done = json_of(capsule(
        &http,
        &alice,
        &[
            "task",
            "submit",
            "0.1 + 0.2",
            "--domain",
            "calc",
            "--wait",
            "--json",
        ],
    ));
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["result"]["data"]["exact"], "3/10");
    let id = done["task_id"].as_str().unwrap().to_string();

    let text = ok(capsule(
        &http,
        &alice,
        &["task", "submit", "0.1 + 0.2", "--domain", "calc"],
    ));
    assert!(text.contains(&id) && text.contains("cache_hit"), "{text}");
    let text = ok(capsule(&http, &alice, &["task", "get", &id]));
    assert!(text.contains("0.1 + 0.2 = 3/10"), "{text}");

    let bmi_args = [
        "task",
        "submit",
        "BMI",
        "--domain",
        "medical",
        "--param",
        "weight_kg=70",
        "--param",
        "height_m=1.75",
    ];
    let bmi = json_of(capsule(
        &http,
        &alice,
        &[&bmi_args[..], &["--wait", "--json"]].concat(),
    ));
    assert!(
        bmi["result"]["answer"].as_str().unwrap().contains("22.86"),
        "{bmi}"
    );
    let again = json_of(capsule(
        &http,
        &alice,
        &[&bmi_args[..], &["--json"]].concat(),
    ));
    assert_eq!(again["status"], "cache_hit", "{again}");
    assert_eq!(again["task_id"], bmi["task_id"]);

    // The general bot answers with the local model, named in the result.
    let question = "Name one colour of the rainbow.";
    let general = json_of(capsule(
        &http,
        &alice,
        &[
            "task", "submit", question, "--domain", "general", "--wait", "--json",
        ],
    ));
    assert_eq!(general["status"], "done", "{general}");
    assert!(
        general["result"]["model"]
            .as_str()
            .unwrap()
            .starts_with("smollm2"),
        "{general}"
    );
    let text = ok(capsule(
        &http,
        &alice,
        &["task", "submit", question, "--domain", "general"],
    ));
    assert!(text.contains("cache_hit"), "{text}");

    let text = ok(capsule(
        &http,
        &alice,
        &["task", "feedback", &id, "success"],
    ));
    assert!(text.contains("confidence 0.60"), "{text}");
    let list = json_of(capsule(
        &http,
        &alice,
        &["patterns", "list", "--domain", "calc", "--json"],
    ));
    assert_eq!(list["patterns"][0]["task_id"], id);
    let text = ok(capsule(&http, &ops, &["patterns", "maintain"]));
    assert!(text.contains("0 layer change(s)"), "{text}");

    // Bad input: a clear error naming the field, a failing exit status.
    let out = capsule(
        &http,
        &alice,
        &["task", "submit", "x", "--domain", "astrology"],
    );
    assert!(!out.status.success());
    let body: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(body["field"], "domain", "{body}");
    let out = capsule(
        &http,
        &alice,
        &["task", "submit", "x", "--param", "novalue"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
    let out = capsule(
        &http,
        &alice,
        &[
            "task",
            "get",
            "TASK_20261207_abcdefghijklmnopqrstuvwxyz234567",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not_found"));
    let out = capsule(&http, &alice, &["patterns", "maintain"]);
    assert!(!out.status.success(), "an agent may not run maintenance");

    service.child.kill().unwrap();
    service.child.wait().unwrap();
}
