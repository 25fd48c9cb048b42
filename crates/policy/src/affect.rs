//! The affect parameters as state (SPEC O8): the seven values the policy
//! engine and the maintenance scoring read, each with where it came from.
//!
//! Values start from the configuration (`security.default_affect`); an
//! operator changes them (recorded, and kept in `state/affect.json` so they
//! survive a restart); a request may lower a value for its own decision but
//! never raise it — an agent cannot talk its way past rule 3.

use crate::autonomy::{Affect, AFFECT_NAMES};
use crate::durable::replace_file;
use crate::error::{PolicyError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The value a parameter takes when the configuration names none.
pub const UNSET_DEFAULT: f64 = 0.5;

/// The configuration defaults when none is given: confidence 0.8,
/// empathy 0.7, safety 0.97 (each above its rule-3 threshold), the others
/// [`UNSET_DEFAULT`].
pub fn built_in_defaults() -> Affect {
    Affect {
        confidence: Some(0.8),
        empathy: Some(0.7),
        safety: Some(0.97),
        ..Affect::default()
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffectSource {
    /// `security.default_affect` in capsule.toml (or its default).
    Config,
    /// Set by an operator (`PUT /v1/affect`).
    Operator,
    /// Lowered by the request for its own decision.
    Request,
}

/// One parameter as `GET /v1/affect` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Parameter {
    pub name: &'static str,
    pub value: f64,
    /// The minimum rule 3 holds it to, if any.
    pub threshold: Option<f64>,
    pub source: AffectSource,
}

/// What an operator has set, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    operator: Affect,
}

/// The current parameters.
#[derive(Debug, Clone)]
pub struct AffectState {
    config: Affect,
    operator: Affect,
    path: Option<PathBuf>,
}

/// The name of the file in the state directory.
pub const AFFECT_FILE: &str = "affect.json";

impl AffectState {
    /// Parameters from `config` alone, kept in memory only.
    pub fn in_memory(config: Affect) -> Result<AffectState> {
        config.validate()?;
        Ok(AffectState {
            config,
            operator: Affect::default(),
            path: None,
        })
    }

    /// Parameters from `config` and what operators set before, kept in
    /// `state_dir/affect.json`.
    pub fn open(state_dir: &Path, config: Affect) -> Result<AffectState> {
        config.validate()?;
        let path = state_dir.join(AFFECT_FILE);
        let operator = match std::fs::read(&path) {
            Ok(bytes) => {
                let saved: Saved =
                    serde_json::from_slice(&bytes).map_err(|e| PolicyError::PolicyFile {
                        file: path.display().to_string(),
                        line: e.line(),
                        reason: e.to_string(),
                    })?;
                saved.operator.validate()?;
                saved.operator
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Affect::default(),
            Err(e) => return Err(PolicyError::io(&path)(e)),
        };
        Ok(AffectState {
            config,
            operator,
            path: Some(path),
        })
    }

    fn current(&self, name: &str) -> (f64, AffectSource) {
        let pick = |a: &Affect| {
            AFFECT_NAMES
                .iter()
                .zip(a.values())
                .find(|(n, _)| **n == name)
                .and_then(|(_, v)| v)
        };
        match (pick(&self.operator), pick(&self.config)) {
            (Some(v), _) => (v, AffectSource::Operator),
            (None, Some(v)) => (v, AffectSource::Config),
            (None, None) => (UNSET_DEFAULT, AffectSource::Config),
        }
    }

    /// The seven parameters with their thresholds and sources.
    pub fn parameters(&self) -> Vec<Parameter> {
        AFFECT_NAMES
            .into_iter()
            .map(|name| {
                let (value, source) = self.current(name);
                Parameter {
                    name,
                    value,
                    threshold: Affect::threshold(name),
                    source,
                }
            })
            .collect()
    }

    /// The values a decision uses when the request states `requested`
    /// (each value given may only lower the current one), with the source
    /// of each.
    pub fn for_request(&self, requested: Option<&Affect>) -> Result<(Affect, Vec<Parameter>)> {
        let mut out = Affect::default();
        let mut params = self.parameters();
        if let Some(r) = requested {
            r.validate()?;
        }
        for p in &mut params {
            let asked = requested.and_then(|r| {
                AFFECT_NAMES
                    .iter()
                    .zip(r.values())
                    .find(|(n, _)| **n == p.name)
                    .and_then(|(_, v)| v)
            });
            if let Some(v) = asked {
                if v > p.value {
                    return Err(PolicyError::invalid(
                        format!("affect.{}", p.name),
                        format!(
                            "{v} exceeds the current value {} (from {}); a request may lower a parameter, never raise it",
                            p.value,
                            match p.source {
                                AffectSource::Operator => "the operator",
                                _ => "the configuration",
                            }
                        ),
                    ));
                }
                if v < p.value {
                    p.value = v;
                    p.source = AffectSource::Request;
                }
            }
            if let Some(slot) = out.slot(p.name) {
                *slot = Some(p.value);
            }
        }
        Ok((out, params))
    }

    /// An operator sets the values `update` gives (the others stay); kept
    /// on disk before it takes effect.
    pub fn set(&mut self, update: &Affect) -> Result<()> {
        update.validate()?;
        let mut next = self.operator;
        for (name, v) in AFFECT_NAMES.into_iter().zip(update.values()) {
            if let (Some(v), Some(slot)) = (v, next.slot(name)) {
                *slot = Some(v);
            }
        }
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&Saved { operator: next })
                .map_err(|e| PolicyError::invalid("affect", e.to_string()))?;
            replace_file(path, &bytes)?;
        }
        self.operator = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Affect {
        Affect {
            confidence: Some(0.8),
            empathy: Some(0.7),
            safety: Some(0.97),
            ..Affect::default()
        }
    }

    #[test]
    fn every_parameter_has_a_value_and_a_source() {
        let s = AffectState::in_memory(config()).unwrap();
        let p = s.parameters();
        assert_eq!(p.len(), 7);
        assert_eq!(p[0].name, "confidence");
        assert_eq!(
            (p[0].value, p[0].threshold, p[0].source),
            (0.8, Some(0.7), AffectSource::Config)
        );
        assert_eq!((p[2].value, p[2].threshold), (UNSET_DEFAULT, None));
    }

    #[test]
    fn a_request_may_lower_a_value_but_never_raise_it() {
        let s = AffectState::in_memory(config()).unwrap();
        let lower = Affect {
            safety: Some(0.5),
            ..Affect::default()
        };
        let (a, p) = s.for_request(Some(&lower)).unwrap();
        assert_eq!(a.safety, Some(0.5));
        assert_eq!(a.confidence, Some(0.8));
        assert_eq!(p[3].source, AffectSource::Request);
        let raise = Affect {
            confidence: Some(0.9),
            ..Affect::default()
        };
        let e = s.for_request(Some(&raise)).unwrap_err().to_string();
        assert!(
            e.starts_with("affect.confidence: 0.9 exceeds the current value 0.8"),
            "{e}"
        );
    }

    #[test]
    fn operator_values_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AffectState::open(dir.path(), config()).unwrap();
        s.set(&Affect {
            safety: Some(0.99),
            ..Affect::default()
        })
        .unwrap();
        let s = AffectState::open(dir.path(), config()).unwrap();
        let p = s.parameters();
        assert_eq!((p[3].value, p[3].source), (0.99, AffectSource::Operator));
        assert_eq!((p[0].value, p[0].source), (0.8, AffectSource::Config));
        std::fs::write(
            dir.path().join(AFFECT_FILE),
            b"{\"operator\": {\"safety\": 2}}",
        )
        .unwrap();
        assert!(AffectState::open(dir.path(), config()).is_err());
    }
}
