//! The acknowledged prefix of a ledger directory and the unacknowledged
//! tail after it: what a crashed writer can leave behind, told apart from
//! damage.
//!
//! An append is acknowledged only once its segment record is fsynced and
//! then its node hashes and index slot are fsynced. So on disk the
//! acknowledged prefix is the entries whose nodes *and* index slots are
//! both stored ([`Files::stored_size`](crate::reader::Files::stored_size));
//! every byte after it was written for appends nobody was told about yet.
//! A fault inside the prefix (or one that recovery could not have caused)
//! is damage, named by file and offset; what lies after it is a [`Tail`],
//! which recovery ([`crate::Ledger::open`]) settles: whole records are kept
//! and get their nodes and index slots, a torn (or garbled) end of the last
//! segment and a torn last checkpoint record are cut. [`crate::verify()`]
//! and recovery both decide through [`assess`], so they cannot disagree.

use crate::checkpoints::NoteScan;
use crate::error::{LedgerError, Result};
use crate::layout::{split_index_slot, Layout, SEGMENT_HEADER_LEN};
use crate::merkle::postorder_len;
use crate::scan::Scan;
use std::path::{Path, PathBuf};

/// Whole, sound records past the acknowledged prefix in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSpan {
    pub file: PathBuf,
    /// Seq of the first of them.
    pub first_seq: u64,
    pub entries: u64,
    /// Byte range `[offset, end)` of the segment they occupy.
    pub offset: u64,
    pub end: u64,
}

/// Bytes at the end of a file that recovery cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// Why they cannot be kept (a record cut short, a checksum mismatch).
    pub reason: String,
    /// The file ends inside the record (a torn write), rather than holding
    /// a garbled one (which only a crash of the machine, not of the
    /// process, leaves past the acknowledged prefix).
    pub torn: bool,
    /// The whole file goes (a segment whose header was being written).
    pub removes_file: bool,
}

/// Everything past the acknowledged prefix: none of it was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// The first seq past the prefix (= the number of acknowledged entries).
    pub first_seq: u64,
    /// Whole records durable in their segment whose nodes or index slots
    /// were not all stored; recovery keeps them and writes those.
    pub records: Vec<TailSpan>,
    /// The torn or garbled end of the last segment; recovery cuts it.
    pub cut: Option<TailCut>,
    /// A torn last record of the checkpoints file; recovery cuts it.
    pub checkpoint_cut: Option<TailCut>,
    /// Bytes of `nodes` and `index` past the prefix (part of a group's
    /// derived data); recovery rewrites them from the segments.
    pub extra_node_bytes: u64,
    pub extra_index_bytes: u64,
}

impl Tail {
    /// Whole unacknowledged records (kept by recovery).
    pub fn entries(&self) -> u64 {
        self.records.iter().map(|s| s.entries).sum()
    }

    /// Nothing lies past the acknowledged prefix: recovery has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.cut.is_none()
            && self.checkpoint_cut.is_none()
            && self.extra_node_bytes == 0
            && self.extra_index_bytes == 0
    }
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(LedgerError::io(path))?
        .len())
}

/// Given a scan (with `tail_from = acked`) and the checkpoints file's
/// records, refuse any damage to the `acked` entries or anything a crash
/// cannot leave behind, and describe the rest. Reads file lengths only.
/// (Checkpoint signatures and roots are checked by the callers.)
pub(crate) fn assess(layout: &Layout, scan: &Scan, acked: u64, notes: &NoteScan) -> Result<Tail> {
    if scan.entries < acked {
        if let Some(bad) = &scan.bad {
            return Err(LedgerError::corrupt(
                &bad.file,
                bad.offset,
                format!("{} (entry {} was acknowledged)", bad.reason, scan.entries),
            ));
        }
        return Err(LedgerError::corrupt(
            layout.index(),
            scan.entries * 8,
            format!(
                "index and nodes hold {acked} acknowledged entries but the segments end after {}",
                scan.entries
            ),
        ));
    }
    if let Some(p) = scan.node_mismatch.filter(|&p| p < postorder_len(acked)) {
        return Err(LedgerError::corrupt(
            layout.nodes(),
            p * 32,
            "stored node hash differs from the entries",
        ));
    }
    if let Some(i) = scan.index_mismatch.filter(|&i| i < acked) {
        return Err(LedgerError::corrupt(
            layout.index(),
            i * 8,
            "index slot does not point at its entry",
        ));
    }

    let mut tail = Tail {
        first_seq: acked,
        ..Tail::default()
    };
    if let Some(bad) = &scan.bad {
        // The writer fsyncs a segment before it creates the next one, so
        // only the last segment can end in a partial write.
        if bad.segment != scan.last_segment {
            return Err(LedgerError::corrupt(
                &bad.file,
                bad.offset,
                format!(
                    "{} (segment {:08}.seg follows, so this is not a torn tail)",
                    bad.reason, scan.last_segment
                ),
            ));
        }
        let len = file_len(&bad.file)?;
        let removes_file = bad.offset < SEGMENT_HEADER_LEN;
        let offset = if removes_file { 0 } else { bad.offset };
        tail.cut = Some(TailCut {
            file: bad.file.clone(),
            offset,
            bytes: len - offset,
            reason: bad.reason.clone(),
            torn: bad.truncated,
            removes_file,
        });
    }
    for (i, t) in scan.tail.iter().enumerate() {
        let (segment, offset) = split_index_slot(t.slot);
        match tail.records.last_mut() {
            Some(span) if span.file == layout.segment(segment) => span.entries += 1,
            _ => {
                let end = scan
                    .segments
                    .iter()
                    .find(|s| s.0 == segment)
                    .map_or(offset, |s| s.1);
                tail.records.push(TailSpan {
                    file: layout.segment(segment),
                    first_seq: acked + i as u64,
                    entries: 1,
                    offset,
                    end,
                });
            }
        }
    }
    tail.extra_node_bytes = file_len(&layout.nodes())?.saturating_sub(postorder_len(acked) * 32);
    tail.extra_index_bytes = file_len(&layout.index())?.saturating_sub(acked * 8);

    let notes_path = layout.checkpoints();
    if let Some((offset, torn, reason)) = &notes.bad {
        if !torn {
            return Err(LedgerError::corrupt(&notes_path, *offset, reason.clone()));
        }
        tail.checkpoint_cut = Some(TailCut {
            bytes: file_len(&notes_path)? - offset,
            file: notes_path,
            offset: *offset,
            reason: reason.clone(),
            torn: true,
            removes_file: false,
        });
    }
    Ok(tail)
}
