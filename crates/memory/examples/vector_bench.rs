//! The Capsule side of `benches/vector_bench.sh`: builds a [`VectorIndex`]
//! from the benchmark's data set and measures single-threaded queries/s and
//! recall@k for a list of `ef_search` values.
//!
//! ```text
//! vector_bench params                       print "CONNECTIVITY EXPANSION_ADD"
//! vector_bench run DIR EFS REPEAT OUT.json [reuse]
//!     EFS = comma-separated ef values; `reuse` queries the index a
//!     previous run saved in DIR instead of building it again
//! ```
//!
//! DIR holds `meta.json` ({n, dims, queries, k}), `base.f32` (n × dims),
//! `queries.f32` (queries × dims) and `gt.i32` (queries × k exact neighbours,
//! row numbers), all little-endian; row i is stored under key i.

use capsule_memory::{
    Filter, NewVector, Recovery, VectorIndex, CONNECTIVITY, EXPANSION_ADD, MAX_BATCH,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::error::Error;
use std::path::Path;
use std::time::Instant;

#[derive(Deserialize)]
struct Meta {
    n: usize,
    dims: usize,
    queries: usize,
    k: usize,
}

/// `len` little-endian 4-byte words, decoded by `decode`.
fn read_words<T>(
    path: &Path,
    len: usize,
    decode: fn([u8; 4]) -> T,
) -> Result<Vec<T>, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() != len * 4 {
        return Err(format!(
            "{}: {} bytes, expected {}",
            path.display(),
            bytes.len(),
            len * 4
        )
        .into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| decode([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Build the index of `base` in `store` from scratch; returns the seconds
/// to add everything and to save.
fn build(store: &Path, meta: &Meta, base: &[f32]) -> Result<(f64, f64), Box<dyn Error>> {
    if store.exists() {
        std::fs::remove_dir_all(store)?;
    }
    let started = Instant::now();
    let index = VectorIndex::open(store, meta.dims)?;
    for (c, chunk) in base.chunks(MAX_BATCH * meta.dims).enumerate() {
        let batch: Vec<NewVector<'_>> = chunk
            .chunks_exact(meta.dims)
            .enumerate()
            .map(|(i, vector)| NewVector {
                key: (c * MAX_BATCH + i) as i64,
                vector,
                kind: "bench",
                lane: "prod",
            })
            .collect();
        index.add_batch(&batch)?;
        eprintln!(
            "capsule: {} added, {:.0} s",
            index.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let build_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    index.close()?;
    Ok((build_s, started.elapsed().as_secs_f64()))
}

/// `reuse`: query the index a previous run saved in DIR instead of
/// building it again (to repeat the query measurements).
fn run(
    dir: &Path,
    efs: &[usize],
    repeat: usize,
    out: &Path,
    reuse: bool,
) -> Result<(), Box<dyn Error>> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json"))?)?;
    let queries = read_words(
        &dir.join("queries.f32"),
        meta.queries * meta.dims,
        f32::from_le_bytes,
    )?;
    let gt = read_words(&dir.join("gt.i32"), meta.queries * meta.k, |b| {
        i64::from(i32::from_le_bytes(b))
    })?;
    eprintln!(
        "capsule: n {} dims {}, usearch {} ({})",
        meta.n,
        meta.dims,
        usearch::version(),
        usearch::hardware_acceleration_available()
    );
    let store = dir.join("capsule-index");
    let (build_s, save_s) = if reuse && store.exists() {
        eprintln!("capsule: reusing {}", store.display());
        (None, None)
    } else {
        let base = read_words(
            &dir.join("base.f32"),
            meta.n * meta.dims,
            f32::from_le_bytes,
        )?;
        let (build_s, save_s) = build(&store, &meta, &base)?;
        (Some(build_s), Some(save_s))
    };
    let started = Instant::now();
    let index = VectorIndex::open(&store, meta.dims)?;
    let reopen_s = started.elapsed().as_secs_f64();
    if index.recovery() != &Recovery::Loaded {
        return Err(format!(
            "reopen did not load the saved index: {:?}",
            index.recovery()
        )
        .into());
    }

    let filter = Filter::default();
    let mut rows = Vec::new();
    for &ef in efs {
        index.set_ef_search(ef)?;
        let mut found = HashSet::new();
        let mut hits = 0usize;
        let mut rates = Vec::new();
        for round in 0..=repeat {
            let started = Instant::now();
            for (q, query) in queries.chunks_exact(meta.dims).enumerate() {
                let result = index.search(query, meta.k, &filter)?;
                if round == 0 {
                    found.clear();
                    found.extend(result.iter().map(|h| h.key));
                    hits += gt[q * meta.k..(q + 1) * meta.k]
                        .iter()
                        .filter(|k| found.contains(k))
                        .count();
                }
            }
            // Round 0 warms the caches and measures recall; the rest are timed.
            if round > 0 {
                rates.push(meta.queries as f64 / started.elapsed().as_secs_f64());
            }
        }
        let recall = hits as f64 / (meta.queries * meta.k) as f64;
        let qps = median(rates);
        eprintln!(
            "capsule: ef {ef:4}  recall@{} {recall:.4}  {qps:8.0} queries/s",
            meta.k
        );
        rows.push(serde_json::json!({"ef": ef, "recall": recall, "qps": qps}));
    }
    let report = serde_json::json!({
        "name": "capsule (usearch)",
        "build_s": build_s,
        "build_threads": 1,
        "save_s": save_s,
        "reopen_s": reopen_s,
        "peak_rss_mib": peak_rss_mib(),
        "rows": rows,
    });
    std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["params"] => {
            println!("{CONNECTIVITY} {EXPANSION_ADD}");
            Ok(())
        }
        ["run", dir, efs, repeat, out, rest @ ..] if matches!(rest, [] | ["reuse"]) => {
            let efs = efs
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()?;
            let reuse = !rest.is_empty();
            run(Path::new(dir), &efs, repeat.parse()?, Path::new(out), reuse)
        }
        _ => Err(
            "usage: vector_bench params | vector_bench run DIR EF,EF,... REPEAT OUT.json [reuse]"
                .into(),
        ),
    }
}
