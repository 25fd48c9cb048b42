//! Classification (SPEC T2): which domain a query without one belongs to.
//!
//! Each domain is represented by the embeddings of its description and its
//! exemplar queries; a query's score for a domain is its best cosine
//! similarity with them, and the best domain wins with that score as its
//! confidence. Below the threshold (or with an embedder whose vectors carry
//! no meaning, such as the hash fallback) the keyword fallback decides:
//! the domain whose keywords occur most in the query; when no keyword
//! occurs either, the most similar domain after all (and `general` when
//! embeddings carry no meaning). The reply says which method decided.

use crate::bots::BotInfo;
use crate::error::Result;
use capsule_models::{dot, Embedder};
use serde::Serialize;
use std::sync::Arc;

/// Below this best similarity the keyword fallback decides.
pub const DEFAULT_THRESHOLD: f32 = 0.45;
/// The domain of a query nothing points anywhere else.
pub const FALLBACK_DOMAIN: &str = "general";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub domain: String,
    pub confidence: f64,
    /// `given`, `embedding`, `keyword` or `default`.
    pub method: String,
}

impl Classification {
    pub fn given(domain: &str) -> Self {
        Classification {
            domain: domain.into(),
            confidence: 1.0,
            method: "given".into(),
        }
    }
}

struct Profile {
    domain: String,
    vectors: Vec<Vec<f32>>,
    keywords: Vec<String>,
}

pub struct Classifier {
    embedder: Arc<dyn Embedder>,
    profiles: Vec<Profile>,
    threshold: f32,
    /// Embeddings carry meaning (false for the hash embedder).
    semantic: bool,
}

impl Classifier {
    /// Embed every bot's description and exemplars once.
    pub fn new(embedder: Arc<dyn Embedder>, bots: &[&BotInfo], threshold: f32) -> Result<Self> {
        let semantic = embedder.name() != "hash";
        let mut profiles = Vec::new();
        for b in bots {
            let texts: Vec<&str> = std::iter::once(b.description)
                .chain(b.exemplars.iter().copied())
                .collect();
            let vectors = if semantic {
                embedder.embed(&texts)?
            } else {
                Vec::new()
            };
            profiles.push(Profile {
                domain: b.domain.into(),
                vectors,
                keywords: b.keywords.iter().map(|k| k.to_lowercase()).collect(),
            });
        }
        Ok(Classifier {
            embedder,
            profiles,
            threshold,
            semantic,
        })
    }

    pub fn classify(&self, query: &str) -> Result<Classification> {
        let mut best = None;
        if self.semantic {
            let q = self.embedder.embed_one(query)?;
            best = self
                .profiles
                .iter()
                .map(|p| {
                    let s = p
                        .vectors
                        .iter()
                        .map(|v| dot(&q, v))
                        .fold(f32::MIN, f32::max);
                    (p, s)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
        }
        let by_embedding = |(p, score): (&Profile, f32)| Classification {
            domain: p.domain.clone(),
            confidence: score.clamp(0.0, 1.0) as f64,
            method: "embedding".into(),
        };
        Ok(match best {
            Some(b) if b.1 >= self.threshold => by_embedding(b),
            // Unsure: keywords decide when any matches; else the nearest
            // domain still beats a blind default.
            _ => self
                .by_keywords(query)
                .or_else(|| best.map(by_embedding))
                .unwrap_or_else(|| Classification {
                    domain: FALLBACK_DOMAIN.into(),
                    confidence: 0.0,
                    method: "default".into(),
                }),
        })
    }

    /// The domain whose keywords occur most: words match whole words,
    /// symbols (`+`, `^`) match anywhere.
    fn by_keywords(&self, query: &str) -> Option<Classification> {
        let lower = query.to_lowercase();
        let word_char = |c: char| c.is_alphanumeric() || c == '/' || c == '.';
        let words: Vec<&str> = lower
            .split(|c: char| !word_char(c))
            .filter(|w| !w.is_empty())
            .collect();
        let hits = |k: &str| -> usize {
            if k.chars().any(char::is_alphanumeric) && k.chars().all(word_char) {
                words.iter().filter(|w| **w == k).count()
            } else {
                lower.matches(k).count()
            }
        };
        let scored: Vec<(&Profile, usize)> = self
            .profiles
            .iter()
            .map(|p| (p, p.keywords.iter().map(|k| hits(k)).sum()))
            .collect();
        let total: usize = scored.iter().map(|s| s.1).sum();
        match scored.iter().max_by_key(|s| s.1) {
            Some((p, n)) if *n > 0 => Some(Classification {
                domain: p.domain.clone(),
                confidence: *n as f64 / total as f64,
                method: "keyword".into(),
            }),
            _ => None,
        }
    }
}
