//! `capsule-ledger`: Capsule's tamper-evident audit log (SPEC section L).
//!
//! **Owns:** the canonical encoding of audit entries ([`entry`]), RFC 6962 /
//! RFC 9162 Merkle hashing, proofs and their verification ([`merkle`]), C2SP
//! signed-note checkpoints and verifier keys ([`note`]), versioned Ed25519
//! key files and rotation ([`keys`]), the on-disk layout ([`layout`]), the
//! durable group-commit writer with crash recovery ([`Ledger`]), read-only
//! access and proofs ([`LogReader`]), full verification ([`verify()`]), and
//! the line between the acknowledged prefix and a crashed writer's
//! unacknowledged tail ([`tail`]), which verify reports and recovery settles.
//!
//! **Must never:** rewrite or reorder a byte it has acknowledged; acknowledge
//! an append before its record, tree nodes and index slot are fsynced;
//! repair damage to acknowledged data silently (recovery cuts only a torn,
//! unacknowledged tail and refuses everything else, naming file and
//! offset); do network I/O or know about HTTP; log or print private keys.
//!
//! **Invariants:** entry `seq` is leaf `seq` of the tree; `nodes` holds
//! exactly the complete-subtree hashes of the acknowledged entries in
//! post-order; every checkpoint of size s is signed by the key in force for
//! s (the first key, then each key named by a rotation entry with seq < s)
//! and its root equals the tree's root at s. The acknowledged prefix is the
//! entries whose nodes and index slots are both stored; damage inside it is
//! never forgiven, by verify or by recovery.
//!
//! The Merkle hashing and proofs are written here rather than taken from a
//! crate: they are small, they must run over nodes stored on disk (the
//! crates on offer build proofs from in-memory trees), and the tests
//! cross-check them against `ct-merkle` and the RFC 6962 test vectors.

#![forbid(unsafe_code)]

pub mod checkpoints;
pub mod entry;
pub mod error;
pub mod keys;
pub mod layout;
mod ledger;
pub mod merkle;
pub mod note;
pub mod reader;
mod scan;
pub mod tail;
mod verify;

pub use entry::{AuditEntry, Record};
pub use error::{LedgerError, Result};
pub use ledger::{Ledger, LedgerConfig, PendingAppend, Receipt, Recovery};
pub use merkle::Hash;
pub use note::{Checkpoint, NoteSigner, VerifierKey};
pub use reader::{InclusionProof, LogReader};
pub use tail::{Tail, TailCut, TailSpan};
pub use verify::{verify, VerifyReport};
