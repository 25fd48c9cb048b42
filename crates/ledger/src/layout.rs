//! The files of a ledger directory and their framing.
//!
//! ```text
//! DIR/ledger.json          {"format": 1, "origin": "<origin>"}
//! DIR/segments/NNNNNNNN.seg  entries: 16-byte header, then records
//! DIR/index                u64 LE per entry: segment number << 40 | record offset
//! DIR/nodes                32-byte node hashes in post-order (see merkle.rs)
//! DIR/checkpoints          8-byte header, then one record per signed note
//! DIR/keys/ledger-vN.pem   Ed25519 private key, PKCS#8 PEM, mode 0600
//! DIR/keys/ledger-vN.pub   its verifier key line
//! DIR/LOCK                 held (flock) by the one writer
//! ```
//!
//! A segment header is `CAPSSEG1` followed by the u64 LE sequence number of
//! its first entry. The checkpoints header is `CAPSCKP1`. A record is
//! `u32 LE length ‖ u32 LE CRC-32C(length bytes ‖ payload) ‖ payload`, so a
//! flipped bit in the length or the payload is caught before anything
//! interprets the bytes. Segments and checkpoints are the source of truth;
//! `index` and `nodes` are derived from them, written after the segment data
//! is durable, and checked against them on open and by `verify`.

use crate::error::{LedgerError, Result};
use crate::note::check_name;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SEGMENT_MAGIC: &[u8; 8] = b"CAPSSEG1";
pub const SEGMENT_HEADER_LEN: u64 = 16;
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"CAPSCKP1";
pub const CHECKPOINT_HEADER_LEN: u64 = 8;
pub const RECORD_HEADER_LEN: usize = 8;
/// Segment numbers occupy the bits above this in an index slot.
pub const INDEX_OFFSET_BITS: u32 = 40;
/// The format version in `ledger.json`.
pub const FORMAT: u32 = 1;
/// Largest `ledger.json` we read.
const MAX_META_FILE: u64 = 4096;

/// Paths inside a ledger directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn meta(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }
    pub fn segments(&self) -> PathBuf {
        self.dir.join("segments")
    }
    pub fn segment(&self, number: u32) -> PathBuf {
        self.segments().join(format!("{number:08}.seg"))
    }
    pub fn index(&self) -> PathBuf {
        self.dir.join("index")
    }
    pub fn nodes(&self) -> PathBuf {
        self.dir.join("nodes")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("LOCK")
    }

    /// The numbers of the segment files present, in order; they must run
    /// 1, 2, 3, … without gaps and nothing else may live in `segments/`.
    pub fn segment_numbers(&self) -> Result<Vec<u32>> {
        let dir = self.segments();
        let mut numbers = Vec::new();
        for item in fs::read_dir(&dir).map_err(LedgerError::io(&dir))? {
            let item = item.map_err(LedgerError::io(&dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let number = name
                .strip_suffix(".seg")
                .filter(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    LedgerError::corrupt(item.path(), 0, "unexpected file in segments/")
                })?;
            numbers.push(number);
        }
        numbers.sort_unstable();
        for (i, &n) in numbers.iter().enumerate() {
            if n as usize != i + 1 {
                return Err(LedgerError::corrupt(
                    self.segment(i as u32 + 1),
                    0,
                    format!("segment file missing (found {n:08}.seg after it)"),
                ));
            }
        }
        Ok(numbers)
    }
}

/// The contents of `ledger.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerMeta {
    pub format: u32,
    /// The checkpoint origin line and signed-note key name of this log.
    pub origin: String,
}

impl LedgerMeta {
    pub fn read(layout: &Layout) -> Result<Self> {
        let path = layout.meta();
        let file = File::open(&path).map_err(LedgerError::io(&path))?;
        let len = file.metadata().map_err(LedgerError::io(&path))?.len();
        if len > MAX_META_FILE {
            return Err(LedgerError::corrupt(
                &path,
                0,
                format!("{len} bytes is too large"),
            ));
        }
        let meta: LedgerMeta = serde_json::from_reader(file).map_err(|e| {
            LedgerError::corrupt(&path, 0, format!("not valid ledger metadata: {e}"))
        })?;
        if meta.format != FORMAT {
            return Err(LedgerError::corrupt(
                &path,
                0,
                format!(
                    "format {} is not supported (this build reads {FORMAT})",
                    meta.format
                ),
            ));
        }
        check_name("origin", &meta.origin)
            .map_err(|e| LedgerError::corrupt(&path, 0, e.to_string()))?;
        Ok(meta)
    }

    pub fn write_new(&self, layout: &Layout) -> Result<()> {
        let path = layout.meta();
        let text = serde_json::to_vec_pretty(self).expect("plain struct");
        write_new_file(&path, &text, 0o644)?;
        Ok(())
    }
}

/// Create `path` (it must not exist) with `mode`, write `bytes`, and make
/// both the file and its directory entry durable.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(LedgerError::io(path))?;
    file.write_all(bytes).map_err(LedgerError::io(path))?;
    file.sync_all().map_err(LedgerError::io(path))?;
    sync_parent(path)
}

/// fsync the directory that holds `path`, so a new name in it is durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(LedgerError::io(parent))
}

/// Append one framed record to `out`.
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The outcome of reading one record at an offset of a buffer.
pub enum Frame<'a> {
    /// A complete record whose checksum matches.
    Record(&'a [u8]),
    /// The buffer ends inside the record (a torn write, or truncation).
    Truncated,
    /// The record is complete but damaged.
    Damaged(String),
}

/// Read the record that starts at `buf[0]`; `max_len` bounds the payload.
pub fn read_frame(buf: &[u8], max_len: usize) -> Frame<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return Frame::Truncated;
    }
    let len_bytes: [u8; 4] = buf[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > max_len {
        return Frame::Damaged(format!(
            "record length {len} exceeds the limit of {max_len}"
        ));
    }
    if buf.len() < RECORD_HEADER_LEN + len {
        // A torn write leaves a prefix of the record. If instead a whole
        // record with a different length is there, the length field was
        // altered: damage, not a torn tail.
        if let Some(whole) = whole_record_len(&buf[RECORD_HEADER_LEN..], crc, max_len) {
            return Frame::Damaged(format!(
                "record length field says {len} bytes, but a whole record of {whole} bytes is there"
            ));
        }
        return Frame::Truncated;
    }
    let payload = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != crc {
        return Frame::Damaged("record checksum (CRC-32C) does not match".into());
    }
    Frame::Record(payload)
}

/// The payload length L ≤ `max_len` for which `CRC-32C(L ‖ rest[..L])`
/// equals `crc`, if any: the record that is really there when its length
/// field claims more bytes than the file holds. One pass over `rest`
/// (CRC-32C is linear, so each candidate costs one combine).
fn whole_record_len(rest: &[u8], crc: u32, max_len: usize) -> Option<usize> {
    let mut payload_crc = 0u32;
    for len in 0..=rest.len().min(max_len) {
        if len > 0 {
            payload_crc = crc32c::crc32c_append(payload_crc, &rest[len - 1..len]);
        }
        let len_crc = crc32c::crc32c(&(len as u32).to_le_bytes());
        if crc32c::crc32c_combine(len_crc, payload_crc, len) == crc {
            return Some(len);
        }
    }
    None
}

/// Pack a segment number and offset into an index slot.
pub fn index_slot(segment: u32, offset: u64) -> u64 {
    debug_assert!(offset < 1 << INDEX_OFFSET_BITS);
    (u64::from(segment) << INDEX_OFFSET_BITS) | offset
}

/// Unpack an index slot.
pub fn split_index_slot(slot: u64) -> (u32, u64) {
    (
        (slot >> INDEX_OFFSET_BITS) as u32,
        slot & ((1 << INDEX_OFFSET_BITS) - 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_record_reads_back_and_any_flip_is_caught() {
        let mut buf = Vec::new();
        frame_record(b"hello ledger", &mut buf);
        assert!(matches!(read_frame(&buf, 100), Frame::Record(p) if p == b"hello ledger"));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(read_frame(&bad, 100), Frame::Record(_)),
                    "byte {i} bit {bit}"
                );
            }
        }
        for cut in 0..buf.len() {
            assert!(matches!(read_frame(&buf[..cut], 100), Frame::Truncated));
        }
    }

    #[test]
    fn a_whole_record_whose_length_field_claims_more_is_damage_not_a_torn_write() {
        let mut buf = Vec::new();
        frame_record(b"the last note", &mut buf);
        frame_record(b"another", &mut buf);
        // Claim more bytes than the file holds, first for the last record,
        // then for one with a record after it.
        let mut last = buf[..8 + 13].to_vec();
        last[1] ^= 0x02;
        assert!(matches!(read_frame(&last, 4096), Frame::Damaged(r) if r.contains("13 bytes")));
        let mut first = buf.clone();
        first[1] ^= 0x02;
        assert!(matches!(read_frame(&first, 4096), Frame::Damaged(_)));
    }
}
