//! Pattern memory (SPEC M3): what the mesh learns from done tasks.
//!
//! Every done task becomes a pattern in the `immediate` layer at
//! confidence 0.5. Success adds 0.05 (at most 1), failure takes 0.10 (at
//! least 0); the signal is the bot's own verification when it has one, and
//! user feedback. Maintenance promotes immediate → pattern at confidence ≥
//! 0.75 and usage ≥ 3, archives patterns unused for 90 days, and prunes
//! immediate patterns with confidence < 0.2 and usage < 2. Confidence is
//! kept in basis points (integers), so 0.5 + 5 × 0.05 is exactly 0.75 and
//! the boundaries are exact. The rules here are pure; the mesh applies
//! them and records every layer change in the ledger.

use serde::Serialize;

pub const START_BP: i64 = 5_000;
pub const SUCCESS_BP: i64 = 500;
pub const FAILURE_BP: i64 = 1_000;
pub const MAX_BP: i64 = 10_000;
pub const PROMOTE_BP: i64 = 7_500;
pub const PROMOTE_USAGE: u64 = 3;
pub const PRUNE_BP: i64 = 2_000;
pub const PRUNE_USAGE: u64 = 2;
pub const ARCHIVE_AFTER_NS: i64 = 90 * 86_400 * 1_000_000_000;
/// Reuse a stored result for a new query above this cosine similarity…
pub const REUSE_SIMILARITY: f32 = 0.85;
/// …from a pattern at least this confident.
pub const REUSE_BP: i64 = 7_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Immediate,
    Pattern,
    Archive,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Immediate => "immediate",
            Layer::Pattern => "pattern",
            Layer::Archive => "archive",
        }
    }

    pub fn parse(text: &str) -> Option<Layer> {
        [Layer::Immediate, Layer::Pattern, Layer::Archive]
            .into_iter()
            .find(|l| l.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pattern {
    pub task_id: String,
    /// The task's content hash (the key).
    #[serde(skip)]
    pub hash: String,
    pub domain: String,
    pub layer: Layer,
    #[serde(skip)]
    pub confidence_bp: i64,
    pub usage: u64,
    pub last_used_ns: i64,
    pub result_id: String,
    /// The normalised query's embedding, for domains that allow semantic
    /// reuse; none for the others.
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

impl Pattern {
    pub fn confidence(&self) -> f64 {
        self.confidence_bp as f64 / MAX_BP as f64
    }

    /// The JSON shown by the API: the pattern with its confidence as a
    /// number in [0, 1].
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("plain struct");
        v["confidence"] = serde_json::json!(self.confidence());
        v
    }
}

/// Confidence after one outcome.
pub fn adjust(confidence_bp: i64, success: bool) -> i64 {
    if success {
        (confidence_bp + SUCCESS_BP).min(MAX_BP)
    } else {
        (confidence_bp - FAILURE_BP).max(0)
    }
}

/// What maintenance does to one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Promote,
    Archive,
    Prune,
}

impl Change {
    /// The layer after the change (`None`: the pattern is removed).
    pub fn to(&self) -> Option<Layer> {
        match self {
            Change::Promote => Some(Layer::Pattern),
            Change::Archive => Some(Layer::Archive),
            Change::Prune => None,
        }
    }
}

/// The change maintenance makes to `p` at `now_ns`, with its reason.
/// Pruning is checked first (a weak new pattern goes), then archiving (a
/// pattern nobody used for 90 days), then promotion.
pub fn maintenance(p: &Pattern, now_ns: i64) -> Option<(Change, String)> {
    if p.layer == Layer::Immediate && p.confidence_bp < PRUNE_BP && p.usage < PRUNE_USAGE {
        return Some((
            Change::Prune,
            format!(
                "confidence {:.4} < 0.2 and usage {} < {PRUNE_USAGE}",
                p.confidence(),
                p.usage
            ),
        ));
    }
    let idle = now_ns.saturating_sub(p.last_used_ns);
    if p.layer != Layer::Archive && idle >= ARCHIVE_AFTER_NS {
        return Some((
            Change::Archive,
            format!("unused for {} days (limit 90)", idle / 86_400_000_000_000),
        ));
    }
    if p.layer == Layer::Immediate && p.confidence_bp >= PROMOTE_BP && p.usage >= PROMOTE_USAGE {
        return Some((
            Change::Promote,
            format!(
                "confidence {:.4} >= 0.75 and usage {} >= {PROMOTE_USAGE}",
                p.confidence(),
                p.usage
            ),
        ));
    }
    None
}

/// May `p` answer a new query whose embedding has `similarity` with it?
pub fn reusable(p: &Pattern, similarity: f32) -> bool {
    p.layer != Layer::Archive && p.confidence_bp >= REUSE_BP && similarity > REUSE_SIMILARITY
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn p(layer: Layer, bp: i64, usage: u64, last_used_ns: i64) -> Pattern {
        Pattern {
            task_id: "TASK_20261207_x".into(),
            hash: "x".into(),
            domain: "general".into(),
            layer,
            confidence_bp: bp,
            usage,
            last_used_ns,
            result_id: "RESULT_20261207_y".into(),
            embedding: None,
        }
    }

    #[test]
    fn confidence_moves_by_the_rule_and_stays_in_bounds() {
        let mut c = START_BP;
        for _ in 0..5 {
            c = adjust(c, true);
        }
        assert_eq!(c, PROMOTE_BP, "five successes from 0.5 reach 0.75 exactly");
        assert_eq!(adjust(9_800, true), MAX_BP);
        assert_eq!(adjust(500, false), 0);
        assert_eq!(adjust(5_000, false), 4_000);
    }

    #[test]
    fn promotion_boundaries_0_7499_and_0_75_usage_2_and_3() {
        let now = 100 * DAY;
        assert_eq!(maintenance(&p(Layer::Immediate, 7_499, 3, now), now), None);
        assert_eq!(maintenance(&p(Layer::Immediate, 7_500, 2, now), now), None);
        assert_eq!(
            maintenance(&p(Layer::Immediate, 7_500, 3, now), now).map(|c| c.0),
            Some(Change::Promote)
        );
        // Already in the pattern layer: nothing to promote.
        assert_eq!(maintenance(&p(Layer::Pattern, 9_000, 9, now), now), None);
    }

    #[test]
    fn archive_boundary_89_and_90_days() {
        let now = 1_000 * DAY;
        assert_eq!(
            maintenance(&p(Layer::Pattern, 8_000, 5, now - 89 * DAY), now),
            None
        );
        assert_eq!(
            maintenance(&p(Layer::Pattern, 8_000, 5, now - 90 * DAY), now).map(|c| c.0),
            Some(Change::Archive)
        );
        assert_eq!(
            maintenance(&p(Layer::Archive, 8_000, 5, now - 900 * DAY), now),
            None
        );
    }

    #[test]
    fn prune_boundaries_0_1999_and_0_2_usage_1_and_2() {
        let now = 10 * DAY;
        assert_eq!(
            maintenance(&p(Layer::Immediate, 1_999, 1, now), now).map(|c| c.0),
            Some(Change::Prune)
        );
        assert_eq!(maintenance(&p(Layer::Immediate, 2_000, 1, now), now), None);
        assert_eq!(maintenance(&p(Layer::Immediate, 1_999, 2, now), now), None);
        // Only the immediate layer is pruned.
        assert_eq!(maintenance(&p(Layer::Pattern, 1_000, 0, now), now), None);
    }

    #[test]
    fn reuse_needs_similarity_above_0_85_and_confidence_0_75() {
        let good = p(Layer::Pattern, 7_500, 3, 0);
        assert!(reusable(&good, 0.851));
        assert!(!reusable(&good, 0.85));
        assert!(!reusable(&p(Layer::Pattern, 7_499, 3, 0), 0.99));
        assert!(!reusable(&p(Layer::Archive, 9_000, 3, 0), 0.99));
    }
}
