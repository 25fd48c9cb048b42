//! Tasks (SPEC T1): what a submit carries, how it is normalised, and its
//! content ID.
//!
//! The ID of a task is the store ID (namespace `TASK`) of its spec's
//! canonical JSON: `{"class_path", "domain", "params", "query"}` with the
//! query normalised (outer whitespace trimmed, inner runs collapsed to one
//! space, lower-cased for domains whose answers ignore case) and the
//! params in canonical form (sorted keys, compact). So the same task from
//! any user on any day has the same hash; the user, lane and time are not
//! part of it.

use crate::error::{MeshError, Result};
use capsule_ledger::entry::canonical_json;
use capsule_policy::Lane;
use capsule_store::{Day, ObjectId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The store namespace of task specs; task IDs are its object IDs.
pub const TASK_NAMESPACE: &str = "TASK";
/// The store namespace of result artifacts.
pub const RESULT_NAMESPACE: &str = "RESULT";
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Longest canonical params, in bytes.
pub const MAX_PARAMS_BYTES: usize = 8192;
/// Longest class path and user ID, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// `POST /v1/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub query: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub class_path: Option<String>,
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
    /// Who the task is for (informational; recorded, not part of the ID).
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub lane: Option<Lane>,
}

/// What a task is: everything its ID is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub domain: String,
    pub class_path: String,
    pub query: String,
    pub params: Map<String, Value>,
}

impl TaskSpec {
    /// The canonical bytes the ID hashes (and the store keeps).
    pub fn canonical(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("plain struct"))
    }

    /// The task's ID, minted on `day` (the hash does not depend on it).
    pub fn id(&self, day: Day) -> ObjectId {
        ObjectId::for_content(TASK_NAMESPACE, day, &self.canonical())
            .expect("TASK is a valid namespace")
    }
}

/// Trim, collapse whitespace runs to one space; lower-case when the
/// domain's answers do not depend on case.
pub fn normalise(query: &str, fold_case: bool) -> String {
    let joined = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if fold_case {
        joined.to_lowercase()
    } else {
        joined
    }
}

fn check_name(field: &str, value: &str, allowed: impl Fn(char) -> bool) -> Result<()> {
    let n = value.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(MeshError::invalid(
            field,
            format!("must be 1..={MAX_NAME_CHARS} characters, got {n}"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(MeshError::invalid(
            field,
            format!("character {c:?} is not allowed"),
        ));
    }
    Ok(())
}

impl TaskRequest {
    /// Check every field but the domain (the mesh knows its domains).
    pub fn validate(&self) -> Result<()> {
        let n = self.query.chars().count();
        if self.query.trim().is_empty() {
            return Err(MeshError::invalid("query", "is empty"));
        }
        if n > MAX_QUERY_CHARS {
            return Err(MeshError::invalid(
                "query",
                format!("{n} characters exceed the limit of {MAX_QUERY_CHARS}"),
            ));
        }
        if self
            .query
            .chars()
            .any(|c| c.is_control() && !c.is_whitespace())
        {
            return Err(MeshError::invalid("query", "contains control characters"));
        }
        if let Some(c) = &self.class_path {
            check_name("class_path", c, |c| {
                c.is_ascii_alphanumeric() || "_-./".contains(c)
            })?;
        }
        if let Some(u) = &self.user_id {
            check_name("user_id", u, |c| !c.is_control())?;
        }
        if let Some(p) = &self.params {
            let len = canonical_json(&Value::Object(p.clone())).len();
            if len > MAX_PARAMS_BYTES {
                return Err(MeshError::invalid(
                    "params",
                    format!("{len} bytes exceed the limit of {MAX_PARAMS_BYTES}"),
                ));
            }
        }
        Ok(())
    }

    /// The spec for `domain`.
    pub fn spec(&self, domain: &str, fold_case: bool) -> TaskSpec {
        TaskSpec {
            domain: domain.to_string(),
            class_path: self.class_path.clone().unwrap_or_default(),
            query: normalise(&self.query, fold_case),
            params: self.params.clone().unwrap_or_default(),
        }
    }
}

/// Parse a task ID given by a client (path or CLI).
pub fn parse_task_id(text: &str) -> Result<ObjectId> {
    let id: ObjectId = text
        .parse()
        .map_err(|e: capsule_store::StoreError| MeshError::invalid("id", e.to_string()))?;
    if id.namespace() != TASK_NAMESPACE {
        return Err(MeshError::invalid(
            "id",
            format!(
                "{text} is in namespace {}, not {TASK_NAMESPACE}",
                id.namespace()
            ),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(query: &str, params: Value) -> TaskRequest {
        TaskRequest {
            query: query.into(),
            params: params.as_object().cloned(),
            ..TaskRequest::default()
        }
    }

    #[test]
    fn the_same_task_on_another_day_and_spacing_has_the_same_hash() {
        let a = req("  2 +   2 ", json!({"b": 1, "a": [1, 2]})).spec("calc", false);
        let b = req("2 + 2", json!({"a": [1, 2], "b": 1})).spec("calc", false);
        let d1 = Day::new(2026, 1, 1).unwrap();
        let d2 = Day::new(2027, 6, 30).unwrap();
        assert_eq!(a.id(d1).hash(), b.id(d2).hash());
        assert_ne!(a.id(d1).to_string(), b.id(d2).to_string());
        assert!(a.id(d1).to_string().starts_with("TASK_20260101_"));
    }

    #[test]
    fn domain_class_path_case_and_params_change_the_hash() {
        let day = Day::new(2026, 12, 7).unwrap();
        let base = req("Capital of France", json!({})).spec("general", true);
        let other = |s: TaskSpec| s.id(day).hash() != base.id(day).hash();
        assert!(other(
            req("Capital of France", json!({})).spec("calc", true)
        ));
        assert!(other(
            req("Capital of France", json!({"k": 1})).spec("general", true)
        ));
        let mut cp = req("Capital of France", json!({}));
        cp.class_path = Some("geo/capitals".into());
        assert!(other(cp.spec("general", true)));
        // Case folds only where the domain says so.
        assert!(!other(
            req("capital OF france", json!({})).spec("general", true)
        ));
        assert_ne!(
            req("5 Mm", json!({})).spec("calc", false).query,
            req("5 mm", json!({})).spec("calc", false).query
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (req("   ", json!({})), "query"),
            (req(&"x".repeat(MAX_QUERY_CHARS + 1), json!({})), "query"),
            (req("a\u{0}b", json!({})), "query"),
            (
                TaskRequest {
                    class_path: Some("a b".into()),
                    ..req("q", json!({}))
                },
                "class_path",
            ),
            (
                req("q", json!({"big": "y".repeat(MAX_PARAMS_BYTES)})),
                "params",
            ),
        ];
        for (r, field) in cases {
            match r.validate() {
                Err(MeshError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(parse_task_id("RESULT_20261207_abcdefghijklmnopqrstuvwxyz234567").is_err());
        assert!(parse_task_id("TASK_20261207_abcdefghijklmnopqrstuvwxyz234567").is_ok());
    }
}
