//! Re-deciding a recorded decision: before anything acts on the strength
//! of a `policy.decision` ledger entry, the entry must be exactly the
//! record the engine writes for its request under the active rules and the
//! given circumstances ([`decision_record`] of [`evaluate`]).
//!
//! The ledger accepts entries from anyone who can append, so an entry's
//! shape proves nothing. Re-deciding does: an entry with a forged outcome,
//! forged circumstances, or its own fields (actor, action, subject,
//! decision, reason) disagreeing with its meta does not come out the same,
//! and is refused naming every field that differs. An entry the engine
//! would write identically now grants nothing the engine would not grant,
//! whoever appended it.

use crate::engine::{decision_record, evaluate, Circumstances, Decision, DecisionRequest};
use crate::rules::RuleSet;
use capsule_ledger::Record;
use serde_json::Value;
use thiserror::Error;

/// Most differences a [`Mismatch::Differs`] lists.
pub const MAX_DIFFERENCES: usize = 16;
/// Longest value, in characters, a [`Difference`] shows.
pub const MAX_SHOWN: usize = 120;

/// A recorded decision that re-decided identically.
#[derive(Debug, Clone, PartialEq)]
pub struct Redecision {
    /// The request, as recorded.
    pub request: DecisionRequest,
    /// The circumstances it was re-decided under (equal to the recorded ones).
    pub circumstances: Circumstances,
    /// The decision, as re-made (equal to the recorded one).
    pub decision: Decision,
}

/// One field where the recorded entry and the re-decision differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The field's path in the ledger record, e.g. `decision` or
    /// `meta.circumstances.mode`.
    pub field: String,
    /// The recorded value as compact JSON (cut to [`MAX_SHOWN`] characters),
    /// or `(absent)`.
    pub recorded: String,
    /// The value the engine writes, in the same form.
    pub redecided: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: recorded {}, re-decided {}",
            self.field, self.recorded, self.redecided
        )
    }
}

/// Why a recorded entry does not stand as the engine's decision.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Mismatch {
    /// The entry's `meta.kind` is not `policy.decision`.
    #[error("is not a policy decision (meta.kind is {0})")]
    NotADecision(String),
    /// A part of the entry's meta does not parse.
    #[error("{field} is unreadable: {reason}")]
    Unreadable { field: &'static str, reason: String },
    /// The engine refuses to decide the recorded request at all.
    #[error("the engine does not decide its request: {0}")]
    Undecidable(String),
    /// The engine decides the request differently or writes a different
    /// record; at most [`MAX_DIFFERENCES`] differences, in field order.
    #[error("is not what the policy engine decides: {}", list(.0))]
    Differs(Vec<Difference>),
}

fn list(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(Difference::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn meta_kind(record: &Record) -> Result<(), Mismatch> {
    match record.meta.get("kind") {
        Some(Value::String(k)) if k == "policy.decision" => Ok(()),
        Some(other) => Err(Mismatch::NotADecision(shown(Some(other)))),
        None => Err(Mismatch::NotADecision("(absent)".into())),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    record: &Record,
    key: &'static str,
    field: &'static str,
) -> Result<T, Mismatch> {
    let value = record.meta.get(key).ok_or(Mismatch::Unreadable {
        field,
        reason: "absent".into(),
    })?;
    T::deserialize(value).map_err(|e| Mismatch::Unreadable {
        field,
        reason: e.to_string(),
    })
}

/// The circumstances a decision entry records (what shadow replay holds
/// fixed).
pub fn recorded_circumstances(record: &Record) -> Result<Circumstances, Mismatch> {
    meta_kind(record)?;
    parse(record, "circumstances", "meta.circumstances")
}

/// Re-decide the request recorded in `record` under `rules` and `under`,
/// and check that `record` is exactly the record the engine writes for it.
/// Pass [`recorded_circumstances`] as `under` to hold the recorded
/// circumstances fixed (as replay does), or the engine's present ones to
/// also refuse a decision whose circumstances no longer hold or never did.
pub fn redecide(
    rules: &RuleSet,
    under: &Circumstances,
    record: &Record,
) -> Result<Redecision, Mismatch> {
    meta_kind(record)?;
    let request: DecisionRequest = parse(record, "request", "meta.request")?;
    let decision =
        evaluate(rules, under, &request).map_err(|e| Mismatch::Undecidable(e.to_string()))?;
    let expected = decision_record(&request, under, &decision);
    let mut differences = Vec::new();
    for (field, recorded, redecided) in [
        ("actor", &record.actor, &expected.actor),
        ("action", &record.action, &expected.action),
        ("subject", &record.subject, &expected.subject),
        ("decision", &record.decision, &expected.decision),
        ("reason", &record.reason, &expected.reason),
    ] {
        if recorded != redecided {
            differences.push(Difference {
                field: field.into(),
                recorded: shown(Some(&Value::String(recorded.clone()))),
                redecided: shown(Some(&Value::String(redecided.clone()))),
            });
        }
    }
    diff_json(
        "meta",
        Some(&record.meta),
        Some(&expected.meta),
        &mut differences,
    );
    if !differences.is_empty() {
        differences.truncate(MAX_DIFFERENCES);
        return Err(Mismatch::Differs(differences));
    }
    Ok(Redecision {
        request,
        circumstances: under.clone(),
        decision,
    })
}

/// Append every leaf where `a` and `b` differ, descending into objects
/// (keys in sorted order) so the difference is named as closely as it can be.
fn diff_json(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    if out.len() >= MAX_DIFFERENCES || a == b {
        return;
    }
    if let (Some(Value::Object(x)), Some(Value::Object(y))) = (a, b) {
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            diff_json(&format!("{path}.{k}"), x.get(k), y.get(k), out);
        }
        return;
    }
    out.push(Difference {
        field: path.into(),
        recorded: shown(a),
        redecided: shown(b),
    });
}

/// A value as compact JSON, cut to [`MAX_SHOWN`] characters.
fn shown(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "(absent)".into();
    };
    let text = v.to_string();
    if text.chars().count() <= MAX_SHOWN {
        text
    } else {
        let cut: String = text.chars().take(MAX_SHOWN).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autonomy::{Mode, Outcome};

    fn rules() -> RuleSet {
        RuleSet::from_sources(&[(
            "p.cedar".into(),
            "permit(principal, action == Capsule::Action::\"brain.step\", resource);".into(),
        )])
        .unwrap()
    }

    /// Built from JSON, as the ledger holds them, so the fixture names only
    /// the fields it sets.
    fn circumstances() -> Circumstances {
        serde_json::from_value(serde_json::json!({
            "kill_switch": false,
            "mode": "semi_autonomous",
            "modification_enabled": false,
            "guardian": crate::guardian::Guardian::default(),
        }))
        .unwrap()
    }

    fn request(level: &str) -> DecisionRequest {
        serde_json::from_value(serde_json::json!({
            "principal": "agent:alice",
            "action": "brain.step",
            "resource": "kernel:main",
            "level": level,
            "affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99},
        }))
        .unwrap()
    }

    fn engine_record(level: &str, c: &Circumstances) -> Record {
        let req = request(level);
        let d = evaluate(&rules(), c, &req).unwrap();
        decision_record(&req, c, &d)
    }

    #[test]
    fn an_engine_record_redecides_to_the_same_decision() {
        let c = circumstances();
        let record = engine_record("low", &c);
        let r = redecide(&rules(), &c, &record).unwrap();
        assert_eq!(r.decision.outcome, Outcome::AutoApproved);
        assert_eq!(r.request, request("low"));
        assert_eq!(recorded_circumstances(&record).unwrap(), c);
    }

    #[test]
    fn a_forged_outcome_is_named_as_the_difference() {
        let c = circumstances();
        let mut record = engine_record("high", &c);
        assert_eq!(record.decision, "pending_review");
        record.decision = "auto_approved".into();
        let err = redecide(&rules(), &c, &record).unwrap_err();
        assert_eq!(
            err,
            Mismatch::Differs(vec![Difference {
                field: "decision".into(),
                recorded: "\"auto_approved\"".into(),
                redecided: "\"pending_review\"".into(),
            }])
        );
    }

    #[test]
    fn self_consistent_forged_circumstances_differ_from_the_present_ones() {
        let forged = Circumstances {
            mode: Mode::Autonomous,
            ..circumstances()
        };
        let record = engine_record("high", &forged);
        assert_eq!(record.decision, "auto_approved");
        assert!(redecide(&rules(), &forged, &record).is_ok());
        let err = redecide(&rules(), &circumstances(), &record)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "meta.circumstances.mode: recorded \"autonomous\", re-decided \"semi_autonomous\""
            ),
            "{err}"
        );
        assert!(
            err.contains("decision: recorded \"auto_approved\""),
            "{err}"
        );
    }

    #[test]
    fn a_record_whose_fields_disagree_with_its_meta_is_refused() {
        let c = circumstances();
        let mut record = engine_record("low", &c);
        record.actor = "operator:root".into();
        record.meta["decision"]["policies"] = serde_json::json!(["made-up"]);
        record.meta["extra"] = serde_json::json!(1);
        let err = redecide(&rules(), &c, &record).unwrap_err().to_string();
        for field in [
            "actor:",
            "meta.decision.policies:",
            "meta.extra: recorded 1, re-decided (absent)",
        ] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
    }

    #[test]
    fn an_entry_without_the_engine_meta_is_not_a_decision() {
        let mut record = Record::new("agent:alice", "brain.step", "auto_approved");
        let err = redecide(&rules(), &circumstances(), &record).unwrap_err();
        assert_eq!(err, Mismatch::NotADecision("(absent)".into()));
        record.meta = serde_json::json!({"kind": "policy.decision", "request": {"principal": 1}});
        let err = redecide(&rules(), &circumstances(), &record)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("meta.request is unreadable"), "{err}");
    }

    #[test]
    fn a_long_value_is_cut_when_shown() {
        let long = Value::String("x".repeat(1000));
        let text = shown(Some(&long));
        assert_eq!(text.chars().count(), MAX_SHOWN + 1);
        assert!(text.ends_with('…'));
    }
}
