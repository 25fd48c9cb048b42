//! `capsule store …`: put, get, stat, verify, quarantine list, keyring add.

use anyhow::{bail, Context, Result};
use capsule_policy::approvals::ApprovalQueue;
use capsule_policy::killswitch::KillSwitch;
use capsule_policy::PolicyEngine;
use capsule_server::data as data_dir;
use capsule_store::{DeleteAuthority, FileKeyring, HeldApproval, Kind, ObjectId, Store};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct StoreArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Store a file; prints its ID.
    Put {
        file: PathBuf,
        #[arg(long, default_value = "blob")]
        ns: String,
        /// blob, spec, artifact, composite or merged_result (the last four must be JSON).
        #[arg(long, default_value = "blob")]
        kind: String,
    },
    /// Write an object's verified bytes to stdout or a file.
    Get {
        id: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Show what the index knows of an object.
    Stat { id: String },
    /// Read and verify one object, or all (failures are quarantined).
    Verify {
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete an object, on a decision the policy engine recorded for object.delete on
    /// object:ID (see `capsule policy eval --record`); it is re-decided first.
    Delete {
        id: String,
        /// The decision's ledger sequence number.
        #[arg(long)]
        decision: u64,
        /// For a decision that waits for approval: the approved approval (`capsule approvals list --all`).
        #[arg(long)]
        approval: Option<i64>,
    },
    /// Quarantined cubes.
    Quarantine {
        #[arg(value_parser = ["list"])]
        action: String,
        #[arg(long)]
        json: bool,
    },
    /// Encrypt a namespace at rest from now on (adds a key to the keyring).
    Encrypt { ns: String },
}

/// The keyring of a data directory, created (no encrypted namespaces) on first use.
fn keyring(data: &Path) -> Result<FileKeyring> {
    let path = data.join("keyring.json");
    if path.exists() {
        Ok(FileKeyring::open(&path)?)
    } else {
        std::fs::create_dir_all(data)?;
        Ok(FileKeyring::create(&path, &[])?)
    }
}

fn open_store(data: &Path) -> Result<Store> {
    let ledger = data_dir::open_ledger(data)?;
    Ok(Store::open(
        &data.join("store"),
        Arc::new(keyring(data)?),
        ledger,
    )?)
}

/// Delete `id` on the decision at ledger entry `decision_seq`, re-decided by
/// the data directory's policy engine (its rules, settings and kill switch).
fn delete(data: &Path, id: &ObjectId, decision_seq: u64, approval: Option<i64>) -> Result<()> {
    let ledger = data_dir::open_ledger(data)?;
    let store = Store::open(
        &data_dir::store(data),
        Arc::new(keyring(data)?),
        ledger.clone(),
    )?;
    let (rules, config) = data_dir::load_policy(data)?;
    let kill = KillSwitch::open(&data_dir::state(data), ledger.clone())?;
    let engine = PolicyEngine::new(rules, config, kill, ledger.clone())?;
    let mut queue = match approval {
        Some(_) => Some(ApprovalQueue::open(&data_dir::approvals(data))?),
        None => None,
    };
    let held = queue
        .as_mut()
        .zip(approval)
        .map(|(queue, id)| HeldApproval { queue, id });
    store.delete(
        id,
        DeleteAuthority {
            engine: &engine,
            decision_seq,
            approval: held,
        },
    )?;
    ledger.close()?;
    Ok(())
}

pub fn run(args: StoreArgs) -> Result<ExitCode> {
    let data = data_dir::data_dir(args.data.as_deref());
    let store = || open_store(&data);
    match args.command {
        StoreCommand::Encrypt { ns } => {
            keyring(&data)?.add_encrypted_namespace(&ns)?;
            println!("namespace {ns} is encrypted at rest from now on");
        }
        StoreCommand::Put { file, ns, kind } => {
            let store = store()?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let kind = Kind::parse(&kind)?;
            let id = if kind == Kind::Blob {
                store.put(&ns, kind, &bytes)?
            } else {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).context("a typed artifact must be JSON")?;
                store.put_json(&ns, kind, &value)?
            };
            println!("{id}");
        }
        StoreCommand::Get { id, output } => {
            let bytes = store()?.get(&id.parse::<ObjectId>()?)?;
            match output {
                Some(path) => std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        StoreCommand::Stat { id } => println!(
            "{}",
            serde_json::to_string_pretty(&store()?.stat(&id.parse()?)?)?
        ),
        StoreCommand::Verify { id, all } => {
            let store = store()?;
            if all {
                let (ok, failed) = store.verify_all()?;
                println!("{ok} objects verified, {} quarantined now", failed.len());
                for f in &failed {
                    println!("  quarantined: {f}");
                }
                return Ok(if failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let Some(id) = id else {
                bail!("give an ID or --all")
            };
            match store.get(&id.parse()?) {
                Ok(bytes) => println!("ok: {id} ({} bytes)", bytes.len()),
                Err(e) => {
                    println!("FAILED: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        StoreCommand::Delete {
            id,
            decision,
            approval,
        } => {
            let id: ObjectId = id.parse()?;
            delete(&data, &id, decision, approval)?;
            println!("deleted {id}");
        }
        StoreCommand::Quarantine { json, .. } => {
            for q in store()?.quarantined()? {
                if json {
                    println!("{}", serde_json::to_string(&q)?);
                } else {
                    println!("{} cube {}: {} ({})", q.object, q.cube, q.reason, q.path);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
