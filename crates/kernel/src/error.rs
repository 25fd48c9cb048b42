//! Typed errors of the kernel. Every message names the input and the reason.

use thiserror::Error;

/// Everything the kernel can refuse.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    /// A matrix or vector has the wrong shape.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    /// A density matrix candidate fails one of the validity checks.
    #[error("invalid density matrix: {reason}")]
    InvalidState { reason: String },
    /// A Kraus set does not satisfy Σ K†K = I within tolerance.
    #[error(
        "Kraus set is not trace preserving: ‖Σ K†K − I‖ = {deviation:.3e} exceeds {tolerance:.1e}"
    )]
    IncompleteKraus { deviation: f64, tolerance: f64 },
    /// A matrix that must be unitary is not.
    #[error("matrix is not unitary: ‖U†U − I‖ = {deviation:.3e} exceeds {tolerance:.1e}")]
    NotUnitary { deviation: f64, tolerance: f64 },
    /// A parameter is out of its allowed range.
    #[error("{field}: {reason}")]
    Parameter { field: String, reason: String },
    /// The kernel reached an invalid state earlier and refuses to step until reset.
    #[error(
        "kernel halted at step {step} after an invalid state ({reason}); reset it to continue"
    )]
    Halted { step: u64, reason: String },
    /// An eigenvalue computation did not converge.
    #[error("eigenvalue computation did not converge for a {dim}×{dim} matrix")]
    NoConvergence { dim: usize },
    /// A snapshot could not be restored.
    #[error("snapshot rejected: {reason}")]
    Snapshot { reason: String },
}

impl KernelError {
    pub(crate) fn param(field: impl Into<String>, reason: impl Into<String>) -> Self {
        KernelError::Parameter {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for the kernel.
pub type Result<T> = std::result::Result<T, KernelError>;
