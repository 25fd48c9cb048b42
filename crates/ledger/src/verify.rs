//! Full verification of a ledger directory, trusting nothing but a public
//! key: every record's framing and checksum, every entry's canonical
//! encoding, every stored node and index slot against the rebuilt tree,
//! the key-rotation chain, every checkpoint's signature and root, and a
//! consistency proof between each pair of consecutive checkpoints.
//! Read-only; it never repairs.
//!
//! A writer killed mid-append leaves bytes past the acknowledged prefix
//! (see [`crate::tail`]). Verify checks the prefix in full, refuses as
//! damage anything recovery would refuse, and reports the rest as the
//! report's [`Tail`] instead of failing: so it can run on a crashed log
//! before anything reopens it.

use crate::checkpoints::read_notes;
use crate::entry::AuditEntry;
use crate::error::{LedgerError, Result};
use crate::keys::KeySchedule;
use crate::layout::{Layout, LedgerMeta};
use crate::merkle;
use crate::note::{Checkpoint, VerifierKey};
use crate::reader::Files;
use crate::scan::scan;
use crate::tail::{assess, Tail};
use std::path::Path;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Acknowledged entries, all verified.
    pub entries: u64,
    pub checkpoints: u64,
    pub key_rotations: u64,
    /// The newest checkpoint's size and root (hex), if any.
    pub latest: Option<(u64, String)>,
    /// The key that signs checkpoints after the last rotation.
    pub current_key: String,
    /// What lies past the acknowledged prefix (a crashed writer's
    /// unacknowledged appends), pending recovery; empty for a log that was
    /// closed cleanly. Its whole records are checked too.
    pub tail: Tail,
}

impl VerifyReport {
    /// The log is intact and nothing awaits recovery.
    pub fn is_clean(&self) -> bool {
        self.tail.is_empty()
    }
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
    let files = Files::open(&layout)?;
    let acked = files.stored_size()?;
    let mut schedule = KeySchedule::new(origin, trusted.clone());
    let s = scan(&layout, acked, |_, payload| {
        schedule.follow(&AuditEntry::decode(payload)?)
    })?;
    let notes_path = layout.checkpoints();
    let notes = read_notes(&notes_path)?;
    let tail = assess(&layout, &s, acked, &notes)?;
    let n = acked;
    let mut previous: Option<Checkpoint> = None;
    for note in &notes.notes {
        let at = |reason: String| LedgerError::corrupt(&notes_path, note.offset, reason);
        let cp = schedule
            .verify_note(&note.text)
            .map_err(|e| at(e.to_string()))?;
        let size = cp.size();
        if size > n {
            return Err(at(format!(
                "checkpoint covers {size} entries; {n} are acknowledged"
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
        tail,
    })
}
