//! The autonomy table (SPEC P2): safety levels, modes, and the seven-step
//! evaluation, first match wins.
//!
//! 1. emergency stop armed → blocked
//! 2. modification action while modification is disabled → blocked
//! 3. affect thresholds not met (confidence ≥ 0.70, empathy ≥ 0.60,
//!    safety ≥ 0.95; a missing value counts as 0) → blocked
//! 4. level CRITICAL → requires_human (every mode)
//! 5. supervised: level ≥ MEDIUM → pending_review, else approved
//! 6. semi_autonomous: level ≥ HIGH → pending_review, else auto_approved
//! 7. autonomous → auto_approved

use crate::error::{PolicyError, Result};
use serde::{Deserialize, Serialize};

/// How much harm an action could do. In JSON: a name in any case
/// (`"critical"`, `"HIGH"`) or the number 1..=5; written as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SafetyLevel {
    Minimal = 1,
    Low = 2,
    Medium = 3,
    High = 4,
    Critical = 5,
}

impl SafetyLevel {
    pub const ALL: [SafetyLevel; 5] = [
        SafetyLevel::Minimal,
        SafetyLevel::Low,
        SafetyLevel::Medium,
        SafetyLevel::High,
        SafetyLevel::Critical,
    ];

    /// Parse `1..=5` or a name (`critical`, `HIGH`, …).
    pub fn parse(text: &str) -> Result<SafetyLevel> {
        let t = text.to_ascii_lowercase();
        SafetyLevel::ALL
            .into_iter()
            .find(|l| t == l.as_str() || t == (*l as u8).to_string())
            .ok_or_else(|| {
                PolicyError::invalid(
                    "level",
                    format!("{text:?} is not 1..=5 or minimal|low|medium|high|critical"),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SafetyLevel::Minimal => "minimal",
            SafetyLevel::Low => "low",
            SafetyLevel::Medium => "medium",
            SafetyLevel::High => "high",
            SafetyLevel::Critical => "critical",
        }
    }
}

impl Serialize for SafetyLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SafetyLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "level must be a name or 1..=5, not {other}"
                )))
            }
        };
        SafetyLevel::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How much the agent may do without a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Supervised,
    #[default]
    SemiAutonomous,
    Autonomous,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Supervised, Mode::SemiAutonomous, Mode::Autonomous];

    pub fn parse(text: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| {
                PolicyError::invalid(
                    "mode",
                    format!("{text:?} is not supervised, semi_autonomous or autonomous"),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Supervised => "supervised",
            Mode::SemiAutonomous => "semi_autonomous",
            Mode::Autonomous => "autonomous",
        }
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed (supervised mode, below MEDIUM).
    Approved,
    /// Allowed without review.
    AutoApproved,
    /// Waits for approver signatures.
    PendingReview,
    /// Refused.
    Blocked,
    /// Waits for a person, in every mode.
    RequiresHuman,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::AutoApproved => "auto_approved",
            Outcome::PendingReview => "pending_review",
            Outcome::Blocked => "blocked",
            Outcome::RequiresHuman => "requires_human",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::Approved,
            Outcome::AutoApproved,
            Outcome::PendingReview,
            Outcome::Blocked,
            Outcome::RequiresHuman,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }

    /// May the action go ahead now?
    pub fn allows(self) -> bool {
        matches!(self, Outcome::Approved | Outcome::AutoApproved)
    }

    /// Does it wait in the approval queue?
    pub fn needs_approval(self) -> bool {
        matches!(self, Outcome::PendingReview | Outcome::RequiresHuman)
    }
}

/// The affect parameters (SPEC O8), each in [0, 1]: numbers that callers
/// and operators supply, not feelings. Rule 3 reads confidence, empathy and
/// safety; the maintenance scoring (SPEC T7) reads the others.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empathy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curiosity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimism: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caution: Option<f64>,
}

/// The names of the affect parameters, in the order of [`Affect::values`].
pub const AFFECT_NAMES: [&str; 7] = [
    "confidence",
    "empathy",
    "curiosity",
    "safety",
    "urgency",
    "optimism",
    "caution",
];

/// The thresholds of rule 3.
pub const MIN_CONFIDENCE: f64 = 0.70;
pub const MIN_EMPATHY: f64 = 0.60;
pub const MIN_SAFETY: f64 = 0.95;

impl Affect {
    /// The seven values, in the order of [`AFFECT_NAMES`].
    pub fn values(&self) -> [Option<f64>; 7] {
        [
            self.confidence,
            self.empathy,
            self.curiosity,
            self.safety,
            self.urgency,
            self.optimism,
            self.caution,
        ]
    }

    /// The parameter called `name`, for writing.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<f64>> {
        Some(match name {
            "confidence" => &mut self.confidence,
            "empathy" => &mut self.empathy,
            "curiosity" => &mut self.curiosity,
            "safety" => &mut self.safety,
            "urgency" => &mut self.urgency,
            "optimism" => &mut self.optimism,
            "caution" => &mut self.caution,
            _ => return None,
        })
    }

    /// The threshold rule 3 holds `name` to, if any.
    pub fn threshold(name: &str) -> Option<f64> {
        match name {
            "confidence" => Some(MIN_CONFIDENCE),
            "empathy" => Some(MIN_EMPATHY),
            "safety" => Some(MIN_SAFETY),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (field, v) in AFFECT_NAMES.into_iter().zip(self.values()) {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(PolicyError::invalid(
                        format!("affect.{field}"),
                        format!("{v} is outside [0, 1]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The first threshold not met, as (name, value, minimum).
    pub fn shortfall(&self) -> Option<(&'static str, f64, f64)> {
        [
            ("confidence", self.confidence, MIN_CONFIDENCE),
            ("empathy", self.empathy, MIN_EMPATHY),
            ("safety", self.safety, MIN_SAFETY),
        ]
        .into_iter()
        .map(|(name, v, min)| (name, v.unwrap_or(0.0), min))
        .find(|(_, v, min)| v < min)
    }
}

/// Everything the table looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Situation {
    pub emergency_stop: bool,
    pub modification: bool,
    pub modification_enabled: bool,
    pub affect: Affect,
    pub level: SafetyLevel,
    pub mode: Mode,
}

/// The table's answer: outcome, the rule (1..=7) that produced it, why, and
/// for a refusal or a wait, what would have let it through.
#[derive(Debug, Clone, PartialEq)]
pub struct Ruling {
    pub outcome: Outcome,
    pub rule: u8,
    pub why: String,
    pub would_pass: Option<String>,
}

/// Apply the table, first match wins.
pub fn decide(s: &Situation) -> Ruling {
    let ruling = |outcome, rule, why: String, would_pass: Option<String>| Ruling {
        outcome,
        rule,
        why,
        would_pass,
    };
    if s.emergency_stop {
        return ruling(
            Outcome::Blocked,
            1,
            "kill_switch: the emergency stop is armed".into(),
            Some("disarm the kill switch (needs an operator key)".into()),
        );
    }
    if s.modification && !s.modification_enabled {
        return ruling(
            Outcome::Blocked,
            2,
            "modification actions are disabled".into(),
            Some("set modification_enabled = true".into()),
        );
    }
    if let Some((name, value, min)) = s.affect.shortfall() {
        return ruling(
            Outcome::Blocked,
            3,
            format!("affect threshold not met: {name} {value} < {min}"),
            Some(format!("{name} ≥ {min}")),
        );
    }
    if s.level == SafetyLevel::Critical {
        return ruling(
            Outcome::RequiresHuman,
            4,
            "level CRITICAL always requires a human".into(),
            Some("a level below CRITICAL, or a person's approval".into()),
        );
    }
    match s.mode {
        Mode::Supervised if s.level >= SafetyLevel::Medium => ruling(
            Outcome::PendingReview,
            5,
            format!(
                "supervised mode reviews level {} (≥ MEDIUM)",
                s.level.as_str().to_uppercase()
            ),
            Some("approver signatures (quorum), or a level below MEDIUM".into()),
        ),
        Mode::Supervised => ruling(
            Outcome::Approved,
            5,
            "supervised mode approves levels below MEDIUM".into(),
            None,
        ),
        Mode::SemiAutonomous if s.level >= SafetyLevel::High => ruling(
            Outcome::PendingReview,
            6,
            format!(
                "semi_autonomous mode reviews level {} (≥ HIGH)",
                s.level.as_str().to_uppercase()
            ),
            Some("approver signatures (quorum), or a level below HIGH".into()),
        ),
        Mode::SemiAutonomous => ruling(
            Outcome::AutoApproved,
            6,
            "semi_autonomous mode auto-approves levels below HIGH".into(),
            None,
        ),
        Mode::Autonomous => ruling(
            Outcome::AutoApproved,
            7,
            "autonomous mode auto-approves".into(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;
    use SafetyLevel::*;

    fn good() -> Affect {
        Affect {
            confidence: Some(0.70),
            empathy: Some(0.60),
            safety: Some(0.95),
            ..Affect::default()
        }
    }

    fn at(mode: Mode, level: SafetyLevel, affect: Affect) -> (Outcome, u8) {
        let r = decide(&Situation {
            emergency_stop: false,
            modification: false,
            modification_enabled: false,
            affect,
            level,
            mode,
        });
        (r.outcome, r.rule)
    }

    /// Rules 4–7: every mode × level, with the affect exactly at its thresholds.
    #[test]
    fn every_mode_and_level_gives_the_table_outcome() {
        let expected: [(Mode, [(Outcome, u8); 5]); 3] = [
            (
                Mode::Supervised,
                [
                    (Approved, 5),
                    (Approved, 5),
                    (PendingReview, 5),
                    (PendingReview, 5),
                    (RequiresHuman, 4),
                ],
            ),
            (
                Mode::SemiAutonomous,
                [
                    (AutoApproved, 6),
                    (AutoApproved, 6),
                    (AutoApproved, 6),
                    (PendingReview, 6),
                    (RequiresHuman, 4),
                ],
            ),
            (
                Mode::Autonomous,
                [
                    (AutoApproved, 7),
                    (AutoApproved, 7),
                    (AutoApproved, 7),
                    (AutoApproved, 7),
                    (RequiresHuman, 4),
                ],
            ),
        ];
        for (mode, row) in expected {
            for (level, want) in SafetyLevel::ALL.into_iter().zip(row) {
                assert_eq!(at(mode, level, good()), want, "{mode:?} {level:?}");
            }
        }
    }

    /// Rule 3 at each boundary, in every mode and level: just below blocks,
    /// exactly at passes, a missing value counts as 0.
    #[test]
    fn affect_boundaries_block_below_and_pass_at_the_threshold() {
        type Set = fn(&mut Affect, Option<f64>);
        let fields: [(&str, f64, f64, Set); 3] = [
            ("confidence", 0.6999, 0.70, |a, v| a.confidence = v),
            ("empathy", 0.5999, 0.60, |a, v| a.empathy = v),
            ("safety", 0.9499, 0.95, |a, v| a.safety = v),
        ];
        for mode in Mode::ALL {
            for level in SafetyLevel::ALL {
                for (name, below, at_threshold, set) in fields {
                    for (value, blocked) in [
                        (Some(below), true),
                        (Some(at_threshold), false),
                        (None, true),
                        (Some(1.0), false),
                    ] {
                        let mut affect = good();
                        set(&mut affect, value);
                        let (outcome, rule) = at(mode, level, affect);
                        if blocked {
                            assert_eq!(
                                (outcome, rule),
                                (Blocked, 3),
                                "{mode:?} {level:?} {name}={value:?}"
                            );
                        } else {
                            assert_ne!(rule, 3, "{mode:?} {level:?} {name}={value:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            at(Mode::Autonomous, Minimal, Affect::default()),
            (Blocked, 3),
            "all missing"
        );
    }

    #[test]
    fn emergency_stop_and_modification_come_first() {
        let base = Situation {
            emergency_stop: true,
            modification: true,
            modification_enabled: false,
            affect: Affect::default(),
            level: Critical,
            mode: Mode::Autonomous,
        };
        let r = decide(&base);
        assert_eq!((r.outcome, r.rule), (Blocked, 1));
        assert!(r.why.starts_with("kill_switch"));
        let r = decide(&Situation {
            emergency_stop: false,
            ..base
        });
        assert_eq!((r.outcome, r.rule), (Blocked, 2));
        let r = decide(&Situation {
            emergency_stop: false,
            modification_enabled: true,
            ..base
        });
        assert_eq!((r.outcome, r.rule), (Blocked, 3));
        let r = decide(&Situation {
            emergency_stop: false,
            modification: false,
            affect: good(),
            ..base
        });
        assert_eq!((r.outcome, r.rule), (RequiresHuman, 4));
    }

    #[test]
    fn levels_and_modes_parse() {
        assert_eq!(SafetyLevel::parse("HIGH").unwrap(), High);
        assert_eq!(SafetyLevel::parse("5").unwrap(), Critical);
        assert!(SafetyLevel::parse("6").is_err());
        assert_eq!(
            Mode::parse("semi_autonomous").unwrap(),
            Mode::SemiAutonomous
        );
        assert!(Mode::parse("auto")
            .unwrap_err()
            .to_string()
            .starts_with("mode:"));
        assert!(Affect {
            confidence: Some(1.2),
            ..Affect::default()
        }
        .validate()
        .is_err());
        let levels: Vec<SafetyLevel> =
            serde_json::from_str(r#"["critical", "HIGH", 3, "2"]"#).unwrap();
        assert_eq!(levels, [Critical, High, Medium, Low]);
        assert_eq!(serde_json::to_string(&Critical).unwrap(), "\"critical\"");
        assert!(serde_json::from_str::<SafetyLevel>("9").is_err());
    }
}
