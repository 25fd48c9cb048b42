//! Risk and safety level per action (SPEC P2, P6): a table built in,
//! overridable in `policy.json` (`"levels": {"brain.step": "moderate"}`),
//! shown by `capsule policy show levels`.
//!
//! Every action of the schema has a named risk; its safety level follows
//! from it (NEGLIGIBLE→MINIMAL, MINOR→LOW, MODERATE→MEDIUM, SEVERE→HIGH,
//! CATASTROPHIC→CRITICAL). A step may state a higher risk than its action's
//! entry (a goal step, a maintenance alternative), never a lower one: the
//! table is a floor, so no caller can talk an action down.

use crate::autonomy::SafetyLevel;
use crate::error::{PolicyError, Result};
use crate::rules::ACTIONS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The named risks of SPEC P6, with their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Negligible,
    Minor,
    Moderate,
    Severe,
    Catastrophic,
}

impl Risk {
    pub const ALL: [Risk; 5] = [
        Risk::Negligible,
        Risk::Minor,
        Risk::Moderate,
        Risk::Severe,
        Risk::Catastrophic,
    ];

    pub fn value(self) -> f64 {
        match self {
            Risk::Negligible => 0.1,
            Risk::Minor => 0.25,
            Risk::Moderate => 0.5,
            Risk::Severe => 0.75,
            Risk::Catastrophic => 1.0,
        }
    }

    pub fn level(self) -> SafetyLevel {
        match self {
            Risk::Negligible => SafetyLevel::Minimal,
            Risk::Minor => SafetyLevel::Low,
            Risk::Moderate => SafetyLevel::Medium,
            Risk::Severe => SafetyLevel::High,
            Risk::Catastrophic => SafetyLevel::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Negligible => "negligible",
            Risk::Minor => "minor",
            Risk::Moderate => "moderate",
            Risk::Severe => "severe",
            Risk::Catastrophic => "catastrophic",
        }
    }

    /// The smallest named risk whose number is at least `value` (a stated
    /// 0.6 counts as SEVERE): a number between two names takes the higher.
    pub fn at_least(value: f64) -> Result<Risk> {
        if !(0.0..=1.0).contains(&value) {
            return Err(PolicyError::invalid(
                "risk",
                format!("{value} is outside [0, 1]"),
            ));
        }
        Ok(Risk::ALL
            .into_iter()
            .find(|r| value <= r.value())
            .unwrap_or(Risk::Catastrophic))
    }
}

/// Where an action's risk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSource {
    /// The table built into Capsule.
    BuiltIn,
    /// An entry of `levels` in `policy.json`.
    PolicyJson,
    /// The step itself stated a higher risk.
    Stated,
}

/// The risk and level a decision is made at, and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assessment {
    pub risk: f64,
    pub level: SafetyLevel,
    pub source: RiskSource,
}

/// The built-in risk of each action of the schema.
pub fn built_in(action: &str) -> Option<Risk> {
    Some(match action {
        "plan.explain" | "fs.read" => Risk::Negligible,
        "brain.step" | "brain.measure" | "memory.append" | "task.submit" | "bus.publish" => {
            Risk::Minor
        }
        "selfedit.propose" | "selfedit.approve" | "fs.write" => Risk::Moderate,
        "object.delete" | "selfedit.apply" => Risk::Severe,
        "system.exec" | "net.open" => Risk::Catastrophic,
        _ => return None,
    })
}

/// The table: the built-in risks with `policy.json`'s overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Levels {
    overrides: BTreeMap<String, Risk>,
}

impl Levels {
    pub fn new(overrides: BTreeMap<String, Risk>) -> Result<Levels> {
        let levels = Levels { overrides };
        levels.validate()?;
        Ok(levels)
    }

    /// Every override names an action of the schema.
    pub fn validate(&self) -> Result<()> {
        for action in self.overrides.keys() {
            if !ACTIONS.contains(&action.as_str()) {
                return Err(PolicyError::invalid(
                    format!("levels.{action}"),
                    format!("not an action of the schema ({})", ACTIONS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The table's entry for `action`.
    pub fn entry(&self, action: &str) -> Result<(Risk, RiskSource)> {
        if let Some(r) = self.overrides.get(action) {
            return Ok((*r, RiskSource::PolicyJson));
        }
        built_in(action)
            .map(|r| (r, RiskSource::BuiltIn))
            .ok_or_else(|| {
                PolicyError::invalid(
                    "action",
                    format!("{action:?} is not an action of the schema"),
                )
            })
    }

    /// The risk and level of `action` when a step states `stated` (or nothing).
    /// A stated risk below the table's is refused, naming both.
    pub fn assess(&self, action: &str, stated: Option<f64>) -> Result<Assessment> {
        let (floor, source) = self.entry(action)?;
        let Some(value) = stated else {
            return Ok(Assessment {
                risk: floor.value(),
                level: floor.level(),
                source,
            });
        };
        let named = Risk::at_least(value)?;
        if value < floor.value() {
            return Err(PolicyError::invalid(
                "risk",
                format!(
                    "{value} is below {action}'s risk {} ({}, from {}); a step may state a higher risk, never a lower one",
                    floor.value(),
                    floor.as_str(),
                    match source {
                        RiskSource::PolicyJson => "policy.json",
                        _ => "the built-in table",
                    }
                ),
            ));
        }
        if value == floor.value() {
            return Ok(Assessment {
                risk: value,
                level: floor.level(),
                source,
            });
        }
        Ok(Assessment {
            risk: value,
            level: named.level(),
            source: RiskSource::Stated,
        })
    }

    /// Every action with its risk, level and source, for `policy show levels`.
    pub fn table(&self) -> Vec<(&'static str, Risk, SafetyLevel, RiskSource)> {
        ACTIONS
            .iter()
            .filter_map(|a| {
                let (r, s) = self.entry(a).ok()?;
                Some((*a, r, r.level(), s))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_of_the_schema_has_a_built_in_risk() {
        for a in ACTIONS {
            assert!(built_in(a).is_some(), "{a}");
        }
    }

    #[test]
    fn the_issue_defaults_hold() {
        let l = Levels::default();
        for (action, risk, level) in [
            ("brain.step", 0.25, SafetyLevel::Low),
            ("brain.measure", 0.25, SafetyLevel::Low),
            ("memory.append", 0.25, SafetyLevel::Low),
            ("plan.explain", 0.1, SafetyLevel::Minimal),
            ("task.submit", 0.25, SafetyLevel::Low),
            ("selfedit.propose", 0.5, SafetyLevel::Medium),
            ("object.delete", 0.75, SafetyLevel::High),
            ("selfedit.apply", 0.75, SafetyLevel::High),
            ("system.exec", 1.0, SafetyLevel::Critical),
            ("net.open", 1.0, SafetyLevel::Critical),
        ] {
            let a = l.assess(action, None).unwrap();
            assert_eq!(
                (a.risk, a.level, a.source),
                (risk, level, RiskSource::BuiltIn),
                "{action}"
            );
        }
    }

    #[test]
    fn a_step_may_raise_its_risk_but_never_lower_it() {
        let l = Levels::default();
        let a = l.assess("brain.step", Some(0.6)).unwrap();
        assert_eq!(
            (a.risk, a.level, a.source),
            (0.6, SafetyLevel::High, RiskSource::Stated)
        );
        let a = l.assess("brain.step", Some(0.5)).unwrap();
        assert_eq!(a.level, SafetyLevel::Medium);
        let a = l.assess("brain.step", Some(0.25)).unwrap();
        assert_eq!(a.source, RiskSource::BuiltIn);
        let e = l
            .assess("object.delete", Some(0.25))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("risk: 0.25 is below object.delete's risk 0.75"),
            "{e}"
        );
        assert!(l.assess("brain.step", Some(1.5)).is_err());
        assert!(l.assess("brain.step", Some(f64::NAN)).is_err());
    }

    #[test]
    fn overrides_name_actions_of_the_schema_and_win_over_the_built_in_table() {
        let l: Levels = serde_json::from_str(r#"{"brain.step": "moderate"}"#).unwrap();
        l.validate().unwrap();
        let a = l.assess("brain.step", None).unwrap();
        assert_eq!(
            (a.risk, a.level, a.source),
            (0.5, SafetyLevel::Medium, RiskSource::PolicyJson)
        );
        let bad: Levels = serde_json::from_str(r#"{"brain.stepp": "minor"}"#).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("levels.brain.stepp:"));
        assert!(serde_json::from_str::<Levels>(r#"{"brain.step": "huge"}"#).is_err());
    }
}
