//! Typed errors of the store. Every message names the input and the reason.

use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// An ID, namespace, argument or message is not acceptable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A cube failed verification; `offset` is a byte offset in `file`.
    #[error("{file}: offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// No object with this namespace and hash is stored.
    #[error("{0}: no such object")]
    NotFound(String),
    /// The object had a cube that failed verification; it is never served.
    #[error("{0}: quarantined ({1})")]
    Quarantined(String, String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("store index: {0}")]
    Db(#[from] rusqlite::Error),
    /// The audit ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] capsule_ledger::LedgerError),
    /// The policy engine or the approval queue refused or failed.
    #[error("policy: {0}")]
    Policy(#[from] capsule_policy::PolicyError),
}

impl StoreError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
