//! `capsule bench kernel`: times kernel operations and, in the same run,
//! their NumPy / QuTiP references (benches/kernel_reference.py), interleaved
//! round by round so that both see the same machine load.

use anyhow::{bail, Context, Result};
use capsule_kernel::linalg::{self, c64, standard_normal};
use capsule_kernel::{lindblad, random, DensityMatrix, KernelConfig, Lindbladian, WorkspaceDrive};
use clap::{Args, Subcommand, ValueEnum};
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Kernel operations against NumPy (and Lindblad evolution against QuTiP).
    Kernel(KernelBenchArgs),
    /// The audit ledger against a hash-chained, per-entry-signed JSON-lines log.
    Audit(crate::bench_audit::AuditBenchArgs),
    /// Policy decision latency and throughput, default set and 100 rules.
    Policy(crate::bench_policy::PolicyBenchArgs),
    /// Store put/get throughput beside the disk's raw sequential speed.
    Store(crate::bench_store::StoreBenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Kraus,
    Lindblad,
    Entropy,
    Evolve,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Kraus => "kraus",
            Op::Lindblad => "lindblad",
            Op::Entropy => "entropy",
            Op::Evolve => "evolve",
        }
    }
}

#[derive(Args)]
pub struct KernelBenchArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only this operation.
    #[arg(long, value_enum)]
    op: Option<Op>,
    /// Only this dimension (default: 16, 64, 256, 1024).
    #[arg(long)]
    dim: Option<usize>,
    /// Skip the NumPy/QuTiP reference (its fields are null).
    #[arg(long)]
    no_reference: bool,
    /// Interleaved rounds per row (the reported figures are medians over rounds).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Virtual environment for the reference (created with numpy, scipy, qutip when missing).
    #[arg(long)]
    venv: Option<PathBuf>,
}

/// Kraus operators per channel in the benchmark (the k = 4).
const KRAUS_K: usize = 4;
/// dt and Taylor degree of the benchmarked Lindblad step (the kernel's default degree).
const LINDBLAD_DT: f64 = 0.01;
const LINDBLAD_DEGREE: usize = 6;
/// Target accuracy of the evolution benchmark (max |element error|).
const EVOLVE_TARGET: f64 = 1e-8;
const EVOLVE_DIM: usize = 64;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reference process, spoken to in JSON lines.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    fn start(venv: &Path) -> Result<Self> {
        let script = workspace_root().join("benches/kernel_reference.py");
        if !script.exists() {
            bail!("reference script {} not found (run from a source checkout, or pass --no-reference)", script.display());
        }
        eprintln!(
            "preparing the NumPy/QuTiP reference in {} …",
            venv.display()
        );
        let out = Command::new("python3")
            .arg(&script)
            .arg("setup")
            .arg(venv)
            .stderr(Stdio::inherit())
            .output()
            .context(
                "cannot run python3 (needed for the reference; pass --no-reference to skip it)",
            )?;
        if !out.status.success() {
            bail!("setting up the reference venv failed ({})", out.status);
        }
        let python = String::from_utf8(out.stdout)?.trim().to_string();
        let mut child = Command::new(python)
            .arg(&script)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the reference process")?;
        let stdin = child.stdin.take().context("reference stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("reference stdout")?);
        Ok(Reference {
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, request: &Value) -> Result<Value> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the reference process exited while answering {request}");
        }
        let reply: Value =
            serde_json::from_str(&line).with_context(|| format!("reference reply {line:?}"))?;
        if let Some(e) = reply.get("error") {
            bail!("reference failed on {request}: {e}");
        }
        Ok(reply)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each side runs its operation untimed for this long before timing it:
/// the other side's worker threads (OpenBLAS spins ~0.1 s after a call) go
/// quiet, and a vCPU that idled while the other side ran is back at speed.
/// The reference script does the same (`WARMUP_S`).
const WARMUP: std::time::Duration = std::time::Duration::from_millis(150);

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_median(reps: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    while start.elapsed() < WARMUP {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as f64
            })
            .collect(),
    )
}

fn reps_for(op: Op, d: usize) -> usize {
    let base = match d {
        0..=16 => 2000,
        17..=64 => 200,
        65..=256 => 10,
        _ => 2,
    };
    match op {
        Op::Lindblad | Op::Evolve => (base / 10).max(1),
        _ => base,
    }
}

/// The kernel's own Hamiltonian (default config, unit-norm workspace) and jump operators.
fn kernel_lindbladian(d: usize) -> Result<Lindbladian> {
    let cfg = KernelConfig {
        dim: d,
        ..KernelConfig::default()
    };
    let n = cfg.workspace_dim;
    let gw: Vec<f64> = (0..n)
        .map(|j| 1.0 / (n as f64).sqrt() * if j % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let h = WorkspaceDrive::new(d, n, cfg.seed)?.hamiltonian(&gw)?;
    Ok(Lindbladian::from_operators(h, &cfg.jump_operators())?)
}

fn matrix_json(m: faer::MatRef<'_, c64>) -> Value {
    let rows = |f: fn(c64) -> f64| -> Vec<Vec<f64>> {
        (0..m.nrows())
            .map(|i| (0..m.ncols()).map(|j| f(m[(i, j)])).collect())
            .collect()
    };
    json!({ "re": rows(|z| z.re), "im": rows(|z| z.im) })
}

/// One row of the report.
struct Row {
    op: &'static str,
    d: usize,
    capsule: Vec<f64>,
    reference: Vec<f64>,
    extra: serde_json::Map<String, Value>,
}

impl Row {
    fn to_json(&self) -> Value {
        let cap = median(self.capsule.clone());
        let (num, ratio) = if self.reference.is_empty() {
            (Value::Null, Value::Null)
        } else {
            let ratios: Vec<f64> = self
                .reference
                .iter()
                .zip(&self.capsule)
                .map(|(n, c)| n / c)
                .collect();
            (json!(median(self.reference.clone())), json!(median(ratios)))
        };
        let mut v = json!({ "op": self.op, "d": self.d, "median_ns": cap, "numpy_median_ns": num, "ratio": ratio });
        if let Value::Object(m) = &mut v {
            m.extend(self.extra.clone());
        }
        v
    }
}

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    let args = match cmd {
        BenchCommand::Kernel(args) => args,
        BenchCommand::Audit(args) => return crate::bench_audit::run(args),
        BenchCommand::Policy(args) => return crate::bench_policy::run(args),
        BenchCommand::Store(args) => return crate::bench_store::run(args),
    };
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let ops: Vec<Op> = match args.op {
        Some(op) => vec![op],
        None => vec![Op::Kraus, Op::Lindblad, Op::Entropy, Op::Evolve],
    };
    let dims: Vec<usize> = match args.dim {
        Some(d) if !(2..=4096).contains(&d) => bail!("--dim {d} is outside 2..=4096"),
        Some(d) => vec![d],
        None => vec![16, 64, 256, 1024],
    };
    let mut reference = if args.no_reference {
        None
    } else {
        let venv = args
            .venv
            .clone()
            .unwrap_or_else(|| workspace_root().join(".bench-venv"));
        Some(Reference::start(&venv)?)
    };
    if !args.json {
        println!(
            "{:<10} {:>5} {:>14} {:>14} {:>9}  notes",
            "op", "d", "capsule", "reference", "ref/caps"
        );
    }
    let peak = if ops.contains(&Op::Kraus) && dims.iter().any(|&d| d >= 64) {
        Some(peak_row(&mut reference, args.rounds)?)
    } else {
        None
    };
    if let Some(row) = &peak {
        emit(row, args.json);
    }
    let peak_gflops = peak
        .as_ref()
        .map(|r| r.extra["peak_gflops"].as_f64().unwrap_or(f64::NAN));
    for &op in &ops {
        let op_dims = if op == Op::Evolve {
            vec![args.dim.unwrap_or(EVOLVE_DIM)]
        } else {
            dims.clone()
        };
        for &d in &op_dims {
            let mut row = bench_row(op, d, &mut reference, args.rounds)?;
            if let (Op::Kraus, Some(peak), true) = (op, peak_gflops, d >= 64) {
                let flops = 12.0 * KRAUS_K as f64 * (d as f64).powi(3);
                let limit_ns = flops / peak;
                row.extra.insert("flop_limit_ns".into(), json!(limit_ns));
                row.extra.insert(
                    "flop_ratio".into(),
                    json!(median(row.capsule.clone()) / limit_ns),
                );
            }
            emit(&row, args.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(row: &Row, as_json: bool) {
    let v = row.to_json();
    if as_json {
        println!("{v}");
        return;
    }
    let fmt_ns = |x: &Value| {
        x.as_f64()
            .map_or("-".to_string(), |ns| format!("{:.1} µs", ns / 1e3))
    };
    let ratio = v["ratio"]
        .as_f64()
        .map_or("-".to_string(), |r| format!("{r:.2}×"));
    let notes: Vec<String> = row
        .extra
        .iter()
        .map(|(k, x)| format!("{k}={}", compact(x)))
        .collect();
    println!(
        "{:<10} {:>5} {:>14} {:>14} {:>9}  {}",
        row.op,
        row.d,
        fmt_ns(&v["median_ns"]),
        fmt_ns(&v["numpy_median_ns"]),
        ratio,
        notes.join(" ")
    );
}

fn compact(x: &Value) -> String {
    match x.as_f64() {
        Some(f) if f.abs() >= 1e4 || (f != 0.0 && f.abs() < 1e-2) => format!("{f:.2e}"),
        Some(f) => format!("{f:.3}"),
        None => x.to_string(),
    }
}

/// Complex FP64 matmul peak: faer and NumPy at d = 1024, best of both.
fn peak_row(reference: &mut Option<Reference>, rounds: usize) -> Result<Row> {
    let d = 1024;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = linalg::random_gaussian(d, &mut rng);
    let b = linalg::random_gaussian(d, &mut rng);
    let mut c = Mat::<c64>::zeros(d, d);
    let mut row = Row {
        op: "zgemm_peak",
        d,
        capsule: vec![],
        reference: vec![],
        extra: Default::default(),
    };
    for _ in 0..rounds {
        row.capsule.push(time_median(3, || {
            faer::linalg::matmul::matmul(
                c.as_mut(),
                faer::Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                linalg::ONE,
                linalg::par_for(d),
            )
        }));
        if let Some(r) = reference.as_mut() {
            row.reference.push(ns_of(
                &r.ask(&json!({ "op": "zgemm", "d": d, "reps": 3 }))?,
            )?);
        }
    }
    let flops = 8.0 * (d as f64).powi(3);
    let best = row
        .capsule
        .iter()
        .chain(&row.reference)
        .cloned()
        .fold(f64::INFINITY, f64::min);
    row.extra.insert(
        "capsule_gflops".into(),
        json!(flops / median(row.capsule.clone())),
    );
    if !row.reference.is_empty() {
        row.extra.insert(
            "numpy_gflops".into(),
            json!(flops / median(row.reference.clone())),
        );
    }
    row.extra.insert("peak_gflops".into(), json!(flops / best));
    Ok(row)
}

fn ns_of(reply: &Value) -> Result<f64> {
    reply["median_ns"]
        .as_f64()
        .context("reference reply has no median_ns")
}

fn bench_row(op: Op, d: usize, reference: &mut Option<Reference>, rounds: usize) -> Result<Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(d as u64);
    let reps = reps_for(op, d);
    let rounds = if d >= 1024 { rounds.min(3) } else { rounds };
    let mut row = Row {
        op: op.name(),
        d,
        capsule: vec![],
        reference: vec![],
        extra: Default::default(),
    };
    let rho = random::density_matrix(d, d, &mut rng)?;
    let mut capsule: Box<dyn FnMut()> = match op {
        Op::Kraus => {
            let ch = random::kraus_channel(d, KRAUS_K, &mut rng)?;
            Box::new(move || {
                std::hint::black_box(ch.apply(&rho).ok());
            })
        }
        Op::Entropy => Box::new(move || {
            std::hint::black_box(rho.entropy().ok());
        }),
        Op::Lindblad => {
            let l = kernel_lindbladian(d)?;
            Box::new(move || {
                let x = l.step_raw(rho.matrix(), LINDBLAD_DT, LINDBLAD_DEGREE).ok();
                std::hint::black_box(x.map(lindblad::finalize));
            })
        }
        Op::Evolve => {
            let l = kernel_lindbladian(d)?;
            let psi: Vec<c64> = (0..d)
                .map(|_| c64::new(standard_normal(&mut rng), standard_normal(&mut rng)))
                .collect();
            let start = DensityMatrix::pure(&psi)?;
            let result = l.evolve(&start, 1.0, EVOLVE_TARGET)?;
            row.extra.insert(
                "generator_applications".into(),
                json!(result.generator_applications),
            );
            if reference.is_some() {
                let problem = std::env::temp_dir()
                    .join(format!("capsule-evolve-{}.json", std::process::id()));
                let doc = json!({
                    "hamiltonian": matrix_json(l.hamiltonian()),
                    "jump_ops": KernelConfig { dim: d, ..KernelConfig::default() }.jump_operators().iter().map(|m| matrix_json(m.as_ref())).collect::<Vec<_>>(),
                    "rho": matrix_json(start.matrix()), "t": 1.0, "target_error": EVOLVE_TARGET,
                    "capsule_result": matrix_json(result.matrix.as_ref()),
                });
                std::fs::write(&problem, doc.to_string())?;
                row.extra
                    .insert("problem".into(), json!(problem.display().to_string()));
            }
            Box::new(move || {
                std::hint::black_box(l.evolve(&start, 1.0, EVOLVE_TARGET).ok());
            })
        }
    };
    let request = match op {
        Op::Kraus => json!({ "op": "kraus", "d": d, "k": KRAUS_K, "reps": reps }),
        Op::Entropy => json!({ "op": "entropy", "d": d, "reps": reps }),
        Op::Lindblad => {
            json!({ "op": "lindblad", "d": d, "dt": LINDBLAD_DT, "degree": LINDBLAD_DEGREE, "reps": reps })
        }
        Op::Evolve => {
            json!({ "op": "evolve", "problem": row.extra.get("problem").cloned().unwrap_or(Value::Null), "reps": reps })
        }
    };
    for _ in 0..rounds {
        row.capsule.push(time_median(reps, &mut capsule));
        if let Some(r) = reference.as_mut() {
            let reply = r.ask(&request)?;
            row.reference.push(ns_of(&reply)?);
            for key in ["reference_error", "capsule_error", "atol", "rtol", "qutip"] {
                if let Some(v) = reply.get(key) {
                    row.extra.insert(key.into(), v.clone());
                }
            }
        }
    }
    if let Some(Value::String(p)) = row.extra.remove("problem") {
        let _ = std::fs::remove_file(p);
    }
    Ok(row)
}
