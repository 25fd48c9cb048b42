//! `capsule audit …`: append, verify, recover, prove, consistency, tail,
//! pubkey, checkpoint, rotate-key.

use anyhow::{bail, Context, Result};
use capsule_ledger::{
    verify, AuditEntry, Checkpoint, Ledger, LedgerConfig, LedgerError, LogReader, Record, Tail,
    TailCut, VerifierKey,
};
use capsule_policy::reserved::ReservedField;
use clap::{Args, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Args)]
pub struct AuditArgs {
    /// The ledger directory (default: $CAPSULE_DATA/ledger, else ./capsule-data/ledger).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Append an entry (creating the ledger if needed); prints its seq once durable.
    /// Refuses the actions and meta.kind values that only the policy engine, the
    /// approval queue, the kill switch and the ledger write (policy.*, approval.*,
    /// kill.*, killswitch.*, ledger.*).
    Append(AppendArgs),
    /// Recompute every hash, check every checkpoint signature and the consistency
    /// of consecutive checkpoints, over the acknowledged entries; report separately
    /// what a crashed writer left past them.
    ///
    /// Exit status: 0 intact; 3 intact, with an unacknowledged tail pending
    /// recovery (run `capsule audit recover DIR`); 1 damage (the first problem,
    /// with file and offset) or any other error.
    Verify {
        /// Ledger directory (or a data directory holding ledger/).
        dir: PathBuf,
        /// The verifier key to trust, `<name>+<id>+<key>` (default: DIR/keys/ledger-v1.pub).
        #[arg(long)]
        key: Option<String>,
        /// List every policy decision (seq, principal, action, resource, outcome).
        #[arg(long)]
        decisions: bool,
        #[arg(long)]
        json: bool,
    },
    /// Recover a ledger a writer left mid-append: keep the whole unacknowledged
    /// records (storing their nodes and index slots), cut a torn tail, and print
    /// what was done. Opening the ledger for writing does the same; damage to
    /// acknowledged entries is refused, naming file and offset, and nothing is changed.
    Recover {
        /// Ledger directory (or a data directory holding ledger/).
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the inclusion proof of entry SEQ and the checkpoint it leads to.
    Prove {
        seq: u64,
        /// Prove against the stored checkpoint of this tree size (default: the newest).
        #[arg(long)]
        size: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print the consistency proof between tree sizes M and N.
    Consistency {
        m: u64,
        n: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print the newest entries.
    Tail {
        /// How many.
        #[arg(short = 'n', default_value_t = 10)]
        count: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the key that verifies the log's checkpoints, in signed-note verifier-key format.
    Pubkey {
        /// Ledger directory (or a data directory holding ledger/).
        dir: PathBuf,
        /// Print the first key (the root of trust) instead of the one in force.
        #[arg(long)]
        first: bool,
    },
    /// Issue a checkpoint now (if entries arrived since the last) and print it.
    Checkpoint,
    /// Rotate the signing key; the rotation is itself a logged entry.
    RotateKey,
}

#[derive(Args)]
struct AppendArgs {
    #[arg(long)]
    actor: String,
    #[arg(long)]
    action: String,
    #[arg(long, default_value = "")]
    subject: String,
    #[arg(long)]
    decision: String,
    #[arg(long, default_value = "")]
    reason: String,
    /// A JSON object.
    #[arg(long, default_value = "{}")]
    meta: String,
    /// Append the entry this many times (meta.n is set to the repetition number).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Appending threads when --count > 1; their appends share group commits.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The origin line of a ledger created by this command.
    #[arg(long)]
    origin: Option<String>,
    /// One JSON object per acknowledged entry.
    #[arg(long)]
    json: bool,
}

/// The ledger directory inside the default data directory.
pub fn default_ledger_dir() -> PathBuf {
    capsule_server::data::ledger(&capsule_server::data::data_dir(None))
}

/// Accept a ledger directory or a data directory that holds `ledger/`.
fn resolve(dir: &Path) -> PathBuf {
    if !dir.join("ledger.json").exists() && dir.join("ledger/ledger.json").exists() {
        dir.join("ledger")
    } else {
        dir.to_path_buf()
    }
}

pub fn format_ts(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let dir = resolve(&args.dir.clone().unwrap_or_else(default_ledger_dir));
    match args.command {
        AuditCommand::Append(a) => append(&dir, a),
        AuditCommand::Verify {
            dir,
            key,
            decisions,
            json,
        } => verify_cmd(&resolve(&dir), key.as_deref(), decisions, json),
        AuditCommand::Recover { dir, json } => recover(&resolve(&dir), json),
        AuditCommand::Prove { seq, size, json } => prove(&dir, seq, size, json),
        AuditCommand::Consistency { m, n, json } => consistency(&dir, m, n, json),
        AuditCommand::Tail { count, json } => tail(&dir, count, json),
        AuditCommand::Pubkey { dir, first } => pubkey(&resolve(&dir), first),
        AuditCommand::Checkpoint => {
            let ledger = open_writer(&dir)?;
            print!("{}", ledger.checkpoint()?.text());
            ledger.close()?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::RotateKey => {
            let ledger = open_writer(&dir)?;
            let key = ledger.rotate_key()?;
            ledger.close()?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_writer(dir: &Path) -> Result<Ledger> {
    Ledger::open(dir, LedgerConfig::default())
        .with_context(|| format!("opening the ledger in {}", dir.display()))
}

fn append(dir: &Path, a: AppendArgs) -> Result<ExitCode> {
    let meta: serde_json::Value = serde_json::from_str(&a.meta).context("--meta is not JSON")?;
    if !meta.is_object() {
        bail!("--meta must be a JSON object");
    }
    if a.count == 0 || a.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    // Before anything is opened or created: a refused record changes nothing.
    if let Some(r) = capsule_policy::reserved::engine_only_record(&a.action, &meta) {
        let flag = match r.field {
            ReservedField::Action => "--action",
            ReservedField::MetaKind => "--meta",
        };
        bail!("{flag}: {r}, never by `capsule audit append`");
    }
    let origin = match a.origin.clone() {
        Some(origin) => origin,
        None => capsule_server::data::new_origin()?,
    };
    let ledger = Ledger::open_or_create(dir, &origin, LedgerConfig::default())
        .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let rec = ledger.recovery();
    if rec.truncated_bytes > 0 || rec.rebuilt > 0 {
        eprintln!(
            "recovered: cut a torn tail of {} bytes, rebuilt nodes for {} entries",
            rec.truncated_bytes, rec.rebuilt
        );
    }
    let base = Record {
        actor: a.actor,
        action: a.action,
        subject: a.subject,
        decision: a.decision,
        reason: a.reason,
        meta,
    };
    base.validate()?;
    let next = std::sync::atomic::AtomicU64::new(0);
    let print_lock = std::sync::Mutex::new(());
    let worker = || -> Result<()> {
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= a.count {
                return Ok(());
            }
            let mut record = base.clone();
            if a.count > 1 {
                record.meta["n"] = json!(n);
            }
            let r = ledger.append(record)?;
            let _guard = print_lock.lock();
            if a.json {
                println!(
                    "{}",
                    json!({"seq": r.seq, "ts": r.ts, "leaf_hash": hex::encode(r.leaf_hash)})
                );
            } else {
                println!("appended seq {} leaf {}", r.seq, hex::encode(r.leaf_hash));
            }
        }
    };
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..a.concurrency.min(a.count as usize))
            .map(|_| s.spawn(worker))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an appending thread panicked"))??;
        }
        Ok(())
    })?;
    ledger.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Decisions counted by (action, outcome).
type Tally = BTreeMap<(String, String), u64>;

/// Every recorded policy decision, and their count by (action, outcome).
fn decisions(dir: &Path) -> Result<(Vec<AuditEntry>, Tally)> {
    let reader = LogReader::open(dir)?;
    let mut all = Vec::new();
    let mut tally = BTreeMap::new();
    for seq in 0..reader.size() {
        let e = reader.entry(seq)?;
        if e.record.meta["kind"] == "policy.decision" {
            *tally
                .entry((e.record.action.clone(), e.record.decision.clone()))
                .or_insert(0) += 1;
            all.push(e);
        }
    }
    Ok((all, tally))
}

fn verify_cmd(dir: &Path, key: Option<&str>, list: bool, as_json: bool) -> Result<ExitCode> {
    let (key, source) = match key {
        Some(text) => (VerifierKey::parse(text)?, "--key".to_string()),
        None => {
            let path = dir.join("keys/ledger-v1.pub");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (or pass --key)", path.display()))?;
            (
                VerifierKey::parse(&text)?,
                format!("{} (pass --key to pin a key you hold)", path.display()),
            )
        }
    };
    match verify(dir, &key) {
        Ok(report) => {
            let (made, tally) = decisions(dir)?;
            let clean = report.is_clean();
            if as_json {
                println!(
                    "{}",
                    json!({
                        "ok": true,
                        "status": if clean { "intact" } else { "tail_pending_recovery" },
                        "entries": report.entries,
                        "checkpoints": report.checkpoints,
                        "key_rotations": report.key_rotations,
                        "latest_checkpoint": report.latest.as_ref().map(|(s, r)| json!({"size": s, "root_hash": r})),
                        "current_key": report.current_key,
                        "decisions": made.len(),
                        "decisions_by_action": tally.iter().map(|((a, o), n)| json!({"action": a, "outcome": o, "count": n})).collect::<Vec<_>>(),
                        "tail": (!clean).then(|| tail_json(&report.tail)),
                    })
                );
            } else {
                println!("trusted key: {key}\n  from {source}");
                println!(
                    "ok: {} acknowledged entries, {} checkpoints, {} key rotations",
                    report.entries, report.checkpoints, report.key_rotations
                );
                if let Some((size, root)) = &report.latest {
                    println!("newest checkpoint: size {size}, root {root}");
                }
                let by: Vec<String> = tally
                    .iter()
                    .map(|((a, o), n)| format!("{a} {o} ×{n}"))
                    .collect();
                println!("policy decisions: {} ({})", made.len(), by.join(", "));
                if list {
                    for e in &made {
                        println!(
                            "{:>8}  {}  {:<24} {:<16} {:<28} {}",
                            e.seq,
                            format_ts(e.ts),
                            e.record.actor,
                            e.record.action,
                            e.record.subject,
                            e.record.decision
                        );
                    }
                }
                if !clean {
                    println!(
                        "tail pending recovery: a writer stopped mid-append; nothing past entry {} was acknowledged",
                        report.tail.first_seq
                    );
                    for line in tail_lines(&report.tail, "will be") {
                        println!("  {line}");
                    }
                    println!(
                        "run `capsule audit recover {}` (opening the ledger for writing does the same)",
                        dir.display()
                    );
                }
            }
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_TAIL_PENDING)
            })
        }
        Err(e) => {
            if as_json {
                let (file, offset) = match &e {
                    LedgerError::Corrupt { file, offset, .. } => {
                        (Some(file.display().to_string()), Some(*offset))
                    }
                    _ => (None, None),
                };
                println!(
                    "{}",
                    json!({"ok": false, "status": "damaged", "error": e.to_string(), "file": file, "offset": offset})
                );
            } else {
                println!("FAILED: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `capsule audit verify`'s status for an intact log with an unacknowledged
/// tail pending recovery (1 is damage or any error; clap's usage errors are 2).
pub const EXIT_TAIL_PENDING: u8 = 3;

/// One line per part of a tail; `tense` is "will be" (verify) or "was" (recover).
fn tail_lines(tail: &Tail, tense: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for span in &tail.records {
        lines.push(format!(
            "entries {}..={} ({}): whole records in {} at offsets {}..{}, not acknowledged; {tense} kept, their nodes and index slots stored",
            span.first_seq,
            span.first_seq + span.entries - 1,
            span.entries,
            span.file.display(),
            span.offset,
            span.end
        ));
    }
    let cut = |c: &TailCut| {
        let what = if c.removes_file {
            ", the file removed"
        } else {
            ""
        };
        format!(
            "{} offset {}: {} bytes ({}), not acknowledged; {tense} cut{what}",
            c.file.display(),
            c.offset,
            c.bytes,
            c.reason
        )
    };
    lines.extend(tail.cut.iter().map(cut));
    lines.extend(tail.checkpoint_cut.iter().map(cut));
    if tail.extra_node_bytes > 0 || tail.extra_index_bytes > 0 {
        lines.push(format!(
            "nodes: {} bytes, index: {} bytes past the acknowledged prefix; {tense} rewritten from the segments",
            tail.extra_node_bytes, tail.extra_index_bytes
        ));
    }
    lines
}

fn tail_json(tail: &Tail) -> serde_json::Value {
    let cut = |c: &TailCut| {
        json!({
            "file": c.file.display().to_string(),
            "offset": c.offset,
            "bytes": c.bytes,
            "reason": c.reason,
            "torn": c.torn,
            "removes_file": c.removes_file,
        })
    };
    json!({
        "first_seq": tail.first_seq,
        "entries": tail.entries(),
        "records": tail.records.iter().map(|s| json!({
            "file": s.file.display().to_string(),
            "first_seq": s.first_seq,
            "entries": s.entries,
            "offset": s.offset,
            "end": s.end,
        })).collect::<Vec<_>>(),
        "cut": tail.cut.as_ref().map(cut),
        "checkpoint_cut": tail.checkpoint_cut.as_ref().map(cut),
        "extra_node_bytes": tail.extra_node_bytes,
        "extra_index_bytes": tail.extra_index_bytes,
    })
}

fn recover(dir: &Path, as_json: bool) -> Result<ExitCode> {
    let ledger = open_writer(dir)?;
    let rec = ledger.recovery().clone();
    ledger.close()?;
    if as_json {
        println!(
            "{}",
            json!({
                "entries": rec.entries,
                "recovered": !rec.tail.is_empty(),
                "tail": (!rec.tail.is_empty()).then(|| tail_json(&rec.tail)),
            })
        );
    } else if rec.tail.is_empty() {
        println!(
            "nothing to recover: {} entries, all acknowledged",
            rec.entries
        );
    } else {
        println!(
            "recovered: {} entries ({} acknowledged before the writer stopped)",
            rec.entries, rec.tail.first_seq
        );
        for line in tail_lines(&rec.tail, "was") {
            println!("  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The checkpoint to prove against: the stored one of `size`, or the
/// newest, issuing one first when entry `seq` is newer than it.
fn checkpoint_for(dir: &Path, seq: u64, size: Option<u64>) -> Result<Checkpoint> {
    let reader = LogReader::open(dir)?;
    let stored = reader.checkpoints()?;
    if let Some(size) = size {
        return stored
            .into_iter()
            .rev()
            .find(|c| c.size() == size)
            .with_context(|| {
                format!("no stored checkpoint has tree size {size}; omit --size to use the newest")
            });
    }
    if let Some(cp) = stored.last().filter(|c| c.size() > seq) {
        return Ok(cp.clone());
    }
    match Ledger::open(dir, LedgerConfig::default()) {
        Ok(ledger) => {
            let cp = ledger.checkpoint()?;
            ledger.close()?;
            Ok(cp)
        }
        Err(LedgerError::Locked { .. }) => bail!(
            "entry {seq} is not yet covered by a checkpoint; the running writer issues one within a second — retry"
        ),
        Err(e) => Err(e.into()),
    }
}

fn prove(dir: &Path, seq: u64, size: Option<u64>, as_json: bool) -> Result<ExitCode> {
    let cp = checkpoint_for(dir, seq, size)?;
    let reader = LogReader::open(dir)?;
    let proof = reader.inclusion_proof(seq, cp.size())?;
    proof.verify()?;
    if proof.root != *cp.root() {
        bail!("the stored tree's root at size {} differs from its checkpoint; run `capsule audit verify`", cp.size());
    }
    let path: Vec<String> = proof.path.iter().map(hex::encode).collect();
    if as_json {
        println!(
            "{}",
            json!({
                "index": proof.index,
                "tree_size": proof.tree_size,
                "leaf_hash": hex::encode(proof.leaf_hash),
                "inclusion_path": path,
                "root_hash": hex::encode(proof.root),
                "checkpoint": cp.text(),
            })
        );
    } else {
        println!("entry {} in tree of size {}", proof.index, proof.tree_size);
        println!("leaf hash  {}", hex::encode(proof.leaf_hash));
        for (i, p) in path.iter().enumerate() {
            println!("path[{i:2}]   {p}");
        }
        println!(
            "root hash  {}\n\ncheckpoint:\n{}",
            hex::encode(proof.root),
            cp.text()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn consistency(dir: &Path, m: u64, n: u64, as_json: bool) -> Result<ExitCode> {
    let reader = LogReader::open(dir)?;
    let proof = reader.consistency_proof(m, n)?;
    let (old_root, new_root) = (reader.root(m)?, reader.root(n)?);
    capsule_ledger::merkle::verify_consistency(m, n, &old_root, &new_root, &proof)?;
    let path: Vec<String> = proof.iter().map(hex::encode).collect();
    if as_json {
        println!(
            "{}",
            json!({
                "old_size": m, "new_size": n,
                "old_root_hash": hex::encode(old_root), "new_root_hash": hex::encode(new_root),
                "consistency_path": path,
            })
        );
    } else {
        println!(
            "tree {m} root {}\ntree {n} root {}",
            hex::encode(old_root),
            hex::encode(new_root)
        );
        for (i, p) in path.iter().enumerate() {
            println!("path[{i:2}]   {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tail(dir: &Path, count: u64, as_json: bool) -> Result<ExitCode> {
    let reader = LogReader::open(dir)?;
    let size = reader.size();
    for seq in size.saturating_sub(count)..size {
        let e: AuditEntry = reader.entry(seq)?;
        if as_json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            let r = &e.record;
            println!(
                "{:>8}  {}  {}  {}  {}  {}  {}",
                e.seq,
                format_ts(e.ts),
                r.actor,
                r.action,
                if r.subject.is_empty() {
                    "-"
                } else {
                    &r.subject
                },
                r.decision,
                r.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pubkey(dir: &Path, first: bool) -> Result<ExitCode> {
    let reader = LogReader::open(dir)?;
    let keys = capsule_ledger::keys::KeyStore::new(&dir.join("keys"), reader.origin());
    let first_key = keys.load_public(1)?;
    let key = match (first, reader.latest_checkpoint()?) {
        (false, Some(cp)) => keys
            .versions()?
            .into_iter()
            .filter_map(|v| keys.load_public(v).ok())
            .find(|k| k.key_id() == cp.key_id())
            .unwrap_or(first_key),
        _ => first_key,
    };
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}
