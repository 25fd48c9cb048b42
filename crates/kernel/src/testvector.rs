//! Reads the kernel test-vector files (`tests/vectors/*.json`, format in
//! `tests/vectors/README.md`) and recomputes each with this kernel.

use crate::channel::KrausChannel;
use crate::density::DensityMatrix;
use crate::error::{KernelError, Result};
use crate::linalg::{self, c64};
use crate::lindblad::Lindbladian;
use faer::Mat;
use serde::Deserialize;
use serde_json::Value;

/// Relative accuracy the Lindblad vectors are recomputed to.
const LINDBLAD_TOL: f64 = 1e-14;

/// The outcome of checking one vector file.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorReport {
    /// The file's `kind`.
    pub kind: String,
    /// Largest absolute difference from the expected values.
    pub max_error: f64,
    /// The file's tolerance.
    pub tolerance: f64,
}

impl VectorReport {
    /// The error is within the tolerance.
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

#[derive(Deserialize)]
struct ComplexMatrix {
    re: Vec<Vec<f64>>,
    im: Vec<Vec<f64>>,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name)
        .ok_or_else(|| KernelError::param(name, "is missing"))
}

fn number(v: &Value, name: &str) -> Result<f64> {
    field(v, name)?
        .as_f64()
        .ok_or_else(|| KernelError::param(name, "is not a number"))
}

/// Parses one {re, im} matrix value; `name` labels it in errors.
fn parse_matrix(value: &Value, name: &str) -> Result<Mat<c64>> {
    let m = ComplexMatrix::deserialize(value)
        .map_err(|e| KernelError::param(name, format!("is not a {{re, im}} matrix: {e}")))?;
    let n = m.re.len();
    let square = |rows: &Vec<Vec<f64>>| rows.len() == n && rows.iter().all(|r| r.len() == n);
    if n == 0 || !square(&m.re) || !square(&m.im) {
        return Err(KernelError::param(
            name,
            "re and im must be square matrices of the same size",
        ));
    }
    Ok(Mat::from_fn(n, n, |i, j| c64::new(m.re[i][j], m.im[i][j])))
}

fn matrix(v: &Value, name: &str) -> Result<Mat<c64>> {
    parse_matrix(field(v, name)?, name)
}

fn matrices(v: &Value, name: &str) -> Result<Vec<Mat<c64>>> {
    field(v, name)?
        .as_array()
        .ok_or_else(|| KernelError::param(name, "is not a list"))?
        .iter()
        .enumerate()
        .map(|(i, m)| parse_matrix(m, &format!("{name}[{i}]")))
        .collect()
}

fn state(v: &Value) -> Result<DensityMatrix> {
    DensityMatrix::new(matrix(v, "rho")?).map_err(|e| KernelError::param("rho", e.to_string()))
}

fn compare(got: &DensityMatrix, v: &Value) -> Result<f64> {
    let want = matrix(v, "expected_rho")?;
    if want.nrows() != got.dim() {
        return Err(KernelError::param(
            "expected_rho",
            "has a different size from rho",
        ));
    }
    Ok(linalg::max_abs_diff(got.matrix(), want.as_ref()))
}

/// Recomputes one test-vector document.
pub fn check_vector(text: &str) -> Result<VectorReport> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| KernelError::param("file", format!("is not JSON: {e}")))?;
    let kind = field(&v, "kind")?
        .as_str()
        .ok_or_else(|| KernelError::param("kind", "is not a string"))?
        .to_string();
    let tolerance = number(&v, "tolerance")?;
    let max_error = match kind.as_str() {
        "kraus_apply" => compare(
            &KrausChannel::new(&matrices(&v, "kraus")?)?.apply(&state(&v)?)?,
            &v,
        )?,
        "amplitude_damping" => compare(
            &KrausChannel::amplitude_damping(&[number(&v, "gamma")?])?.apply(&state(&v)?)?,
            &v,
        )?,
        "dephasing" => compare(
            &KrausChannel::dephasing(2, number(&v, "p")?)?.apply(&state(&v)?)?,
            &v,
        )?,
        "lindblad_step" => {
            let l = Lindbladian::from_operators(
                matrix(&v, "hamiltonian")?,
                &matrices(&v, "jump_ops")?,
            )?;
            compare(
                &l.evolve(&state(&v)?, number(&v, "dt")?, LINDBLAD_TOL)?
                    .into_state()?,
                &v,
            )?
        }
        "observables" => {
            let obs = state(&v)?.observables()?;
            let e = (obs.entropy - number(&v, "entropy_nats")?).abs();
            e.max((obs.purity - number(&v, "purity")?).abs())
        }
        other => {
            return Err(KernelError::param(
                "kind",
                format!("\"{other}\" is not a known test-vector kind"),
            ))
        }
    };
    Ok(VectorReport {
        kind,
        max_error,
        tolerance,
    })
}
