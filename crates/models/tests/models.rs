//! MiniLM against sentence-transformers' own output (SmolLM2 is in
//! tests/chat.rs). The models are fetched into the shared models
//! directory (`$CAPSULE_MODELS`, else ~/.cache/capsule/models) when absent,
//! through the same code as `capsule models fetch`.

use capsule_models::fetch::fetch_shared;
use capsule_models::{dot, Embedder, MiniLm, ModelSpec, MINILM};
use std::path::PathBuf;
use std::sync::OnceLock;

fn models(spec: &ModelSpec) -> PathBuf {
    fetch_shared(spec).unwrap_or_else(|e| panic!("fetching {}: {e}", spec.name))
}

fn minilm() -> &'static MiniLm {
    static M: OnceLock<MiniLm> = OnceLock::new();
    M.get_or_init(|| MiniLm::load(&models(&MINILM)).expect("load MiniLM"))
}

#[test]
fn minilm_separates_meanings() {
    let m = minilm();
    let v = m
        .embed(&[
            "the cat sits on the mat",
            "a cat is sitting on a rug",
            "von Neumann entropy of a density matrix",
        ])
        .unwrap();
    let close = dot(&v[0], &v[1]);
    assert!(close > 0.6, "cat/cat cosine {close}");
    for i in [0, 1] {
        let far = dot(&v[i], &v[2]);
        assert!(far < 0.2, "cat/entropy cosine {far}");
    }
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((dot(x, x) - 1.0).abs() < 1e-5);
    }
}

/// Reference vectors computed by sentence-transformers with PyTorch
/// (tests/data/make_minilm_reference.py says how).
#[test]
fn minilm_matches_sentence_transformers() {
    #[derive(serde::Deserialize)]
    struct Reference {
        sentences: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    }
    let r: Reference = serde_json::from_str(include_str!("data/minilm_reference.json")).unwrap();
    let texts: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    // Once as a batch (padded to the longest) and once one by one.
    let batch = minilm().embed(&texts).unwrap();
    for (i, (got, want)) in batch.iter().zip(&r.embeddings).enumerate() {
        let single = minilm().embed_one(texts[i]).unwrap();
        for (j, w) in want.iter().enumerate() {
            assert!(
                (got[j] - w).abs() <= 1e-4,
                "sentence {i} dim {j}: {} vs {w}",
                got[j]
            );
            assert!((single[j] - w).abs() <= 1e-4, "sentence {i} alone, dim {j}");
        }
    }
}

/// Each text attends to its own tokens only, so its vector does not depend
/// on the batch it came in (more than one batch of 32 here, of mixed
/// lengths: the batched products run on several threads, the single ones
/// on one).
#[test]
fn minilm_batch_equals_one_by_one() {
    let long = "the ledger appends every action ".repeat(80);
    let mut texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "thought {i}: {}",
                "check the backup job and report. ".repeat(i % 7)
            )
        })
        .collect();
    texts.push(String::new());
    texts.push(long);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = minilm().embed(&refs).unwrap();
    assert_eq!(batch.len(), refs.len());
    for (i, text) in refs.iter().enumerate() {
        let single = minilm().embed_one(text).unwrap();
        assert!(
            (dot(&single, &single) - 1.0).abs() < 1e-5,
            "text {i} not unit"
        );
        for (j, (a, b)) in batch[i].iter().zip(&single).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5,
                "text {i} dim {j}: batch {a} vs alone {b}"
            );
        }
    }
}

#[test]
fn a_missing_model_names_the_command_that_fetches_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = MiniLm::load(dir.path()).err().expect("no model there");
    assert!(
        err.to_string().contains("capsule models fetch minilm"),
        "{err}"
    );
}
