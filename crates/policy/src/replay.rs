//! Shadow replay (SPEC P9): re-decide the decisions recorded in a ledger
//! under a candidate rule set, holding everything else as recorded, and
//! report each one whose outcome would change.

use crate::autonomy::Outcome;
use crate::engine::{evaluate, Circumstances, Decision, DecisionRequest};
use crate::error::{PolicyError, Result};
use crate::rules::RuleSet;
use capsule_ledger::LogReader;
use serde::Serialize;
use std::path::Path;

/// A decision the candidate set would flip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub seq: u64,
    pub request: DecisionRequest,
    pub recorded: Outcome,
    pub recorded_policies: Vec<String>,
    pub candidate: Decision,
}

/// What a replay examined and found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub entries: u64,
    pub decisions: u64,
    pub candidate_version: String,
    pub changes: Vec<Change>,
}

/// Replay every recorded decision of the ledger in `ledger_dir` under
/// `candidate`.
pub fn replay(ledger_dir: &Path, candidate: &RuleSet) -> Result<ReplayReport> {
    let reader = LogReader::open(ledger_dir)?;
    let mut report = ReplayReport {
        entries: reader.size(),
        decisions: 0,
        candidate_version: candidate.version().into(),
        changes: Vec::new(),
    };
    for seq in 0..reader.size() {
        let entry = reader.entry(seq)?;
        let meta = &entry.record.meta;
        if meta.get("kind").and_then(|k| k.as_str()) != Some("policy.decision") {
            continue;
        }
        let bad =
            |what: &str, e: String| PolicyError::invalid(format!("ledger entry {seq}: {what}"), e);
        let request: DecisionRequest = serde_json::from_value(meta["request"].clone())
            .map_err(|e| bad("request", e.to_string()))?;
        let circumstances: Circumstances = serde_json::from_value(meta["circumstances"].clone())
            .map_err(|e| bad("circumstances", e.to_string()))?;
        let recorded = Outcome::parse(&entry.record.decision).ok_or_else(|| {
            bad(
                "decision",
                format!("{:?} is not an outcome", entry.record.decision),
            )
        })?;
        let recorded_policies: Vec<String> =
            serde_json::from_value(meta["decision"]["policies"].clone())
                .map_err(|e| bad("policies", e.to_string()))?;
        report.decisions += 1;
        let candidate_decision = evaluate(candidate, &circumstances, &request)?;
        if candidate_decision.outcome != recorded {
            report.changes.push(Change {
                seq,
                request,
                recorded,
                recorded_policies,
                candidate: candidate_decision,
            });
        }
    }
    Ok(report)
}
