//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing, proofs and their
//! verification, over any store of complete-subtree hashes.
//!
//! A node is named by `(level, index)`: the root of the complete subtree over
//! leaves `[index·2^level, (index+1)·2^level)`. Only complete subtrees are
//! ever stored; the hash of an incomplete right edge is folded from the
//! complete subtrees that tile it, so any tree size's root and proofs cost
//! O(log n) node reads.

use crate::error::{LedgerError, Result};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Upper bound on proof lengths: a tree of at most 2^63 leaves has at most
/// 63 levels, and a consistency proof at most one more hash than that.
pub const MAX_PROOF_HASHES: usize = 64;

/// RFC 6962 §2.1: the hash of the empty tree, SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// RFC 6962 §2.1: MTH({d}) = SHA-256(0x00 ‖ d).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 §2.1: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A source of complete-subtree hashes. Callers only ask for nodes inside
/// the tree the source holds.
pub trait NodeSource {
    /// The hash of complete subtree `(level, index)`.
    fn node(&self, level: u32, index: u64) -> Result<Hash>;
}

/// The largest power of two strictly smaller than `n` (n ≥ 2), the split
/// point `k` of RFC 6962 §2.1.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[lo:hi]) for a range whose start is aligned to a power of two at
/// least as large as its length (every range that RFC 6962's recursions
/// produce is of this form). The range is tiled left to right by complete
/// subtrees of decreasing size, then folded from the right.
pub fn range_hash(src: &impl NodeSource, lo: u64, hi: u64) -> Result<Hash> {
    debug_assert!(lo < hi);
    let mut tiles: [(u32, u64); 64] = [(0, 0); 64];
    let mut count = 0;
    let mut pos = lo;
    while pos < hi {
        let level = 63 - (hi - pos).leading_zeros();
        debug_assert!(
            pos.is_multiple_of(1u64 << level),
            "range [{lo}, {hi}) is not aligned"
        );
        tiles[count] = (level, pos >> level);
        count += 1;
        pos += 1u64 << level;
    }
    let (level, index) = tiles[count - 1];
    let mut acc = src.node(level, index)?;
    for &(level, index) in tiles[..count - 1].iter().rev() {
        acc = node_hash(&src.node(level, index)?, &acc);
    }
    Ok(acc)
}

/// The root hash of the first `size` leaves.
pub fn root(src: &impl NodeSource, size: u64) -> Result<Hash> {
    if size == 0 {
        Ok(empty_root())
    } else {
        range_hash(src, 0, size)
    }
}

/// RFC 9162 §2.1.3.1: the inclusion proof of leaf `index` in the tree of the
/// first `size` leaves, ordered from the leaf upwards.
pub fn inclusion_proof(src: &impl NodeSource, index: u64, size: u64) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(LedgerError::invalid(
            "index",
            format!("leaf index {index} is not below tree size {size}"),
        ));
    }
    let mut path = Vec::with_capacity(64);
    // Walk down from the root, collecting siblings root-first, then reverse.
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            path.push(range_hash(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(src, lo, lo + k)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 §2.1.4.1: the consistency proof between the trees of the first
/// `old_size` and `new_size` leaves. Empty when `old_size` is 0 or equal to
/// `new_size`.
pub fn consistency_proof(src: &impl NodeSource, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
    if old_size > new_size {
        return Err(LedgerError::invalid(
            "old_size",
            format!("old tree size {old_size} exceeds new tree size {new_size}"),
        ));
    }
    let mut path = Vec::with_capacity(64);
    if old_size == 0 || old_size == new_size {
        return Ok(path);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled; `m` is relative to `lo`.
    let (mut m, mut lo, mut hi, mut complete) = (old_size, 0u64, new_size, true);
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            path.push(range_hash(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(src, lo, lo + k)?);
            m -= k;
            lo += k;
            complete = false;
        }
    }
    if !complete {
        path.push(range_hash(src, lo, hi)?);
    }
    path.reverse();
    Ok(path)
}

fn check_proof_len(len: usize) -> Result<()> {
    if len > MAX_PROOF_HASHES {
        return Err(LedgerError::invalid(
            "proof",
            format!("{len} hashes is more than any tree needs ({MAX_PROOF_HASHES})"),
        ));
    }
    Ok(())
}

/// RFC 9162 §2.1.3.2: verify that `leaf` is leaf `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    check_proof_len(proof.len())?;
    if index >= size {
        return Err(LedgerError::invalid(
            "index",
            format!("leaf index {index} is not below tree size {size}"),
        ));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(LedgerError::invalid(
                "proof",
                "inclusion proof is too long for the tree size",
            ));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(LedgerError::invalid(
            "proof",
            "inclusion proof is too short for the tree size",
        ));
    }
    if &r != root {
        return Err(LedgerError::invalid(
            "proof",
            "inclusion proof does not lead to the root hash",
        ));
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: verify that the tree of `new_size` leaves with root
/// `new_root` extends the tree of `old_size` leaves with root `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    check_proof_len(proof.len())?;
    let fail = |reason: &str| Err(LedgerError::invalid("proof", reason.to_string()));
    if old_size > new_size {
        return Err(LedgerError::invalid(
            "old_size",
            format!("old tree size {old_size} exceeds new tree size {new_size}"),
        ));
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return fail("a consistency proof from an empty or identical tree must be empty");
        }
        if old_size == new_size && old_root != new_root {
            return fail("trees of the same size have different roots");
        }
        return Ok(());
    }
    if proof.is_empty() {
        return fail("consistency proof is empty");
    }
    // Step 1: when old_size is a power of two the proof omits the old root.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return fail("consistency proof is too long for the tree sizes");
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return fail("consistency proof is too short for the tree sizes");
    }
    if &f_r != old_root {
        return fail("consistency proof does not lead to the old root");
    }
    if &s_r != new_root {
        return fail("consistency proof does not lead to the new root");
    }
    Ok(())
}

/// The position of node `(level, index)` in post-order, the order in which
/// an append-only tree completes its nodes: after leaf `e − 1` is appended
/// (e = (index+1)·2^level) the tree holds 2e − popcount(e) nodes, the last
/// `tz(e)` of them the parents completed by that leaf, lowest first.
pub fn postorder_position(level: u32, index: u64) -> u64 {
    let e = (index + 1) << level;
    let emitted = 2 * e - u64::from(e.count_ones());
    emitted - 1 - u64::from(e.trailing_zeros() - level)
}

/// The number of stored nodes of a tree of `size` leaves.
pub fn postorder_len(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The largest tree size whose nodes fit in `nodes` post-order slots.
pub fn size_for_postorder_len(nodes: u64) -> u64 {
    // postorder_len is increasing; 2n − popcount(n) ≥ n, so n ≤ nodes.
    let (mut lo, mut hi) = (0u64, nodes);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if postorder_len(mid) <= nodes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The compact range of an append-only tree: the roots of the complete
/// subtrees along its right edge, at most one per level (O(log n) hashes).
/// Appending a leaf completes nodes, which it reports in post-order.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// Roots of the complete subtrees, largest (leftmost) first.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the first `size` leaves of a stored tree.
    pub fn load(src: &impl NodeSource, size: u64) -> Result<Self> {
        let mut stack = Vec::new();
        let mut pos = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                stack.push((level, src.node(level, pos >> level)?));
                pos += 1u64 << level;
            }
        }
        Ok(Frontier { size, stack })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf; `emit` receives every node it completes, the leaf
    /// first, in post-order.
    pub fn push(&mut self, leaf: Hash, mut emit: impl FnMut(u32, u64, &Hash)) {
        let mut level = 0u32;
        let mut index = self.size;
        let mut hash = leaf;
        emit(level, index, &hash);
        while let Some(&(top_level, top)) = self.stack.last() {
            if top_level != level {
                break;
            }
            self.stack.pop();
            hash = node_hash(&top, &hash);
            level += 1;
            index >>= 1;
            emit(level, index, &hash);
        }
        self.stack.push((level, hash));
        self.size += 1;
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(&(_, last)) => iter.fold(last, |acc, (_, h)| node_hash(h, &acc)),
        }
    }
}

/// A whole tree in memory: every complete subtree hash, by level. Used for
/// small trees, in tests and by verifiers that rebuild a tree.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let n = self.levels[level].len();
            if n % 2 == 1 {
                break;
            }
            hash = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            level += 1;
        }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

impl NodeSource for MemoryTree {
    fn node(&self, level: u32, index: u64) -> Result<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| {
                LedgerError::invalid("node", format!("no complete subtree ({level}, {index})"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    /// MTH by the definition of RFC 6962 §2.1, recursively over leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn root_matches_recursive_definition_for_every_size_to_70() {
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let t = tree(70);
        for n in 0..=70usize {
            assert_eq!(root(&t, n as u64).unwrap(), mth(&leaves[..n]), "size {n}");
        }
    }

    #[test]
    fn frontier_root_and_emitted_nodes_follow_postorder() {
        let t = tree(37);
        let mut f = Frontier::new();
        let mut emitted = Vec::new();
        for i in 0..37u64 {
            f.push(leaf_hash(&i.to_be_bytes()), |level, index, h| {
                emitted.push((level, index, *h))
            });
            assert_eq!(f.root(), root(&t, i + 1).unwrap());
            assert_eq!(emitted.len() as u64, postorder_len(i + 1));
        }
        for (pos, (level, index, h)) in emitted.iter().enumerate() {
            assert_eq!(postorder_position(*level, *index), pos as u64);
            assert_eq!(t.node(*level, *index).unwrap(), *h);
        }
        let loaded = Frontier::load(&t, 37).unwrap();
        assert_eq!(loaded.root(), f.root());
    }

    #[test]
    fn size_for_postorder_len_inverts_postorder_len() {
        for n in 0..2000u64 {
            let len = postorder_len(n);
            assert_eq!(size_for_postorder_len(len), n);
            if n > 0 {
                assert_eq!(size_for_postorder_len(len - 1), n - 1);
            }
        }
    }

    #[test]
    fn proof_requests_outside_the_tree_are_refused() {
        let t = tree(5);
        assert!(inclusion_proof(&t, 5, 5).is_err());
        assert!(consistency_proof(&t, 6, 5).is_err());
        assert!(verify_inclusion(5, 5, &[0; 32], &[], &[0; 32]).is_err());
        assert!(verify_inclusion(0, 1, &[0; 32], &[[0; 32]; 65], &[0; 32]).is_err());
    }
}
