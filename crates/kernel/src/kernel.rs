//! The stateful kernel: one density matrix evolved step by step under a
//! workspace-driven Lindbladian, with adaptive timestep (SPEC K3),
//! deterministic measurement (K5), the validity gate (K6) and batches (K8).

use crate::density::{DensityMatrix, MAX_DIM, MIN_DIM};
use crate::drive::{derive_rng, WorkspaceDrive, MAX_WORKSPACE_DIM};
use crate::error::{KernelError, Result};
use crate::linalg::{self, c64, ZERO};
use crate::lindblad::{self, Dissipator, Lindbladian, MAX_TAYLOR_DEGREE};
use crate::observables::Observables;
use faer::Mat;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most times one step may halve dt before giving up at dt_min.
const MAX_ATTEMPTS: u32 = 64;

/// Everything that fixes a kernel's dynamics. Validated by [`KernelConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// Hilbert-space dimension d (2 ..= 4096).
    pub dim: usize,
    /// Seed of H0, the generators and the measurement stream.
    pub seed: u64,
    /// Number of workspace generators n (≤ 60).
    pub workspace_dim: usize,
    /// Rate γ of the relaxation jump operator √γ·Σ|j⟩⟨j+1|.
    pub relaxation_rate: f64,
    /// Rate γ of the dephasing jump operator √γ·diag(j/(d−1)).
    pub dephasing_rate: f64,
    /// Step-doubling tolerance in trace norm (SPEC K3).
    pub tolerance: f64,
    /// First dt.
    pub dt_initial: f64,
    /// Smallest dt.
    pub dt_min: f64,
    /// Largest dt.
    pub dt_max: f64,
    /// Taylor degree of one Lindblad step.
    pub taylor_order: usize,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            dim: 64,
            seed: 0,
            workspace_dim: MAX_WORKSPACE_DIM,
            relaxation_rate: 0.05,
            dephasing_rate: 0.1,
            tolerance: 1e-8,
            dt_initial: 0.05,
            dt_min: 1e-6,
            dt_max: 0.5,
            taylor_order: 6,
        }
    }
}

impl KernelConfig {
    /// Checks every field; the error names the field and the reason.
    pub fn validate(&self) -> Result<()> {
        let p = KernelError::param;
        if !(MIN_DIM..=MAX_DIM).contains(&self.dim) {
            return Err(p(
                "dim",
                format!("{} is outside {MIN_DIM}..={MAX_DIM}", self.dim),
            ));
        }
        if self.workspace_dim > MAX_WORKSPACE_DIM {
            return Err(p(
                "workspace_dim",
                format!("{} exceeds {MAX_WORKSPACE_DIM}", self.workspace_dim),
            ));
        }
        for (name, v) in [
            ("relaxation_rate", self.relaxation_rate),
            ("dephasing_rate", self.dephasing_rate),
        ] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(p(name, format!("{v} is outside [0, 100]")));
            }
        }
        if !(self.tolerance > 0.0 && self.tolerance <= 1.0) {
            return Err(p(
                "tolerance",
                format!("{} is outside (0, 1]", self.tolerance),
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.dt_min) || !positive(self.dt_max) || !positive(self.dt_initial) {
            return Err(p(
                "dt_min/dt_initial/dt_max",
                "must be finite and positive".to_string(),
            ));
        }
        if !(self.dt_min <= self.dt_initial && self.dt_initial <= self.dt_max) {
            return Err(p(
                "dt_initial",
                format!(
                    "{} is outside [dt_min {}, dt_max {}]",
                    self.dt_initial, self.dt_min, self.dt_max
                ),
            ));
        }
        if !(1..=MAX_TAYLOR_DEGREE).contains(&self.taylor_order) {
            return Err(p(
                "taylor_order",
                format!("{} is outside 1..={MAX_TAYLOR_DEGREE}", self.taylor_order),
            ));
        }
        Ok(())
    }

    /// The jump operators this configuration names.
    pub fn jump_operators(&self) -> Vec<Mat<c64>> {
        let d = self.dim;
        let mut jumps = Vec::new();
        if self.relaxation_rate > 0.0 {
            let a = self.relaxation_rate.sqrt();
            jumps.push(Mat::from_fn(d, d, |i, j| {
                if j == i + 1 {
                    c64::new(a, 0.0)
                } else {
                    ZERO
                }
            }));
        }
        if self.dephasing_rate > 0.0 {
            let a = self.dephasing_rate.sqrt();
            jumps.push(Mat::from_fn(d, d, |i, j| {
                if i == j {
                    c64::new(a * i as f64 / (d - 1) as f64, 0.0)
                } else {
                    ZERO
                }
            }));
        }
        jumps
    }
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Step count after this step.
    pub step: u64,
    /// Time after this step.
    pub t: f64,
    /// dt this step used.
    pub dt: f64,
    /// dt the next step will try.
    pub dt_next: f64,
    /// Step-doubling error estimate in trace norm.
    pub error_estimate: f64,
    /// Attempts rejected by the error control before this one was accepted.
    pub rejected_attempts: u32,
    /// Observables of the new state (before a measurement collapsed it).
    pub observables: Observables,
    /// SPEC K6 validity of the new state.
    pub is_valid: bool,
    /// Outcome index when the step measured.
    pub measured_state: Option<usize>,
    /// |Tr − 1| removed by renormalisation.
    pub trace_correction: f64,
    /// Negative eigenvalue mass clipped by the positivity projection.
    pub positivity_correction: f64,
}

/// Why a kernel stopped stepping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    /// The step that produced the invalid state.
    pub step: u64,
    /// What was wrong.
    pub reason: String,
}

/// Counters of the corrections applied over the kernel's life (SPEC K1: never silent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CorrectionCounters {
    /// Steps whose output needed the positivity projection.
    pub positivity_projections: u64,
    /// Sum of all clipped negative eigenvalue mass.
    pub positivity_mass: f64,
    /// Largest single trace renormalisation.
    pub max_trace_correction: f64,
}

/// One agent's state core.
#[derive(Clone, Debug)]
pub struct Kernel {
    config: KernelConfig,
    drive: WorkspaceDrive,
    dissipator: Arc<Dissipator>,
    state: DensityMatrix,
    step: u64,
    t: f64,
    dt: f64,
    halted: Option<Halt>,
    corrections: CorrectionCounters,
}

impl Kernel {
    /// A kernel in the ground state |0⟩⟨0| at t = 0.
    pub fn new(config: KernelConfig) -> Result<Self> {
        config.validate()?;
        let drive = WorkspaceDrive::new(config.dim, config.workspace_dim, config.seed)?;
        let dissipator = Arc::new(Dissipator::new(config.dim, &config.jump_operators())?);
        let state = DensityMatrix::basis(config.dim, 0)?;
        Ok(Kernel {
            dt: config.dt_initial,
            config,
            drive,
            dissipator,
            state,
            step: 0,
            t: 0.0,
            halted: None,
            corrections: CorrectionCounters::default(),
        })
    }

    /// Rebuilds a kernel at a given point of its history (used by snapshots).
    pub(crate) fn restore(
        config: KernelConfig,
        state: DensityMatrix,
        step: u64,
        t: f64,
        dt: f64,
    ) -> Result<Self> {
        let mut k = Kernel::new(config)?;
        if state.dim() != k.config.dim {
            return Err(KernelError::Snapshot {
                reason: format!(
                    "state is {}×{} but the configuration says {}",
                    state.dim(),
                    state.dim(),
                    k.config.dim
                ),
            });
        }
        if !t.is_finite() || t < 0.0 || !(k.config.dt_min..=k.config.dt_max).contains(&dt) {
            return Err(KernelError::Snapshot {
                reason: format!("t = {t} or dt = {dt} is out of range"),
            });
        }
        k.state = state;
        k.step = step;
        k.t = t;
        k.dt = dt;
        Ok(k)
    }

    /// The configuration.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }
    /// The current state.
    pub fn state(&self) -> &DensityMatrix {
        &self.state
    }
    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// Simulated time.
    pub fn time(&self) -> f64 {
        self.t
    }
    /// dt the next step will try.
    pub fn dt(&self) -> f64 {
        self.dt
    }
    /// Why the kernel is halted, if it is.
    pub fn halted(&self) -> Option<&Halt> {
        self.halted.as_ref()
    }
    /// Corrections applied so far.
    pub fn corrections(&self) -> CorrectionCounters {
        self.corrections
    }

    /// Checks a workspace vector without stepping.
    pub fn validate_workspace(&self, gw: &[f64]) -> Result<()> {
        self.drive.validate(gw)
    }

    /// Back to the ground state at t = 0; clears a halt.
    pub fn reset(&mut self) -> Result<()> {
        self.state = DensityMatrix::basis(self.config.dim, 0)?;
        self.step = 0;
        self.t = 0.0;
        self.dt = self.config.dt_initial;
        self.halted = None;
        Ok(())
    }

    fn ensure_running(&self) -> Result<()> {
        match &self.halted {
            Some(h) => Err(KernelError::Halted {
                step: h.step,
                reason: h.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Advances by one adaptive step under the workspace `gw`, then measures
    /// when asked. An invalid result halts the kernel (the previous state is
    /// kept) and is returned with `is_valid = false` for the caller to audit.
    pub fn step(&mut self, gw: &[f64], measure: bool) -> Result<StepOutcome> {
        self.ensure_running()?;
        let l = Lindbladian::new(self.drive.hamiltonian(gw)?, self.dissipator.clone())?;
        let order = self.config.taylor_order;
        let tol = self.config.tolerance;
        let rho = self.state.matrix();
        let mut rejected = 0;
        let (dt, err, accepted) = loop {
            let dt = self.dt;
            let full = l.step_raw(rho, dt, order)?;
            let half = l.step_raw(rho, dt / 2.0, order)?;
            let two_halves = l.step_raw(half.as_ref(), dt / 2.0, order)?;
            let diff = &full - &two_halves;
            let err: f64 = linalg::eigvalsh(diff.as_ref())?
                .iter()
                .map(|x| x.abs())
                .sum();
            let can_shrink = dt > self.config.dt_min && rejected < MAX_ATTEMPTS;
            if (err.is_nan() || err > tol) && can_shrink {
                self.dt = (dt / 2.0).max(self.config.dt_min);
                rejected += 1;
                continue;
            }
            if err < tol / 10.0 {
                self.dt = (dt * 2.0).min(self.config.dt_max);
            }
            break (dt, err, two_halves);
        };
        let evolved = lindblad::finalize(accepted)?;
        self.corrections.max_trace_correction = self
            .corrections
            .max_trace_correction
            .max(evolved.trace_correction);
        if evolved.positivity_correction > 0.0 {
            self.corrections.positivity_projections += 1;
            self.corrections.positivity_mass += evolved.positivity_correction;
        }
        let mut outcome = StepOutcome {
            step: self.step + 1,
            t: self.t + dt,
            dt,
            dt_next: self.dt,
            error_estimate: err,
            rejected_attempts: rejected,
            observables: evolved.observables.clone(),
            is_valid: evolved.observables.is_valid(),
            measured_state: None,
            trace_correction: evolved.trace_correction,
            positivity_correction: evolved.positivity_correction,
        };
        if let Some(reason) = evolved.observables.invalid_reason() {
            self.halted = Some(Halt {
                step: outcome.step,
                reason,
            });
            return Ok(outcome);
        }
        self.state = evolved.into_state()?;
        self.step += 1;
        self.t += dt;
        if measure {
            outcome.measured_state = Some(self.measure()?);
        }
        Ok(outcome)
    }

    /// Projective measurement in the computational basis (SPEC K5):
    /// p_i = ρ_ii, i sampled from ChaCha20 keyed by (seed, step count),
    /// ρ → |i⟩⟨i|. Same seed and history ⇒ same outcome, bit for bit.
    pub fn measure(&mut self) -> Result<usize> {
        self.ensure_running()?;
        let i = sample_outcome(&self.state.populations(), self.config.seed, self.step);
        self.state = DensityMatrix::basis(self.config.dim, i)?;
        Ok(i)
    }

    /// Measurement in the orthonormal basis given by the columns of `basis`
    /// (unitary within 1e-10): p_i = ⟨u_i|ρ|u_i⟩, ρ → |u_i⟩⟨u_i|.
    pub fn measure_in_basis(&mut self, basis: &Mat<c64>) -> Result<usize> {
        self.ensure_running()?;
        let d = self.config.dim;
        // Validates shape and unitarity with the channel's completeness check.
        crate::channel::KrausChannel::unitary(basis.clone())?;
        let rotated = basis.adjoint() * self.state.matrix() * basis;
        let probs: Vec<f64> = (0..d).map(|i| rotated[(i, i)].re).collect();
        let i = sample_outcome(&probs, self.config.seed, self.step);
        let column: Vec<c64> = (0..d).map(|r| basis[(r, i)]).collect();
        self.state = DensityMatrix::pure(&column)?;
        Ok(i)
    }
}

/// Samples an index from (clamped, renormalised) probabilities with the
/// measurement stream of (seed, step).
fn sample_outcome(probs: &[f64], seed: u64, step: u64) -> usize {
    let clamped: Vec<f64> = probs.iter().map(|p| p.max(0.0)).collect();
    let total: f64 = clamped.iter().sum();
    let u = derive_rng("capsule.kernel.measure", seed, step).random::<f64>() * total;
    let mut acc = 0.0;
    for (i, p) in clamped.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    clamped.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// One step request of a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInput {
    /// Workspace vector gw.
    pub global_workspace: Vec<f64>,
    /// Measure after the step.
    pub measure: bool,
}

/// Steps many independent kernels in one call (SPEC K8), in parallel; the
/// i-th result belongs to the i-th kernel. Lengths must match.
pub fn step_batch(
    kernels: &mut [Kernel],
    inputs: &[StepInput],
) -> Result<Vec<Result<StepOutcome>>> {
    if kernels.len() != inputs.len() {
        return Err(KernelError::Shape {
            what: "batch",
            expected: format!("{} inputs (one per kernel)", kernels.len()),
            got: format!("{}", inputs.len()),
        });
    }
    Ok(kernels
        .par_iter_mut()
        .zip(inputs.par_iter())
        .map(|(k, input)| k.step(&input.global_workspace, input.measure))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> KernelConfig {
        KernelConfig {
            dim: 8,
            seed: 42,
            workspace_dim: 4,
            ..KernelConfig::default()
        }
    }

    #[test]
    fn steps_keep_the_state_valid_and_advance_time() {
        let mut k = Kernel::new(small()).expect("kernel");
        let mut t = 0.0;
        for i in 0..20 {
            let out = k.step(&[0.3, -0.2, 0.1, 0.9], false).expect("step");
            assert!(out.is_valid);
            assert_eq!(out.step, i + 1);
            t += out.dt;
            assert!(out.error_estimate <= k.config().tolerance);
        }
        assert!((k.time() - t).abs() < 1e-15);
        assert!(k.state().entropy().expect("eig") > 0.0);
    }

    #[test]
    fn invalid_state_halts_the_kernel_until_reset() {
        // Forced Euler steps with a huge dt cannot stay positive.
        let cfg = KernelConfig {
            taylor_order: 1,
            dt_initial: 50.0,
            dt_min: 50.0,
            dt_max: 50.0,
            relaxation_rate: 1.0,
            ..small()
        };
        let mut k = Kernel::new(cfg).expect("kernel");
        let before = k.state().clone();
        let out = k.step(&[10.0, 10.0], false).expect("step runs");
        assert!(!out.is_valid);
        assert_eq!(k.state(), &before, "the invalid state is not adopted");
        assert!(matches!(
            k.step(&[], false),
            Err(KernelError::Halted { .. })
        ));
        assert!(matches!(k.measure(), Err(KernelError::Halted { .. })));
        k.reset().expect("reset");
        assert!(k.halted().is_none());
    }

    #[test]
    fn measurement_collapses_to_a_basis_state() {
        let mut k = Kernel::new(small()).expect("kernel");
        for _ in 0..5 {
            k.step(&[1.0, 1.0, 1.0, 1.0], false).expect("step");
        }
        let i = k.measure().expect("measure");
        assert_eq!(k.state().populations()[i], 1.0);
        assert!(k.state().entropy().expect("eig") < 1e-12);
    }

    #[test]
    fn measurement_in_a_rotated_basis_collapses_to_a_basis_vector() {
        let mut k = Kernel::new(KernelConfig {
            dim: 2,
            workspace_dim: 1,
            ..small()
        })
        .expect("kernel");
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let hadamard = Mat::from_fn(2, 2, |i, j| {
            c64::new(if i == 1 && j == 1 { -s } else { s }, 0.0)
        });
        let i = k.measure_in_basis(&hadamard).expect("unitary");
        let p = k.state().matrix();
        assert!((p[(0, 1)].re - if i == 0 { 0.5 } else { -0.5 }).abs() < 1e-15);
        assert!(k.measure_in_basis(&Mat::zeros(2, 2)).is_err());
    }

    #[test]
    fn batch_steps_every_kernel_like_one_at_a_time() {
        let mut batch: Vec<Kernel> = (0..3)
            .map(|s| Kernel::new(KernelConfig { seed: s, ..small() }).expect("k"))
            .collect();
        let mut single = batch.clone();
        let inputs: Vec<StepInput> = (0..3)
            .map(|i| StepInput {
                global_workspace: vec![i as f64 * 0.1; 4],
                measure: i == 1,
            })
            .collect();
        let out = step_batch(&mut batch, &inputs).expect("lengths match");
        for ((k, input), res) in single.iter_mut().zip(&inputs).zip(out) {
            assert_eq!(
                k.step(&input.global_workspace, input.measure)
                    .expect("step"),
                res.expect("step")
            );
        }
        assert!(step_batch(&mut batch, &inputs[..2]).is_err());
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = [
            (KernelConfig { dim: 1, ..small() }, "dim"),
            (
                KernelConfig {
                    workspace_dim: 61,
                    ..small()
                },
                "workspace_dim",
            ),
            (
                KernelConfig {
                    tolerance: 0.0,
                    ..small()
                },
                "tolerance",
            ),
            (
                KernelConfig {
                    dt_initial: 1.0,
                    ..small()
                },
                "dt_initial",
            ),
            (
                KernelConfig {
                    taylor_order: 0,
                    ..small()
                },
                "taylor_order",
            ),
            (
                KernelConfig {
                    dephasing_rate: f64::NAN,
                    ..small()
                },
                "dephasing_rate",
            ),
        ];
        for (cfg, field) in bad {
            let err = Kernel::new(cfg).expect_err("invalid");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }
}
