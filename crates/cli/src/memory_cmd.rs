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

/// Re-run a recorded session without any model; exit 1 when any plan
/// field or kernel state differs from the record, each difference named by
/// entry and field.
pub fn run_replay(args: ReplayArgs) -> Result<ExitCode> {
    let data = data::data_dir(args.data.as_deref());
    let log = LogReader::open(&data::ledger(&data))
        .with_context(|| format!("opening the ledger of {}", data.display()))?;
    let report = replay(log.size(), args.from, |seq| log.entry(seq))
        .with_context(|| format!("replaying the ledger of {}", data.display()))?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["matches"] = json!(report.matches());
        value["mismatches"] = json!(report
            .mismatches()
            .map(ToString::to_string)
            .collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "session from entry {}: {} operations replayed from entry {} ({} before it to reach its state); {} hash plans recomputed from their text, {} model replies re-parsed, no model called",
            report.session_seq,
            report.steps.len(),
            args.from,
            report.warmup,
            report.plans_recomputed,
            report.model_replies
        );
        for s in &report.steps {
            let verdict = match s.mismatches.len() {
                0 => "same".to_string(),
                n => format!("DIFFERS in {n} field{}", if n == 1 { "" } else { "s" }),
            };
            println!(
                "  entry {:>6}  {:<12} session {:<10} plan {:<10} step {:>5}  state {}…  {verdict}",
                s.seq,
                s.action,
                s.session,
                s.plan_check,
                s.step,
                &s.state_digest[..16.min(s.state_digest.len())]
            );
            for m in &s.mismatches {
                println!("    {m}");
            }
        }
        println!(
            "{}",
            if report.matches() {
                "replay matches the record: same plans, same kernel states".to_string()
            } else {
                format!(
                    "replay DIFFERS from the record in {} fields",
                    report.mismatches().count()
                )
            }
        );
    }
    Ok(if report.matches() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
