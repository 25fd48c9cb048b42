//! Planners turn a request into a [`Plan`] (SPEC C2): the deterministic
//! hash planner (C2 c) here, the LLM planners (C2 a, b) in [`crate::llm`].

use crate::plan::{Op, Plan};
use serde::Serialize;

/// What a planner sees.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub text: &'a str,
    /// A workspace vector the caller supplied; used as given.
    pub gw: Option<&'a [f64]>,
    /// The caller's choice to measure, if any.
    pub measure: Option<bool>,
    /// Length of the gw the planner should produce.
    pub workspace_dim: usize,
    /// What memory recalled for the text, best first (SPEC C1).
    pub recall: &'a [Recalled],
}

/// One remembered think that recall found for the text.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Recalled {
    /// The episodic-memory event of the earlier think.
    pub event_id: i64,
    /// Cosine similarity of the two texts' embeddings.
    pub score: f32,
    pub text: String,
    pub glyph: String,
}

/// A plan and, for model planners, what the model said: recorded with the
/// think so a replay needs no model.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub plan: Plan,
    pub model: Option<ModelOutput>,
}

/// A model's raw reply and which model gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub reply: String,
}

/// A planner that failed, in words (the provider, the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("planner {planner}: {reason}")]
pub struct PlanError {
    pub planner: String,
    pub reason: String,
}

/// Proposes plans. Implementations must be deterministic for the same
/// input when they claim to be (the hash planner is; LLM planners at
/// temperature 0 try to be, and their output is recorded for replay).
pub trait Planner: Send + Sync {
    /// The name callers choose it by (`hash`, `local`, `openai`, …).
    fn name(&self) -> &str;
    fn plan(&self, input: &PlanInput<'_>) -> Result<Planned, PlanError>;
    /// Why this planner cannot plan at all here, known before any call
    /// (a remote provider without its key): the request is refused as the
    /// caller's choice, not failed as an upstream fault.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// SPEC C2 (c): the workspace vector is the unit-norm vector of
/// `workspace_dim` values drawn uniformly from [−1, 1] by BLAKE3's XOF keyed
/// by the text; measure is the XOF's first bit unless the caller chose.
/// Same text, same plan, on every machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashPlanner;

/// Domain separation of the hash planner's XOF.
const HASH_PLANNER_CONTEXT: &str = "capsule cortex hash planner v1";

impl Planner for HashPlanner {
    fn name(&self) -> &str {
        "hash"
    }

    fn plan(&self, input: &PlanInput<'_>) -> Result<Planned, PlanError> {
        let mut xof = blake3::Hasher::new_derive_key(HASH_PLANNER_CONTEXT)
            .update(input.text.as_bytes())
            .finalize_xof();
        let mut first = [0u8; 1];
        xof.fill(&mut first);
        let measure = input.measure.unwrap_or(first[0] & 1 == 1);
        let (gw, source) = match input.gw {
            Some(gw) => (gw.to_vec(), "the caller's workspace vector"),
            None => (
                unit_vector(&mut xof, input.workspace_dim),
                "a unit workspace vector hashed from the text",
            ),
        };
        let op = Op::for_measure(measure);
        let rationale = format!(
            "hash planner: {} with {} ({} values); {}",
            op.as_str(),
            source,
            gw.len(),
            if input.measure.is_some() {
                "measurement as the caller asked"
            } else if measure {
                "measure because the text's hash bit is set"
            } else {
                "no measurement because the text's hash bit is clear"
            }
        );
        Ok(Planned {
            plan: Plan {
                op,
                gw,
                measure,
                rationale,
            },
            model: None,
        })
    }
}

/// `n` values uniform in [−1, 1] from the XOF, scaled to unit norm (a zero
/// draw, which needs 2⁻⁶⁴-probability luck per value, stays zero).
fn unit_vector(xof: &mut blake3::OutputReader, n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            // 53 random bits → [0, 1) → [−1, 1).
            let u = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
            2.0 * u - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> PlanInput<'_> {
        PlanInput {
            text,
            gw: None,
            measure: None,
            workspace_dim: 60,
            recall: &[],
        }
    }

    #[test]
    fn the_same_text_gives_the_same_plan() {
        let a = HashPlanner.plan(&input("hello")).unwrap().plan;
        let b = HashPlanner.plan(&input("hello")).unwrap().plan;
        assert_eq!(a, b);
    }

    #[test]
    fn different_texts_give_different_workspaces() {
        let a = HashPlanner.plan(&input("hello")).unwrap().plan;
        let b = HashPlanner.plan(&input("hello!")).unwrap().plan;
        assert_ne!(a.gw, b.gw);
    }

    #[test]
    fn the_workspace_is_unit_norm_with_the_asked_length() {
        let p = HashPlanner.plan(&input("unit")).unwrap().plan;
        assert_eq!(p.gw.len(), 60);
        let norm: f64 = p.gw.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_caller_gw_and_measure_are_used_as_given() {
        let gw = [0.5, -0.25];
        let mut i = input("x");
        i.gw = Some(&gw);
        i.measure = Some(true);
        let p = HashPlanner.plan(&i).unwrap().plan;
        assert_eq!(p.gw, gw);
        assert!(p.measure);
        assert_eq!(p.op, Op::Measure);
    }

    #[test]
    fn both_measure_outcomes_occur_over_many_texts() {
        let measured = (0..64)
            .filter(|i| {
                HashPlanner
                    .plan(&input(&format!("t{i}")))
                    .unwrap()
                    .plan
                    .measure
            })
            .count();
        assert!(measured > 10 && measured < 54, "{measured}");
    }
}
