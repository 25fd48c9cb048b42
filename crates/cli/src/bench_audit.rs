//! `capsule bench audit`: the ledger's figures of merit, each beside the
//! same figure for the common alternative, run in the same invocation: a
//! hash-chained JSON-lines log that signs every entry with Ed25519
//! ([`ChainLog`], written here for the comparison).

use crate::bench::percentile;
use anyhow::{bail, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::{merkle, Ledger, LedgerConfig, LogReader, Record};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct AuditBenchArgs {
    /// One JSON object per line: {"name", "value", "unit"}.
    #[arg(long)]
    json: bool,
    /// Entries for the batched-append and full-verify figures.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Entries per batch in the batched-append figure.
    #[arg(long, default_value_t = 8192)]
    batch: u64,
    /// Threads appending batches at once in the throughput figure (their
    /// batches share group commits, as a busy server's would).
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// Single appends timed for the latency figure.
    #[arg(long, default_value_t = 2000)]
    latency_samples: u64,
    /// Size of the log the proof figures are taken on.
    #[arg(long, default_value_t = 10_000_000)]
    proof_entries: u64,
    /// Proofs generated and verified for the proof figures.
    #[arg(long, default_value_t = 20_000)]
    proofs: u64,
    /// Where the logs are written (default: a temporary directory, removed after).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// A ~200-byte entry, as a policy decision would write it.
fn record(i: u64) -> Record {
    let mut r = Record::new("agent:bench-7f3a", "brain.step", "allow");
    r.subject = format!("kernel/main/step/{i:010}");
    r.reason = "default policy permits brain.step in autonomy mode supervised".into();
    r.meta = json!({"entropy": 1.2345678, "rule": 4, "n": i});
    r
}

struct Figure {
    name: String,
    value: f64,
}

struct Report {
    json: bool,
    figures: Vec<Figure>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        if self.json {
            println!("{}", json!({"name": name, "value": value, "unit": unit}));
        } else {
            println!("{name:<44} {value:>14.3} {unit}");
        }
        self.figures.push(Figure {
            name: name.into(),
            value,
        });
    }

    fn get(&self, name: &str) -> f64 {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map_or(f64::NAN, |f| f.value)
    }

    /// capsule's advantage: baseline / capsule for costs, capsule / baseline for rates.
    fn ratio(&mut self, name: &str, higher_is_better: bool) {
        let (ours, theirs) = (self.get(name), self.get(&format!("baseline.{name}")));
        let ratio = if higher_is_better {
            ours / theirs
        } else {
            theirs / ours
        };
        self.add(&format!("ratio.{name}"), ratio, "x");
    }
}

pub fn run(args: AuditBenchArgs) -> Result<ExitCode> {
    if args.entries == 0
        || args.batch == 0
        || args.appenders == 0
        || args.latency_samples < 2
        || args.proof_entries == 0
        || args.proofs == 0
    {
        bail!("--entries, --batch, --appenders, --proof-entries and --proofs must be ≥ 1 and --latency-samples ≥ 2");
    }
    let tmp = tempfile::Builder::new()
        .prefix("capsule-bench-audit")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    let mut report = Report {
        json: args.json,
        figures: Vec::new(),
    };
    let config = LedgerConfig::default();
    let sample = capsule_ledger::AuditEntry {
        seq: 123_456,
        ts: 0,
        record: record(123_456),
    };
    let sample_len = sample.encode().len();
    report.add("entry_size", sample_len as f64, "bytes");

    // 1. Durable batched append throughput.
    let dir = root.join("throughput");
    let ledger = Ledger::create(&dir, "bench.capsule/throughput", config.clone())?;
    let next = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..args.appenders)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(args.batch, std::sync::atomic::Ordering::Relaxed);
                        if i >= args.entries {
                            return Ok(());
                        }
                        let n = args.batch.min(args.entries - i);
                        ledger.append_batch((i..i + n).map(record).collect())?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("an appender panicked"))??;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    report.add(
        "append_batched_throughput",
        args.entries as f64 / secs,
        "entries/s",
    );
    let chain_dir = root.join("chain-throughput");
    std::fs::create_dir_all(&chain_dir)?;
    let mut chain = ChainLog::create(&chain_dir.join("log.jsonl"))?;
    let t = Instant::now();
    let mut i = 0;
    while i < args.entries {
        let n = args.batch.min(args.entries - i);
        chain.append_batch(&(i..i + n).map(record).collect::<Vec<_>>())?;
        i += n;
    }
    let secs = t.elapsed().as_secs_f64();
    report.add(
        "baseline.append_batched_throughput",
        args.entries as f64 / secs,
        "entries/s",
    );
    report.ratio("append_batched_throughput", true);

    // 2. Full verify of the log just written.
    ledger.checkpoint()?;
    ledger.close()?;
    drop(ledger);
    let key = capsule_ledger::VerifierKey::parse(&std::fs::read_to_string(
        dir.join("keys/ledger-v1.pub"),
    )?)?;
    let t = Instant::now();
    let r = capsule_ledger::verify(&dir, &key)?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.entries, args.entries);
    report.add(&format!("verify_{}", human(args.entries)), secs, "s");
    let t = Instant::now();
    let n = ChainLog::verify(&chain_dir.join("log.jsonl"), &chain.key.verifying_key())?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, args.entries);
    report.add(
        &format!("baseline.verify_{}", human(args.entries)),
        secs,
        "s",
    );
    report.ratio(&format!("verify_{}", human(args.entries)), false);
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&chain_dir)?;

    // 3. Single durable append latency.
    let dir = root.join("latency");
    let ledger = Ledger::create(&dir, "bench.capsule/latency", config.clone())?;
    let mut lat: Vec<f64> = (0..args.latency_samples)
        .map(|i| {
            let t = Instant::now();
            ledger
                .append(record(i))
                .map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ledger.close()?;
    lat.sort_by(f64::total_cmp);
    report.add("append_latency_p50", percentile(&lat, 0.5), "ms");
    report.add("append_latency_p99", percentile(&lat, 0.99), "ms");
    let chain_dir = root.join("chain-latency");
    std::fs::create_dir_all(&chain_dir)?;
    let mut chain = ChainLog::create(&chain_dir.join("log.jsonl"))?;
    let mut lat: Vec<f64> = (0..args.latency_samples)
        .map(|i| {
            let t = Instant::now();
            chain
                .append_batch(&[record(i)])
                .map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    lat.sort_by(f64::total_cmp);
    report.add("baseline.append_latency_p50", percentile(&lat, 0.5), "ms");
    report.add("baseline.append_latency_p99", percentile(&lat, 0.99), "ms");
    report.ratio("append_latency_p50", false);
    report.ratio("append_latency_p99", false);

    // 4. Proofs on a large log.
    let dir = root.join("proofs");
    let ledger = Ledger::create(&dir, "bench.capsule/proofs", config)?;
    let mut i = 0;
    while i < args.proof_entries {
        let n = 65_536.min(args.proof_entries - i);
        ledger.append_batch((i..i + n).map(record).collect())?;
        i += n;
    }
    ledger.close()?;
    drop(ledger);
    let reader = LogReader::open(&dir)?;
    let size = reader.size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let indices: Vec<u64> = (0..args.proofs)
        .map(|_| rng.random_range(0..size))
        .collect();
    let mut gen = Vec::with_capacity(indices.len());
    let mut ver = Vec::with_capacity(indices.len());
    for &idx in &indices {
        let t = Instant::now();
        let p = reader.inclusion_proof(idx, size)?;
        gen.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        merkle::verify_inclusion(p.index, p.tree_size, &p.leaf_hash, &p.path, &p.root)?;
        ver.push(t.elapsed().as_secs_f64() * 1e6);
    }
    gen.sort_by(f64::total_cmp);
    ver.sort_by(f64::total_cmp);
    let at = human(args.proof_entries);
    report.add(
        &format!("inclusion_proof_generate_{at}_p50"),
        percentile(&gen, 0.5),
        "us",
    );
    report.add(
        &format!("inclusion_proof_generate_{at}_p99"),
        percentile(&gen, 0.99),
        "us",
    );
    report.add(
        &format!("inclusion_proof_verify_{at}_p50"),
        percentile(&ver, 0.5),
        "us",
    );
    report.add(
        &format!("inclusion_proof_verify_{at}_p99"),
        percentile(&ver, 0.99),
        "us",
    );
    let m = size / 2 + 1;
    let t = Instant::now();
    let proof = reader.consistency_proof(m, size)?;
    let took = t.elapsed().as_secs_f64() * 1e6;
    merkle::verify_consistency(m, size, &reader.root(m)?, &reader.root(size)?, &proof)?;
    report.add(&format!("consistency_proof_generate_{at}"), took, "us");
    drop(tmp);
    Ok(ExitCode::SUCCESS)
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// The common approach, for comparison: one JSON line per entry carrying
/// `prev` (the previous entry's hash), `hash` = SHA-256(prev ‖ entry JSON)
/// and an Ed25519 signature over `hash`; a batch is durable after one
/// fsync.
pub struct ChainLog {
    file: File,
    prev: [u8; 32],
    seq: u64,
    key: SigningKey,
    buf: Vec<u8>,
}

impl ChainLog {
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(ChainLog {
            file,
            prev: [0; 32],
            seq: 0,
            key: SigningKey::from_bytes(&seed),
            buf: Vec::new(),
        })
    }

    fn entry_json(seq: u64, ts: i64, r: &Record) -> serde_json::Value {
        json!({"seq": seq, "ts": ts, "actor": r.actor, "action": r.action, "subject": r.subject,
               "decision": r.decision, "reason": r.reason, "meta": r.meta})
    }

    fn chain_hash(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(entry);
        h.finalize().into()
    }

    pub fn append_batch(&mut self, records: &[Record]) -> Result<()> {
        self.buf.clear();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i64;
        for r in records {
            let entry = Self::entry_json(self.seq, ts, r);
            let body = serde_json::to_vec(&entry)?;
            let hash = Self::chain_hash(&self.prev, &body);
            let sig = self.key.sign(&hash);
            let line = json!({"entry": entry, "prev": hex::encode(self.prev), "hash": hex::encode(hash),
                              "sig": B64.encode(sig.to_bytes())});
            serde_json::to_writer(&mut self.buf, &line)?;
            self.buf.push(b'\n');
            self.prev = hash;
            self.seq += 1;
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Recompute the chain and check every signature; returns the count.
    pub fn verify(path: &Path, key: &ed25519_dalek::VerifyingKey) -> Result<u64> {
        let mut prev = [0u8; 32];
        let mut n = 0u64;
        for line in BufReader::new(File::open(path)?).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let body = serde_json::to_vec(&v["entry"])?;
            let hash = Self::chain_hash(&prev, &body);
            if v["prev"].as_str() != Some(&hex::encode(prev))
                || v["hash"].as_str() != Some(&hex::encode(hash))
            {
                bail!("chain broken at entry {n}");
            }
            let sig: [u8; 64] = B64
                .decode(v["sig"].as_str().unwrap_or_default())?
                .try_into()
                .map_err(|_| anyhow::anyhow!("entry {n}: signature is not 64 bytes"))?;
            key.verify(&hash, &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|_| anyhow::anyhow!("entry {n}: signature does not verify"))?;
            prev = hash;
            n += 1;
        }
        Ok(n)
    }
}
