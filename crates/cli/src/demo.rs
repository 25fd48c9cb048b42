//! `capsule demo`: a short kernel session with a workspace that changes over
//! time, narrated. Everything runs in-process on embedded defaults.

use anyhow::Result;
use capsule_kernel::{restore, snapshot, Kernel, KernelConfig};
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
        if !out.is_valid {
            anyhow::bail!("invalid state at step {}: the kernel halted", out.step);
        }
    }
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
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
