//! `capsule task` and `capsule patterns`: clients of a running service's
//! task mesh (`/v1/tasks`, `/v1/patterns`).

use crate::client::{ApiClient, Connection, Reply};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Submit a task; prints its ID and status.
    Submit {
        query: String,
        /// calc, medical, kernel or general (default: classified).
        #[arg(long)]
        domain: Option<String>,
        /// A parameter, KEY=VALUE (VALUE read as JSON when it parses, else a string); repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        class_path: Option<String>,
        /// experimental, candidate or prod (default prod).
        #[arg(long)]
        lane: Option<String>,
        /// Wait until the task is done or failed and print its result.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// A task by ID: status and result.
    Get {
        id: String,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Tell the mesh whether a done task's answer was right.
    Feedback {
        id: String,
        /// success or failure.
        outcome: String,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct PatternsArgs {
    #[command(subcommand)]
    command: PatternsCommand,
}

#[derive(Subcommand)]
enum PatternsCommand {
    /// Pattern memory: layer, confidence, usage per task.
    List {
        #[arg(long)]
        domain: Option<String>,
        /// immediate, pattern or archive.
        #[arg(long)]
        layer: Option<String>,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Run maintenance now (promote, archive, prune); needs an operator token.
    Maintain {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
}

/// `KEY=VALUE` pairs into a params object.
fn params(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--param {p:?}: the key is empty");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn finish(reply: &Reply, ok: u16, as_json: bool, text: impl FnOnce(&Value)) -> ExitCode {
    if as_json || reply.status != ok {
        println!("{}", reply.body);
    } else {
        text(&reply.body);
    }
    if reply.status == ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_task(t: &Value) {
    println!(
        "{}  {}  {}",
        t["task_id"].as_str().unwrap_or("?"),
        t["domain"].as_str().unwrap_or("?"),
        t["status"].as_str().unwrap_or("?")
    );
    if let Some(answer) = t["result"]["answer"].as_str() {
        println!("{answer}");
    }
    if let Some(e) = t["error"].as_str() {
        println!("error: {e}");
    }
    if let Some(p) = t["pattern"].as_object() {
        println!(
            "pattern: {} confidence {:.2} usage {}",
            p["layer"].as_str().unwrap_or("?"),
            p["confidence"].as_f64().unwrap_or(f64::NAN),
            p["usage"]
        );
    }
}

/// Poll a task until it is done or failed (or `timeout` passes), every
/// 20 ms at first and then less often (at most once a second), waiting out
/// the rate limit when it answers 429.
pub async fn wait_for(client: &ApiClient, id: &str, timeout: Duration) -> Result<Reply> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let r = client.get(&format!("/v1/tasks/{id}")).await?;
        let status = r.body["status"].as_str().unwrap_or("");
        let limited = r.status == 429;
        if !limited && (r.status != 200 || ["done", "failed", "blocked"].contains(&status)) {
            return Ok(r);
        }
        if started.elapsed() > timeout {
            bail!("task {id} is still {status} after {} s", timeout.as_secs());
        }
        let wait = if limited {
            Duration::from_secs(1)
        } else {
            pause
        };
        tokio::time::sleep(wait).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(1));
    }
}

pub fn run(args: TaskArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    match args.command {
        TaskCommand::Submit {
            query,
            domain,
            params: pairs,
            class_path,
            lane,
            wait,
            timeout,
            conn,
            json: as_json,
        } => {
            let body = json!({
                "query": query, "domain": domain, "params": params(&pairs)?,
                "class_path": class_path, "lane": lane,
            });
            // Absent options are left out, not sent as null.
            let body = Value::Object(
                body.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
            let client = conn.client()?;
            rt.block_on(async {
                let reply = client.post("/v1/tasks", &body).await?;
                if !wait || reply.status != 202 || reply.body["status"] == "blocked" {
                    return Ok(finish(&reply, 202, as_json, |b| {
                        println!(
                            "{}  {}  {} ({} {:.2}, {:.2} ms)",
                            b["task_id"].as_str().unwrap_or("?"),
                            b["domain"].as_str().unwrap_or("?"),
                            b["status"].as_str().unwrap_or("?"),
                            b["classification"]["method"].as_str().unwrap_or("?"),
                            b["classification"]["confidence"]
                                .as_f64()
                                .unwrap_or(f64::NAN),
                            b["latency_ms"].as_f64().unwrap_or(f64::NAN),
                        );
                        if let Some(e) = b["policy_decision"]["explanation"].as_str() {
                            if b["status"] != "queued" && b["status"] != "cache_hit" {
                                println!("{e}");
                            }
                        }
                    }));
                }
                let id = reply.body["task_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let done = wait_for(&client, &id, Duration::from_secs(timeout)).await?;
                let code = finish(&done, 200, as_json, print_task);
                Ok(if done.body["status"] == "done" {
                    code
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        TaskCommand::Get {
            id,
            conn,
            json: as_json,
        } => {
            let client = conn.client()?;
            let reply = rt.block_on(client.get(&format!("/v1/tasks/{id}")))?;
            Ok(finish(&reply, 200, as_json, print_task))
        }
        TaskCommand::Feedback {
            id,
            outcome,
            conn,
            json: as_json,
        } => {
            let client = conn.client()?;
            let reply = rt.block_on(client.post(
                &format!("/v1/tasks/{id}/feedback"),
                &json!({ "outcome": outcome }),
            ))?;
            Ok(finish(&reply, 200, as_json, |b| {
                let p = &b["pattern"];
                println!(
                    "pattern {}: {} confidence {:.2} usage {}",
                    p["task_id"].as_str().unwrap_or("?"),
                    p["layer"].as_str().unwrap_or("?"),
                    p["confidence"].as_f64().unwrap_or(f64::NAN),
                    p["usage"]
                );
            }))
        }
    }
}

pub fn run_patterns(args: PatternsArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    match args.command {
        PatternsCommand::List {
            domain,
            layer,
            conn,
            json: as_json,
        } => {
            let mut query = Vec::new();
            if let Some(d) = domain {
                query.push(format!("domain={d}"));
            }
            if let Some(l) = layer {
                query.push(format!("layer={l}"));
            }
            let path = if query.is_empty() {
                "/v1/patterns".to_string()
            } else {
                format!("/v1/patterns?{}", query.join("&"))
            };
            let reply = rt.block_on(conn.client()?.get(&path))?;
            Ok(finish(&reply, 200, as_json, |b| {
                for p in b["patterns"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<8} {:<9} confidence {:.2}  usage {}",
                        p["task_id"].as_str().unwrap_or("?"),
                        p["domain"].as_str().unwrap_or("?"),
                        p["layer"].as_str().unwrap_or("?"),
                        p["confidence"].as_f64().unwrap_or(f64::NAN),
                        p["usage"]
                    );
                }
            }))
        }
        PatternsCommand::Maintain {
            conn,
            json: as_json,
        } => {
            let reply = rt.block_on(conn.client()?.post("/v1/patterns/maintain", &json!({})))?;
            Ok(finish(&reply, 200, as_json, |b| {
                let changes = b["changes"].as_array().cloned().unwrap_or_default();
                println!("{} layer change(s)", changes.len());
                for c in changes {
                    println!(
                        "{}  {} -> {}  ({})",
                        c["task_id"].as_str().unwrap_or("?"),
                        c["from"].as_str().unwrap_or("?"),
                        c["to"].as_str().unwrap_or("pruned"),
                        c["reason"].as_str().unwrap_or("")
                    );
                }
            }))
        }
    }
}
