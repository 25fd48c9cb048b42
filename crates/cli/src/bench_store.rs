//! `capsule bench store`: put and get throughput for 4 KiB, 64 KiB and
//! 4 MiB objects, plain and encrypted, beside the raw sequential write
//! (with fsync) and read speed of the same disk, measured in the same run.

use anyhow::Result;
use capsule_ledger::{Ledger, LedgerConfig};
use capsule_store::{FileKeyring, Kind, Store};
use clap::Args;
use serde_json::json;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct StoreBenchArgs {
    /// One JSON object per line: {"name", "value", "unit"}.
    #[arg(long)]
    json: bool,
    /// Bytes written per object size (the 4 KiB case writes a quarter of it).
    #[arg(long, default_value_t = 64 << 20)]
    bytes: usize,
    /// Where to write (default: a temporary directory, removed after).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

pub fn run(args: StoreBenchArgs) -> Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("capsule-bench-store")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    let emit = |name: &str, value: f64, unit: &str| {
        if args.json {
            println!("{}", json!({"name": name, "value": value, "unit": unit}));
        } else {
            println!("{name:<36} {value:>12.1} {unit}");
        }
    };
    // The physical limit: one sequential file, 1 MiB writes, one fsync; then read back.
    let total = args.bytes.max(4 << 20);
    let block: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 31 % 251) as u8).collect();
    let raw = root.join("raw.bin");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&raw)?;
        for _ in 0..total / block.len() {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    emit(
        "raw_sequential_write",
        mbps(total, t.elapsed().as_secs_f64()),
        "MB/s",
    );
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut f = std::fs::File::open(&raw)?;
    while f.read(&mut buf)? > 0 {}
    emit(
        "raw_sequential_read",
        mbps(total, t.elapsed().as_secs_f64()),
        "MB/s",
    );
    std::fs::remove_file(&raw)?;

    let keys = Arc::new(FileKeyring::create(
        &root.join("keyring.json"),
        &["secret"],
    )?);
    let ledger = Arc::new(Ledger::create(
        &root.join("ledger"),
        "bench.capsule/store",
        LedgerConfig::default(),
    )?);
    let store = Store::open(&root.join("store"), keys, ledger.clone())?;
    for (label, size) in [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("4MiB", 4 << 20)] {
        let budget = if size < (64 << 10) { total / 4 } else { total };
        let count = (budget / size).max(1);
        for ns in ["plain", "secret"] {
            let objects: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let mut o = block[..size.min(block.len())].repeat(size.div_ceil(block.len()));
                    o.truncate(size);
                    o[..8].copy_from_slice(
                        &(i as u64 ^ if ns == "secret" { 1 << 63 } else { 0 }).to_le_bytes(),
                    );
                    o
                })
                .collect();
            let t = Instant::now();
            let ids: Vec<_> = objects
                .iter()
                .map(|o| store.put(ns, Kind::Blob, o))
                .collect::<Result<_, _>>()?;
            emit(
                &format!("put_{label}_{ns}"),
                mbps(count * size, t.elapsed().as_secs_f64()),
                "MB/s",
            );
            let t = Instant::now();
            for id in &ids {
                std::hint::black_box(store.get(id)?);
            }
            emit(
                &format!("get_{label}_{ns}"),
                mbps(count * size, t.elapsed().as_secs_f64()),
                "MB/s",
            );
        }
    }
    ledger.close()?;
    Ok(ExitCode::SUCCESS)
}
