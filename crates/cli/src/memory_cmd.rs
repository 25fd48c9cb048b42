//! `capsule memory search` (a client of a running service) and `capsule
//! replay` (offline, over a data directory's ledger).

use crate::client::Connection;
use anyhow::{Context, Result};
use capsule_cortex::replay::replay;
use capsule_ledger::LogReader;
use capsule_server::data;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct MemoryArgs {
    #[command(subcommand)]
    command: MemoryCommand,
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Semantic search of a running service's episodic memory.
    Search {
        query: String,
        /// How many events (1..=100).
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        lane: Option<String>,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
}

/// How to reach a running service.
pub fn run(args: MemoryArgs) -> Result<ExitCode> {
    let MemoryCommand::Search {
        query,
        k,
        kind,
        lane,
        conn,
        json: as_json,
    } = args.command;
    let body = json!({ "query": query, "k": k, "filter": { "kind": kind, "lane": lane } });
    let reply = tokio::runtime::Runtime::new()?
        .block_on(conn.client()?.post("/v1/memory/search", &body))?;
    if as_json || reply.status != 200 {
        println!("{}", reply.body);
    } else {
        for h in reply.body["hits"].as_array().into_iter().flatten() {
            println!(
                "{:.3}  event {}  {}/{}  {}",
                h["score"].as_f64().unwrap_or(f64::NAN),
                h["event_id"],
                h["kind"].as_str().unwrap_or("?"),
                h["lane"].as_str().unwrap_or("?"),
                h["text"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if reply.status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Replay from this ledger entry (the session that contains it is
    /// re-run from its start; entries before SEQ are not reported).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Re-run a recorded session without any model; exit 1 when a plan or a
/// kernel state differs from the record.
pub fn run_replay(args: ReplayArgs) -> Result<ExitCode> {
    let data = data::data_dir(args.data.as_deref());
    let log = LogReader::open(&data::ledger(&data))
        .with_context(|| format!("opening the ledger of {}", data.display()))?;
    let report = replay(log.size(), args.from, |seq| log.entry(seq))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "session from entry {}: {} operations replayed from entry {} ({} before it to reach its state), {} model replies re-checked, no model called",
            report.session_seq,
            report.steps.len(),
            args.from,
            report.warmup,
            report.model_replies
        );
        for s in &report.steps {
            let verdict = if s.mismatches.is_empty() {
                "same".to_string()
            } else {
                format!("DIFFERS: {}", s.mismatches.join("; "))
            };
            println!(
                "  entry {:>6}  {:<12} step {:>5}  state {}…  {verdict}",
                s.seq,
                s.action,
                s.step,
                &s.state_digest[..16.min(s.state_digest.len())]
            );
        }
        println!(
            "{}",
            if report.matches() {
                "replay matches the record: same plans, same kernel states"
            } else {
                "replay DIFFERS from the record"
            }
        );
    }
    Ok(if report.matches() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
