//! The density matrix: the kernel's state, which can only exist when valid.

use crate::error::{KernelError, Result};
use crate::linalg::{self, c64, ONE, ZERO};
use crate::observables::Observables;
use faer::{Mat, MatRef};

/// Tolerance of every validity check (SPEC K6): trace error, Hermiticity
/// error and −λ_min must each be ≤ this.
pub const VALIDITY_TOL: f64 = 1e-9;

/// Smallest and largest dimension the kernel accepts (SPEC K).
pub const MIN_DIM: usize = 2;
/// Largest dimension the kernel accepts.
pub const MAX_DIM: usize = 4096;

/// ρ ∈ C^{d×d}: Hermitian (exactly: the upper triangle mirrors the lower),
/// positive semi-definite and of unit trace within [`VALIDITY_TOL`].
///
/// Built only by validating a candidate ([`DensityMatrix::new`]), from a
/// normalised vector, or by the crate's CPTP maps, whose outputs are valid by
/// construction and are checked again by the kernel's gate after each step.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityMatrix {
    rho: Mat<c64>,
}

impl DensityMatrix {
    /// Validates `m` as a density matrix: square, dimension in range, finite,
    /// Hermitian, unit trace and PSD, each within [`VALIDITY_TOL`]. The
    /// accepted matrix is made exactly Hermitian by mirroring its lower
    /// triangle (so an exactly Hermitian input is kept bit for bit).
    pub fn new(m: Mat<c64>) -> Result<Self> {
        check_dim(m.nrows(), m.ncols())?;
        if let Some((i, j)) = first_non_finite(m.as_ref()) {
            return Err(KernelError::InvalidState {
                reason: format!("element ({i}, {j}) is not finite"),
            });
        }
        let herm = linalg::hermiticity_error(m.as_ref());
        if herm > VALIDITY_TOL {
            return Err(KernelError::InvalidState {
                reason: format!("not Hermitian: max |ρ_ij − conj ρ_ji| = {herm:.3e}"),
            });
        }
        let mut rho = m;
        linalg::fill_upper_from_lower(rho.as_mut());
        let tr = linalg::trace(rho.as_ref()).re;
        if (tr - 1.0).abs() > VALIDITY_TOL {
            return Err(KernelError::InvalidState {
                reason: format!("trace is {tr:.12}, not 1 (error {:.3e})", (tr - 1.0).abs()),
            });
        }
        let eig = linalg::eigvalsh(rho.as_ref())?;
        let min = eig.first().copied().unwrap_or(0.0);
        if min < -VALIDITY_TOL {
            return Err(KernelError::InvalidState {
                reason: format!("not positive semi-definite: smallest eigenvalue {min:.3e}"),
            });
        }
        Ok(DensityMatrix { rho })
    }

    /// The pure state |ψ⟩⟨ψ| for a non-zero vector ψ (normalised here).
    pub fn pure(psi: &[c64]) -> Result<Self> {
        check_dim(psi.len(), psi.len())?;
        let norm = psi.iter().map(|z| z.norm_sqr()).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(KernelError::param(
                "psi",
                "must be a finite, non-zero vector",
            ));
        }
        let d = psi.len();
        let rho = Mat::from_fn(d, d, |i, j| psi[i] * psi[j].conj() / (norm * norm));
        let mut rho = rho;
        linalg::hermitize(rho.as_mut());
        Ok(DensityMatrix { rho })
    }

    /// The basis state |i⟩⟨i|.
    pub fn basis(d: usize, i: usize) -> Result<Self> {
        check_dim(d, d)?;
        if i >= d {
            return Err(KernelError::param(
                "index",
                format!("{i} is not below the dimension {d}"),
            ));
        }
        let mut rho = Mat::<c64>::zeros(d, d);
        rho[(i, i)] = ONE;
        Ok(DensityMatrix { rho })
    }

    /// The maximally mixed state I/d.
    pub fn maximally_mixed(d: usize) -> Result<Self> {
        check_dim(d, d)?;
        let rho = Mat::from_fn(d, d, |i, j| {
            if i == j {
                c64::new(1.0 / d as f64, 0.0)
            } else {
                ZERO
            }
        });
        Ok(DensityMatrix { rho })
    }

    /// Wraps the output of a CPTP map of this crate. The caller guarantees
    /// validity by construction; the result is made exactly Hermitian.
    pub(crate) fn from_cptp_output(mut rho: Mat<c64>) -> Self {
        linalg::fill_upper_from_lower(rho.as_mut());
        DensityMatrix { rho }
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.rho.nrows()
    }

    /// The matrix, read-only.
    pub fn matrix(&self) -> MatRef<'_, c64> {
        self.rho.as_ref()
    }

    /// The populations ρ_ii.
    pub fn populations(&self) -> Vec<f64> {
        (0..self.dim()).map(|i| self.rho[(i, i)].re).collect()
    }

    /// All observables of SPEC K4 (one Hermitian eigenvalue computation).
    pub fn observables(&self) -> Result<Observables> {
        Observables::of(self.rho.as_ref())
    }

    /// von Neumann entropy −Tr ρ ln ρ in nats.
    pub fn entropy(&self) -> Result<f64> {
        Ok(crate::observables::entropy_of_eigenvalues(
            &linalg::eigvalsh(self.rho.as_ref())?,
        ))
    }

    /// Purity Tr ρ² = ‖ρ‖_F² for Hermitian ρ.
    pub fn purity(&self) -> f64 {
        self.rho.squared_norm_l2()
    }
}

fn check_dim(rows: usize, cols: usize) -> Result<()> {
    if rows != cols {
        return Err(KernelError::Shape {
            what: "density matrix",
            expected: "a square matrix".into(),
            got: format!("{rows}×{cols}"),
        });
    }
    if !(MIN_DIM..=MAX_DIM).contains(&rows) {
        return Err(KernelError::param(
            "dimension",
            format!("{rows} is outside {MIN_DIM}..={MAX_DIM}"),
        ));
    }
    Ok(())
}

/// Checks that an operator input is d×d and finite; `field` names it in
/// errors (`kraus[2]`, `hamiltonian`), an offending entry as `field[r][c]`.
pub(crate) fn check_operator(m: &Mat<c64>, d: usize, field: &str) -> Result<()> {
    if m.nrows() != d || m.ncols() != d {
        return Err(KernelError::Shape {
            what: "operator",
            expected: format!("{d}×{d} for {field}"),
            got: format!("{}×{}", m.nrows(), m.ncols()),
        });
    }
    match first_non_finite(m.as_ref()) {
        Some((r, c)) => Err(KernelError::param(
            format!("{field}[{r}][{c}]"),
            "is not finite",
        )),
        None => Ok(()),
    }
}

pub(crate) fn first_non_finite(m: MatRef<'_, c64>) -> Option<(usize, usize)> {
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let z = m[(i, j)];
            if !(z.re.is_finite() && z.im.is_finite()) {
                return Some((i, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_hermitian_matrix_naming_the_error() {
        let mut m = Mat::<c64>::zeros(2, 2);
        m[(0, 0)] = ONE;
        m[(0, 1)] = c64::new(0.1, 0.0);
        let err = DensityMatrix::new(m).expect_err("not Hermitian");
        assert!(err.to_string().contains("not Hermitian"), "{err}");
    }

    #[test]
    fn rejects_wrong_trace_and_negative_eigenvalue() {
        let m = Mat::from_fn(2, 2, |i, j| if i == j { c64::new(0.6, 0.0) } else { ZERO });
        assert!(DensityMatrix::new(m)
            .expect_err("trace")
            .to_string()
            .contains("trace"));
        let m = Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => c64::new(1.1, 0.0),
            (1, 1) => c64::new(-0.1, 0.0),
            _ => ZERO,
        });
        let err = DensityMatrix::new(m).expect_err("negative");
        assert!(err.to_string().contains("positive semi-definite"), "{err}");
    }

    #[test]
    fn rejects_nan_and_bad_dimensions() {
        let mut m = Mat::<c64>::zeros(2, 2);
        m[(1, 0)] = c64::new(f64::NAN, 0.0);
        assert!(DensityMatrix::new(m).is_err());
        assert!(DensityMatrix::new(Mat::<c64>::zeros(2, 3)).is_err());
        assert!(DensityMatrix::maximally_mixed(1).is_err());
        assert!(DensityMatrix::basis(4, 4).is_err());
    }

    #[test]
    fn entropy_of_pure_state_is_zero_and_of_maximally_mixed_is_ln_d() {
        for d in [2, 3, 16, 64, 200] {
            let psi: Vec<c64> = (0..d)
                .map(|i| c64::new((i as f64).sin(), (i as f64 * 0.3).cos()))
                .collect();
            let pure = DensityMatrix::pure(&psi).expect("valid");
            assert!(pure.entropy().expect("eig").abs() <= 1e-12);
            let mixed = DensityMatrix::maximally_mixed(d).expect("valid");
            assert!((mixed.entropy().expect("eig") - (d as f64).ln()).abs() <= 1e-12);
        }
    }
}
