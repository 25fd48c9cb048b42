//! The data directory: what lives where, `capsule init`, and opening its
//! parts.
//!
//! ```text
//! DATA/capsule.toml      configuration (SPEC O5)
//! DATA/ledger/           the audit ledger and its signing keys
//! DATA/policy/           *.cedar policy files and policy.json (defaults when absent)
//! DATA/state/            kill-switch state and its trigger file KILL
//! DATA/approvals.db      the approval queue
//! DATA/store/            content-addressed objects; DATA/keyring.json their keys
//! DATA/memory/events.db  episodic memory (path set by memory.events)
//! DATA/auth/tokens.json  bearer tokens, hashed (path set by auth.tokens)
//! DATA/keys/             operator.pem and approver.pem made by init (0600)
//! ```
//!
//! The model files are not here: they live once per user (see
//! `Config::models_dir`), unless `memory.models` says otherwise.

use crate::auth::{Role, TokenFile};
use crate::config::TEMPLATE;
use anyhow::{bail, Context, Result};
use capsule_ledger::keys::create_key_file;
use capsule_ledger::layout::Layout;
use capsule_ledger::{Ledger, LedgerConfig, LedgerError, NoteSigner};
use capsule_policy::engine::CONFIG_FILE;
use capsule_policy::rules::{DEFAULT_FILE, DEFAULT_POLICIES};
use capsule_policy::{PolicyConfig, RuleSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--data`, else `$CAPSULE_DATA`, else `./capsule-data`.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CAPSULE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("capsule-data"))
}

pub fn config(data: &Path) -> PathBuf {
    data.join("capsule.toml")
}

/// Refuse a directory `capsule init` has not made, saying how to make it.
pub fn require_initialised(data: &Path) -> Result<()> {
    if !config(data).exists() {
        bail!(
            "{} is not a data directory (no capsule.toml); run `capsule init {}` first",
            data.display(),
            data.display()
        );
    }
    Ok(())
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

/// The task mesh's tasks and patterns.
pub fn mesh(data: &Path) -> PathBuf {
    data.join("mesh.db")
}

pub fn store(data: &Path) -> PathBuf {
    data.join("store")
}

pub fn keyring(data: &Path) -> PathBuf {
    data.join("keyring.json")
}

pub fn keys(data: &Path) -> PathBuf {
    data.join("keys")
}

/// A fresh ledger origin line: `capsule.local/audit/<16 random hex>`. A
/// failing system random source is an error, never a fixed origin (two
/// logs must not share one).
pub fn new_origin() -> Result<String> {
    new_origin_with(getrandom::fill)
}

/// [`new_origin`] with the random bytes from `fill` (tests inject a failing
/// source).
pub fn new_origin_with(fill: fn(&mut [u8]) -> Result<(), getrandom::Error>) -> Result<String> {
    let mut b = [0u8; 8];
    fill(&mut b).map_err(|e| {
        anyhow::anyhow!("cannot make a ledger origin: the system random source failed ({e})")
    })?;
    Ok(format!("capsule.local/audit/{}", hex::encode(b)))
}

/// Open `DATA/ledger` as its writer, creating it; `None` when a running
/// service holds it.
pub fn try_open_ledger(data: &Path) -> Result<Option<Arc<Ledger>>> {
    try_open_ledger_with(data, LedgerConfig::default())
}

/// [`try_open_ledger`] with `ledger_config`. In an initialised data
/// directory (one with `capsule.toml`) the ledger must already exist: a
/// missing or empty one is refused, naming its path, rather than replaced
/// by an empty log that would hide the loss. Elsewhere it is created.
pub fn try_open_ledger_with(
    data: &Path,
    ledger_config: LedgerConfig,
) -> Result<Option<Arc<Ledger>>> {
    let dir = ledger(data);
    let opened = if config(data).exists() {
        if !Layout::new(&dir).meta().exists() {
            bail!(
                "{}: the ledger of this initialised data directory is missing (no ledger.json); \
                 refusing to start an empty one in its place: restore it from a backup",
                dir.display()
            );
        }
        Ledger::open(&dir, ledger_config)
    } else {
        Ledger::open_or_create(&dir, &new_origin()?, ledger_config)
    };
    match opened {
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

fn has_policy_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cedar")))
        })
        .unwrap_or(false)
}

/// The active rules and settings of a data directory.
pub fn load_policy(data: &Path) -> Result<(RuleSet, PolicyConfig)> {
    let dir = policy(data);
    let rules = if has_policy_files(&dir) {
        RuleSet::load_dir(&dir)?
    } else {
        RuleSet::defaults()
    };
    let config = PolicyConfig::load(&dir)?;
    Ok((rules, config))
}

/// What `capsule init` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Initialized {
    pub data_dir: PathBuf,
    /// The operator's bearer token; stored only as a hash, shown once.
    pub operator_token: String,
    pub operator_key: PathBuf,
    pub approver_key: PathBuf,
}

/// Create a data directory: config, ledger (and its signing key), default
/// policies with an operator and an approver key registered, the operator
/// token. Refuses a directory that already has a `capsule.toml`.
pub fn init(data: &Path) -> Result<Initialized> {
    init_with(data, getrandom::fill)
}

/// [`init`] with the ledger origin's random bytes from `fill`; a failing
/// source stops it before anything is written.
pub fn init_with(
    data: &Path,
    fill: fn(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<Initialized> {
    if config(data).exists() {
        bail!(
            "{} already exists; this data directory is initialised",
            config(data).display()
        );
    }
    let origin = new_origin_with(fill)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let keys_dir = keys(data);
    std::fs::create_dir_all(&keys_dir)?;
    let key = |name: &str| -> Result<(PathBuf, String)> {
        let private = keys_dir.join(format!("{name}.pem"));
        let public = keys_dir.join(format!("{name}.pub"));
        let signer = create_key_file(&private, &public, name)
            .with_context(|| format!("creating {}", private.display()))?;
        Ok((private, signer.verifier().to_string()))
    };
    let (operator_key, operator_vkey) = key("operator")?;
    let (approver_key, approver_vkey) = key("approver")?;

    let policy_dir = policy(data);
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(policy_dir.join(DEFAULT_FILE), DEFAULT_POLICIES)?;
    let policy_config = PolicyConfig {
        operators: vec![operator_vkey],
        approvers: vec![approver_vkey],
        ..PolicyConfig::default()
    };
    policy_config.validate()?;
    std::fs::write(
        policy_dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(&policy_config)? + "\n",
    )?;

    let ledger = Ledger::create(&ledger(data), &origin, LedgerConfig::default())?;
    let mut record = capsule_ledger::Record::new("cli:init", "capsule.init", "ok");
    record.subject = data.display().to_string();
    record.reason = "data directory created".into();
    ledger.append(record)?;
    ledger.close()?;

    let defaults = crate::config::Config::default();
    let tokens_path = data.join(&defaults.auth.tokens);
    let mut tokens = TokenFile::default();
    let operator_token = tokens.add("operator", Role::Operator)?;
    tokens.save(&tokens_path)?;

    // Written last: its presence means the directory is complete.
    std::fs::write(config(data), TEMPLATE)?;
    Ok(Initialized {
        data_dir: data.to_path_buf(),
        operator_token,
        operator_key,
        approver_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(_: &mut [u8]) -> Result<(), getrandom::Error> {
        Err(getrandom::Error::UNSUPPORTED)
    }

    #[test]
    fn a_failing_random_source_gives_no_origin() {
        let err = new_origin_with(failing).unwrap_err().to_string();
        assert!(err.contains("random source failed"), "{err}");
        let origin = new_origin_with(getrandom::fill).unwrap();
        assert!(origin.starts_with("capsule.local/audit/"), "{origin}");
        assert_ne!(origin, "capsule.local/audit/0000000000000000");
    }

    #[test]
    fn init_with_a_failing_random_source_fails_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let err = init_with(&data, failing).unwrap_err().to_string();
        assert!(err.contains("random source failed"), "{err}");
        assert!(!data.exists(), "init left {} behind", data.display());
        init_with(&data, getrandom::fill).unwrap();
        assert!(config(&data).exists());
    }
}
