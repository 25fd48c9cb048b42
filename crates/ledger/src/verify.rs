//! Full verification of a ledger directory, trusting nothing but a public
//! key: every record's framing and checksum, every entry's canonical
//! encoding, every stored node and index slot against the rebuilt tree,
//! the key-rotation chain, every checkpoint's signature and root, and a
//! consistency proof between each pair of consecutive checkpoints.
//! Read-only; it never repairs.

use crate::checkpoints::read_notes;
use crate::entry::AuditEntry;
use crate::error::{LedgerError, Result};
use crate::keys::KeySchedule;
use crate::layout::{Layout, LedgerMeta};
use crate::merkle::{self, postorder_len};
use crate::note::{Checkpoint, VerifierKey};
use crate::reader::Files;
use crate::scan::scan;
use std::path::Path;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub key_rotations: u64,
    /// The newest checkpoint's size and root (hex), if any.
    pub latest: Option<(u64, String)>,
    /// The key that signs checkpoints after the last rotation.
    pub current_key: String,
}

/// Verify the ledger in `dir` starting from `trusted`, the key of version 1
/// that the caller trusts. The first problem found is the error; it names
/// the file and byte offset.
pub fn verify(dir: &Path, trusted: &VerifierKey) -> Result<VerifyReport> {
    let layout = Layout::new(dir);
    let meta = LedgerMeta::read(&layout)?;
    let origin = meta.origin.as_str();
    if trusted.name() != origin {
        return Err(LedgerError::invalid(
            "key",
            format!(
                "trusted key is named {:?}, the log's origin is {origin:?}",
                trusted.name()
            ),
        ));
    }
    let mut schedule = KeySchedule::new(origin, trusted.clone());
    let s = scan(&layout, u64::MAX, |_, payload| {
        schedule.follow(&AuditEntry::decode(payload)?)
    })?;
    if let Some(bad) = s.bad {
        let what = if bad.truncated {
            " (torn tail: open the ledger once to recover it)"
        } else {
            ""
        };
        return Err(LedgerError::corrupt(
            bad.file,
            bad.offset,
            format!("{}{what}", bad.reason),
        ));
    }
    let n = s.entries;
    if let Some(p) = s.node_mismatch {
        return Err(LedgerError::corrupt(
            layout.nodes(),
            p * 32,
            "stored node hash differs from the entries",
        ));
    }
    if s.stored_nodes != postorder_len(n) {
        return Err(LedgerError::corrupt(
            layout.nodes(),
            s.stored_nodes.min(postorder_len(n)) * 32,
            format!(
                "holds {} node hashes; {n} entries need {}",
                s.stored_nodes,
                postorder_len(n)
            ),
        ));
    }
    if let Some(i) = s.index_mismatch {
        return Err(LedgerError::corrupt(
            layout.index(),
            i * 8,
            "index slot does not point at its entry",
        ));
    }
    if s.stored_index != n {
        return Err(LedgerError::corrupt(
            layout.index(),
            s.stored_index.min(n) * 8,
            format!("holds {} slots for {n} entries", s.stored_index),
        ));
    }
    for (path, item) in [(layout.nodes(), 32), (layout.index(), 8)] {
        let len = std::fs::metadata(&path)
            .map_err(LedgerError::io(&path))?
            .len();
        if len % item != 0 {
            return Err(LedgerError::corrupt(
                &path,
                len - len % item,
                "trailing partial record",
            ));
        }
    }

    let files = Files::open(&layout)?;
    let notes_path = layout.checkpoints();
    let notes = read_notes(&notes_path)?;
    if let Some((offset, torn, reason)) = notes.bad {
        let what = if torn {
            " (torn tail: open the ledger once to recover it)"
        } else {
            ""
        };
        return Err(LedgerError::corrupt(
            &notes_path,
            offset,
            format!("{reason}{what}"),
        ));
    }
    let mut previous: Option<Checkpoint> = None;
    for note in &notes.notes {
        let at = |reason: String| LedgerError::corrupt(&notes_path, note.offset, reason);
        let cp = schedule
            .verify_note(&note.text)
            .map_err(|e| at(e.to_string()))?;
        let size = cp.size();
        if size > n {
            return Err(at(format!(
                "checkpoint covers {size} entries; the log holds {n}"
            )));
        }
        if merkle::root(&files, size)? != *cp.root() {
            return Err(at(format!(
                "root for size {size} does not match the entries"
            )));
        }
        if let Some(prev) = &previous {
            if size < prev.size() {
                return Err(at(format!(
                    "size {size} is smaller than the previous checkpoint's {}",
                    prev.size()
                )));
            }
            let proof = merkle::consistency_proof(&files, prev.size(), size)?;
            merkle::verify_consistency(prev.size(), size, prev.root(), cp.root(), &proof)
                .map_err(|e| at(format!("not consistent with the previous checkpoint: {e}")))?;
        }
        previous = Some(cp);
    }
    Ok(VerifyReport {
        entries: n,
        checkpoints: notes.notes.len() as u64,
        key_rotations: schedule.rotations(),
        latest: previous.map(|c| (c.size(), hex::encode(c.root()))),
        current_key: schedule.current().to_string(),
    })
}
