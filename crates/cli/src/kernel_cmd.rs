//! `capsule kernel run | check`.

use anyhow::{Context, Result};
use capsule_kernel::testvector::check_vector;
use capsule_kernel::{Kernel, KernelConfig};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KernelCommand {
    /// Step a kernel and print step, t, dt, entropy, purity and trace error.
    Run(RunArgs),
    /// Recompute test-vector files and report each file's largest error.
    Check {
        /// Test-vector JSON files (the format of tests/vectors/README.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// Hilbert-space dimension (2..=4096).
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Number of steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Kernel seed (fixes H0, the generators and measurements).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Workspace vector, comma- or space-separated (≤ 60 values, |x| ≤ 10).
    #[arg(long, default_value = "")]
    gw: String,
    /// Measure after every step.
    #[arg(long)]
    measure: bool,
    /// One JSON object per step instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: KernelCommand) -> Result<ExitCode> {
    match cmd {
        KernelCommand::Run(args) => run_kernel(args),
        KernelCommand::Check { files } => check(&files),
    }
}

/// Parses "0.1, 0.2 -0.3" into numbers, naming the bad item.
pub fn parse_gw(text: &str) -> Result<Vec<f64>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            s.parse::<f64>()
                .with_context(|| format!("--gw item {i} ({s:?}) is not a number"))
        })
        .collect()
}

fn run_kernel(args: RunArgs) -> Result<ExitCode> {
    let gw = parse_gw(&args.gw)?;
    let mut kernel = Kernel::new(KernelConfig {
        dim: args.dim,
        seed: args.seed,
        ..KernelConfig::default()
    })?;
    kernel.validate_workspace(&gw)?;
    let bar = if args.steps >= 50 {
        ProgressBar::new(args.steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !args.json {
        bar.suspend(|| {
            println!(
                "{:>6} {:>10} {:>10} {:>12} {:>10} {:>10}",
                "step", "t", "dt", "entropy", "purity", "trace_err"
            )
        });
    }
    for _ in 0..args.steps {
        let out = kernel.step(&gw, args.measure)?;
        let line = if args.json {
            serde_json::to_string(&serde_json::json!({
                "step": out.step, "t": out.t, "dt": out.dt, "entropy": out.observables.entropy,
                "purity": out.observables.purity, "trace_error": out.observables.trace_error,
                "is_valid": out.is_valid, "measured_state": out.measured_state,
            }))?
        } else {
            format!(
                "{:>6} {:>10.4} {:>10.3e} {:>12.9} {:>10.6} {:>10.2e}",
                out.step,
                out.t,
                out.dt,
                out.observables.entropy,
                out.observables.purity,
                out.observables.trace_error
            )
        };
        bar.suspend(|| println!("{line}"));
        bar.inc(1);
        if !out.is_valid {
            bar.finish_and_clear();
            anyhow::bail!(
                "the kernel reached an invalid state at step {} and halted: {}",
                out.step,
                out.observables.invalid_reason().unwrap_or_default()
            );
        }
    }
    bar.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}

fn check(files: &[PathBuf]) -> Result<ExitCode> {
    let mut failed = 0;
    println!(
        "{:<44} {:<18} {:>11} {:>10}  result",
        "file", "kind", "max_error", "tolerance"
    );
    for path in files {
        let report = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .and_then(|text| check_vector(&text).with_context(|| format!("{}", path.display())));
        match report {
            Ok(r) => {
                let verdict = if r.passed() { "ok" } else { "FAIL" };
                failed += usize::from(!r.passed());
                println!(
                    "{:<44} {:<18} {:>11.3e} {:>10.1e}  {verdict}",
                    path.display(),
                    r.kind,
                    r.max_error,
                    r.tolerance
                );
            }
            Err(e) => {
                failed += 1;
                println!("{:<44} error: {e:#}", path.display());
            }
        }
    }
    println!("{} passed, {} failed", files.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
