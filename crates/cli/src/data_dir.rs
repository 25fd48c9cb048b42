//! The data directory and what lives in it.
//!
//! ```text
//! DATA/ledger/          the audit ledger
//! DATA/policy/          *.cedar policy files and policy.json (defaults when absent)
//! DATA/state/           kill-switch state and its trigger file KILL
//! DATA/approvals.db     the approval queue
//! ```

use std::path::{Path, PathBuf};

/// `--data`, else `$CAPSULE_DATA`, else `./capsule-data`.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CAPSULE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("capsule-data"))
}

pub fn ledger(data: &Path) -> PathBuf {
    data.join("ledger")
}

pub fn policy(data: &Path) -> PathBuf {
    data.join("policy")
}

pub fn state(data: &Path) -> PathBuf {
    data.join("state")
}

pub fn approvals(data: &Path) -> PathBuf {
    data.join("approvals.db")
}
