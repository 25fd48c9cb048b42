//! Observables of a state (SPEC K4), all from one Hermitian eigenvalue
//! computation plus O(d²) sums.

use crate::error::Result;
use crate::linalg::{self, c64};
use faer::MatRef;
use serde::{Deserialize, Serialize};

/// Everything SPEC K4 asks of a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observables {
    /// von Neumann entropy −Tr ρ ln ρ, in nats.
    pub entropy: f64,
    /// Tr ρ².
    pub purity: f64,
    /// |Tr ρ − 1|.
    pub trace_error: f64,
    /// max |ρ_ij − conj ρ_ji|.
    pub hermiticity_error: f64,
    /// Smallest eigenvalue.
    pub lambda_min: f64,
    /// Diagonal ρ_ii.
    pub populations: Vec<f64>,
    /// l1-norm of coherence Σ_{i≠j} |ρ_ij| (Baumgratz et al., PRL 113, 140401).
    pub l1_coherence: f64,
}

impl Observables {
    /// Computes the observables of a (candidate) density matrix.
    pub fn of(rho: MatRef<'_, c64>) -> Result<Self> {
        let eig = linalg::eigvalsh(rho)?;
        let d = rho.nrows();
        let mut l1 = 0.0;
        for j in 0..d {
            for i in 0..d {
                if i != j {
                    l1 += rho[(i, j)].norm();
                }
            }
        }
        Ok(Observables {
            entropy: entropy_of_eigenvalues(&eig),
            purity: rho.squared_norm_l2(),
            trace_error: (linalg::trace(rho).re - 1.0).abs(),
            hermiticity_error: linalg::hermiticity_error(rho),
            lambda_min: eig.first().copied().unwrap_or(0.0),
            populations: (0..d).map(|i| rho[(i, i)].re).collect(),
            l1_coherence: l1,
        })
    }

    /// SPEC K6: trace error, Hermiticity error and −λ_min each ≤ 1e-9.
    pub fn is_valid(&self) -> bool {
        self.trace_error <= crate::VALIDITY_TOL
            && self.hermiticity_error <= crate::VALIDITY_TOL
            && self.lambda_min >= -crate::VALIDITY_TOL
            && self.entropy.is_finite()
    }

    /// Why the state is invalid, or `None` when it is valid.
    pub fn invalid_reason(&self) -> Option<String> {
        if self.is_valid() {
            return None;
        }
        Some(format!(
            "trace error {:.3e}, Hermiticity error {:.3e}, λ_min {:.3e} (each must be within {:.0e})",
            self.trace_error,
            self.hermiticity_error,
            self.lambda_min,
            crate::VALIDITY_TOL
        ))
    }
}

/// −Σ λ ln λ over the eigenvalues, negatives clamped to 0 (SPEC K4: they are
/// rounding in a valid state; an invalid state is caught by `lambda_min`).
pub fn entropy_of_eigenvalues(eig: &[f64]) -> f64 {
    let s: f64 = eig.iter().filter(|&&l| l > 0.0).map(|&l| -l * l.ln()).sum();
    s.max(0.0)
}
