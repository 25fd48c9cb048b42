//! Snapshots (SPEC K7): the full kernel state in one checksummed byte string.
//!
//! Layout (all integers and floats little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `CAPSKRN1` |
//! | 4 | format version (1) |
//! | 4 | length L of the configuration |
//! | L | [`KernelConfig`] as JSON |
//! | 8 | step count |
//! | 8 | t (f64 bits) |
//! | 8 | dt (f64 bits) |
//! | 4 | dimension d |
//! | 16·d² | ρ, column-major, each entry re then im (f64 bits) |
//! | 32 | SHA-256 of every byte above |
//!
//! Restoring checks the checksum before reading anything else, then the
//! configuration, then validates ρ as a density matrix; any failure names the
//! part that is wrong and builds nothing.

use crate::density::{DensityMatrix, MAX_DIM};
use crate::error::{KernelError, Result};
use crate::kernel::{Kernel, KernelConfig};
use crate::linalg::c64;
use faer::Mat;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"CAPSKRN1";
const VERSION: u32 = 1;
const MAX_CONFIG_LEN: usize = 4096;
const CHECKSUM_LEN: usize = 32;

fn err(reason: impl Into<String>) -> KernelError {
    KernelError::Snapshot {
        reason: reason.into(),
    }
}

/// Serialises the kernel. A halted kernel has no valid state to save.
pub fn snapshot(kernel: &Kernel) -> Result<Vec<u8>> {
    if let Some(h) = kernel.halted() {
        return Err(KernelError::Halted {
            step: h.step,
            reason: h.reason.clone(),
        });
    }
    let config = serde_json::to_vec(kernel.config())
        .map_err(|e| err(format!("config does not serialise: {e}")))?;
    let rho = kernel.state().matrix();
    let d = rho.nrows();
    let mut out = Vec::with_capacity(64 + config.len() + 16 * d * d + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(config.len() as u32).to_le_bytes());
    out.extend_from_slice(&config);
    out.extend_from_slice(&kernel.step_count().to_le_bytes());
    out.extend_from_slice(&kernel.time().to_bits().to_le_bytes());
    out.extend_from_slice(&kernel.dt().to_bits().to_le_bytes());
    out.extend_from_slice(&(d as u32).to_le_bytes());
    for j in 0..d {
        for i in 0..d {
            let z = rho[(i, j)];
            out.extend_from_slice(&z.re.to_bits().to_le_bytes());
            out.extend_from_slice(&z.im.to_bits().to_le_bytes());
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// A cursor that reads fixed-size fields and names the one that is missing.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            err(format!(
                "truncated at byte {} while reading {field}",
                self.pos
            ))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, field: &str) -> Result<u32> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, field: &str) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f64(&mut self, field: &str) -> Result<f64> {
        Ok(f64::from_bits(self.u64(field)?))
    }
}

/// Rebuilds a kernel from [`snapshot`] bytes, or says what is wrong.
pub fn restore(bytes: &[u8]) -> Result<Kernel> {
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
        return Err(err(format!(
            "{} bytes is too short to be a snapshot",
            bytes.len()
        )));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err(err(
            "checksum mismatch: the snapshot is corrupted or truncated",
        ));
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    if r.take(8, "magic")? != MAGIC {
        return Err(err("bad magic: not a Capsule kernel snapshot"));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(err(format!(
            "format version {version} is not supported (expected {VERSION})"
        )));
    }
    let len = r.u32("config length")? as usize;
    if len > MAX_CONFIG_LEN {
        return Err(err(format!("config length {len} exceeds {MAX_CONFIG_LEN}")));
    }
    let config: KernelConfig =
        serde_json::from_slice(r.take(len, "config")?).map_err(|e| err(format!("config: {e}")))?;
    config.validate().map_err(|e| err(format!("config: {e}")))?;
    let step = r.u64("step")?;
    let t = r.f64("t")?;
    let dt = r.f64("dt")?;
    let d = r.u32("dimension")? as usize;
    if d != config.dim || d > MAX_DIM {
        return Err(err(format!(
            "dimension {d} does not match the configured {}",
            config.dim
        )));
    }
    let mut rho = Mat::<c64>::zeros(d, d);
    for j in 0..d {
        for i in 0..d {
            rho[(i, j)] = c64::new(r.f64("rho")?, r.f64("rho")?);
        }
    }
    if r.pos != body.len() {
        return Err(err(format!(
            "{} unexpected trailing bytes",
            body.len() - r.pos
        )));
    }
    let state = DensityMatrix::new(rho).map_err(|e| err(format!("rho: {e}")))?;
    Kernel::restore(config, state, step, t, dt)
}
