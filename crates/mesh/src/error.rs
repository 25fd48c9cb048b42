//! The mesh's errors: each names what was wrong, so the server can map
//! it to a status (invalid → 400, not found → 404, full → 503).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MeshError {
    /// A field of the request is wrong.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No such task, pattern or topic.
    #[error("{what}")]
    NotFound { what: String },
    /// The topic's queue is at capacity; nothing was written.
    #[error(
        "the queue of topic {topic} is full ({capacity} tasks); retry after {retry_after_s} s"
    )]
    Full {
        topic: String,
        capacity: usize,
        retry_after_s: u64,
    },
    /// The operation cannot run in the current state (e.g. learning off).
    #[error("{0}")]
    Conflict(String),
    #[error("policy: {0}")]
    Policy(#[from] capsule_policy::PolicyError),
    #[error("store: {0}")]
    Store(#[from] capsule_store::StoreError),
    #[error("ledger: {0}")]
    Ledger(#[from] capsule_ledger::LedgerError),
    #[error("task database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("embedding: {0}")]
    Model(#[from] capsule_models::ModelError),
}

impl MeshError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MeshError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MeshError>;
