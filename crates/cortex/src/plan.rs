//! The plan a planner proposes (SPEC C1): which kernel operation, under
//! which workspace vector, and why.

use serde::{Deserialize, Serialize};

/// The kernel operations a plan may name. The critic also checks the set
/// allowed by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "brain.step")]
    Step,
    #[serde(rename = "brain.measure")]
    Measure,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::Step, Op::Measure];

    /// The policy action of this operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Step => "brain.step",
            Op::Measure => "brain.measure",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// The operation that a step with or without measurement is.
    pub fn for_measure(measure: bool) -> Op {
        if measure {
            Op::Measure
        } else {
            Op::Step
        }
    }
}

/// A proposed kernel step, as the planner wrote it. Unchecked until the
/// critic has seen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub op: Op,
    /// The global-workspace vector gw (SPEC K2).
    pub gw: Vec<f64>,
    pub measure: bool,
    pub rationale: String,
}

impl Plan {
    /// BLAKE3 of the workspace vector's little-endian bytes, hex: how the
    /// ledger names a gw without repeating it.
    pub fn gw_digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for x in &self.gw {
            h.update(&x.to_le_bytes());
        }
        h.finalize().to_hex().to_string()
    }
}
