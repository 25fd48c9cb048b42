//! `capsule-kernel`: Capsule's state core, a simulation of an open quantum
//! system with real mathematics (SPEC section K).
//!
//! **Owns:** density matrices that can only be valid ([`DensityMatrix`]),
//! CPTP channels in Kraus form with a completeness check ([`KrausChannel`],
//! [`Depolarizing`]), the exactly trace-preserving Lindblad step and
//! evolution ([`Lindbladian`]), the workspace drive gw → H ([`WorkspaceDrive`]),
//! observables ([`Observables`]), the stateful [`Kernel`] with adaptive
//! timestep, seeded measurement, validity gate and batches, and snapshots.
//!
//! **Must never:** do I/O of any kind (network, files, clocks: time here is
//! simulated time); continue from an invalid state; correct a state silently
//! (every trace renormalisation and positivity projection is reported);
//! claim more than the mathematics does: this is a numerical simulation used
//! as a state substrate, not a mind.
//!
//! **Invariants:** a `DensityMatrix` is exactly Hermitian and, within 1e-9,
//! unit-trace and positive semi-definite; a `KrausChannel` satisfies
//! ‖Σ K†K − I‖_F ≤ 1e-10; a `Kernel` that produced an invalid state refuses
//! to step until reset; the same seed and inputs give the same states and
//! measurement outcomes bit for bit on the same build.
//!
//! Dense products use `faer`; see [`linalg`] for the three routines written by
//! hand and why.

#![forbid(unsafe_code)]

pub mod channel;
pub mod density;
pub mod drive;
pub mod error;
pub mod kernel;
pub mod linalg;
pub mod lindblad;
pub mod observables;
pub mod random;
pub mod snapshot;
pub mod testvector;
pub mod tridiagonal;

pub use channel::{Depolarizing, KrausChannel};
pub use density::{DensityMatrix, VALIDITY_TOL};
pub use drive::WorkspaceDrive;
pub use error::{KernelError, Result};
pub use kernel::{step_batch, Kernel, KernelConfig, StepInput, StepOutcome};
pub use linalg::c64;
pub use lindblad::{Dissipator, Evolved, Lindbladian};
pub use observables::Observables;
pub use snapshot::{restore, snapshot};
