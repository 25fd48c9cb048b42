//! The guardian (SPEC P6): a plan step is refused when its risk or drift is
//! over the limit.

use crate::error::{PolicyError, Result};
use serde::{Deserialize, Serialize};

/// Limits on a plan step. A value equal to the limit passes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardian {
    pub max_risk: f64,
    pub max_drift: f64,
}

impl Default for Guardian {
    fn default() -> Self {
        Guardian {
            max_risk: 0.5,
            max_drift: 0.35,
        }
    }
}

/// Why the guardian refused a step.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardianRefusal {
    Drift { drift: f64, max: f64 },
}

impl Guardian {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("max_risk", self.max_risk), ("max_drift", self.max_drift)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(PolicyError::invalid(
                    field,
                    format!("{v} is outside [0, 1]"),
                ));
            }
        }
        Ok(())
    }

    /// Check a step's drift (in [0, 1] when given): over max_drift blocks.
    pub fn check_drift(&self, drift: Option<f64>) -> Result<Option<GuardianRefusal>> {
        if let Some(v) = drift {
            if !(0.0..=1.0).contains(&v) {
                return Err(PolicyError::invalid(
                    "drift",
                    format!("{v} is outside [0, 1]"),
                ));
            }
        }
        Ok(drift
            .filter(|&d| d > self.max_drift)
            .map(|d| GuardianRefusal::Drift {
                drift: d,
                max: self.max_drift,
            }))
    }

    /// A step whose risk exceeds max_risk never runs without people: it is
    /// held for the approval quorum (and not refused again once approved).
    pub fn needs_people(&self, risk: f64) -> bool {
        risk > self.max_risk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_over_the_limit_blocks_and_risk_over_the_limit_needs_people() {
        let g = Guardian::default();
        assert_eq!(g.check_drift(Some(0.35)).unwrap(), None);
        assert_eq!(g.check_drift(None).unwrap(), None);
        assert!(matches!(
            g.check_drift(Some(0.3501)).unwrap(),
            Some(GuardianRefusal::Drift { .. })
        ));
        assert!(g.check_drift(Some(1.5)).is_err());
        assert!(g.check_drift(Some(f64::NAN)).is_err());
        assert!(!g.needs_people(0.5));
        assert!(g.needs_people(0.75));
    }
}
