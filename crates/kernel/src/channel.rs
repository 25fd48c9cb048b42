//! CPTP channels (SPEC K1): validated Kraus sets and the built-in channels.
//!
//! ρ' = Σ_i K_i ρ K_i† (Nielsen & Chuang §8.2.3). The Kraus operators are
//! stored stacked, so one application is two matrix products: X = K·ρ with
//! K the (k·d)×d stack, then the lower triangle of Σ_i X_i K_i† as a single
//! d×(k·d) by (k·d)×d product (the result is Hermitian, so only half of it is
//! computed). That is 1.5·k·d³ complex multiply-adds instead of 2·k·d³
//! ([`linalg::Sandwich`], shared with the Lindblad jump terms).

use crate::density::DensityMatrix;
use crate::error::{KernelError, Result};
use crate::linalg::{self, c64, ONE, ZERO};
use faer::Mat;

/// Completeness tolerance ‖Σ K†K − I‖ (SPEC K1).
pub const COMPLETENESS_TOL: f64 = 1e-10;
/// Most Kraus operators one channel may hold (a d-level channel never needs
/// more than d²; this bounds memory for hostile input).
pub const MAX_KRAUS_OPERATORS: usize = 4096;

/// A completely positive, trace-preserving map in Kraus form. Exists only
/// when its Kraus set is complete within [`COMPLETENESS_TOL`].
#[derive(Clone, Debug)]
pub struct KrausChannel {
    dim: usize,
    ops: linalg::Sandwich,
    completeness_error: f64,
}

impl KrausChannel {
    /// Validates shapes, finiteness and completeness of `ops`.
    pub fn new(ops: &[Mat<c64>]) -> Result<Self> {
        let first = ops
            .first()
            .ok_or_else(|| KernelError::param("kraus", "at least one operator is required"))?;
        if ops.len() > MAX_KRAUS_OPERATORS {
            return Err(KernelError::param(
                "kraus",
                format!(
                    "{} operators exceed the limit of {MAX_KRAUS_OPERATORS}",
                    ops.len()
                ),
            ));
        }
        let d = first.nrows();
        for (i, k) in ops.iter().enumerate() {
            crate::density::check_operator(k, d, &format!("kraus[{i}]"))?;
        }
        let sandwich = linalg::Sandwich::new(ops);
        let deviation = linalg::gram_deviation(sandwich.stack());
        if deviation > COMPLETENESS_TOL || deviation.is_nan() {
            return Err(KernelError::IncompleteKraus {
                deviation,
                tolerance: COMPLETENESS_TOL,
            });
        }
        Ok(KrausChannel {
            dim: d,
            ops: sandwich,
            completeness_error: deviation,
        })
    }

    /// A unitary channel ρ → UρU†; `u` must be unitary within the completeness tolerance.
    pub fn unitary(u: Mat<c64>) -> Result<Self> {
        KrausChannel::new(std::slice::from_ref(&u)).map_err(|e| match e {
            KernelError::IncompleteKraus {
                deviation,
                tolerance,
            } => KernelError::NotUnitary {
                deviation,
                tolerance,
            },
            other => other,
        })
    }

    /// Phase flip ρ → (1−p)ρ + p ZρZ† with Z = diag(e^{2πij/d}), the
    /// generalised Pauli Z (the Pauli Z itself for d = 2).
    pub fn dephasing(d: usize, p: f64) -> Result<Self> {
        check_probability("p", p)?;
        let k0 = Mat::from_fn(d, d, |i, j| {
            if i == j {
                c64::new((1.0 - p).sqrt(), 0.0)
            } else {
                ZERO
            }
        });
        let k1 = Mat::from_fn(d, d, |i, j| {
            if i == j {
                c64::from_polar(p.sqrt(), std::f64::consts::TAU * i as f64 / d as f64)
            } else {
                ZERO
            }
        });
        KrausChannel::new(&[k0, k1])
    }

    /// Amplitude damping per basis level: level j decays to j−1 with
    /// probability `gammas[j−1]` (len d−1). K0 = diag(1, √(1−γ_1), …),
    /// K1 = Σ_j √γ_j |j−1⟩⟨j|; for d = 2 the textbook qubit channel.
    pub fn amplitude_damping(gammas: &[f64]) -> Result<Self> {
        let d = gammas.len() + 1;
        for (j, &g) in gammas.iter().enumerate() {
            check_probability(&format!("gamma[{j}]"), g)?;
        }
        let k0 = Mat::from_fn(d, d, |i, j| match (i, j) {
            (0, 0) => ONE,
            (i, j) if i == j => c64::new((1.0 - gammas[i - 1]).sqrt(), 0.0),
            _ => ZERO,
        });
        let k1 = Mat::from_fn(d, d, |i, j| {
            if j >= 1 && i + 1 == j {
                c64::new(gammas[j - 1].sqrt(), 0.0)
            } else {
                ZERO
            }
        });
        KrausChannel::new(&[k0, k1])
    }

    /// Dimension d of the states the channel acts on.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of Kraus operators.
    pub fn count(&self) -> usize {
        self.ops.count()
    }

    /// ‖Σ K†K − I‖_F measured at construction.
    pub fn completeness_error(&self) -> f64 {
        self.completeness_error
    }

    /// Operator `i` (a copy).
    pub fn operator(&self, i: usize) -> Mat<c64> {
        self.ops.block(i)
    }

    /// ρ' = Σ K_i ρ K_i†.
    pub fn apply(&self, rho: &DensityMatrix) -> Result<DensityMatrix> {
        self.check_dim(rho.dim())?;
        let out = linalg::on_pool(self.dim, || {
            let mut out = Mat::<c64>::zeros(self.dim, self.dim);
            self.ops
                .apply_lower(rho.matrix(), out.as_mut(), &mut self.ops.scratch());
            out
        });
        Ok(DensityMatrix::from_cptp_output(out))
    }

    fn check_dim(&self, d: usize) -> Result<()> {
        if d != self.dim {
            return Err(KernelError::Shape {
                what: "state for channel",
                expected: format!("{0}×{0}", self.dim),
                got: format!("{d}×{d}"),
            });
        }
        Ok(())
    }
}

/// Depolarizing channel ρ → (1−p)ρ + p·I/d, applied in closed form (its
/// Kraus form needs d² Weyl operators; the closed form is O(d²)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Depolarizing {
    p: f64,
}

impl Depolarizing {
    /// `p` ∈ [0, 1].
    pub fn new(p: f64) -> Result<Self> {
        check_probability("p", p)?;
        Ok(Depolarizing { p })
    }

    /// ρ' = (1−p)ρ + p·I/d.
    pub fn apply(&self, rho: &DensityMatrix) -> DensityMatrix {
        let d = rho.dim();
        let m = rho.matrix();
        let out = Mat::from_fn(d, d, |i, j| {
            let v = m[(i, j)] * (1.0 - self.p);
            if i == j {
                v + c64::new(self.p / d as f64, 0.0)
            } else {
                v
            }
        });
        DensityMatrix::from_cptp_output(out)
    }
}

fn check_probability(field: &str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(KernelError::param(
            field,
            format!("{p} is not a probability in [0, 1]"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_kraus_set_is_rejected_naming_the_deviation() {
        let k = Mat::from_fn(2, 2, |i, j| if i == j { c64::new(0.9, 0.0) } else { ZERO });
        let err = KrausChannel::new(&[k]).expect_err("incomplete");
        let msg = err.to_string();
        assert!(
            matches!(err, KernelError::IncompleteKraus { deviation, .. } if (deviation - (2.0f64).sqrt() * 0.19).abs() < 1e-12),
            "{msg}"
        );
        assert!(msg.contains("2.687e-1"), "{msg}");
    }

    #[test]
    fn kraus_operators_of_different_shapes_are_rejected() {
        let a = Mat::<c64>::identity(2, 2);
        let b = Mat::<c64>::identity(3, 3);
        assert!(matches!(
            KrausChannel::new(&[a, b]),
            Err(KernelError::Shape { .. })
        ));
        assert!(KrausChannel::new(&[]).is_err());
    }

    #[test]
    fn non_unitary_matrix_is_not_a_unitary_channel() {
        let u = Mat::from_fn(2, 2, |_, _| c64::new(0.5, 0.0));
        assert!(matches!(
            KrausChannel::unitary(u),
            Err(KernelError::NotUnitary { .. })
        ));
    }

    #[test]
    fn depolarizing_closed_form_matches_weyl_kraus_form() {
        let d = 3;
        let p = 0.3;
        let omega = |k: usize| c64::from_polar(1.0, std::f64::consts::TAU * k as f64 / d as f64);
        let mut ops = Vec::new();
        for a in 0..d {
            for b in 0..d {
                // X^a Z^b, scaled so that Σ K†K = I.
                let w = if a == 0 && b == 0 {
                    (1.0 - p + p / (d * d) as f64).sqrt()
                } else {
                    (p / (d * d) as f64).sqrt()
                };
                ops.push(Mat::from_fn(d, d, |i, j| {
                    if i == (j + a) % d {
                        omega(j * b) * w
                    } else {
                        ZERO
                    }
                }));
            }
        }
        let kraus = KrausChannel::new(&ops).expect("complete");
        let psi = [c64::new(0.3, 0.1), c64::new(-0.5, 0.2), c64::new(0.1, 0.7)];
        let rho = DensityMatrix::pure(&psi).expect("valid");
        let a = kraus.apply(&rho).expect("same dim");
        let b = Depolarizing::new(p).expect("p").apply(&rho);
        assert!(linalg::max_abs_diff(a.matrix(), b.matrix()) < 1e-14);
    }

    #[test]
    fn channel_refuses_state_of_other_dimension() {
        let ch = KrausChannel::dephasing(4, 0.1).expect("valid");
        let rho = DensityMatrix::maximally_mixed(2).expect("valid");
        assert!(matches!(ch.apply(&rho), Err(KernelError::Shape { .. })));
        assert!(KrausChannel::dephasing(4, 1.5).is_err());
    }
}
