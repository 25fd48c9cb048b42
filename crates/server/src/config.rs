//! `capsule.toml` (SPEC O5): one file with the sections server, kernel,
//! limits, security, llm, memory, tls, auth, signing, storage and mesh;
//! any key overridable by an environment variable
//! `CAPSULE_<SECTION>__<KEY>` (e.g. `CAPSULE_SERVER__HTTP=0.0.0.0:7070`).
//! Invalid configuration fails at start with the key and the reason.

use anyhow::{anyhow, bail, Context, Result};
use capsule_kernel::KernelConfig;
use capsule_models::fetch::shared_models_dir;
use capsule_models::registry::{ModelSpec, MINILM, SMOLLM2};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of override variables; the section and key are split by `__`.
pub const ENV_PREFIX: &str = "CAPSULE_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub kernel: KernelConfig,
    pub limits: LimitsSection,
    pub security: SecuritySection,
    pub llm: LlmSection,
    pub memory: MemorySection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub signing: SigningSection,
    pub storage: StorageSection,
    pub mesh: MeshSection,
    pub sessions: SessionsSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub http: String,
    pub grpc: String,
    pub metrics: String,
    pub shutdown_grace_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            http: "127.0.0.1:7070".into(),
            grpc: "127.0.0.1:7071".into(),
            metrics: "127.0.0.1:9464".into(),
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_body_bytes: usize,
    pub max_stream_subscribers: usize,
    pub audit_page_max: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body_bytes: 64 * 1024,
            max_stream_subscribers: 64,
            audit_page_max: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    pub kill_switch_poll_ms: u64,
    pub watch_policy_ms: u64,
    pub default_affect: capsule_policy::Affect,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            kill_switch_poll_ms: 200,
            watch_policy_ms: 1000,
            default_affect: capsule_policy::affect::built_in_defaults(),
        }
    }
}

/// The planners a think may name.
pub const PLANNERS: [&str; 4] = ["hash", "local", "openai", "anthropic"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSection {
    /// The planner a think uses when it names none.
    pub planner: String,
    pub openai: RemoteSection,
    pub anthropic: RemoteSection,
}

/// One remote provider (SPEC C2 b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    pub base_url: String,
    pub model: String,
    /// The environment variable that holds the key.
    pub key_env: String,
    pub timeout_ms: u64,
    pub max_retries: u32,
}

impl RemoteSection {
    fn of(c: &capsule_cortex::remote::RemoteConfig) -> Self {
        RemoteSection {
            base_url: c.base_url.clone(),
            model: c.model.clone(),
            key_env: c.api_key_env.clone(),
            timeout_ms: c.timeout.as_millis() as u64,
            max_retries: c.max_retries,
        }
    }

    /// The provider's settings over `base` (its defaults).
    pub fn apply(
        &self,
        mut base: capsule_cortex::remote::RemoteConfig,
    ) -> capsule_cortex::remote::RemoteConfig {
        base.base_url = self.base_url.clone();
        base.model = self.model.clone();
        base.api_key_env = self.key_env.clone();
        base.timeout = Duration::from_millis(self.timeout_ms);
        base.max_retries = self.max_retries;
        base
    }
}

impl Default for LlmSection {
    fn default() -> Self {
        use capsule_cortex::remote::RemoteConfig;
        LlmSection {
            planner: "hash".into(),
            openai: RemoteSection::of(&RemoteConfig::openai()),
            anthropic: RemoteSection::of(&RemoteConfig::anthropic()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    pub events: String,
    /// The vector index's directory (SQLite metadata + HNSW file).
    pub vectors: String,
    /// `minilm` (all-MiniLM-L6-v2) or `hash` (the explicit fallback).
    pub embedder: String,
    /// The models directory: empty for the per-user one
    /// ([`shared_models_dir`]); a relative path is inside the data
    /// directory. See [`Config::models_dir`].
    pub models: String,
    /// `capsule up` never downloads a missing model; it stops and names
    /// the command that fetches it.
    pub models_offline: bool,
    /// Earlier thinks recalled for each think (0 turns recall off).
    pub recall_k: usize,
}

/// What `capsule init` wrote as `memory.models` before models lived once
/// per user; see [`Config::models_dir`].
pub const LEGACY_MODELS: &str = "models";

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            events: "memory/events.db".into(),
            vectors: "memory/vectors".into(),
            embedder: "minilm".into(),
            models: String::new(),
            models_offline: false,
            recall_k: 5,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub tokens: String,
    pub rate_limit_per_minute: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            tokens: "auth/tokens.json".into(),
            rate_limit_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSection {
    pub checkpoint_interval_ms: u64,
}

impl Default for SigningSection {
    fn default() -> Self {
        SigningSection {
            checkpoint_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: "embedded".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSection {
    pub backend: String,
    /// DISPATCH_ENABLED: run queued tasks (false: log-only mode, tasks
    /// stay queued until `PUT /v1/mesh/dispatch`).
    pub dispatch: bool,
    /// LEARNING_ENABLED: update pattern memory.
    pub learning: bool,
    /// EXT_ACTIONS_ENABLED: let bots act outside the process (no bot does yet).
    pub ext_actions: bool,
    /// Queue capacity of each topic.
    pub queue_capacity: usize,
    /// Per-topic capacities, e.g. `{ general = 32 }`.
    pub queue_capacities: std::collections::HashMap<String, usize>,
    /// Threads that run bots.
    pub workers: usize,
    /// The chat model of the general bot: local, openai or anthropic.
    pub general_model: String,
    /// Below this best MiniLM similarity the keyword fallback classifies.
    pub classify_threshold: f32,
    /// Fold guard: linked writes per write, depth, writes per window.
    pub fold_max_fanout: u32,
    pub fold_max_depth: u32,
    pub fold_max_per_window: u32,
    pub fold_window_ms: u64,
    /// Pattern maintenance on its own, every this many seconds.
    pub maintenance_interval_s: u64,
}

impl Default for MeshSection {
    fn default() -> Self {
        let m = capsule_mesh::MeshConfig::default();
        MeshSection {
            backend: "embedded".into(),
            dispatch: m.dispatch,
            learning: m.learning,
            ext_actions: m.ext_actions,
            queue_capacity: m.queue_capacity,
            queue_capacities: Default::default(),
            workers: m.workers,
            general_model: "local".into(),
            classify_threshold: m.classify_threshold,
            fold_max_fanout: m.fold.max_fanout,
            fold_max_depth: m.fold.max_depth,
            fold_max_per_window: m.fold.max_per_window,
            fold_window_ms: m.fold.window.as_millis() as u64,
            maintenance_interval_s: m.maintenance_interval.as_secs(),
        }
    }
}

/// The environment variables SPEC N7 names, over `[mesh]` (and over
/// `CAPSULE_MESH__*`): `DISPATCH_ENABLED`, `LEARNING_ENABLED`,
/// `EXT_ACTIONS_ENABLED`, each `true`/`false`/`1`/`0`.
pub const MESH_FLAGS: [(&str, &str); 3] = [
    ("DISPATCH_ENABLED", "dispatch"),
    ("LEARNING_ENABLED", "learning"),
    ("EXT_ACTIONS_ENABLED", "ext_actions"),
];

impl MeshSection {
    /// The mesh's configuration.
    pub fn mesh_config(&self) -> capsule_mesh::MeshConfig {
        capsule_mesh::MeshConfig {
            dispatch: self.dispatch,
            learning: self.learning,
            ext_actions: self.ext_actions,
            queue_capacity: self.queue_capacity,
            queue_capacities: self.queue_capacities.clone(),
            workers: self.workers,
            classify_threshold: self.classify_threshold,
            fold: capsule_mesh::fold::FoldLimits {
                max_fanout: self.fold_max_fanout,
                max_depth: self.fold_max_depth,
                max_per_window: self.fold_max_per_window,
                window: Duration::from_millis(self.fold_window_ms),
            },
            retry_after_s: 1,
            maintenance_interval: Duration::from_secs(self.maintenance_interval_s),
        }
    }
}

/// Kernels per session (SPEC K8): how many stay in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Most session kernels in memory (the default session counts); the
    /// least recently used beyond it is snapshotted to the store.
    pub max_live: usize,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            max_live: capsule_cortex::sessions::DEFAULT_MAX_LIVE,
        }
    }
}

/// The file `capsule init` writes: every section, every key, commented.
pub const TEMPLATE: &str = include_str!("capsule.toml");

/// Parsed addresses of the server section.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

impl Config {
    /// Read `path` (absent: defaults), apply `CAPSULE_*__*` overrides from
    /// `env`, validate.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut table: toml::Table = match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("config {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        apply_env(&mut table, env)?;
        // Every key the file and the environment leave out keeps its
        // default, in nested tables too (`[llm.openai]` with only
        // `base_url` keeps OpenAI's model and key variable).
        let mut merged =
            toml::Table::try_from(Config::default()).context("serialising the defaults")?;
        merge(&mut merged, table);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| anyhow!("config {}: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot; errors name `section.key`.
    pub fn validate(&self) -> Result<()> {
        self.addresses()?;
        self.kernel.validate().map_err(|e| match e {
            capsule_kernel::KernelError::Parameter { field, reason } => {
                anyhow!("kernel.{field}: {reason}")
            }
            e => anyhow!("kernel: {e}"),
        })?;
        let positive = [
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            (
                "limits.max_stream_subscribers",
                self.limits.max_stream_subscribers as u64,
            ),
            ("limits.audit_page_max", self.limits.audit_page_max),
            (
                "security.kill_switch_poll_ms",
                self.security.kill_switch_poll_ms,
            ),
            ("security.watch_policy_ms", self.security.watch_policy_ms),
            (
                "signing.checkpoint_interval_ms",
                self.signing.checkpoint_interval_ms,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                bail!("{key}: must be positive");
            }
        }
        self.security
            .default_affect
            .validate()
            .map_err(|e| anyhow!("security.default_{e}"))?;
        let live = capsule_cortex::sessions::MAX_LIVE_LIMIT;
        if !(2..=live).contains(&self.sessions.max_live) {
            bail!("sessions.max_live: must be in 2..={live} (the default session and one more at least)");
        }
        if self.limits.max_body_bytes > 16 << 20 {
            bail!("limits.max_body_bytes: at most 16 MiB");
        }
        if !PLANNERS.contains(&self.llm.planner.as_str()) {
            bail!(
                "llm.planner: {:?} is not a planner; the planners are: {}",
                self.llm.planner,
                PLANNERS.join(", ")
            );
        }
        for (name, r) in [
            ("openai", &self.llm.openai),
            ("anthropic", &self.llm.anthropic),
        ] {
            use capsule_cortex::remote::{RemoteConfig, RemoteConfigError};
            if let Err(e) = r.apply(RemoteConfig::openai()).validate() {
                match e {
                    RemoteConfigError::Field { field, reason } => {
                        let key = match field {
                            "api_key_env" => "key_env",
                            "timeout" => "timeout_ms",
                            f => f,
                        };
                        bail!("llm.{name}.{key}: {reason}")
                    }
                    e => bail!("llm.{name}: {e}"),
                }
            }
        }
        if !["minilm", "hash"].contains(&self.memory.embedder.as_str()) {
            bail!(
                "memory.embedder: {:?} is not an embedder; choose \"minilm\" or \"hash\"",
                self.memory.embedder
            );
        }
        let models = &self.memory.models;
        if models.trim() != models.as_str() || models.contains('\0') {
            bail!(
                "memory.models: {models:?} has surrounding spaces or a NUL; give a directory, or \"\" for the per-user one"
            );
        }
        if self.memory.recall_k > 50 {
            bail!("memory.recall_k: at most 50");
        }
        if self.tls.enabled {
            bail!("tls.enabled: TLS and mTLS are not built yet; serve on loopback or behind a TLS proxy");
        }
        if self.storage.backend != "embedded" {
            bail!(
                "storage.backend: {:?} is not available; only \"embedded\" is built",
                self.storage.backend
            );
        }
        let m = &self.mesh;
        if !["local", "openai", "anthropic"].contains(&m.general_model.as_str()) {
            bail!(
                "mesh.general_model: {:?} is not a chat model; choose \"local\", \"openai\" or \"anthropic\"",
                m.general_model
            );
        }
        for (key, value) in [
            ("mesh.queue_capacity", m.queue_capacity as u64),
            ("mesh.workers", m.workers as u64),
            ("mesh.fold_max_fanout", m.fold_max_fanout as u64),
            ("mesh.fold_max_depth", m.fold_max_depth as u64),
            ("mesh.fold_max_per_window", m.fold_max_per_window as u64),
            ("mesh.fold_window_ms", m.fold_window_ms),
            ("mesh.maintenance_interval_s", m.maintenance_interval_s),
        ] {
            if value == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        if m.workers > 64 {
            bail!("mesh.workers: at most 64");
        }
        if let Some((topic, _)) = m.queue_capacities.iter().find(|(_, c)| **c == 0) {
            bail!("mesh.queue_capacities.{topic}: must be at least 1");
        }
        if !(0.0..=1.0).contains(&m.classify_threshold) {
            bail!("mesh.classify_threshold: must be in [0, 1]");
        }
        if self.mesh.backend != "embedded" {
            bail!(
                "mesh.backend: {:?} is not available; only \"embedded\" is built",
                self.mesh.backend
            );
        }
        for (key, p) in [
            ("memory.events", &self.memory.events),
            ("auth.tokens", &self.auth.tokens),
        ] {
            if p.is_empty() || Path::new(p).is_absolute() || p.split('/').any(|c| c == "..") {
                bail!("{key}: {p:?} must be a relative path inside the data directory");
            }
        }
        Ok(())
    }

    /// The models directory for the data directory `data`: `memory.models`
    /// when it names one (relative paths inside `data`), else the per-user
    /// directory every data directory shares ([`shared_models_dir`]). The
    /// value older `capsule init`s wrote, `"models"`, keeps meaning
    /// `DATA/models` where that directory exists (models fetched into it
    /// keep working) and means the per-user directory where it does not.
    pub fn models_dir(&self, data: &Path) -> PathBuf {
        match self.memory.models.as_str() {
            "" => shared_models_dir(),
            LEGACY_MODELS if !data.join(LEGACY_MODELS).is_dir() => shared_models_dir(),
            p => data.join(p),
        }
    }

    /// The models this configuration cannot start without: MiniLM for
    /// `memory.embedder = "minilm"`, SmolLM2 for `llm.planner = "local"`.
    pub fn required_models(&self) -> Vec<ModelSpec> {
        let mut out = Vec::new();
        if self.memory.embedder == "minilm" {
            out.push(MINILM);
        }
        if self.llm.planner == "local" {
            out.push(SMOLLM2);
        }
        out
    }

    pub fn addresses(&self) -> Result<Addresses> {
        let parse = |key: &str, v: &str| -> Result<SocketAddr> {
            v.parse().map_err(|e| {
                anyhow!("server.{key}: {v:?} is not an address like 127.0.0.1:7070 ({e})")
            })
        };
        Ok(Addresses {
            http: parse("http", &self.server.http)?,
            grpc: parse("grpc", &self.server.grpc)?,
            metrics: parse("metrics", &self.server.metrics)?,
        })
    }
}

/// Lay `over` onto `base`: a key in `over` replaces the base's value,
/// except that two tables merge key by key.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Overrides from `CAPSULE_<SECTION>__<KEY>=VALUE` (a nested table's key
/// adds a level: `CAPSULE_LLM__OPENAI__MODEL`); VALUE is read as a TOML
/// value (number, boolean, array) when it parses as one, else as a string.
/// Variables without `__` (such as `CAPSULE_DATA`) are not config.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    for (name, value) in &env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            bail!("{name}: expected {ENV_PREFIX}<SECTION>__<KEY>");
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let (key, tables) = path.split_last().expect("at least two parts");
        let mut at = &mut *table;
        for t in tables {
            let entry = at
                .entry(t.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                bail!("{name}: {t} in the config file is not a table");
            };
            at = inner;
        }
        at.insert(key.clone(), parsed);
    }
    // SPEC N7's flag names win over the file and `CAPSULE_MESH__*`.
    for (name, value) in &env {
        let Some((_, key)) = MESH_FLAGS.iter().find(|(flag, _)| flag == name) else {
            continue;
        };
        let on = match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => bail!("{name}: {value:?} is not true, false, 1 or 0"),
        };
        let mesh = table
            .entry("mesh")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(mesh) = mesh else {
            bail!("{name}: mesh in the config file is not a table");
        };
        mesh.insert(key.to_string(), toml::Value::Boolean(on));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_flags_come_from_the_file_the_prefixed_variables_and_the_spec_names() {
        let c = load("[mesh]\ndispatch = false\n", &[]).unwrap();
        assert!(!c.mesh.dispatch && c.mesh.learning && !c.mesh.ext_actions);
        let c = load(
            "[mesh]\ndispatch = false\n",
            &[
                ("DISPATCH_ENABLED", "1"),
                ("CAPSULE_MESH__LEARNING", "false"),
                ("EXT_ACTIONS_ENABLED", "true"),
            ],
        )
        .unwrap();
        assert!(c.mesh.dispatch && !c.mesh.learning && c.mesh.ext_actions);
        // The spec's name wins over the prefixed one.
        let c = load(
            "",
            &[
                ("LEARNING_ENABLED", "true"),
                ("CAPSULE_MESH__LEARNING", "false"),
            ],
        )
        .unwrap();
        assert!(c.mesh.learning);
        let e = load("", &[("DISPATCH_ENABLED", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DISPATCH_ENABLED"), "{e}");
        let e = load("[mesh]\nworkers = 0\n", &[]).unwrap_err().to_string();
        assert!(e.contains("mesh.workers"), "{e}");
        let e = load("[mesh]\ngeneral_model = \"oracle\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mesh.general_model"), "{e}");
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capsule.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(
            &path,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_template_parses_to_the_defaults() {
        assert_eq!(load(TEMPLATE, &[]).unwrap(), Config::default());
    }

    #[test]
    fn an_env_variable_overrides_a_key() {
        let c = load(
            TEMPLATE,
            &[
                ("CAPSULE_SERVER__HTTP", "127.0.0.1:9999"),
                ("CAPSULE_KERNEL__DIM", "16"),
                ("CAPSULE_DATA", "/ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.http, "127.0.0.1:9999");
        assert_eq!(c.kernel.dim, 16);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = load("[server]\nhtp = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("htp"), "{e}");
    }

    #[test]
    fn a_bad_value_names_section_and_key() {
        let e = load("[kernel]\ndim = 1\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("kernel.dim:"), "{e}");
        let e = load("", &[("CAPSULE_SERVER__GRPC", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.grpc:"), "{e}");
        let e = load("", &[("CAPSULE_TLS__ENABLED", "true")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.enabled:"), "{e}");
    }

    #[test]
    fn nested_overrides_and_llm_memory_settings_are_checked() {
        let c = load(
            "",
            &[
                ("CAPSULE_LLM__OPENAI__BASE_URL", "http://127.0.0.1:8080/v1"),
                ("CAPSULE_LLM__PLANNER", "openai"),
                ("CAPSULE_MEMORY__EMBEDDER", "hash"),
            ],
        )
        .unwrap();
        assert_eq!(c.llm.openai.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(c.llm.planner, "openai");
        assert_eq!(c.memory.embedder, "hash");
        for (k, v, key) in [
            ("CAPSULE_LLM__PLANNER", "oracle", "llm.planner"),
            (
                "CAPSULE_LLM__OPENAI__BASE_URL",
                "ftp://x",
                "llm.openai.base_url",
            ),
            (
                "CAPSULE_LLM__ANTHROPIC__TIMEOUT_MS",
                "0",
                "llm.anthropic.timeout_ms",
            ),
            ("CAPSULE_MEMORY__EMBEDDER", "word2vec", "memory.embedder"),
        ] {
            let e = load("", &[(k, v)]).unwrap_err().to_string();
            assert!(e.starts_with(key), "{k}={v}: {e}");
        }
    }

    #[test]
    fn a_partial_provider_table_keeps_that_providers_defaults() {
        let c = load(
            "[llm.anthropic]\nmodel = \"claude-sonnet-4-5\"\n[llm.openai]\nbase_url = \"http://127.0.0.1:11434/v1\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.llm.anthropic.model, "claude-sonnet-4-5");
        assert_eq!(c.llm.anthropic.key_env, "ANTHROPIC_API_KEY");
        assert_eq!(c.llm.anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(c.llm.openai.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(c.llm.openai.model, "gpt-4o-mini");
        let e = load("[llm.openai]\nmodle = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn the_models_directory_is_the_per_user_one_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let with = |models: &str| {
            let mut c = Config::default();
            c.memory.models = models.into();
            c.models_dir(&data)
        };
        assert_eq!(Config::default().models_dir(&data), shared_models_dir());
        assert_eq!(with("/srv/models"), PathBuf::from("/srv/models"));
        assert_eq!(with("mine"), data.join("mine"));
        // What older inits wrote: the data directory's models/ only where
        // it is there.
        assert_eq!(with(LEGACY_MODELS), shared_models_dir());
        std::fs::create_dir(data.join("models")).unwrap();
        assert_eq!(with(LEGACY_MODELS), data.join("models"));
        assert_eq!(with("./models"), data.join("./models"));
    }

    #[test]
    fn models_settings_are_read_and_checked() {
        let c = load(
            "",
            &[
                ("CAPSULE_MEMORY__MODELS_OFFLINE", "true"),
                ("CAPSULE_MEMORY__MODELS", "/srv/models"),
            ],
        )
        .unwrap();
        assert!(c.memory.models_offline);
        assert_eq!(c.memory.models, "/srv/models");
        let e = load("[memory]\nmodels = \" /srv\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("memory.models:"), "{e}");
        let e = load("", &[("CAPSULE_MEMORY__MODELS_OFFLINE", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("models_offline"), "{e}");
        let mut c = Config::default();
        assert_eq!(c.required_models(), vec![MINILM]);
        c.memory.embedder = "hash".into();
        c.llm.planner = "local".into();
        assert_eq!(c.required_models(), vec![SMOLLM2]);
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = load("[auth]\nrate_limit_per_minute = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate_limit_per_minute"), "{e}");
    }
}
