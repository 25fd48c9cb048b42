//! The data directory and what lives in it.
//!
//! ```text
//! DATA/ledger/          the audit ledger
//! DATA/policy/          *.cedar policy files and policy.json (defaults when absent)
//! DATA/state/           kill-switch state and its trigger file KILL
//! DATA/approvals.db     the approval queue
//! ```

use anyhow::{bail, Context, Result};
use capsule_ledger::{Ledger, LedgerConfig, LedgerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Open `DATA/ledger` as its writer, creating it; `None` when a running
/// service holds it.
pub fn try_open_ledger(data: &Path) -> Result<Option<Arc<Ledger>>> {
    let dir = ledger(data);
    match Ledger::open_or_create(
        &dir,
        &crate::audit_cmd::new_origin(),
        LedgerConfig::default(),
    ) {
        Ok(l) => Ok(Some(Arc::new(l))),
        Err(LedgerError::Locked { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening the ledger in {}", dir.display())),
    }
}

/// [`try_open_ledger`], where a ledger held by a running service is an
/// error that says to go through the service.
pub fn open_ledger(data: &Path) -> Result<Arc<Ledger>> {
    match try_open_ledger(data)? {
        Some(l) => Ok(l),
        None => bail!(
            "a running service holds the ledger in {}; use its API",
            ledger(data).display()
        ),
    }
}
