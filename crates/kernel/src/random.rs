//! Random states and channels for tests and benchmarks, from a caller's RNG.

use crate::channel::KrausChannel;
use crate::density::DensityMatrix;
use crate::error::Result;
use crate::linalg::{self, c64, standard_normal};
use faer::Mat;

fn gaussian(rows: usize, cols: usize, rng: &mut impl rand::Rng) -> Mat<c64> {
    Mat::from_fn(rows, cols, |_, _| {
        let re = standard_normal(rng);
        c64::new(re, standard_normal(rng))
    })
}

/// A random density matrix of rank `rank` (≤ d): A A† / Tr(A A†) with A a
/// d×rank complex Gaussian matrix (the induced measure of Życzkowski–Sommers).
pub fn density_matrix(d: usize, rank: usize, rng: &mut impl rand::Rng) -> Result<DensityMatrix> {
    let a = gaussian(d, rank.clamp(1, d), rng);
    let m = &a * a.adjoint();
    let tr = linalg::trace(m.as_ref()).re;
    DensityMatrix::new(m * faer::Scale(c64::new(1.0 / tr, 0.0)))
}

/// A random CPTP map with `k` Kraus operators: the d×d blocks of the
/// isometry Q from the QR factorisation of a (k·d)×d Gaussian matrix.
pub fn kraus_channel(d: usize, k: usize, rng: &mut impl rand::Rng) -> Result<KrausChannel> {
    let q = gaussian(k * d, d, rng).qr().compute_thin_Q();
    let ops: Vec<Mat<c64>> = (0..k).map(|i| q.subrows(i * d, d).to_owned()).collect();
    KrausChannel::new(&ops)
}
