//! `capsule demo`: a short kernel session with a workspace that changes over
//! time, each step recorded in an audit ledger, narrated. Everything runs
//! in-process on embedded defaults, in a temporary directory.

use anyhow::{Context, Result};
use capsule_kernel::{restore, snapshot, Kernel, KernelConfig};
use capsule_ledger::{verify, Ledger, LedgerConfig, LedgerError, Record};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {
    /// Steps to run.
    #[arg(long, default_value_t = 40)]
    steps: u64,
    /// Kernel seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The workspace at step `s`: a slowly rotating unit vector of 8 values.
fn workspace(s: u64) -> Vec<f64> {
    let raw: Vec<f64> = (0..8)
        .map(|j| (0.15 * s as f64 + j as f64 * 0.8).sin())
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.iter().map(|x| x / norm).collect()
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let config = KernelConfig {
        dim: 16,
        seed: args.seed,
        workspace_dim: 8,
        ..KernelConfig::default()
    };
    println!("Capsule demo: the kernel, a simulated open quantum system used as an agent's state.");
    println!("(A numerical simulation with real mathematics; nothing here thinks or feels.)\n");
    println!(
        "Kernel: d = {}, seed = {}, relaxation rate {}, dephasing rate {}, step tolerance {:.0e}.",
        config.dim, config.seed, config.relaxation_rate, config.dephasing_rate, config.tolerance
    );
    println!("Starting in the pure ground state |0⟩⟨0| (entropy 0). The workspace vector gw rotates each step;");
    println!("every 10th step the kernel measures and collapses to a basis state.\n");
    let mut kernel = Kernel::new(config)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory for the demo ledger")?;
    let ledger_dir = tmp.path().join("ledger");
    let ledger = Ledger::create(&ledger_dir, "capsule.local/demo", LedgerConfig::default())?;
    println!(
        "{:>5} {:>8} {:>9} {:>10} {:>9} {:>10} {:>9}  event",
        "step", "t", "dt", "entropy", "purity", "trace_err", "l1_coh"
    );
    let mut outcomes = Vec::new();
    for s in 1..=args.steps {
        let gw = workspace(s);
        let out = kernel.step(&gw, s % 10 == 0)?;
        let event = match (out.measured_state, out.rejected_attempts) {
            (Some(i), _) => {
                outcomes.push(i);
                format!("measured → |{i}⟩")
            }
            (None, r) if r > 0 => format!("dt halved {r}×"),
            _ if out.dt_next > out.dt => "dt doubled".to_string(),
            _ => String::new(),
        };
        println!(
            "{:>5} {:>8.3} {:>9.2e} {:>10.6} {:>9.6} {:>10.1e} {:>9.4}  {event}",
            out.step,
            out.t,
            out.dt,
            out.observables.entropy,
            out.observables.purity,
            out.observables.trace_error,
            out.observables.l1_coherence
        );
        let mut record = Record::new(
            "agent:demo",
            "brain.step",
            if out.is_valid { "ok" } else { "invalid" },
        );
        record.subject = "kernel/demo".into();
        record.reason = if event.is_empty() {
            "step".into()
        } else {
            event.clone()
        };
        record.meta = serde_json::json!({
            "step": out.step, "entropy": out.observables.entropy, "measured_state": out.measured_state,
        });
        ledger.append(record)?;
        if !out.is_valid {
            anyhow::bail!("invalid state at step {}: the kernel halted", out.step);
        }
    }
    let checkpoint = ledger.checkpoint()?;
    let first_key = ledger.first_key()?;
    let proven = 9.min(ledger.size() - 1);
    let proof = ledger.inclusion_proof(proven, checkpoint.size())?;
    let proof_ok = proof.verify().is_ok() && &proof.root == checkpoint.root();
    ledger.close()?;
    drop(ledger);
    let report = verify(&ledger_dir, &first_key)?;
    let segment = ledger_dir.join("segments/00000001.seg");
    let mut seg_bytes = std::fs::read(&segment)?;
    let flip_at = seg_bytes.len() / 3;
    seg_bytes[flip_at] ^= 0x01;
    std::fs::write(&segment, &seg_bytes)?;
    let caught = match verify(&ledger_dir, &first_key) {
        Err(LedgerError::Corrupt { offset, reason, .. }) => {
            format!("caught: segment 00000001.seg, record at offset {offset}: {reason}")
        }
        Err(e) => format!("caught: {e}"),
        Ok(_) => "NOT caught (unexpected)".into(),
    };
    let bytes = snapshot(&kernel)?;
    let back = restore(&bytes)?;
    let exact = back.state() == kernel.state();
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    let refused = restore(&tampered)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "accepted (unexpected)".into());
    let c = kernel.corrections();
    println!("\nWhat happened:");
    println!("- {} steps to t = {:.3}; every state passed the validity gate (trace, Hermiticity, λ_min within 1e-9).", kernel.step_count(), kernel.time());
    println!("- Measurement outcomes (seeded by kernel seed and step, so a rerun repeats them): {outcomes:?}.");
    println!(
        "- Corrections reported: {} positivity projections, largest trace renormalisation {:.1e}.",
        c.positivity_projections, c.max_trace_correction
    );
    println!(
        "- Snapshot: {} bytes; restored exactly: {exact}; with one byte flipped: {refused}.",
        bytes.len()
    );
    println!(
        "- Audit ledger: {} entries, one per step; checkpoint of size {} signed by {}.",
        report.entries,
        checkpoint.size(),
        first_key
    );
    println!(
        "- Inclusion proof of step {} ({} hashes) leads to the checkpoint root: {proof_ok}; verify passed.",
        proven + 1,
        proof.path.len()
    );
    println!("- One bit flipped at byte {flip_at} of the ledger's segment: {caught}.");
    Ok(if exact && proof_ok && !caught.contains("NOT") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
