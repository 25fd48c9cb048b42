//! Lindblad evolution (SPEC K1 "Lindblad step", K3).
//!
//! dρ/dt = L(ρ) = −i[H, ρ] + Σ_k (L_k ρ L_k† − ½{L_k†L_k, ρ}) (Lindblad 1976;
//! Breuer & Petruccione §3.2), evaluated as
//! L(X) = G X + (G X)† + Σ_k L_k X L_k† with G = −iH − ½ Σ_k L_k†L_k.
//! For Hermitian X the result is Hermitian, so the jump sum is one stacked
//! product whose lower triangle alone is computed ([`linalg::Sandwich`], as
//! for Kraus channels).
//!
//! The generator is constant over a step, so ρ(t+τ) = e^{τL} ρ, evaluated as
//! a truncated Taylor series of the superoperator's action (no d²×d²
//! superoperator is ever formed). Every term L^n(ρ) is Hermitian and
//! traceless, so the series preserves Hermiticity exactly and the trace to
//! rounding; the remaining rounding is removed by renormalising the trace,
//! and a slightly negative eigenvalue from truncation is projected away
//! (clip and renormalise). Both corrections are returned, never hidden. A
//! negative eigenvalue below −[`PROJECTION_LIMIT`] is not corrected: it means
//! the step was too coarse, and the state is reported invalid.
//!
//! [`Lindbladian::evolve`] picks the number of sub-steps s and the Taylor
//! degree m from a bound on ‖L‖ to reach a requested accuracy with the
//! fewest generator applications (after Al-Mohy & Higham, SIAM J. Sci.
//! Comput. 33 (2011), "Computing the action of the matrix exponential"),
//! stopping a series early once its terms are negligible.

use crate::density::DensityMatrix;
use crate::error::{KernelError, Result};
use crate::linalg::{self, c64, ONE, ZERO};
use crate::observables::Observables;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};
use std::sync::Arc;

/// Negative eigenvalues down to −this are truncation error and are projected
/// away (and reported); below it the state is reported invalid.
pub const PROJECTION_LIMIT: f64 = 1e-6;
/// Eigenvalues above −this are left alone (rounding noise of a valid state).
pub const PROJECTION_FLOOR: f64 = 1e-13;
/// Highest Taylor degree a series may use.
pub const MAX_TAYLOR_DEGREE: usize = 40;
/// Most sub-steps one `evolve` call may take.
pub const MAX_SUBSTEPS: usize = 100_000;

/// The dissipative part: jump operators L_k, pre-stacked, with Σ L_k†L_k.
#[derive(Clone, Debug)]
pub struct Dissipator {
    dim: usize,
    jumps: linalg::Sandwich,
    sum_ldl: Mat<c64>,
    /// Σ_k ‖L_k‖₂², bounding ‖Σ_k L_k X L_k† − ½{L_k†L_k, X}‖ / ‖X‖ by twice it.
    norm_sq_sum: f64,
}

impl Dissipator {
    /// Validates the jump operators (square, d×d, finite).
    pub fn new(dim: usize, jumps: &[Mat<c64>]) -> Result<Self> {
        let mut norm_sq_sum = 0.0;
        for (i, l) in jumps.iter().enumerate() {
            crate::density::check_operator(l, dim, &format!("jump_ops[{i}]"))?;
            let ldl = l.adjoint() * l;
            norm_sq_sum += linalg::eigvalsh(ldl.as_ref())?
                .last()
                .copied()
                .unwrap_or(0.0);
        }
        let sandwich = linalg::Sandwich::new(jumps);
        let mut sum_ldl = Mat::<c64>::zeros(dim, dim);
        if !jumps.is_empty() {
            let s = sandwich.stack();
            matmul(
                sum_ldl.as_mut(),
                Accum::Replace,
                s.adjoint(),
                s,
                ONE,
                linalg::par_for(dim),
            );
        }
        Ok(Dissipator {
            dim,
            jumps: sandwich,
            sum_ldl,
            norm_sq_sum,
        })
    }

    /// Number of jump operators.
    pub fn count(&self) -> usize {
        self.jumps.count()
    }
}

/// A Lindblad generator: Hamiltonian plus a shared [`Dissipator`].
#[derive(Clone, Debug)]
pub struct Lindbladian {
    dim: usize,
    hamiltonian: Mat<c64>,
    g: Mat<c64>,
    dissipator: Arc<Dissipator>,
}

/// Buffers of one generator application, reused across a series.
struct Scratch {
    gx: Mat<c64>,
    stacked: Vec<c64>,
}

/// The result of evolving a state: the new matrix with its observables and
/// every correction that was applied to it.
#[derive(Clone, Debug)]
pub struct Evolved {
    /// The evolved matrix; a valid density matrix exactly when `observables.is_valid()`.
    pub matrix: Mat<c64>,
    /// Observables of `matrix`.
    pub observables: Observables,
    /// |Tr − 1| removed by renormalising.
    pub trace_correction: f64,
    /// Sum of the negative eigenvalues clipped by the projection (0 when none).
    pub positivity_correction: f64,
    /// How many times the generator was applied.
    pub generator_applications: usize,
    /// Sub-steps taken.
    pub substeps: usize,
}

impl Evolved {
    /// The state, when valid.
    pub fn into_state(self) -> Result<DensityMatrix> {
        match self.observables.invalid_reason() {
            None => Ok(DensityMatrix::from_cptp_output(self.matrix)),
            Some(reason) => Err(KernelError::InvalidState { reason }),
        }
    }
}

impl Lindbladian {
    /// Validates H (d×d, finite, Hermitian within 1e-10·max(1, ‖H‖_F)).
    pub fn new(hamiltonian: Mat<c64>, dissipator: Arc<Dissipator>) -> Result<Self> {
        let d = dissipator.dim;
        crate::density::check_operator(&hamiltonian, d, "hamiltonian")?;
        let herm = linalg::hermiticity_error(hamiltonian.as_ref());
        if herm > 1e-10 * linalg::frobenius(hamiltonian.as_ref()).max(1.0) {
            return Err(KernelError::param(
                "hamiltonian",
                format!("is not Hermitian (max |H_ij − conj H_ji| = {herm:.3e})"),
            ));
        }
        let mut h = hamiltonian;
        linalg::hermitize(h.as_mut());
        let mi = c64::new(0.0, -1.0);
        let g = Mat::from_fn(d, d, |i, j| {
            mi * h[(i, j)] - dissipator.sum_ldl[(i, j)] * 0.5
        });
        Ok(Lindbladian {
            dim: d,
            hamiltonian: h,
            g,
            dissipator,
        })
    }

    /// Convenience: a generator with its own dissipator.
    pub fn from_operators(hamiltonian: Mat<c64>, jumps: &[Mat<c64>]) -> Result<Self> {
        let d = hamiltonian.nrows();
        Lindbladian::new(hamiltonian, Arc::new(Dissipator::new(d, jumps)?))
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The (Hermitian) Hamiltonian.
    pub fn hamiltonian(&self) -> MatRef<'_, c64> {
        self.hamiltonian.as_ref()
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            gx: Mat::zeros(self.dim, self.dim),
            stacked: self.dissipator.jumps.scratch(),
        }
    }

    /// y = scale · L(x) for Hermitian x; y is exactly Hermitian.
    fn apply_scaled(
        &self,
        x: MatRef<'_, c64>,
        mut y: MatMut<'_, c64>,
        scale: f64,
        s: &mut Scratch,
    ) {
        let d = self.dim;
        linalg::product(s.gx.as_mut(), self.g.as_ref(), x);
        let diss = &*self.dissipator;
        if diss.count() > 0 {
            diss.jumps.apply_lower(x, y.as_mut(), &mut s.stacked);
        } else {
            y.fill(ZERO);
        }
        for j in 0..d {
            for i in j..d {
                y[(i, j)] = (y[(i, j)] + s.gx[(i, j)] + s.gx[(j, i)].conj()) * scale;
            }
        }
        linalg::fill_upper_from_lower(y);
    }

    /// L(x) for a Hermitian x (exposed for tests and benchmarks).
    pub fn apply(&self, x: MatRef<'_, c64>) -> Mat<c64> {
        let mut y = Mat::zeros(self.dim, self.dim);
        self.apply_scaled(x, y.as_mut(), 1.0, &mut self.scratch());
        y
    }

    /// One Taylor sub-step x ← Σ_{n≤m} (τL)^n x / n!, stopping early when
    /// `stop_tol` is given and two consecutive terms fall below it relative to
    /// the sum. Returns the number of generator applications.
    fn taylor(
        &self,
        x: &mut Mat<c64>,
        tau: f64,
        degree: usize,
        stop_tol: Option<f64>,
        s: &mut Scratch,
    ) -> usize {
        let mut term = x.clone();
        let mut next = Mat::<c64>::zeros(self.dim, self.dim);
        let mut prev_norm = f64::INFINITY;
        let mut applied = 0;
        for n in 1..=degree {
            self.apply_scaled(term.as_ref(), next.as_mut(), tau / n as f64, s);
            applied += 1;
            *x += &next;
            std::mem::swap(&mut term, &mut next);
            if let Some(tol) = stop_tol {
                let norm = linalg::frobenius(term.as_ref());
                if norm + prev_norm <= tol * linalg::frobenius(x.as_ref()) {
                    break;
                }
                prev_norm = norm;
            }
        }
        applied
    }

    /// One step of fixed Taylor degree `degree` over `dt` (the kernel's
    /// step, whose error the kernel controls by step doubling, SPEC K3).
    /// The result is not yet finalised: see [`finalize`].
    pub fn step_raw(&self, rho: MatRef<'_, c64>, dt: f64, degree: usize) -> Result<Mat<c64>> {
        check_time("dt", dt)?;
        check_degree(degree)?;
        Ok(linalg::on_pool(rho.nrows(), || {
            let mut x = rho.to_owned();
            self.taylor(&mut x, dt, degree, None, &mut self.scratch());
            x
        }))
    }

    /// ρ(t) = e^{tL} ρ to a relative accuracy `tol` (Frobenius norm),
    /// with the fewest generator applications the norm bound allows.
    pub fn evolve(&self, rho: &DensityMatrix, t: f64, tol: f64) -> Result<Evolved> {
        check_time("t", t)?;
        if !(tol > 0.0 && tol < 1.0) {
            return Err(KernelError::param("tol", format!("{tol} is not in (0, 1)")));
        }
        let beta = self.norm_bound()?;
        let (degree, substeps) = taylor_plan(beta * t, tol)?;
        let (x, applied) = linalg::on_pool(rho.dim(), || {
            let mut x = rho.matrix().to_owned();
            let mut s = self.scratch();
            let tau = t / substeps as f64;
            let stop = tol / substeps as f64;
            let mut applied = 0;
            for _ in 0..substeps {
                applied += self.taylor(&mut x, tau, degree, Some(stop), &mut s);
            }
            (x, applied)
        });
        let mut out = finalize(x)?;
        out.generator_applications = applied;
        out.substeps = substeps;
        Ok(out)
    }

    /// An upper bound on ‖L(X)‖_F/‖X‖_F: spread(H) + 2 Σ ‖L_k‖₂², since
    /// ‖[H, X]‖ ≤ (λ_max − λ_min)(H)·‖X‖ and ‖A X B‖_F ≤ ‖A‖₂‖X‖_F‖B‖₂.
    pub fn norm_bound(&self) -> Result<f64> {
        let eig = linalg::eigvalsh(self.hamiltonian.as_ref())?;
        let spread = eig.last().copied().unwrap_or(0.0) - eig.first().copied().unwrap_or(0.0);
        Ok(spread + 2.0 * self.dissipator.norm_sq_sum)
    }
}

/// Renormalises the trace, projects small negative eigenvalues away, and
/// measures the result; both corrections are reported.
pub fn finalize(mut x: Mat<c64>) -> Result<Evolved> {
    let tr = linalg::trace(x.as_ref()).re;
    let trace_correction = (tr - 1.0).abs();
    if tr.is_finite() && tr > 0.0 {
        x *= faer::Scale(c64::new(1.0 / tr, 0.0));
    }
    let mut observables = Observables::of(x.as_ref())?;
    let mut positivity_correction = 0.0;
    let min = observables.lambda_min;
    if (-PROJECTION_LIMIT..-PROJECTION_FLOOR).contains(&min) {
        let (projected, clipped) = project_to_psd(x.as_ref())?;
        x = projected;
        positivity_correction = clipped;
        observables = Observables::of(x.as_ref())?;
    }
    Ok(Evolved {
        matrix: x,
        observables,
        trace_correction,
        positivity_correction,
        generator_applications: 0,
        substeps: 1,
    })
}

/// The nearest density matrix in Frobenius norm to a Hermitian unit-trace
/// matrix with small negative eigenvalues: clip them to 0 and renormalise.
/// Returns it with the sum of the clipped magnitudes.
fn project_to_psd(x: MatRef<'_, c64>) -> Result<(Mat<c64>, f64)> {
    let d = x.nrows();
    let evd = x
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|_| KernelError::NoConvergence { dim: d })?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let mut clipped = 0.0;
    let mut kept = 0.0;
    let scaled = Mat::from_fn(d, d, |i, j| {
        let l = s[j].re;
        u[(i, j)] * l.max(0.0)
    });
    for j in 0..d {
        let l = s[j].re;
        if l < 0.0 {
            clipped -= l;
        } else {
            kept += l;
        }
    }
    let mut out = Mat::<c64>::zeros(d, d);
    matmul(
        out.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        u.adjoint(),
        c64::new(1.0 / kept, 0.0),
        linalg::par_for(d),
    );
    linalg::hermitize(out.as_mut());
    Ok((out, clipped))
}

/// Chooses (degree m, sub-steps s) minimising m·s such that the Taylor
/// remainder bound x^{m+1}/(m+1)!·e^x with x = βt/s stays below tol/s.
fn taylor_plan(beta_t: f64, tol: f64) -> Result<(usize, usize)> {
    if beta_t == 0.0 {
        return Ok((1, 1));
    }
    let mut best: Option<(usize, usize)> = None;
    for m in 2..=MAX_TAYLOR_DEGREE {
        let mut s = ((beta_t / m as f64).ceil() as usize).max(1);
        while s <= MAX_SUBSTEPS {
            let x = beta_t / s as f64;
            let ln_bound = (m as f64 + 1.0) * x.ln() - ln_factorial(m + 1) + x;
            if ln_bound <= (tol / s as f64).ln() {
                break;
            }
            s += 1 + s / 8;
        }
        if s > MAX_SUBSTEPS {
            continue;
        }
        if best.is_none_or(|(bm, bs)| m * s < bm * bs) {
            best = Some((m, s));
        }
    }
    best.ok_or_else(|| {
        KernelError::param(
            "t",
            format!("‖L‖·t = {beta_t:.3e} needs more than {MAX_SUBSTEPS} sub-steps"),
        )
    })
}

fn ln_factorial(n: usize) -> f64 {
    (2..=n).map(|k| (k as f64).ln()).sum()
}

fn check_time(field: &str, t: f64) -> Result<()> {
    if !(t.is_finite() && t >= 0.0) {
        return Err(KernelError::param(
            field,
            format!("{t} is not a finite, non-negative time"),
        ));
    }
    Ok(())
}

fn check_degree(degree: usize) -> Result<()> {
    if !(1..=MAX_TAYLOR_DEGREE).contains(&degree) {
        return Err(KernelError::param(
            "taylor_order",
            format!("{degree} is outside 1..={MAX_TAYLOR_DEGREE}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn random_problem(d: usize, seed: u64) -> (Lindbladian, DensityMatrix) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a = linalg::random_gaussian(d, &mut rng);
        let h = (&a + a.adjoint()) * faer::Scale(c64::new(0.25 / (d as f64).sqrt(), 0.0));
        let jumps: Vec<_> = (0..2)
            .map(|_| {
                linalg::random_gaussian(d, &mut rng)
                    * faer::Scale(c64::new(0.1 / (d as f64).sqrt(), 0.0))
            })
            .collect();
        let psi: Vec<c64> = (0..d)
            .map(|_| {
                c64::new(
                    linalg::standard_normal(&mut rng),
                    linalg::standard_normal(&mut rng),
                )
            })
            .collect();
        (
            Lindbladian::from_operators(h, &jumps).expect("valid"),
            DensityMatrix::pure(&psi).expect("valid"),
        )
    }

    #[test]
    fn generator_output_is_hermitian_and_traceless() {
        let (l, rho) = random_problem(7, 1);
        let y = l.apply(rho.matrix());
        assert!(linalg::trace(y.as_ref()).norm() < 1e-14);
        assert_eq!(linalg::hermiticity_error(y.as_ref()), 0.0);
    }

    #[test]
    fn evolve_agrees_with_many_small_steps() {
        let (l, rho) = random_problem(6, 2);
        let fine = l.evolve(&rho, 1.0, 1e-13).expect("evolves");
        let mut x = rho.matrix().to_owned();
        for _ in 0..1000 {
            x = l.step_raw(x.as_ref(), 1e-3, 8).expect("steps");
        }
        assert!(linalg::max_abs_diff(fine.matrix.as_ref(), x.as_ref()) < 1e-11);
        assert!(fine.observables.is_valid());
    }

    #[test]
    fn taylor_plan_reaches_the_tolerance_bound() {
        for &(bt, tol) in &[(0.01, 1e-12), (4.0, 1e-8), (40.0, 1e-10)] {
            let (m, s) = taylor_plan(bt, tol).expect("plan");
            let x: f64 = bt / s as f64;
            assert!((m as f64 + 1.0) * x.ln() - ln_factorial(m + 1) + x <= (tol / s as f64).ln());
        }
    }

    #[test]
    fn bad_hamiltonian_and_times_are_rejected() {
        let d = Arc::new(Dissipator::new(2, &[]).expect("empty is fine"));
        let mut h = Mat::<c64>::zeros(2, 2);
        h[(0, 1)] = ONE;
        assert!(Lindbladian::new(h, d.clone()).is_err());
        assert!(Lindbladian::new(Mat::zeros(3, 3), d.clone()).is_err());
        let l = Lindbladian::new(Mat::zeros(2, 2), d).expect("valid");
        let rho = DensityMatrix::maximally_mixed(2).expect("valid");
        assert!(l.evolve(&rho, -1.0, 1e-8).is_err());
        assert!(l.evolve(&rho, f64::NAN, 1e-8).is_err());
        assert!(l.step_raw(rho.matrix(), 0.1, 0).is_err());
    }
}
