//! Object IDs (SPEC S1): `<NAMESPACE>_<YYYYMMDD>_<hash>`.
//!
//! - `hash` is the first 160 bits of BLAKE3 over the object's content, in
//!   lower-case RFC 4648 base32 without padding (32 characters). It is the
//!   object's identity: the same content has the same hash on any day, and
//!   look-ups by hash ignore the date.
//! - `YYYYMMDD` is the UTC day the ID was minted; informational only.
//! - `NAMESPACE` is 1..=22 characters of `[A-Za-z0-9_]`, starting with a
//!   letter and not ending with `_`; it may contain underscores, so an ID
//!   is parsed from the right.
//!
//! The whole ID is at most 64 bytes.

use crate::error::{Result, StoreError};
use data_encoding::BASE32_NOPAD;
use std::fmt;
use std::str::FromStr;

/// Bytes of BLAKE3 output kept in an ID.
pub const HASH_BYTES: usize = 20;
/// Characters of the hash in an ID.
pub const HASH_CHARS: usize = 32;
/// Longest namespace.
pub const MAX_NAMESPACE: usize = 22;
/// Longest ID, in bytes.
pub const MAX_ID_LEN: usize = MAX_NAMESPACE + 1 + 8 + 1 + HASH_CHARS;

/// The content hash part of an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; HASH_BYTES]);

impl ContentHash {
    /// The hash of `content`.
    pub fn of(content: &[u8]) -> Self {
        let full = blake3::hash(content);
        ContentHash(
            full.as_bytes()[..HASH_BYTES]
                .try_into()
                .expect("20 of 32 bytes"),
        )
    }

    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    fn parse(text: &str) -> Result<Self> {
        if text.len() != HASH_CHARS || !text.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
        {
            return Err(StoreError::invalid(
                "id",
                format!(
                    "hash {text:?} is not {HASH_CHARS} characters of lower-case base32 (a-z, 2-7)"
                ),
            ));
        }
        let bytes = BASE32_NOPAD
            .decode(text.to_ascii_uppercase().as_bytes())
            .map_err(|e| StoreError::invalid("id", format!("hash {text:?} is not base32: {e}")))?;
        let hash = ContentHash(
            bytes
                .try_into()
                .map_err(|_| StoreError::invalid("id", "hash has the wrong length"))?,
        );
        // 160 bits take 32 characters with 0 bits spare, so the text is canonical.
        debug_assert_eq!(hash.to_string(), text);
        Ok(hash)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

/// A calendar day, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day {
    year: u16,
    month: u8,
    day: u8,
}

impl Day {
    /// A validated day (Gregorian calendar, years 2000..=9999).
    pub fn new(year: u16, month: u8, day: u8) -> Result<Day> {
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if !(2000..=9999).contains(&year) || day == 0 || day > days {
            return Err(StoreError::invalid(
                "id",
                format!("{year:04}-{month:02}-{day:02} is not a valid date"),
            ));
        }
        Ok(Day { year, month, day })
    }

    /// The UTC day of `secs` seconds since the Unix epoch (days-from-civil
    /// inverse, after Howard Hinnant's `civil_from_days`).
    pub fn from_unix(secs: i64) -> Day {
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Day { year, month, day }
    }

    /// Today, UTC.
    pub fn today() -> Day {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Day::from_unix(secs)
    }

    fn parse(text: &str) -> Result<Day> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StoreError::invalid(
                "id",
                format!("date {text:?} is not YYYYMMDD"),
            ));
        }
        let n = |r: std::ops::Range<usize>| text[r].parse::<u16>().expect("digits");
        Day::new(n(0..4), n(4..6) as u8, n(6..8) as u8)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Check a namespace; the error says which rule it breaks.
pub fn check_namespace(ns: &str) -> Result<()> {
    let bad = |why: &str| Err(StoreError::invalid("namespace", format!("{ns:?} {why}")));
    if ns.is_empty() || ns.len() > MAX_NAMESPACE {
        return bad(&format!("must be 1..={MAX_NAMESPACE} characters"));
    }
    if !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return bad("may hold only A-Z, a-z, 0-9 and _");
    }
    if !ns.as_bytes()[0].is_ascii_alphabetic() {
        return bad("must start with a letter");
    }
    if ns.ends_with('_') {
        return bad("must not end with _");
    }
    Ok(())
}

/// A content-addressed object ID. Made only by hashing content or by
/// parsing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    namespace: String,
    day: Day,
    hash: ContentHash,
}

impl ObjectId {
    /// The ID of `content` in `namespace`, minted on `day`.
    pub fn for_content(namespace: &str, day: Day, content: &[u8]) -> Result<ObjectId> {
        check_namespace(namespace)?;
        Ok(ObjectId {
            namespace: namespace.into(),
            day,
            hash: ContentHash::of(content),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn day(&self) -> Day {
        self.day
    }

    /// The identity of the object.
    pub fn hash(&self) -> &ContentHash {
        &self.hash
    }

    /// Same object (namespace and content), whatever the day.
    pub fn same_object(&self, other: &ObjectId) -> bool {
        self.namespace == other.namespace && self.hash == other.hash
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.namespace, self.day, self.hash)
    }
}

impl FromStr for ObjectId {
    type Err = StoreError;

    /// Parse from the right: the hash after the last `_`, the date before
    /// it, the namespace (which may hold `_`) before that.
    fn from_str(text: &str) -> Result<ObjectId> {
        if text.len() > MAX_ID_LEN {
            return Err(StoreError::invalid(
                "id",
                format!("{} bytes exceeds the limit of {MAX_ID_LEN}", text.len()),
            ));
        }
        let (rest, hash) = text.rsplit_once('_').ok_or_else(|| {
            StoreError::invalid("id", format!("{text:?} is not NAMESPACE_YYYYMMDD_HASH"))
        })?;
        let (namespace, day) = rest.rsplit_once('_').ok_or_else(|| {
            StoreError::invalid(
                "id",
                format!("{text:?} has no date (NAMESPACE_YYYYMMDD_HASH)"),
            )
        })?;
        let hash = ContentHash::parse(hash)?;
        let day = Day::parse(day)?;
        check_namespace(namespace)?;
        Ok(ObjectId {
            namespace: namespace.into(),
            day,
            hash,
        })
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn namespaces_with_underscores_parse_from_the_right() {
        let id = ObjectId::for_content("merged_result_v2", Day::new(2026, 11, 23).unwrap(), b"x")
            .unwrap();
        let text = id.to_string();
        assert!(text.starts_with("merged_result_v2_20261123_"), "{text}");
        assert!(text.len() <= MAX_ID_LEN);
        let back: ObjectId = text.parse().unwrap();
        assert_eq!(back, id);
        assert_eq!(back.namespace(), "merged_result_v2");
    }

    #[test]
    fn identical_content_on_two_days_has_the_same_hash() {
        let a =
            ObjectId::for_content("spec", Day::new(2026, 1, 1).unwrap(), b"same bytes").unwrap();
        let b =
            ObjectId::for_content("spec", Day::new(2026, 11, 23).unwrap(), b"same bytes").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert!(a.same_object(&b));
        let c =
            ObjectId::for_content("spec", Day::new(2026, 1, 1).unwrap(), b"other bytes").unwrap();
        assert!(!a.same_object(&c));
    }

    #[test]
    fn malformed_ids_say_what_is_wrong() {
        let good = ObjectId::for_content("ns", Day::new(2026, 2, 28).unwrap(), b"")
            .unwrap()
            .to_string();
        let hash = good.rsplit_once('_').unwrap().1.to_string();
        let cases = [
            ("nohash".to_string(), "is not NAMESPACE_YYYYMMDD_HASH"),
            (format!("ns_{hash}"), "has no date"),
            (format!("ns_20260230_{hash}"), "not a valid date"),
            (format!("ns_2026113_{hash}"), "not YYYYMMDD"),
            (format!("ns_20261123_{}", &hash[..31]), "lower-case base32"),
            (
                format!("ns_20261123_{}", hash.to_uppercase()),
                "lower-case base32",
            ),
            (format!("9ns_20261123_{hash}"), "must start with a letter"),
            (format!("ns-x_20261123_{hash}"), "may hold only"),
            (format!("_20261123_{hash}"), "must be 1..=22"),
            (format!("ns__20261123_{hash}"), "must not end with _"),
            (
                format!("a_very_long_namespace_name_20261123_{hash}"),
                "exceeds the limit",
            ),
        ];
        for (text, want) in cases {
            let err = text.parse::<ObjectId>().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn days_come_from_unix_time() {
        assert_eq!(Day::from_unix(0).to_string(), "19700101");
        assert_eq!(Day::from_unix(951_782_400).to_string(), "20000229");
        assert_eq!(Day::from_unix(1_795_436_800).to_string(), "20261123");
    }

    proptest! {
        #[test]
        fn parse_inverts_format(
            ns in "[A-Za-z][A-Za-z0-9_]{0,20}[A-Za-z0-9]",
            y in 2000u16..=9999, m in 1u8..=12, d in 1u8..=28,
            content in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let id = ObjectId::for_content(&ns, Day::new(y, m, d).unwrap(), &content).unwrap();
            let text = id.to_string();
            prop_assert!(text.len() <= MAX_ID_LEN);
            prop_assert_eq!(text.parse::<ObjectId>().unwrap(), id);
        }

        #[test]
        fn arbitrary_text_never_panics_and_parsed_ids_reformat_identically(text in "\\PC{0,80}") {
            if let Ok(id) = text.parse::<ObjectId>() {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
