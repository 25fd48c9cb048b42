//! The real models: MiniLM against sentence-transformers' own output, and
//! SmolLM2 under a grammar. The models are fetched into the shared models
//! directory (`$CAPSULE_MODELS`, else ~/.cache/capsule/models) when absent,
//! through the same code as `capsule models fetch`.

use capsule_models::fetch::fetch_shared;
use capsule_models::{dot, Embedder, GrammarSpec, LocalChat, MiniLm, ModelSpec, MINILM, SMOLLM2};
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

const YES_NO: GrammarSpec = GrammarSpec {
    gbnf: r#"root ::= "{\"answer\": \"" ("yes" | "no") "\", \"why\": \"" [a-z ]{1,40} "\"}""#,
    close: "\"}",
};

#[test]
fn smollm2_follows_a_grammar_deterministically() {
    let chat = LocalChat::load_smollm2(&models(&SMOLLM2), 2).unwrap();
    let prompt = chat
        .render("Answer with JSON.", "Is the sky blue on a clear day?")
        .unwrap();
    assert!(prompt.contains("<|im_start|>user"), "{prompt}");
    // `a` processes the system turn and caches its KV state; `b` restores
    // it from the cache: the same text either way.
    let a = chat.generate(&prompt, 48, Some(YES_NO)).unwrap();
    let b = chat.generate(&prompt, 48, Some(YES_NO)).unwrap();
    assert_eq!(a.text, b.text);
    let v: serde_json::Value =
        serde_json::from_str(&a.text).unwrap_or_else(|e| panic!("{e}: {}", a.text));
    assert!(
        matches!(v["answer"].as_str(), Some("yes" | "no")),
        "{}",
        a.text
    );
    assert!(a.generated_tokens > 0 && a.time_to_first_token <= a.total);
    // A budget too small to finish (two tokens short, so the cut falls in
    // the free text) still closes the output.
    let cut = chat
        .generate(&prompt, a.generated_tokens - 2, Some(YES_NO))
        .unwrap();
    assert!(cut.truncated);
    serde_json::from_str::<serde_json::Value>(&cut.text)
        .unwrap_or_else(|e| panic!("{e}: {}", cut.text));
    // Without a grammar it still generates (and stops at end of turn or the budget).
    let free = chat.generate(&prompt, 16, None).unwrap();
    assert!(free.generated_tokens > 0);
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
