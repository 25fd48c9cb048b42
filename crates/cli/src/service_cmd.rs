//! `capsule init`, `capsule up`, `capsule tokens` and `capsule think`.

use crate::client::Connection;
use anyhow::{bail, Context, Result};
use capsule_server::auth::{Role, TokenFile};
use capsule_server::{data, Config};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct InitArgs {
    /// The data directory to create (default: $CAPSULE_DATA, else ./capsule-data).
    dir: Option<PathBuf>,
    /// Print {"data_dir", "operator_token"} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn init(args: InitArgs) -> Result<ExitCode> {
    let dir = data::data_dir(args.dir.as_deref());
    let made = data::init(&dir)?;
    if args.json {
        println!(
            "{}",
            json!({ "data_dir": made.data_dir, "operator_token": made.operator_token })
        );
    } else {
        println!("Initialised {}", dir.display());
        println!("  config         {}", data::config(&dir).display());
        println!(
            "  operator key   {} (signs kill-switch disarms)",
            made.operator_key.display()
        );
        println!(
            "  approver key   {} (signs approvals)",
            made.approver_key.display()
        );
        println!(
            "\nOperator token (shown once; only its hash is stored):\n  {}",
            made.operator_token
        );
        println!(
            "\nNext: capsule tokens add --data {} --role agent --name NAME",
            dir.display()
        );
        println!("      capsule up --data {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration of `data`: its capsule.toml with the process's
/// `CAPSULE_*__*` variables applied.
pub fn load_config(data: &Path) -> Result<Config> {
    Config::load(&data::config(data), std::env::vars())
}

#[derive(Args)]
pub struct UpArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// HTTP address (overrides server.http).
    #[arg(long)]
    http: Option<String>,
    /// gRPC address (overrides server.grpc).
    #[arg(long)]
    grpc: Option<String>,
    /// Metrics address (overrides server.metrics).
    #[arg(long)]
    metrics: Option<String>,
}

pub fn up(args: UpArgs) -> Result<ExitCode> {
    let dir = data::data_dir(args.data.as_deref());
    let mut config = load_config(&dir)?;
    if let Some(a) = args.http {
        config.server.http = a;
    }
    if let Some(a) = args.grpc {
        config.server.grpc = a;
    }
    if let Some(a) = args.metrics {
        config.server.metrics = a;
    }
    config.validate()?;
    // The CLI, not the service, fetches: the server crate does no network
    // I/O of its own, and nothing of the data directory is opened (no
    // ledger lock, no session record, no memory files) until every model
    // the settings need is in place, so a refusal leaves nothing behind.
    data::require_initialised(&dir)?;
    crate::models_cmd::ensure_required(&dir, &config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let svc = capsule_server::service::Service::open(&dir, config)?;
        let ledger = svc.ledger.clone();
        capsule_server::serve(
            svc,
            |b| {
                println!("http listening on {}", b.http);
                println!("grpc listening on {}", b.grpc);
                println!("metrics listening on {}", b.metrics);
                println!("serving {}; SIGTERM or Ctrl-C stops", dir.display());
                let _ = std::io::stdout().flush();
            },
            capsule_server::termination(),
        )
        .await?;
        println!("shut down; ledger closed at {} entries", ledger.size());
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Args)]
pub struct TokensArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Add a token and print it (once). A running service reads tokens at start.
    Add {
        #[arg(long)]
        name: String,
        /// reader, approver, agent or operator.
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
    },
    /// List token names and roles.
    List,
    /// Remove a token.
    Revoke { name: String },
}

pub fn tokens(args: TokensArgs) -> Result<ExitCode> {
    let dir = data::data_dir(args.data.as_deref());
    let path = dir.join(load_config(&dir)?.auth.tokens);
    let mut file = TokenFile::load(&path)?;
    match args.command {
        TokensCommand::Add { name, role, json } => {
            let role = Role::parse(&role)?;
            let token = file.add(&name, role)?;
            file.save(&path)?;
            if json {
                println!(
                    "{}",
                    json!({ "name": name, "role": role.as_str(), "token": token })
                );
            } else {
                println!("{token}");
            }
        }
        TokensCommand::List => {
            for t in &file.tokens {
                println!("{:<24} {}", t.name, t.role.as_str());
            }
        }
        TokensCommand::Revoke { name } => {
            if !file.revoke(&name) {
                bail!("no token named {name:?}");
            }
            file.save(&path)?;
            println!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ThinkArgs {
    /// What to think about.
    text: String,
    #[command(flatten)]
    conn: Connection,
    /// A workspace vector, comma-separated, instead of the planner's.
    #[arg(long)]
    gw: Option<String>,
    /// Measure after the step.
    #[arg(long)]
    measure: bool,
    /// The planner: local, hash, openai or anthropic (default: the service's).
    #[arg(long)]
    planner: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn think(args: ThinkArgs) -> Result<ExitCode> {
    let client = args.conn.client()?;
    let gw = args
        .gw
        .map(|s| {
            s.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f64>()
                        .with_context(|| format!("--gw: {x:?} is not a number"))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let mut body = json!({ "text": args.text });
    if let Some(gw) = gw {
        body["gw"] = json!(gw);
    }
    if args.measure {
        body["measure"] = json!(true);
    }
    if let Some(p) = args.planner {
        body["planner"] = json!(p);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let reply = runtime.block_on(client.post("/v1/think", &body))?;
    if args.json {
        println!("{}", reply.body);
    } else if reply.status == 200 {
        let b = &reply.body;
        println!(
            "{} → step {}  entropy {:.6}  purity {:.6}  trace error {:.1e}  valid {}  measured {}",
            b["op"].as_str().unwrap_or("?"),
            b["step"],
            b["entropy"].as_f64().unwrap_or(f64::NAN),
            b["purity"].as_f64().unwrap_or(f64::NAN),
            b["trace_error"].as_f64().unwrap_or(f64::NAN),
            b["valid"],
            b["measured_state"]
        );
        println!(
            "rationale ({}): {}",
            b["planner"].as_str().unwrap_or("?"),
            b["rationale"].as_str().unwrap_or("")
        );
        for r in b["recall"].as_array().into_iter().flatten() {
            println!(
                "recall {:.3}  event {}  {}",
                r["score"].as_f64().unwrap_or(f64::NAN),
                r["event_id"],
                r["text"].as_str().unwrap_or("")
            );
        }
        println!(
            "policy: {} — {}",
            b["decision"]["outcome"].as_str().unwrap_or("?"),
            b["decision"]["explanation"].as_str().unwrap_or("")
        );
        println!("ledger entry {}", b["ledger_seq"]);
    } else if reply.status == 202 {
        let b = &reply.body;
        println!(
            "held for approval {}: {} signature(s) needed over digest {} (`capsule approvals sign {} --key APPROVER.pem`)",
            b["approval_id"], b["quorum"], b["digest"].as_str().unwrap_or("?"), b["approval_id"]
        );
        println!(
            "policy: {} — {}",
            b["decision"]["outcome"].as_str().unwrap_or("?"),
            b["decision"]["explanation"].as_str().unwrap_or("")
        );
        println!("ledger entry {}", b["ledger_seq"]);
    } else {
        eprintln!(
            "{} {}: {} ({})",
            reply.status,
            reply.body["error"].as_str().unwrap_or("error"),
            reply.body["reason"].as_str().unwrap_or(""),
            reply.body["field"].as_str().unwrap_or("-")
        );
    }
    Ok(if reply.status == 200 || reply.status == 202 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
