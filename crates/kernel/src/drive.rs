//! Workspace drive (SPEC K2): H = H0 + Σ_j gw_j G_j.
//!
//! H0 and the generators G_j are fixed by the kernel seed. H0 is a GUE
//! matrix scaled so its spectrum lies in about [−1, 1]; each G_j is a sparse
//! random Hermitian matrix (d random couplings |a⟩⟨b| + h.c. of magnitude ½),
//! so that 60 generators cost O(60·d) memory at any d.

use crate::error::{KernelError, Result};
use crate::linalg::{self, c64};
use faer::Mat;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// Largest workspace length the kernel accepts (SPEC K2, P7).
pub const MAX_WORKSPACE_DIM: usize = 60;
/// Largest |gw_j| (SPEC K2).
pub const MAX_WORKSPACE_VALUE: f64 = 10.0;

/// A ChaCha20 generator keyed by SHA-256(domain ‖ seed ‖ counter): one
/// independent, reproducible stream per purpose.
pub fn derive_rng(domain: &str, seed: u64, counter: u64) -> ChaCha20Rng {
    use rand::SeedableRng;
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(seed.to_le_bytes());
    h.update(counter.to_le_bytes());
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// One sparse Hermitian generator: couplings (a, b, v) meaning v|a⟩⟨b| + h.c.
#[derive(Clone, Debug)]
struct SparseHermitian {
    couplings: Vec<(usize, usize, c64)>,
}

/// The seeded map from a workspace vector to a Hamiltonian.
#[derive(Clone, Debug)]
pub struct WorkspaceDrive {
    h0: Mat<c64>,
    generators: Vec<SparseHermitian>,
}

impl WorkspaceDrive {
    /// Builds H0 and `n` generators for dimension `d` from `seed`.
    pub fn new(d: usize, n: usize, seed: u64) -> Result<Self> {
        if n > MAX_WORKSPACE_DIM {
            return Err(KernelError::param(
                "workspace_dim",
                format!("{n} exceeds the maximum of {MAX_WORKSPACE_DIM}"),
            ));
        }
        let mut rng = derive_rng("capsule.kernel.h0", seed, 0);
        let a = linalg::random_gaussian(d, &mut rng);
        let h0 = (&a + a.adjoint()) * faer::Scale(c64::new(0.25 / (d as f64).sqrt(), 0.0));
        let generators = (0..n)
            .map(|j| {
                let mut rng = derive_rng("capsule.kernel.generator", seed, j as u64);
                let couplings = (0..d)
                    .map(|_| {
                        let a = rng.random_range(0..d);
                        let b = rng.random_range(0..d);
                        let phase = rng.random::<f64>() * std::f64::consts::TAU;
                        (a, b, c64::from_polar(0.5, phase))
                    })
                    .collect();
                SparseHermitian { couplings }
            })
            .collect();
        Ok(WorkspaceDrive { h0, generators })
    }

    /// Number of generators n (the longest workspace vector accepted).
    pub fn len(&self) -> usize {
        self.generators.len()
    }

    /// True when the drive has no generators.
    pub fn is_empty(&self) -> bool {
        self.generators.is_empty()
    }

    /// Checks a workspace vector: length ≤ n, every value finite with |x| ≤ 10.
    pub fn validate(&self, gw: &[f64]) -> Result<()> {
        if gw.len() > self.generators.len() {
            return Err(KernelError::param(
                "global_workspace",
                format!(
                    "has {} values; at most {} are allowed",
                    gw.len(),
                    self.generators.len()
                ),
            ));
        }
        for (j, &x) in gw.iter().enumerate() {
            if !x.is_finite() || x.abs() > MAX_WORKSPACE_VALUE {
                return Err(KernelError::param(
                    format!("global_workspace[{j}]"),
                    format!("{x} is outside [-{MAX_WORKSPACE_VALUE}, {MAX_WORKSPACE_VALUE}]"),
                ));
            }
        }
        Ok(())
    }

    /// H = H0 + Σ_j gw_j G_j, after validating gw.
    pub fn hamiltonian(&self, gw: &[f64]) -> Result<Mat<c64>> {
        self.validate(gw)?;
        let mut h = self.h0.clone();
        for (g, &w) in self.generators.iter().zip(gw) {
            if w == 0.0 {
                continue;
            }
            for &(a, b, v) in &g.couplings {
                let v = v * w;
                if a == b {
                    h[(a, a)] += c64::new(2.0 * v.re, 0.0);
                } else {
                    h[(a, b)] += v;
                    h[(b, a)] += v.conj();
                }
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_hamiltonian_and_other_seed_differs() {
        let gw = [0.5, -1.0, 2.0];
        let a = WorkspaceDrive::new(8, 4, 11)
            .expect("drive")
            .hamiltonian(&gw)
            .expect("valid");
        let b = WorkspaceDrive::new(8, 4, 11)
            .expect("drive")
            .hamiltonian(&gw)
            .expect("valid");
        let c = WorkspaceDrive::new(8, 4, 12)
            .expect("drive")
            .hamiltonian(&gw)
            .expect("valid");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(linalg::hermiticity_error(a.as_ref()) == 0.0);
    }

    #[test]
    fn workspace_out_of_bounds_is_rejected_naming_the_field() {
        let drive = WorkspaceDrive::new(4, 60, 0).expect("drive");
        let err = drive.hamiltonian(&[0.0, 11.0]).expect_err("too large");
        assert!(err.to_string().contains("global_workspace[1]"), "{err}");
        let err = drive.hamiltonian(&[0.1; 61]).expect_err("too long");
        assert!(err.to_string().contains("61 values"), "{err}");
        assert!(drive.hamiltonian(&[f64::NAN]).is_err());
        assert!(WorkspaceDrive::new(4, 61, 0).is_err());
        assert!(drive.hamiltonian(&[10.0, -10.0]).is_ok());
    }
}
