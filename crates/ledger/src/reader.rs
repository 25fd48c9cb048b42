//! Reading a ledger: entries by sequence number, roots and proofs from the
//! stored nodes (O(log n) positioned reads, never a rebuild), and the
//! stored checkpoints.

use crate::checkpoints::read_notes;
use crate::entry::{AuditEntry, MAX_ENTRY_LEN};
use crate::error::{LedgerError, Result};
use crate::keys::KeyStore;
use crate::layout::{read_frame, split_index_slot, Frame, Layout, LedgerMeta};
use crate::merkle::{self, postorder_position, size_for_postorder_len, Hash, NodeSource};
use crate::note::Checkpoint;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Positioned reads of `nodes`, `index` and the segments.
pub struct Files {
    layout: Layout,
    nodes: File,
    index: File,
}

impl Files {
    pub fn open(layout: &Layout) -> Result<Self> {
        let open = |p: std::path::PathBuf| File::open(&p).map_err(LedgerError::io(&p));
        Ok(Files {
            layout: layout.clone(),
            nodes: open(layout.nodes())?,
            index: open(layout.index())?,
        })
    }

    /// The number of entries whose nodes and index slots are both stored.
    pub fn stored_size(&self) -> Result<u64> {
        let len = |f: &File, p: std::path::PathBuf| {
            f.metadata().map(|m| m.len()).map_err(LedgerError::io(&p))
        };
        let nodes = size_for_postorder_len(len(&self.nodes, self.layout.nodes())? / 32);
        let index = len(&self.index, self.layout.index())? / 8;
        Ok(nodes.min(index))
    }

    /// The canonical bytes of entry `seq` (the caller checks seq < size).
    pub fn entry_bytes(&self, seq: u64) -> Result<Vec<u8>> {
        let mut slot = [0u8; 8];
        self.index
            .read_exact_at(&mut slot, seq * 8)
            .map_err(LedgerError::io(self.layout.index()))?;
        let (segment, offset) = split_index_slot(u64::from_le_bytes(slot));
        let path = self.layout.segment(segment);
        let file = File::open(&path).map_err(LedgerError::io(&path))?;
        let mut header = [0u8; 8];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| LedgerError::corrupt(&path, offset, format!("entry {seq}: {e}")))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_ENTRY_LEN {
            return Err(LedgerError::corrupt(
                &path,
                offset,
                format!("entry {seq}: length {len} too large"),
            ));
        }
        let mut record = vec![0u8; 8 + len];
        file.read_exact_at(&mut record, offset)
            .map_err(|e| LedgerError::corrupt(&path, offset, format!("entry {seq}: {e}")))?;
        match read_frame(&record, MAX_ENTRY_LEN) {
            Frame::Record(_) => Ok(record.split_off(8)),
            Frame::Truncated => Err(LedgerError::corrupt(
                &path,
                offset,
                format!("entry {seq}: cut short"),
            )),
            Frame::Damaged(reason) => Err(LedgerError::corrupt(
                &path,
                offset,
                format!("entry {seq}: {reason}"),
            )),
        }
    }

    /// Entry `seq`, decoded.
    pub fn entry(&self, seq: u64) -> Result<AuditEntry> {
        let bytes = self.entry_bytes(seq)?;
        let entry = AuditEntry::decode(&bytes)?;
        if entry.seq != seq {
            return Err(LedgerError::corrupt(
                self.layout.index(),
                seq * 8,
                format!("index slot {seq} points at entry {}", entry.seq),
            ));
        }
        Ok(entry)
    }
}

impl NodeSource for Files {
    fn node(&self, level: u32, index: u64) -> Result<Hash> {
        let mut h = [0u8; 32];
        let pos = postorder_position(level, index);
        self.nodes
            .read_exact_at(&mut h, pos * 32)
            .map_err(LedgerError::io(self.layout.nodes()))?;
        Ok(h)
    }
}

/// Tree queries bounded by a size; shared by [`LogReader`] and the writer.
pub(crate) fn check_size(what: &str, size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(LedgerError::invalid(
            what,
            format!("{size} exceeds the log size {limit}"),
        ));
    }
    Ok(())
}

/// An inclusion proof with everything needed to check it.
#[derive(Debug, Clone, PartialEq)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub path: Vec<Hash>,
    pub root: Hash,
}

impl InclusionProof {
    pub fn verify(&self) -> Result<()> {
        merkle::verify_inclusion(
            self.index,
            self.tree_size,
            &self.leaf_hash,
            &self.path,
            &self.root,
        )
    }
}

/// Build the inclusion proof of `index` in the tree of `size` leaves.
pub(crate) fn prove_inclusion(files: &Files, index: u64, size: u64) -> Result<InclusionProof> {
    let path = merkle::inclusion_proof(files, index, size)?;
    Ok(InclusionProof {
        index,
        tree_size: size,
        leaf_hash: files.node(0, index)?,
        path,
        root: merkle::root(files, size)?,
    })
}

/// A read-only view of a ledger directory, at the size it had when opened.
/// It takes no lock: a writer may append meanwhile; the view reads only
/// what was already stored.
pub struct LogReader {
    layout: Layout,
    meta: LedgerMeta,
    files: Files,
    size: u64,
}

impl LogReader {
    pub fn open(dir: &Path) -> Result<Self> {
        let layout = Layout::new(dir);
        let meta = LedgerMeta::read(&layout)?;
        let files = Files::open(&layout)?;
        let size = files.stored_size()?;
        Ok(LogReader {
            layout,
            meta,
            files,
            size,
        })
    }

    pub fn origin(&self) -> &str {
        &self.meta.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn entry(&self, seq: u64) -> Result<AuditEntry> {
        if seq >= self.size {
            return Err(LedgerError::invalid(
                "seq",
                format!("{seq} is not below the log size {}", self.size),
            ));
        }
        self.files.entry(seq)
    }

    pub fn root(&self, size: u64) -> Result<Hash> {
        check_size("size", size, self.size)?;
        merkle::root(&self.files, size)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof> {
        check_size("size", size, self.size)?;
        prove_inclusion(&self.files, index, size)
    }

    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        check_size("new size", new_size, self.size)?;
        merkle::consistency_proof(&self.files, old_size, new_size)
    }

    /// Every stored checkpoint whose signature verifies with one of the
    /// ledger's own public keys, oldest first. (Full verification, with the
    /// rotation chain from a pinned key, is [`crate::verify`].)
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let keys = KeyStore::new(&self.layout.keys(), &self.meta.origin);
        let publics: Vec<_> = keys
            .versions()?
            .into_iter()
            .filter_map(|v| keys.load_public(v).ok())
            .collect();
        let scan = read_notes(&self.layout.checkpoints())?;
        let mut out = Vec::with_capacity(scan.notes.len());
        for note in scan.notes {
            let cp = publics
                .iter()
                .rev()
                .find_map(|k| Checkpoint::verify(&note.text, k).ok())
                .ok_or_else(|| {
                    LedgerError::corrupt(
                        self.layout.checkpoints(),
                        note.offset,
                        "checkpoint signature does not verify with any ledger key",
                    )
                })?;
            if cp.size() <= self.size {
                out.push(cp);
            }
        }
        Ok(out)
    }

    /// The newest checkpoint at or below this view's size.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.checkpoints()?.pop())
    }
}
