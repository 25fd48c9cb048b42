//! Ledger actions and `meta.kind` values that only the governing components
//! write: the policy engine (decisions, reloads, mode changes), the approval
//! queue, the kill switch, and the ledger itself (key rotations).
//!
//! A forged record of one of these kinds would read as a decision, an
//! approval or an arming that never happened (and `replay` and
//! `audit verify --decisions` would count it), so every generic append path
//! (`capsule audit append`, anything that appends a caller's record) checks
//! [`engine_only`] and refuses. The components themselves append through
//! the ledger directly and are not affected.

/// Reserved prefixes and who writes them. Matching is by prefix, so a kind
/// added later under one of them is reserved from the start.
pub const RESERVED_PREFIXES: &[(&str, &str)] = &[
    ("policy.", "the policy engine"),
    ("approval.", "the approval queue"),
    ("kill.", "the kill switch"),
    ("killswitch.", "the kill switch"),
    ("ledger.", "the ledger"),
];

/// Which field of a record matched a reserved prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedField {
    Action,
    MetaKind,
}

impl ReservedField {
    /// The field's name as a user writes it (`action`, `meta.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReservedField::Action => "action",
            ReservedField::MetaKind => "meta.kind",
        }
    }
}

/// Why a record may not be appended by a generic path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub field: ReservedField,
    /// The reserved prefix matched, e.g. `policy.`.
    pub prefix: &'static str,
    /// Who alone writes it, e.g. `the policy engine`.
    pub writer: &'static str,
}

impl std::fmt::Display for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: \"{}*\" records are written only by {}",
            self.field.as_str(),
            self.prefix,
            self.writer
        )
    }
}

fn reserved_prefix(value: &str) -> Option<(&'static str, &'static str)> {
    RESERVED_PREFIXES
        .iter()
        .find(|(prefix, _)| value.starts_with(prefix))
        .copied()
}

/// Whether a record with `action` and `meta_kind` (its `meta.kind`, if a
/// string) is one only the engine, the approval queue, the kill switch or
/// the ledger writes. Both fields are checked: a decision record's action
/// is the decided action (`object.delete`) and only its `meta.kind`
/// (`policy.decision`) marks it.
pub fn engine_only(action: &str, meta_kind: Option<&str>) -> Option<Reserved> {
    let hit = |field, value: &str| {
        reserved_prefix(value).map(|(prefix, writer)| Reserved {
            field,
            prefix,
            writer,
        })
    };
    hit(ReservedField::Action, action)
        .or_else(|| meta_kind.and_then(|kind| hit(ReservedField::MetaKind, kind)))
}

/// [`engine_only`] for a record's `meta` object. A `kind` that is not a
/// string names no reserved kind: readers match `meta.kind` against the
/// strings the components write.
pub fn engine_only_record(action: &str, meta: &serde_json::Value) -> Option<Reserved> {
    engine_only(action, meta.get("kind").and_then(|k| k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_governing_components_write_is_reserved() {
        for action in [
            "policy.reload",
            "policy.mode",
            "approval.sign",
            "approval.void",
            "approval.release",
            "kill.arm",
            "kill.disarm",
            "ledger.key_rotate",
        ] {
            let r = engine_only(action, None).unwrap_or_else(|| panic!("{action} not reserved"));
            assert_eq!(r.field, ReservedField::Action);
        }
        let r = engine_only("object.delete", Some("policy.decision")).unwrap();
        assert_eq!(r.field, ReservedField::MetaKind);
        assert_eq!(r.prefix, "policy.");
        assert!(r.to_string().starts_with("meta.kind: "), "{r}");
    }

    #[test]
    fn ordinary_records_are_not_reserved() {
        for (action, kind) in [
            ("brain.step", None),
            ("object.delete", Some("cortex.think")),
            ("policyholder.update", None),
            ("store.delete", Some("kernel.step")),
        ] {
            assert_eq!(engine_only(action, kind), None, "{action} {kind:?}");
        }
    }

    #[test]
    fn a_decision_kind_inside_meta_is_found_but_a_non_string_kind_is_not_a_match() {
        let forged = serde_json::json!({"kind": "policy.decision", "request": {}});
        assert_eq!(
            engine_only_record("object.delete", &forged).map(|r| r.field),
            Some(ReservedField::MetaKind)
        );
        let odd = serde_json::json!({"kind": 7});
        assert_eq!(engine_only_record("brain.step", &odd), None);
    }
}
