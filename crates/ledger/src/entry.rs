//! Audit entries and their one canonical byte encoding.
//!
//! # Encoding (version 1)
//!
//! The leaf of the Merkle tree is exactly these bytes; they never change
//! for a given entry, across versions of Capsule. All integers are
//! big-endian.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `0x01` |
//! | 8 | `seq`, u64 |
//! | 8 | `ts`, i64 nanoseconds since the Unix epoch (UTC) |
//! | 4 + n | `actor`, u32 length + UTF-8 |
//! | 4 + n | `action`, u32 length + UTF-8 |
//! | 4 + n | `subject`, u32 length + UTF-8 |
//! | 4 + n | `decision`, u32 length + UTF-8 |
//! | 4 + n | `reason`, u32 length + UTF-8 |
//! | 4 + n | `meta`, u32 length + canonical JSON |
//!
//! Canonical JSON is `meta` (always an object) written with its keys sorted
//! by byte order at every depth and no insignificant whitespace, numbers as
//! `serde_json` writes them (shortest round-trip form). Decoding rejects any
//! byte string that does not re-encode to itself, so every entry has exactly
//! one encoding.

use crate::error::{LedgerError, Result};
use serde::{Deserialize, Serialize};

/// The format version byte of [`AuditEntry::encode`].
pub const ENCODING_VERSION: u8 = 1;
/// Largest `actor`, `action` and `decision`, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest `subject`, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Largest `reason`, in bytes.
pub const MAX_REASON_LEN: usize = 8 * 1024;
/// Largest canonical `meta`, in bytes.
pub const MAX_META_LEN: usize = 256 * 1024;
/// Largest encoded entry, in bytes.
pub const MAX_ENTRY_LEN: usize =
    1 + 8 + 8 + 6 * 4 + 3 * MAX_NAME_LEN + MAX_SUBJECT_LEN + MAX_REASON_LEN + MAX_META_LEN;

/// What a caller asks the ledger to record; the ledger adds `seq` and `ts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Who acted: `agent:alice`, `operator:ops`, `ledger`.
    pub actor: String,
    /// What was done or attempted: `brain.step`, `kill.arm`.
    pub action: String,
    /// What it was done to: an object ID, a path, a topic. May be empty.
    #[serde(default)]
    pub subject: String,
    /// The outcome, a lower-case token: `allow`, `deny`, `blocked`, `ok`.
    pub decision: String,
    /// Why, in words.
    #[serde(default)]
    pub reason: String,
    /// Structured details; always a JSON object.
    #[serde(default = "empty_object")]
    pub meta: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Record {
    /// A record with empty subject, reason and meta.
    pub fn new(actor: &str, action: &str, decision: &str) -> Self {
        Record {
            actor: actor.into(),
            action: action.into(),
            subject: String::new(),
            decision: decision.into(),
            reason: String::new(),
            meta: empty_object(),
        }
    }

    /// Check every field against its limits; the error names the field.
    pub fn validate(&self) -> Result<()> {
        check_text("actor", &self.actor, MAX_NAME_LEN, false)?;
        check_text("action", &self.action, MAX_NAME_LEN, false)?;
        check_text("subject", &self.subject, MAX_SUBJECT_LEN, true)?;
        check_text("reason", &self.reason, MAX_REASON_LEN, true)?;
        if self.decision.is_empty()
            || self.decision.len() > MAX_NAME_LEN
            || !self
                .decision
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(LedgerError::invalid(
                "decision",
                format!(
                    "{:?} is not a lower-case token of [a-z0-9_] (1..={MAX_NAME_LEN} bytes)",
                    self.decision
                ),
            ));
        }
        if !self.meta.is_object() {
            return Err(LedgerError::invalid("meta", "must be a JSON object"));
        }
        let len = canonical_json(&self.meta).len();
        if len > MAX_META_LEN {
            return Err(LedgerError::invalid(
                "meta",
                format!("{len} bytes encoded exceeds the limit of {MAX_META_LEN}"),
            ));
        }
        Ok(())
    }
}

fn check_text(field: &str, value: &str, max: usize, may_be_empty: bool) -> Result<()> {
    if value.is_empty() && !may_be_empty {
        return Err(LedgerError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(LedgerError::invalid(
            field,
            format!("{} bytes exceeds the limit of {max}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(LedgerError::invalid(
            field,
            format!("contains the control character U+{:04X}", c as u32),
        ));
    }
    Ok(())
}

/// One entry of the audit log, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 0; also the Merkle leaf index.
    pub seq: u64,
    /// Nanoseconds since the Unix epoch (UTC) when the ledger accepted it.
    pub ts: i64,
    #[serde(flatten)]
    pub record: Record,
}

/// A JSON value in canonical form: object keys sorted by byte order at
/// every depth, no whitespace, scalars as serde_json writes them. Sorted
/// here rather than left to serde_json's map type, whose order depends on
/// a crate feature (`preserve_order`) that any crate in a build can turn on.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("strings serialize");
                    out.push(b':');
                    write(&map[k], out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

impl AuditEntry {
    /// The canonical encoding (see the module docs). The record must have
    /// passed [`Record::validate`].
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.record;
        let meta = canonical_json(&r.meta);
        let mut out = Vec::with_capacity(
            17 + 24
                + r.actor.len()
                + r.action.len()
                + r.subject.len()
                + r.decision.len()
                + r.reason.len()
                + meta.len(),
        );
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ts.to_be_bytes());
        for field in [
            r.actor.as_bytes(),
            r.action.as_bytes(),
            r.subject.as_bytes(),
            r.decision.as_bytes(),
            r.reason.as_bytes(),
            &meta,
        ] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    /// Decode canonical bytes; anything else (another version, trailing
    /// bytes, invalid fields, non-canonical JSON) is an error.
    pub fn decode(bytes: &[u8]) -> Result<AuditEntry> {
        let bad = |reason: String| LedgerError::invalid("entry", reason);
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {MAX_ENTRY_LEN}",
                bytes.len()
            )));
        }
        let mut cur = bytes;
        let mut take = |n: usize, what: &str| -> Result<&[u8]> {
            if cur.len() < n {
                return Err(bad(format!("ends inside {what}")));
            }
            let (head, rest) = cur.split_at(n);
            cur = rest;
            Ok(head)
        };
        let version = take(1, "the version byte")?[0];
        if version != ENCODING_VERSION {
            return Err(bad(format!("unknown encoding version {version}")));
        }
        let seq = u64::from_be_bytes(take(8, "seq")?.try_into().expect("8 bytes"));
        let ts = i64::from_be_bytes(take(8, "ts")?.try_into().expect("8 bytes"));
        let mut fields: [&[u8]; 6] = [&[]; 6];
        for (i, name) in ["actor", "action", "subject", "decision", "reason", "meta"]
            .iter()
            .enumerate()
        {
            let len = u32::from_be_bytes(take(4, name)?.try_into().expect("4 bytes")) as usize;
            fields[i] = take(len, name)?;
        }
        if !cur.is_empty() {
            return Err(bad(format!("{} trailing bytes", cur.len())));
        }
        let text = |i: usize, name: &str| -> Result<String> {
            String::from_utf8(fields[i].to_vec())
                .map_err(|_| LedgerError::invalid(name, "is not UTF-8"))
        };
        let meta: serde_json::Value = serde_json::from_slice(fields[5])
            .map_err(|e| LedgerError::invalid("meta", format!("is not JSON: {e}")))?;
        let entry = AuditEntry {
            seq,
            ts,
            record: Record {
                actor: text(0, "actor")?,
                action: text(1, "action")?,
                subject: text(2, "subject")?,
                decision: text(3, "decision")?,
                reason: text(4, "reason")?,
                meta,
            },
        };
        entry.record.validate()?;
        if entry.encode() != bytes {
            return Err(bad("is not in canonical form".into()));
        }
        Ok(entry)
    }
}

/// The `action` field of canonical bytes, read without decoding the rest;
/// `None` when the bytes end early.
pub fn peek_action(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 17;
    let field = |at: &mut usize| -> Option<&[u8]> {
        let len = u32::from_be_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?) as usize;
        let value = bytes.get(*at + 4..*at + 4 + len)?;
        *at += 4 + len;
        Some(value)
    };
    field(&mut at)?;
    field(&mut at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> AuditEntry {
        let mut record = Record::new("agent:alice", "brain.step", "allow");
        record.subject = "kernel/0".into();
        record.reason = "policy default-allow-step".into();
        record.meta = serde_json::json!({"z": 1, "a": {"y": [1, 2.5], "b": null}});
        AuditEntry {
            seq: 7,
            ts: 1_700_000_000_123_456_789,
            record,
        }
    }

    #[test]
    fn encoding_is_stable_and_documented() {
        let bytes = sample().encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &7u64.to_be_bytes());
        assert_eq!(&bytes[9..17], &1_700_000_000_123_456_789i64.to_be_bytes());
        assert_eq!(&bytes[17..21], &11u32.to_be_bytes());
        assert_eq!(&bytes[21..32], b"agent:alice");
        // meta keys are sorted at every depth, with no whitespace
        let tail = br#"{"a":{"b":null,"y":[1,2.5]},"z":1}"#;
        assert!(bytes.ends_with(tail));
        assert_eq!(AuditEntry::decode(&bytes).unwrap(), sample());
        assert_eq!(peek_action(&bytes), Some(&b"brain.step"[..]));
        assert_eq!(peek_action(&bytes[..30]), None);
    }

    #[test]
    fn non_canonical_meta_is_rejected() {
        let mut bytes = sample().encode();
        let canonical = br#"{"a":{"b":null,"y":[1,2.5]},"z":1}"#;
        let spaced = br#"{"a":{"b":null,"y":[1,2.5]},"z" :1}"#;
        let at = bytes.len() - canonical.len();
        bytes.truncate(at - 4);
        bytes.extend_from_slice(&(spaced.len() as u32).to_be_bytes());
        bytes.extend_from_slice(spaced);
        let err = AuditEntry::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("canonical"), "{err}");
    }

    #[test]
    fn truncated_and_padded_encodings_are_rejected() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(AuditEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(AuditEntry::decode(&padded)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut r = Record::new("", "x", "allow");
        assert!(r.validate().unwrap_err().to_string().starts_with("actor:"));
        r.actor = "a".into();
        r.decision = "Allow".into();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("decision:"));
        r.decision = "allow".into();
        r.meta = serde_json::json!([1]);
        assert!(r.validate().unwrap_err().to_string().starts_with("meta:"));
        r.meta = empty_object();
        r.reason = "bell\u{7}".into();
        assert!(r.validate().unwrap_err().to_string().contains("U+0007"));
    }

    proptest! {
        /// Any finite float in meta survives encode → decode exactly (this
        /// needs serde_json's `float_roundtrip`).
        #[test]
        fn floats_in_meta_round_trip(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            let mut record = Record::new("a", "b", "ok");
            record.meta = serde_json::json!({"x": x});
            let e = AuditEntry { seq: 1, ts: 2, record };
            prop_assert_eq!(AuditEntry::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn decode_inverts_encode(
            seq in any::<u64>(), ts in any::<i64>(),
            actor in "[a-z:]{1,20}", subject in "\\PC{0,40}", reason in "\\PC{0,80}",
            n in any::<i64>(), s in "\\PC{0,10}",
        ) {
            let mut record = Record::new(&actor, "brain.step", "allow");
            record.subject = subject;
            record.reason = reason;
            record.meta = serde_json::json!({"n": n, "s": s});
            prop_assume!(record.validate().is_ok());
            let e = AuditEntry { seq, ts, record };
            prop_assert_eq!(AuditEntry::decode(&e.encode()).unwrap(), e);
        }
    }
}
