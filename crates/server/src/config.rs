//! `capsule.toml` (SPEC O5): one file with the sections server, kernel,
//! limits, security, llm, memory, tls, auth, signing, storage and mesh;
//! any key overridable by an environment variable
//! `CAPSULE_<SECTION>__<KEY>` (e.g. `CAPSULE_SERVER__HTTP=0.0.0.0:7070`).
//! Invalid configuration fails at start with the key and the reason.

use anyhow::{anyhow, bail, Context, Result};
use capsule_kernel::KernelConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// The prefix of override variables; the section and key are split by `__`.
pub const ENV_PREFIX: &str = "CAPSULE_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            kernel: KernelConfig::default(),
            limits: LimitsSection::default(),
            security: SecuritySection::default(),
            llm: LlmSection::default(),
            memory: MemorySection::default(),
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            signing: SigningSection::default(),
            storage: StorageSection::default(),
            mesh: MeshSection::default(),
        }
    }
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
            default_affect: capsule_cortex::CortexConfig::default().default_affect,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSection {
    pub planner: String,
}

impl Default for LlmSection {
    fn default() -> Self {
        LlmSection {
            planner: "hash".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    pub events: String,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            events: "memory/events.db".into(),
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
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            backend: "embedded".into(),
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
        let config: Config = toml::Value::Table(table)
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
        if self.limits.max_body_bytes > 16 << 20 {
            bail!("limits.max_body_bytes: at most 16 MiB");
        }
        if self.llm.planner != "hash" {
            bail!(
                "llm.planner: {:?} is not available in this build; the planners are: hash",
                self.llm.planner
            );
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

/// Overrides from `CAPSULE_<SECTION>__<KEY>=VALUE`; VALUE is read as a
/// TOML value (number, boolean, array) when it parses as one, else as a
/// string. Variables without `__` (such as `CAPSULE_DATA`) are not config.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() {
            bail!("{name}: expected {ENV_PREFIX}<SECTION>__<KEY>");
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            bail!("{name}: [{section}] in the config file is not a table");
        };
        section_table.insert(key, parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_wrong_type_names_the_key() {
        let e = load("[auth]\nrate_limit_per_minute = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate_limit_per_minute"), "{e}");
    }
}
