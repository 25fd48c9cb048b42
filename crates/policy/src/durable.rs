//! Replacing a small file so that a crash leaves either the old or the new
//! content, never a mix: write a temporary file beside it, fsync it, rename
//! it over the target, fsync the directory.

use crate::error::{PolicyError, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Replace `path` with `bytes`, atomically and durably.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(PolicyError::io(path))
}
