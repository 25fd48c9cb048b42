//! Lanes (SPEC P5): where a piece of work runs, and what it may do to the
//! world from there.

use crate::error::{PolicyError, Result};
use serde::{Deserialize, Serialize};

/// The lane a request runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// New, untrusted work: external side effects become dry runs.
    Experimental = 0,
    /// Work being promoted: external side effects run.
    Candidate,
    /// Production.
    Prod,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Experimental => "experimental",
            Lane::Candidate => "candidate",
            Lane::Prod => "prod",
        }
    }

    pub fn parse(text: &str) -> Result<Lane> {
        match text {
            "experimental" => Ok(Lane::Experimental),
            "candidate" => Ok(Lane::Candidate),
            "prod" => Ok(Lane::Prod),
            _ => Err(PolicyError::invalid(
                "lane",
                format!("{text:?} is not one of experimental, candidate, prod"),
            )),
        }
    }
}

/// Actions whose effects leave the process: files, processes, network,
/// the bus. Everything else acts on Capsule's own state.
pub fn is_external(action: &str) -> bool {
    matches!(
        action,
        "system.exec" | "net.open" | "fs.write" | "bus.publish"
    )
}

/// What the lane guard lets an allowed action do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// Run it.
    Run,
    /// Report what it would do, touch nothing outside.
    DryRun,
}

/// The lane guard: a code path with external side effects asks it before
/// acting; in the experimental lane the answer is a dry run.
pub fn guard(lane: Lane, action: &str) -> Execution {
    if lane == Lane::Experimental && is_external(action) {
        Execution::DryRun
    } else {
        Execution::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experimental_external_actions_are_dry_runs() {
        assert_eq!(guard(Lane::Experimental, "fs.write"), Execution::DryRun);
        assert_eq!(guard(Lane::Experimental, "brain.step"), Execution::Run);
        assert_eq!(guard(Lane::Candidate, "fs.write"), Execution::Run);
        assert_eq!(guard(Lane::Prod, "net.open"), Execution::Run);
        assert!(Lane::parse("staging")
            .unwrap_err()
            .to_string()
            .starts_with("lane:"));
    }
}
