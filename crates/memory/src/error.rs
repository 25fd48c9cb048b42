//! Typed errors of the memory stores. Every message names the input (the
//! database or index file, the field or the event id) and the reason.

use std::path::Path;
use thiserror::Error;

/// Everything the event store and the vector index can refuse or fail at.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// An event, query or argument is not acceptable; nothing was written.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No event with this id is stored.
    #[error("event {id}: no such event")]
    NotFound { id: i64 },
    /// The database holds a schema version this build does not know.
    #[error(
        "{path}: schema version {found:?} is not the supported version {expected} \
         (the file was written by another Capsule version; open it with that version \
         or use a new file)"
    )]
    Schema {
        path: String,
        found: String,
        expected: u32,
    },
    /// A stored row cannot be read back as an event.
    #[error("{path}: event {id}: stored row is unreadable: {reason}")]
    Corrupt {
        path: String,
        id: i64,
        reason: String,
    },
    /// SQLite failed while doing `operation` on the database at `path`.
    #[error("{path}: {operation}: {source}")]
    Sqlite {
        path: String,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation on `path` failed.
    #[error("{path}: {operation}: {source}")]
    Io {
        path: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The HNSW library (usearch) refused `operation` on the index at `path`.
    #[error("{path}: vector index: {operation}: {reason}")]
    Index {
        path: String,
        operation: &'static str,
        reason: String,
    },
}

impl MemoryError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MemoryError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Wrap a SQLite error with the database path and the operation.
    pub(crate) fn sqlite<'a>(
        path: &'a Path,
        operation: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> Self + 'a {
        move |source| MemoryError::Sqlite {
            path: path.display().to_string(),
            operation,
            source,
        }
    }

    /// Wrap an I/O error with the file path and the operation.
    pub(crate) fn io<'a>(
        path: &'a Path,
        operation: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| MemoryError::Io {
            path: path.display().to_string(),
            operation,
            source,
        }
    }

    /// Wrap a usearch error with the index path and the operation.
    pub(crate) fn index<'a, E: std::fmt::Display>(
        path: &'a Path,
        operation: &'static str,
    ) -> impl FnOnce(E) -> Self + 'a {
        move |reason| MemoryError::Index {
            path: path.display().to_string(),
            operation,
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;
