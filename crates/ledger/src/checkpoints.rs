//! The `checkpoints` file: every signed note the ledger issued, in order.

use crate::error::{LedgerError, Result};
use crate::layout::{
    frame_record, read_frame, sync_parent, Frame, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC,
    RECORD_HEADER_LEN,
};
use crate::note::MAX_NOTE_LEN;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One stored note and where it sits.
#[derive(Debug, Clone)]
pub struct StoredNote {
    pub offset: u64,
    pub text: String,
}

/// The notes of a checkpoints file, and the first record that is not sound.
#[derive(Debug)]
pub struct NoteScan {
    pub notes: Vec<StoredNote>,
    /// Where the sound records end.
    pub end: u64,
    /// (offset, torn rather than damaged, reason) of the first bad record.
    pub bad: Option<(u64, bool, String)>,
}

/// Read every record of the checkpoints file at `path`. A missing file
/// reads as empty.
pub fn read_notes(path: &Path) -> Result<NoteScan> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(LedgerError::io(path)(e)),
    };
    let mut scan = NoteScan {
        notes: Vec::new(),
        end: 0,
        bad: None,
    };
    if data.is_empty() {
        return Ok(scan);
    }
    if data.len() < CHECKPOINT_HEADER_LEN as usize {
        scan.bad = Some((0, true, "file header is incomplete".into()));
        return Ok(scan);
    }
    if &data[..8] != CHECKPOINT_MAGIC {
        scan.bad = Some((0, false, "file header magic is not CAPSCKP1".into()));
        return Ok(scan);
    }
    let mut offset = CHECKPOINT_HEADER_LEN as usize;
    while offset < data.len() {
        match read_frame(&data[offset..], MAX_NOTE_LEN) {
            Frame::Record(p) => match std::str::from_utf8(p) {
                Ok(text) => {
                    scan.notes.push(StoredNote {
                        offset: offset as u64,
                        text: text.into(),
                    });
                    offset += RECORD_HEADER_LEN + p.len();
                }
                Err(_) => {
                    scan.bad = Some((offset as u64, false, "note is not UTF-8".into()));
                    break;
                }
            },
            Frame::Truncated => {
                scan.bad = Some((
                    offset as u64,
                    true,
                    "record is cut short (torn write)".into(),
                ));
                break;
            }
            Frame::Damaged(reason) => {
                scan.bad = Some((offset as u64, false, reason));
                break;
            }
        }
    }
    scan.end = scan.bad.as_ref().map_or(offset as u64, |b| b.0);
    Ok(scan)
}

/// The writer's handle on the checkpoints file.
pub struct NoteWriter {
    path: PathBuf,
    file: File,
}

impl NoteWriter {
    /// Open for appending after `end` (the end of the sound records, from
    /// [`read_notes`]); anything past it is cut off.
    pub fn open(path: &Path, end: u64) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(LedgerError::io(path))?;
        if end < CHECKPOINT_HEADER_LEN {
            file.set_len(0).map_err(LedgerError::io(path))?;
            file.write_all(CHECKPOINT_MAGIC)
                .map_err(LedgerError::io(path))?;
            file.sync_all().map_err(LedgerError::io(path))?;
            sync_parent(path)?;
        } else {
            file.set_len(end).map_err(LedgerError::io(path))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(LedgerError::io(path))?;
        Ok(NoteWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append a note and make it durable; returns its offset.
    pub fn append(&mut self, text: &str) -> Result<u64> {
        use std::io::Seek;
        let offset = self
            .file
            .stream_position()
            .map_err(LedgerError::io(&self.path))?;
        let mut buf = Vec::with_capacity(text.len() + RECORD_HEADER_LEN);
        frame_record(text.as_bytes(), &mut buf);
        self.file
            .write_all(&buf)
            .map_err(LedgerError::io(&self.path))?;
        self.file.sync_data().map_err(LedgerError::io(&self.path))?;
        Ok(offset)
    }
}
