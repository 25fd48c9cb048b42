//! The vector index through its public API, on temporary directories.

use capsule_memory::{
    Filter, MemoryError, NewVector, Recovery, VectorIndex, MAX_BATCH, MAX_EXPANSION_SEARCH, MAX_K,
};
use proptest::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;

const DIMS: usize = 16;

/// SplitMix64: a reproducible stream without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vectors(&mut self, n: usize, dims: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..dims).map(|_| self.unit()).collect())
            .collect()
    }
}

fn open(dir: &Path) -> VectorIndex {
    VectorIndex::open(dir, DIMS).unwrap()
}

/// `n` random vectors under keys 1..=n; kind alternates "think"/"tool",
/// lane cycles "prod"/"candidate"/"shadow".
fn filled(dir: &Path, n: usize, seed: u64) -> (VectorIndex, Vec<Vec<f32>>) {
    let index = open(dir);
    let vectors = Rng(seed).vectors(n, DIMS);
    let batch: Vec<NewVector<'_>> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| NewVector {
            key: i as i64 + 1,
            vector: v,
            kind: ["think", "tool"][i % 2],
            lane: ["prod", "candidate", "shadow"][i % 3],
        })
        .collect();
    index.add_batch(&batch).unwrap();
    (index, vectors)
}

fn keys(index: &VectorIndex, query: &[f32], k: usize, filter: &Filter) -> Vec<i64> {
    index
        .search(query, k, filter)
        .unwrap()
        .iter()
        .map(|h| h.key)
        .collect()
}

fn invalid(err: MemoryError) -> (String, String) {
    match err {
        MemoryError::Invalid { field, reason } => (field, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn all_found(index: &VectorIndex, vectors: &[Vec<f32>]) {
    for (i, v) in vectors.iter().enumerate() {
        let hits = index.search(v, 1, &Filter::default()).unwrap();
        assert_eq!(hits[0].key, i as i64 + 1, "vector {i}");
    }
}

#[test]
fn every_stored_vector_is_its_own_top_hit_with_score_one() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 500, 1);
    assert_eq!(index.len(), 500);
    for (i, v) in vectors.iter().enumerate() {
        let hits = index.search(v, 1, &Filter::default()).unwrap();
        assert_eq!(hits[0].key, i as i64 + 1);
        // The graph holds bfloat16, so the score is close to 1, not exact.
        assert!(
            (hits[0].score - 1.0).abs() < 5e-3,
            "score {}",
            hits[0].score
        );
    }
}

/// The keys of the `k` stored vectors most cosine-similar to `query`, by
/// exhaustive f64 search over those `allowed` by the filter.
fn exact_top_k(
    vectors: &[Vec<f32>],
    query: &[f32],
    k: usize,
    allowed: impl Fn(usize) -> bool,
) -> HashSet<i64> {
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let qn = norm(query);
    let mut scored: Vec<(f64, i64)> = vectors
        .iter()
        .enumerate()
        .filter(|&(i, _)| allowed(i))
        .map(|(i, v)| {
            let dot: f64 = v
                .iter()
                .zip(query)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            (dot / (norm(v) * qn), i as i64 + 1)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.iter().take(k).map(|&(_, key)| key).collect()
}

#[test]
fn recall_at_10_against_exact_search_is_high_with_and_without_a_filter() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 3000, 31);
    let queries = Rng(32).vectors(100, DIMS);
    let think = Filter {
        kind: Some("think".into()),
        lane: None,
    };
    let (mut plain, mut filtered) = (0usize, 0usize);
    for q in &queries {
        let got: HashSet<i64> = keys(&index, q, 10, &Filter::default())
            .into_iter()
            .collect();
        plain += got
            .intersection(&exact_top_k(&vectors, q, 10, |_| true))
            .count();
        let got: HashSet<i64> = keys(&index, q, 10, &think).into_iter().collect();
        filtered += got
            .intersection(&exact_top_k(&vectors, q, 10, |i| i % 2 == 0))
            .count();
    }
    // bfloat16 scores may swap near-ties at the 10th place; the graph
    // search itself must find nearly all of the true neighbours.
    let (plain, filtered) = (plain as f64 / 1000.0, filtered as f64 / 1000.0);
    assert!(plain >= 0.95, "recall@10 {plain}");
    assert!(filtered >= 0.95, "filtered recall@10 {filtered}");
}

#[test]
fn an_empty_index_returns_no_hits() {
    let dir = TempDir::new().unwrap();
    let index = open(dir.path());
    assert!(index.is_empty());
    let hits = index.search(&[1.0; DIMS], 10, &Filter::default()).unwrap();
    assert!(hits.is_empty());
}

#[test]
fn scaling_a_vector_does_not_change_its_hits() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 100, 2);
    let scaled: Vec<f32> = vectors[7].iter().map(|x| x * 1000.0).collect();
    let a = index.search(&scaled, 10, &Filter::default()).unwrap();
    let b = index.search(&vectors[7], 10, &Filter::default()).unwrap();
    assert_eq!(a.len(), 10);
    for (a, b) in a.iter().zip(&b) {
        assert!((a.score - b.score).abs() < 5e-3, "{a:?} {b:?}");
    }
    let sorted = |hits: &[capsule_memory::Hit]| {
        let mut keys: Vec<i64> = hits.iter().map(|h| h.key).collect();
        keys.sort_unstable();
        keys
    };
    assert_eq!(sorted(&a), sorted(&b));
}

#[test]
fn scores_are_the_cosine_similarity_to_within_bfloat16_precision() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 22);
    let cosine = |a: &[f32], b: &[f32]| {
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    };
    for query in Rng(23).vectors(10, DIMS) {
        for hit in index.search(&query, 20, &Filter::default()).unwrap() {
            let exact = cosine(&query, &vectors[hit.key as usize - 1]);
            assert!((hit.score - exact).abs() < 5e-3, "{hit:?} exact {exact}");
        }
    }
}

#[test]
fn hits_are_sorted_by_descending_score() {
    let dir = TempDir::new().unwrap();
    let (index, _) = filled(dir.path(), 300, 3);
    let query = Rng(99).vectors(1, DIMS).remove(0);
    let hits = index.search(&query, 50, &Filter::default()).unwrap();
    assert_eq!(hits.len(), 50);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn a_kind_filter_returns_only_that_kind() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 4);
    let filter = Filter {
        kind: Some("tool".into()),
        lane: None,
    };
    let found = keys(&index, &vectors[0], 40, &filter);
    assert_eq!(found.len(), 40);
    // Key i + 1 has kind "tool" exactly when i is odd.
    assert!(found.iter().all(|k| (k - 1) % 2 == 1), "{found:?}");
}

#[test]
fn a_lane_filter_returns_only_that_lane() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 5);
    let filter = Filter {
        kind: None,
        lane: Some("shadow".into()),
    };
    let found = keys(&index, &vectors[0], 40, &filter);
    assert_eq!(found.len(), 40);
    assert!(found.iter().all(|k| (k - 1) % 3 == 2), "{found:?}");
}

#[test]
fn kind_and_lane_filters_combine() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 6);
    let filter = Filter {
        kind: Some("think".into()),
        lane: Some("prod".into()),
    };
    let found = keys(&index, &vectors[0], 20, &filter);
    assert_eq!(found.len(), 20);
    assert!(found.iter().all(|k| (k - 1) % 6 == 0), "{found:?}");
}

#[test]
fn a_filter_on_an_unknown_kind_returns_nothing() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 50, 7);
    let filter = Filter {
        kind: Some("dream".into()),
        lane: None,
    };
    assert!(index.search(&vectors[0], 5, &filter).unwrap().is_empty());
}

#[test]
fn a_removed_key_is_unfindable_and_stays_removed_after_reopen() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 200, 8);
    index.save().unwrap();
    assert!(index.remove(10).unwrap());
    assert!(!index.remove(10).unwrap());
    assert_eq!(index.len(), 199);
    assert!(!keys(&index, &vectors[9], 20, &Filter::default()).contains(&10));
    drop(index);
    let index = open(dir.path());
    // Drop saved the index again, without the key.
    assert_eq!(index.recovery(), &Recovery::Loaded);
    assert_eq!(index.len(), 199);
    assert!(!keys(&index, &vectors[9], 20, &Filter::default()).contains(&10));
}

#[test]
fn a_crash_after_a_remove_rebuilds_rather_than_load_the_older_file() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 200, 9);
    index.save().unwrap();
    assert!(index.remove(10).unwrap());
    std::mem::forget(index); // a crash: no save
    let index = open(dir.path());
    assert!(matches!(index.recovery(), Recovery::Rebuilt { .. }));
    assert_eq!(index.len(), 199);
    assert!(!keys(&index, &vectors[9], 20, &Filter::default()).contains(&10));
}

#[test]
fn a_removed_key_may_be_added_again() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 50, 10);
    assert!(index.remove(3).unwrap());
    index.add(3, &vectors[40], "think", "prod").unwrap();
    assert_eq!(keys(&index, &vectors[40], 2, &Filter::default()).len(), 2);
    assert!(keys(&index, &vectors[40], 2, &Filter::default()).contains(&3));
}

#[test]
fn reopen_after_save_loads_the_file_and_gives_identical_results() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 400, 11);
    let queries = Rng(12).vectors(20, DIMS);
    let before: Vec<_> = queries
        .iter()
        .map(|q| index.search(q, 10, &Filter::default()).unwrap())
        .collect();
    index.close().unwrap();
    let index = open(dir.path());
    assert_eq!(index.recovery(), &Recovery::Loaded);
    let after: Vec<_> = queries
        .iter()
        .map(|q| index.search(q, 10, &Filter::default()).unwrap())
        .collect();
    assert_eq!(before, after);
    all_found(&index, &vectors);
}

#[test]
fn a_missing_index_file_is_rebuilt_from_sqlite() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 13);
    index.close().unwrap();
    std::fs::remove_file(dir.path().join("vectors.usearch")).unwrap();
    let index = open(dir.path());
    assert!(
        matches!(index.recovery(), Recovery::Rebuilt { reason } if reason.contains("cannot be read")),
        "{:?}",
        index.recovery()
    );
    assert_eq!(index.len(), 300);
    all_found(&index, &vectors);
}

#[test]
fn an_index_file_behind_sqlite_is_caught_up_with_the_new_rows() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 14);
    index.save().unwrap();
    let more = Rng(15).vectors(50, DIMS);
    for (i, v) in more.iter().enumerate() {
        index.add(1000 + i as i64, v, "think", "prod").unwrap();
    }
    std::mem::forget(index); // a crash: the file is older than SQLite
    let index = open(dir.path());
    assert_eq!(index.recovery(), &Recovery::CaughtUp { added: 50 });
    assert_eq!(index.len(), 350);
    all_found(&index, &vectors);
    for (i, v) in more.iter().enumerate() {
        assert_eq!(keys(&index, v, 1, &Filter::default()), [1000 + i as i64]);
    }
}

#[test]
fn an_index_file_behind_sqlite_below_its_highest_key_is_rebuilt() {
    let dir = TempDir::new().unwrap();
    let index = open(dir.path());
    let vectors = Rng(16).vectors(3, DIMS);
    index.add(10, &vectors[0], "think", "prod").unwrap();
    index.save().unwrap();
    index.add(5, &vectors[1], "think", "prod").unwrap();
    std::mem::forget(index);
    let index = open(dir.path());
    assert!(matches!(index.recovery(), Recovery::Rebuilt { .. }));
    assert_eq!(keys(&index, &vectors[1], 1, &Filter::default()), [5]);
}

#[test]
fn a_byte_flipped_index_file_is_rebuilt_not_trusted() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 300, 17);
    index.close().unwrap();
    let path = dir.path().join("vectors.usearch");
    let mut bytes = std::fs::read(&path).unwrap();
    for at in [0, 64, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let index = open(dir.path());
        assert!(
            matches!(index.recovery(), Recovery::Rebuilt { reason } if reason.contains("CRC-32C")),
            "byte {at}: {:?}",
            index.recovery()
        );
        all_found(&index, &vectors);
        drop(index); // saves a good file again
        bytes = std::fs::read(&path).unwrap();
    }
}

#[test]
fn a_dims_mismatch_with_the_store_is_rejected_naming_dims() {
    let dir = TempDir::new().unwrap();
    filled(dir.path(), 10, 18).0.close().unwrap();
    let (field, reason) = invalid(VectorIndex::open(dir.path(), 384).unwrap_err());
    assert_eq!(field, "dims");
    assert!(reason.contains("16-dimensional"), "{reason}");
    for dims in [0, capsule_memory::MAX_DIMS + 1] {
        let other = TempDir::new().unwrap();
        let (field, _) = invalid(VectorIndex::open(other.path(), dims).unwrap_err());
        assert_eq!(field, "dims");
    }
}

#[test]
fn bad_vectors_are_rejected_naming_the_field_and_nothing_is_stored() {
    let dir = TempDir::new().unwrap();
    let index = open(dir.path());
    let mut nan = vec![0.5; DIMS];
    nan[3] = f32::NAN;
    let mut inf = vec![0.5; DIMS];
    inf[0] = f32::NEG_INFINITY;
    let cases = [
        (vec![0.5; DIMS - 1], "length 15 is not dims = 16"),
        (nan, "element 3 is NaN"),
        (inf, "element 0 is -inf"),
        (vec![0.0; DIMS], "all elements are zero"),
    ];
    for (vector, expected) in &cases {
        let (field, reason) = invalid(index.add(1, vector, "think", "prod").unwrap_err());
        assert_eq!(field, "vector");
        assert!(
            reason.contains("key 1") && reason.contains(expected),
            "{reason}"
        );
        let (field, reason) = invalid(index.search(vector, 1, &Filter::default()).unwrap_err());
        assert_eq!(field, "query");
        assert!(reason.contains(expected), "{reason}");
    }
    assert_eq!(index.len(), 0);
}

#[test]
fn bad_keys_kinds_and_lanes_are_rejected_naming_the_field() {
    let dir = TempDir::new().unwrap();
    let index = open(dir.path());
    let v = vec![1.0; DIMS];
    assert_eq!(
        invalid(index.add(-1, &v, "think", "prod").unwrap_err()).0,
        "key"
    );
    assert_eq!(
        invalid(index.add(1, &v, "Think", "prod").unwrap_err()).0,
        "kind"
    );
    assert_eq!(
        invalid(index.add(1, &v, "think", "").unwrap_err()).0,
        "lane"
    );
    let filter = Filter {
        kind: None,
        lane: Some("PROD".into()),
    };
    assert_eq!(invalid(index.search(&v, 1, &filter).unwrap_err()).0, "lane");
    assert_eq!(index.len(), 0);
}

#[test]
fn a_duplicate_key_is_rejected_and_a_failed_batch_stores_nothing() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 20, 19);
    let (field, reason) = invalid(index.add(5, &vectors[0], "think", "prod").unwrap_err());
    assert_eq!(
        (field.as_str(), reason.contains("already stored")),
        ("key", true)
    );
    let twice = [
        NewVector {
            key: 100,
            vector: &vectors[0],
            kind: "think",
            lane: "prod",
        },
        NewVector {
            key: 100,
            vector: &vectors[1],
            kind: "think",
            lane: "prod",
        },
    ];
    let (field, reason) = invalid(index.add_batch(&twice).unwrap_err());
    assert_eq!((field.as_str(), reason.contains("twice")), ("key", true));
    let half_bad = [
        twice[0],
        NewVector {
            key: 101,
            vector: &[0.0; DIMS],
            ..twice[0]
        },
    ];
    assert_eq!(invalid(index.add_batch(&half_bad).unwrap_err()).0, "vector");
    assert_eq!(index.len(), 20);
    assert!(!keys(&index, &vectors[0], 2, &Filter::default()).contains(&100));
}

#[test]
fn k_is_bounded_on_both_sides() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 10, 20);
    for k in [0, MAX_K + 1] {
        let (field, _) = invalid(
            index
                .search(&vectors[0], k, &Filter::default())
                .unwrap_err(),
        );
        assert_eq!(field, "k");
    }
    assert_eq!(
        index
            .search(&vectors[0], MAX_K, &Filter::default())
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn ef_search_is_bounded_on_both_sides() {
    let dir = TempDir::new().unwrap();
    let index = open(dir.path());
    for ef in [0, MAX_EXPANSION_SEARCH + 1] {
        assert_eq!(invalid(index.set_ef_search(ef).unwrap_err()).0, "ef_search");
    }
    index.set_ef_search(1).unwrap();
    index.set_ef_search(MAX_EXPANSION_SEARCH).unwrap();
}

#[test]
fn a_batch_at_the_limit_is_accepted_and_one_more_is_not() {
    let dir = TempDir::new().unwrap();
    let index = VectorIndex::open(dir.path(), 2).unwrap();
    let vectors: Vec<[f32; 2]> = (0..=MAX_BATCH)
        .map(|i| [(i as f32).cos(), (i as f32).sin()])
        .collect();
    let batch: Vec<NewVector<'_>> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| NewVector {
            key: i as i64,
            vector: v,
            kind: "think",
            lane: "prod",
        })
        .collect();
    assert_eq!(invalid(index.add_batch(&batch).unwrap_err()).0, "batch");
    assert_eq!(index.len(), 0);
    index.add_batch(&batch[..MAX_BATCH]).unwrap();
    assert_eq!(index.len(), MAX_BATCH);
}

#[test]
fn searches_and_adds_run_from_many_threads_at_once() {
    let dir = TempDir::new().unwrap();
    let (index, vectors) = filled(dir.path(), 200, 21);
    let index = Arc::new(index);
    let vectors = Arc::new(vectors);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (index, vectors) = (Arc::clone(&index), Arc::clone(&vectors));
            std::thread::spawn(move || {
                for i in 0..50 {
                    let v = &vectors[(t * 50 + i) % vectors.len()];
                    if i % 5 == 0 {
                        let key = 10_000 + (t * 50 + i) as i64;
                        index.add(key, v, "think", "prod").unwrap();
                    }
                    assert!(!index.search(v, 5, &Filter::default()).unwrap().is_empty());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(index.len(), 200 + 8 * 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Recall on tiny sets is exact: a search with k = n finds every key
    /// exactly once.
    #[test]
    fn a_search_for_all_n_returns_every_key_exactly_once(
        n in 1usize..=200,
        seed in any::<u64>(),
    ) {
        let dir = TempDir::new().unwrap();
        let index = VectorIndex::open(dir.path(), 8).unwrap();
        let mut rng = Rng(seed);
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|_| loop {
                let v: Vec<f32> = (0..8).map(|_| rng.unit()).collect();
                if v.iter().any(|&x| x != 0.0) {
                    break v;
                }
            })
            .collect();
        let batch: Vec<NewVector<'_>> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| NewVector { key: i as i64 * 3, vector: v, kind: "think", lane: "prod" })
            .collect();
        index.add_batch(&batch).unwrap();
        let query: Vec<f32> = (0..8).map(|_| rng.unit()).collect();
        let query = if query.iter().all(|&x| x == 0.0) { vectors[0].clone() } else { query };
        let found = keys(&index, &query, n, &Filter::default());
        let unique: HashSet<i64> = found.iter().copied().collect();
        prop_assert_eq!(found.len(), n);
        prop_assert_eq!(unique, (0..n as i64).map(|i| i * 3).collect::<HashSet<_>>());
    }
}
