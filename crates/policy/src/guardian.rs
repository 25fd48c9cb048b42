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
    Risk { risk: f64, max: f64 },
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

    /// Check a step's risk and drift (each in [0, 1] when given).
    pub fn check(&self, risk: Option<f64>, drift: Option<f64>) -> Result<Option<GuardianRefusal>> {
        for (field, v) in [("risk", risk), ("drift", drift)] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(PolicyError::invalid(
                        field,
                        format!("{v} is outside [0, 1]"),
                    ));
                }
            }
        }
        if let Some(r) = risk.filter(|&r| r > self.max_risk) {
            return Ok(Some(GuardianRefusal::Risk {
                risk: r,
                max: self.max_risk,
            }));
        }
        if let Some(d) = drift.filter(|&d| d > self.max_drift) {
            return Ok(Some(GuardianRefusal::Drift {
                drift: d,
                max: self.max_drift,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_risk_is_checked_first() {
        let g = Guardian::default();
        assert_eq!(g.check(Some(0.5), Some(0.35)).unwrap(), None);
        assert!(matches!(
            g.check(Some(0.5001), None).unwrap(),
            Some(GuardianRefusal::Risk { .. })
        ));
        assert!(matches!(
            g.check(None, Some(0.3501)).unwrap(),
            Some(GuardianRefusal::Drift { .. })
        ));
        assert!(matches!(
            g.check(Some(0.9), Some(0.9)).unwrap(),
            Some(GuardianRefusal::Risk { .. })
        ));
        assert!(g.check(Some(1.5), None).is_err());
        assert!(g.check(Some(f64::NAN), None).is_err());
    }
}
