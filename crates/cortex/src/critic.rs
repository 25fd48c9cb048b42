//! The critic (SPEC C1): the checks every plan passes before policy sees
//! it — workspace size, value range, an allowed operation that agrees with
//! the measure flag, a bounded rationale.

use crate::plan::{Op, Plan};
use serde::Serialize;

/// Largest |gw_j| (SPEC K2).
pub const MAX_GW_ABS: f64 = 10.0;
/// Longest rationale, in bytes.
pub const MAX_RATIONALE_BYTES: usize = 2000;

/// What the critic enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticLimits {
    /// The kernel's workspace dimension (≤ 60).
    pub workspace_dim: usize,
    /// Operations plans may use.
    pub allowed_ops: Vec<Op>,
}

/// Why the critic refused a plan: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

fn reject(field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Check `plan` against `limits`; the first problem found is returned.
pub fn critique(plan: &Plan, limits: &CriticLimits) -> Result<(), Rejection> {
    if plan.gw.len() > limits.workspace_dim {
        return Err(reject(
            "gw",
            format!(
                "{} values; the kernel's workspace takes at most {}",
                plan.gw.len(),
                limits.workspace_dim
            ),
        ));
    }
    if let Some((i, x)) = plan
        .gw
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && x.abs() <= MAX_GW_ABS))
    {
        return Err(reject(
            format!("gw[{i}]"),
            format!("{x} is outside [-{MAX_GW_ABS}, {MAX_GW_ABS}]"),
        ));
    }
    if !limits.allowed_ops.contains(&plan.op) {
        return Err(reject(
            "op",
            format!("{} is not an allowed operation", plan.op.as_str()),
        ));
    }
    if plan.op != Op::for_measure(plan.measure) {
        return Err(reject(
            "op",
            format!(
                "{} disagrees with measure = {}",
                plan.op.as_str(),
                plan.measure
            ),
        ));
    }
    if plan.rationale.len() > MAX_RATIONALE_BYTES {
        return Err(reject(
            "rationale",
            format!(
                "{} bytes exceeds the limit of {MAX_RATIONALE_BYTES}",
                plan.rationale.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CriticLimits {
        CriticLimits {
            workspace_dim: 60,
            allowed_ops: Op::ALL.to_vec(),
        }
    }

    fn plan(gw: Vec<f64>) -> Plan {
        Plan {
            op: Op::Step,
            gw,
            measure: false,
            rationale: "test".into(),
        }
    }

    #[test]
    fn sixty_values_within_range_pass() {
        assert_eq!(critique(&plan(vec![10.0; 60]), &limits()), Ok(()));
    }

    #[test]
    fn sixty_one_values_name_the_gw_field() {
        let r = critique(&plan(vec![0.1; 61]), &limits()).unwrap_err();
        assert_eq!(r.field, "gw");
        assert!(r.reason.contains("61"), "{}", r.reason);
    }

    #[test]
    fn a_value_of_eleven_names_its_index() {
        let mut gw = vec![0.0; 5];
        gw[3] = 11.0;
        let r = critique(&plan(gw), &limits()).unwrap_err();
        assert_eq!(r.field, "gw[3]");
    }

    #[test]
    fn nan_is_refused() {
        let r = critique(&plan(vec![f64::NAN]), &limits()).unwrap_err();
        assert_eq!(r.field, "gw[0]");
    }

    #[test]
    fn an_operation_outside_the_allowed_set_is_refused() {
        let mut l = limits();
        l.allowed_ops = vec![Op::Step];
        let mut p = plan(vec![]);
        p.op = Op::Measure;
        p.measure = true;
        assert_eq!(critique(&p, &l).unwrap_err().field, "op");
    }

    #[test]
    fn an_operation_that_disagrees_with_measure_is_refused() {
        let mut p = plan(vec![]);
        p.measure = true;
        assert_eq!(critique(&p, &limits()).unwrap_err().field, "op");
    }
}
