//! Typed errors of the ledger. Every message names the file, the offset or
//! field, and the reason.

use std::path::PathBuf;
use thiserror::Error;

/// Everything the ledger can refuse or fail at.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// An input (entry field, proof, note, key, argument) is not acceptable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Bytes on disk are damaged or inconsistent. `offset` is a byte offset
    /// into `file`.
    #[error("{}: offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An operating-system call failed on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the writer lock of this ledger.
    #[error("{}: the ledger is open for writing by another process", path.display())]
    Locked { path: PathBuf },
    /// The ledger hit an I/O error earlier and refuses further appends until
    /// it is reopened (reopening recovers to the last durable entry).
    #[error("the ledger stopped after an earlier write failure: {0}; reopen it to recover")]
    Failed(String),
    /// The ledger is shutting down.
    #[error("the ledger is closed")]
    Closed,
}

impl LedgerError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        LedgerError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        LedgerError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| LedgerError::Io { path, source }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
