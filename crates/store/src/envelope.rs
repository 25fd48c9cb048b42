//! Wire discipline (SPEC S6): messages between nodes carry object IDs,
//! never payloads. An [`Envelope`] names a message kind, a correlation
//! number and up to [`MAX_IDS`] IDs; its encoding is measured, and nothing
//! in it can hold a payload.
//!
//! # Encoding (version 1)
//!
//! `0x01` ‖ kind (u8) ‖ correlation (u64 BE) ‖ ID count (u8) ‖ for each ID:
//! length (u8) ‖ the ID's text (ASCII, ≤ 64 bytes).

use crate::error::{Result, StoreError};
use crate::id::{ObjectId, MAX_ID_LEN};

/// Most IDs in one envelope.
pub const MAX_IDS: usize = 16;
/// Largest encoded envelope.
pub const MAX_ENVELOPE_LEN: usize = 1 + 1 + 8 + 1 + MAX_IDS * (1 + MAX_ID_LEN);
const VERSION: u8 = 1;

/// What a message asks or tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "Here is a new object": the IDs of what was stored.
    Stored = 1,
    /// "Please fetch these objects from the store."
    Fetch = 2,
    /// A task's inputs.
    Task = 3,
    /// A task's results.
    Result = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        [Kind::Stored, Kind::Fetch, Kind::Task, Kind::Result]
            .into_iter()
            .find(|k| *k as u8 == b)
    }
}

/// A node-to-node message: IDs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: Kind,
    correlation: u64,
    ids: Vec<ObjectId>,
}

impl Envelope {
    pub fn new(kind: Kind, correlation: u64, ids: Vec<ObjectId>) -> Result<Envelope> {
        if ids.len() > MAX_IDS {
            return Err(StoreError::invalid(
                "ids",
                format!("{} IDs exceed the limit of {MAX_IDS}", ids.len()),
            ));
        }
        Ok(Envelope {
            kind,
            correlation,
            ids,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn correlation(&self) -> u64 {
        self.correlation
    }

    pub fn ids(&self) -> &[ObjectId] {
        &self.ids
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + self.ids.len() * 40);
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.correlation.to_be_bytes());
        out.push(self.ids.len() as u8);
        for id in &self.ids {
            let text = id.to_string();
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    /// The encoded size in bytes (what goes on the wire).
    pub fn encoded_len(&self) -> usize {
        11 + self
            .ids
            .iter()
            .map(|id| 1 + id.to_string().len())
            .sum::<usize>()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        let bad = |reason: String| StoreError::invalid("envelope", reason);
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {MAX_ENVELOPE_LEN}",
                bytes.len()
            )));
        }
        if bytes.len() < 11 {
            return Err(bad(format!(
                "{} bytes is shorter than the 11-byte header",
                bytes.len()
            )));
        }
        if bytes[0] != VERSION {
            return Err(bad(format!("unknown version {}", bytes[0])));
        }
        let kind =
            Kind::from_u8(bytes[1]).ok_or_else(|| bad(format!("unknown kind {}", bytes[1])))?;
        let correlation = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
        let count = bytes[10] as usize;
        if count > MAX_IDS {
            return Err(bad(format!("{count} IDs exceed the limit of {MAX_IDS}")));
        }
        let mut at = 11;
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let len = *bytes
                .get(at)
                .ok_or_else(|| bad(format!("ends before ID {i}")))? as usize;
            let text = bytes
                .get(at + 1..at + 1 + len)
                .ok_or_else(|| bad(format!("ends inside ID {i}")))?;
            let text =
                std::str::from_utf8(text).map_err(|_| bad(format!("ID {i} is not UTF-8")))?;
            ids.push(text.parse().map_err(|e| bad(format!("ID {i}: {e}")))?);
            at += 1 + len;
        }
        if at != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - at)));
        }
        Ok(Envelope {
            kind,
            correlation,
            ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Day;

    #[test]
    fn an_envelope_for_a_five_mib_artifact_is_at_most_128_bytes() {
        let artifact = vec![0x5a; 5 * 1024 * 1024 + 7];
        let id =
            ObjectId::for_content("artifact", Day::new(2026, 11, 23).unwrap(), &artifact).unwrap();
        let env = Envelope::new(Kind::Stored, 42, vec![id]).unwrap();
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        assert!(bytes.len() <= 128, "{} bytes", bytes.len());
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn damaged_envelopes_are_refused_with_a_reason() {
        let id = ObjectId::for_content("spec", Day::new(2026, 1, 2).unwrap(), b"x").unwrap();
        let bytes = Envelope::new(Kind::Task, 7, vec![id.clone(), id])
            .unwrap()
            .encode();
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Envelope::decode(&extra)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        let mut kind = bytes.clone();
        kind[1] = 99;
        assert!(Envelope::decode(&kind)
            .unwrap_err()
            .to_string()
            .contains("unknown kind"));
        assert!(Envelope::new(Kind::Fetch, 0, vec![]).is_ok());
    }
}
