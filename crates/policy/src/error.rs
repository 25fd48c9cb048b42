//! Typed errors of the policy engine. Every message names the input (file
//! and line, field) and the reason.

use thiserror::Error;

/// Everything the policy engine can refuse or fail at.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A request, argument or configuration value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A policy file does not parse or does not validate against the schema.
    #[error("{file} line {line}: {reason}")]
    PolicyFile {
        file: String,
        line: usize,
        reason: String,
    },
    /// An approval operation was refused.
    #[error("approval {id}: {reason}")]
    Approval { id: i64, reason: String },
    /// A kill-switch operation was refused or its state is inconsistent.
    #[error("kill switch: {0}")]
    KillSwitch(String),
    /// The approvals database failed.
    #[error("approvals database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The audit ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] capsule_ledger::LedgerError),
}

impl PolicyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
