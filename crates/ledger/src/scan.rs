//! One streaming pass over a ledger directory: every segment record is
//! framed, checksummed and hashed, the tree is rebuilt, and each rebuilt
//! node and index slot is compared with what `nodes` and `index` hold.
//! Recovery ([`crate::Ledger::open`]) and [`crate::verify`] both start here
//! and differ only in what they forgive.

use crate::error::{LedgerError, Result};
use crate::layout::{
    index_slot, read_frame, Frame, Layout, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use crate::merkle::{leaf_hash, Frontier, Hash};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

/// The first record that is not whole and sound.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub segment: u32,
    pub file: PathBuf,
    pub offset: u64,
    /// The file ends inside the record (a torn write) rather than holding a
    /// damaged one.
    pub truncated: bool,
    pub reason: String,
}

/// An entry past the point the caller asked to have reported.
#[derive(Debug, Clone)]
pub struct TailEntry {
    pub leaf: Hash,
    pub slot: u64,
}

/// What the pass found.
#[derive(Debug)]
pub struct Scan {
    /// Sound records, in order, before the first bad one.
    pub entries: u64,
    pub bad: Option<BadRecord>,
    /// Segment numbers scanned, and the end of the sound records in each.
    pub segments: Vec<(u32, u64)>,
    /// The number of the last segment file present (scanning may stop
    /// before it).
    pub last_segment: u32,
    /// The tree after `min(entries, tail_from)` leaves.
    pub frontier_at_tail: Frontier,
    /// Leaves and index slots of entries from `tail_from` on.
    pub tail: Vec<TailEntry>,
    /// The first stored node that differs from the rebuilt one: (position,
    /// what the rebuilt tree has there).
    pub node_mismatch: Option<u64>,
    /// The first stored index slot that differs.
    pub index_mismatch: Option<u64>,
}

/// A reader that compares a stream of fixed-size items with a file.
struct Compare {
    reader: BufReader<File>,
    stored: u64,
    next: u64,
    mismatch: Option<u64>,
}

impl Compare {
    fn open(path: &PathBuf, item: u64) -> Result<Self> {
        let file = File::open(path).map_err(LedgerError::io(path))?;
        let len = file.metadata().map_err(LedgerError::io(path))?.len();
        Ok(Compare {
            reader: BufReader::with_capacity(1 << 20, file),
            stored: len / item,
            next: 0,
            mismatch: None,
        })
    }

    fn check(&mut self, expected: &[u8]) {
        if self.next < self.stored {
            let mut buf = [0u8; 32];
            let got = &mut buf[..expected.len()];
            let ok = self.reader.read_exact(got).is_ok() && got == expected;
            if !ok && self.mismatch.is_none() {
                self.mismatch = Some(self.next);
            }
        }
        self.next += 1;
    }
}

/// Scan `layout`. `visit` sees every sound record's seq and decoded-to-be
/// bytes; an error from it is reported at the record's location. Entries
/// with seq ≥ `tail_from` are also returned in [`Scan::tail`].
pub fn scan(
    layout: &Layout,
    tail_from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let numbers = layout.segment_numbers()?;
    let mut nodes = Compare::open(&layout.nodes(), 32)?;
    let mut index = Compare::open(&layout.index(), 8)?;
    let mut frontier = Frontier::new();
    let mut frontier_at_tail = (tail_from == 0).then(Frontier::new);
    let mut tail = Vec::new();
    let mut bad = None;
    let mut segments = Vec::new();
    let mut seq = 0u64;
    'segments: for &number in &numbers {
        let path = layout.segment(number);
        let data = std::fs::read(&path).map_err(LedgerError::io(&path))?;
        let mut fail = |offset: u64, truncated: bool, reason: String| {
            bad = Some(BadRecord {
                segment: number,
                file: path.clone(),
                offset,
                truncated,
                reason,
            });
        };
        if (data.len() as u64) < SEGMENT_HEADER_LEN {
            fail(0, true, "segment header is incomplete".into());
            segments.push((number, 0));
            break;
        }
        if &data[..8] != SEGMENT_MAGIC {
            fail(0, false, "segment header magic is not CAPSSEG1".into());
            segments.push((number, 0));
            break;
        }
        let first = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        if first != seq {
            fail(
                8,
                false,
                format!("segment starts at seq {first}, expected {seq}"),
            );
            segments.push((number, 0));
            break;
        }
        let mut offset = SEGMENT_HEADER_LEN as usize;
        while offset < data.len() {
            let payload = match read_frame(&data[offset..], crate::entry::MAX_ENTRY_LEN) {
                Frame::Record(p) => p,
                Frame::Truncated => {
                    fail(
                        offset as u64,
                        true,
                        "record is cut short (torn write)".into(),
                    );
                    segments.push((number, offset as u64));
                    break 'segments;
                }
                Frame::Damaged(reason) => {
                    fail(offset as u64, false, reason);
                    segments.push((number, offset as u64));
                    break 'segments;
                }
            };
            let location = |reason: String| {
                LedgerError::corrupt(&path, offset as u64, format!("entry {seq}: {reason}"))
            };
            let carried = payload
                .get(1..9)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8")));
            if carried != Some(seq) {
                fail(
                    offset as u64,
                    false,
                    format!("record holds seq {carried:?} where seq {seq} belongs"),
                );
                segments.push((number, offset as u64));
                break 'segments;
            }
            visit(seq, payload).map_err(|e| location(e.to_string()))?;
            let leaf = leaf_hash(payload);
            let slot = index_slot(number, offset as u64);
            index.check(&slot.to_le_bytes());
            frontier.push(leaf, |_, _, h| nodes.check(h));
            seq += 1;
            if seq > tail_from {
                tail.push(TailEntry { leaf, slot });
            }
            if seq == tail_from {
                frontier_at_tail = Some(frontier.clone());
            }
            offset += RECORD_HEADER_LEN + payload.len();
        }
        segments.push((number, offset as u64));
    }
    Ok(Scan {
        entries: seq,
        bad,
        segments,
        last_segment: numbers.last().copied().unwrap_or(1),
        frontier_at_tail: frontier_at_tail.unwrap_or(frontier),
        tail,
        node_mismatch: nodes.mismatch,
        index_mismatch: index.mismatch,
    })
}
