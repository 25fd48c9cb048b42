//! Classification accuracy on the labelled set (tests/data/classify.jsonl,
//! 281 queries written apart from the bots' exemplars): MiniLM similarity
//! with the keyword fallback, as the service classifies. Prints the
//! accuracy, the method counts and every miss (`--nocapture`).

use capsule_mesh::bots::{calc, general, kernel, medical};
use capsule_mesh::classify::{Classifier, DEFAULT_THRESHOLD};
use capsule_models::fetch::fetch_shared;
use capsule_models::{HashEmbedder, MiniLm, MINILM, MINILM_DIMS};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Deserialize)]
struct Labelled {
    query: String,
    domain: String,
}

fn labelled() -> Vec<Labelled> {
    include_str!("data/classify.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn infos() -> [&'static capsule_mesh::BotInfo; 4] {
    [&calc::INFO, &medical::INFO, &kernel::INFO, &general::INFO]
}

/// (accuracy, method counts, misses).
fn score(c: &Classifier, set: &[Labelled]) -> (f64, BTreeMap<String, usize>, Vec<String>) {
    let mut right = 0;
    let mut methods = BTreeMap::new();
    let mut misses = Vec::new();
    for l in set {
        let got = c.classify(&l.query).unwrap();
        *methods.entry(got.method.clone()).or_insert(0) += 1;
        if got.domain == l.domain {
            right += 1;
        } else {
            misses.push(format!(
                "{:?}: want {}, got {} ({} {:.2})",
                l.query, l.domain, got.domain, got.method, got.confidence
            ));
        }
    }
    (right as f64 / set.len() as f64, methods, misses)
}

#[test]
fn minilm_with_the_keyword_fallback_classifies_at_least_90_percent() {
    let set = labelled();
    assert!(set.len() >= 200, "{} queries", set.len());
    let dir = fetch_shared(&MINILM).unwrap();
    let embedder = Arc::new(MiniLm::load(&dir).unwrap());
    let c = Classifier::new(embedder, &infos(), DEFAULT_THRESHOLD).unwrap();
    let (accuracy, methods, misses) = score(&c, &set);
    println!(
        "classification: {:.3} of {} right (threshold {DEFAULT_THRESHOLD}); methods {methods:?}",
        accuracy,
        set.len()
    );
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(accuracy >= 0.9, "accuracy {accuracy:.3}");
}

#[test]
fn the_keyword_fallback_alone_is_what_the_hash_embedder_gets() {
    let set = labelled();
    let c = Classifier::new(
        Arc::new(HashEmbedder { dims: MINILM_DIMS }),
        &infos(),
        DEFAULT_THRESHOLD,
    )
    .unwrap();
    let (accuracy, methods, _) = score(&c, &set);
    println!("keywords only: {accuracy:.3}; methods {methods:?}");
    assert!(!methods.contains_key("embedding"));
    // Keywords are a fallback, not a classifier: better than chance.
    assert!(accuracy > 0.4, "accuracy {accuracy:.3}");
}
