//! Merkle roots and proofs: the RFC 6962 vectors, exhaustive checks on
//! small trees, and a cross-check against the `ct-merkle` crate.

use capsule_ledger::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
    Hash, MemoryTree,
};
use proptest::prelude::*;

fn tree(n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(leaf_hash(format!("leaf {i}").as_bytes()));
    }
    t
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[bit / 8 % 32] ^= 1 << (bit % 8);
    out
}

#[test]
fn roots_match_the_rfc6962_vectors_for_every_size() {
    let text = include_str!("vectors/rfc6962_vectors.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let leaves: Vec<Vec<u8>> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex::decode(s.as_str().unwrap()).unwrap())
        .collect();
    let roots: Vec<&str> = v["root_hashes_by_tree_size_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(roots.len(), leaves.len() + 1);
    let mut t = MemoryTree::new();
    for leaf in &leaves {
        t.push(leaf_hash(leaf));
    }
    for (size, want) in roots.iter().enumerate() {
        assert_eq!(
            hex::encode(root(&t, size as u64).unwrap()),
            *want,
            "tree size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_verify_for_every_index_below_every_size_to_300() {
    let t = tree(300);
    for n in 1..=300u64 {
        let r = root(&t, n).unwrap();
        for i in 0..n {
            let leaf = leaf_hash(format!("leaf {i}").as_bytes());
            let proof = inclusion_proof(&t, i, n).unwrap();
            verify_inclusion(i, n, &leaf, &proof, &r).unwrap();
            assert!(
                verify_inclusion(i, n, &flip(&leaf, i as usize), &proof, &r).is_err(),
                "wrong leaf n={n} i={i}"
            );
            let other = (i + 1) % n;
            if other != i {
                assert!(
                    verify_inclusion(other, n, &leaf, &proof, &r).is_err(),
                    "wrong index n={n} i={i}"
                );
            }
            assert!(
                verify_inclusion(i, n, &leaf, &proof, &flip(&r, n as usize)).is_err(),
                "wrong root n={n} i={i}"
            );
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = (i as usize) % bad.len();
                bad[k] = flip(&bad[k], 3);
                assert!(
                    verify_inclusion(i, n, &leaf, &bad, &r).is_err(),
                    "tampered path n={n} i={i}"
                );
            }
        }
    }
}

#[test]
fn consistency_proofs_verify_for_every_pair_of_sizes_to_300() {
    let t = tree(300);
    let roots: Vec<Hash> = (0..=300).map(|n| root(&t, n).unwrap()).collect();
    for n in 1..=300u64 {
        for m in 1..=n {
            let (rm, rn) = (&roots[m as usize], &roots[n as usize]);
            let proof = consistency_proof(&t, m, n).unwrap();
            verify_consistency(m, n, rm, rn, &proof).unwrap();
            if m == n {
                assert!(proof.is_empty());
                assert!(verify_consistency(m, n, rm, &flip(rn, 1), &proof).is_err());
                continue;
            }
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], (m + n) as usize);
                assert!(
                    verify_consistency(m, n, rm, rn, &bad).is_err(),
                    "tampered m={m} n={n} k={k}"
                );
            }
            assert!(
                verify_consistency(m, n, &flip(rm, 0), rn, &proof).is_err(),
                "old root m={m} n={n}"
            );
            assert!(
                verify_consistency(m, n, rm, &flip(rn, 0), &proof).is_err(),
                "new root m={m} n={n}"
            );
            assert!(
                verify_consistency(m, n, rm, rn, &proof[..proof.len() - 1]).is_err(),
                "short m={m} n={n}"
            );
            let mut long = proof.clone();
            long.push([0; 32]);
            assert!(
                verify_consistency(m, n, rm, rn, &long).is_err(),
                "long m={m} n={n}"
            );
        }
    }
}

type CtTree = ct_merkle::mem_backed_tree::MemoryBackedTree<sha2_011::Sha256, Vec<u8>>;

fn both_trees(n: u64, seed: u64) -> (MemoryTree, CtTree, Vec<Vec<u8>>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ours = MemoryTree::new();
    let mut theirs = CtTree::new();
    let mut leaves = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = rng.random_range(0..64);
        let leaf: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        ours.push(leaf_hash(&leaf));
        theirs.push(leaf.clone());
        leaves.push(leaf);
    }
    (ours, theirs, leaves)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Our root, inclusion proof and consistency proof equal ct-merkle's,
    /// byte for byte, for random trees of up to 100 000 leaves.
    #[test]
    fn outputs_equal_ct_merkle(n in 1u64..=100_000, seed in any::<u64>(), pick in any::<u64>(), old in any::<u64>()) {
        let (ours, theirs, _) = both_trees(n, seed);
        let r = root(&ours, n).unwrap();
        let their_root = theirs.root();
        prop_assert_eq!(&r[..], &their_root.as_bytes()[..]);
        let i = pick % n;
        let proof: Vec<u8> = inclusion_proof(&ours, i, n).unwrap().concat();
        let their_proof = theirs.prove_inclusion(i as usize);
        prop_assert_eq!(&proof[..], their_proof.as_bytes());
        // ct-merkle proves consistency from old = n − additions, 1 ≤ old < n.
        if n > 1 {
            let m = 1 + old % (n - 1);
            let proof: Vec<u8> = consistency_proof(&ours, m, n).unwrap().concat();
            let their_proof = theirs.prove_consistency((n - m) as usize);
            prop_assert_eq!(&proof[..], their_proof.as_bytes());
        }
    }
}

#[test]
fn ct_merkle_agrees_on_every_small_tree() {
    let (ours, theirs, _) = both_trees(64, 7);
    assert_eq!(ours.size(), 64);
    let r = root(&ours, 64).unwrap();
    assert_eq!(&r[..], &theirs.root().as_bytes()[..]);
    for i in 0..64u64 {
        let proof: Vec<u8> = inclusion_proof(&ours, i, 64).unwrap().concat();
        assert_eq!(
            &proof[..],
            theirs.prove_inclusion(i as usize).as_bytes(),
            "index {i}"
        );
    }
    for m in 1..64u64 {
        let proof: Vec<u8> = consistency_proof(&ours, m, 64).unwrap().concat();
        assert_eq!(
            &proof[..],
            theirs.prove_consistency((64 - m) as usize).as_bytes(),
            "old size {m}"
        );
    }
}
