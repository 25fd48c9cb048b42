//! One kernel per session (SPEC K8 in the service): the bounded map from a
//! session's name to its kernel.
//!
//! Every think and step names a session (by default [`DEFAULT_SESSION`]).
//! A session's kernel is made on its first use from the configured kernel
//! with the seed [`session_seed`] derives from the configured seed and the
//! name; the default session's kernel is the configured one itself. Each
//! kernel sits behind its own lock, so steps of different sessions run in
//! parallel; the map's lock is held only to find (or make room for) one.
//!
//! At most `max_live` kernels are in memory. Making room evicts the least
//! recently used idle session: its snapshot (SPEC K7) goes to the
//! [`SnapshotStore`], a `kernel.snapshot` ledger record names the object
//! and the state digest, and the next use restores it bit for bit. The
//! default session is never evicted; a halted kernel has no snapshot and
//! stays in memory until reset. Sessions last as long as the service: a
//! restart starts every session again from its seed, as it does the
//! default kernel (the ledger's `service.start` record opens the run).
//!
//! Eviction and restore run under the map lock (a snapshot written to the
//! store and a durable ledger append: milliseconds), so other sessions'
//! lookups wait for them; a load that cycles through more sessions than
//! `max_live` is bounded by that, not by the kernels.
//!
//! **Invariants:** at most `max_live` kernels are live and at most
//! [`MAX_SESSIONS`] sessions are known; a session's kernel is never stepped
//! while evicted (eviction takes only a kernel nobody holds); a restored
//! kernel's snapshot is byte for byte the one evicted.

use crate::pipeline::{CortexError, Result};
use capsule_kernel::{Kernel, KernelConfig};
use capsule_ledger::{Ledger, Record};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The session of a think or step that names none.
pub const DEFAULT_SESSION: &str = "main";
/// Longest session name, in bytes.
pub const MAX_SESSION_NAME_BYTES: usize = 64;
/// Live kernels when the configuration says nothing.
pub const DEFAULT_MAX_LIVE: usize = 256;
/// Bounds of `sessions.max_live`: the default session plus one more at
/// least, and at most this many.
pub const MAX_LIVE_LIMIT: usize = 65_536;
/// Most sessions known (live or snapshotted) in one run of the service; a
/// snapshotted one costs its map entry (a few hundred bytes).
pub const MAX_SESSIONS: usize = 65_536;
/// The ledger action of an eviction.
pub const SNAPSHOT_ACTION: &str = "kernel.snapshot";
/// The BLAKE3 `derive_key` context of [`session_seed`].
pub const SEED_CONTEXT: &str = "capsule 2026-12 kernel session seed v1";

/// A session's name: 1 to [`MAX_SESSION_NAME_BYTES`] bytes of ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionName(String);

impl SessionName {
    /// Parse a name; the error names the field `session`.
    pub fn parse(name: &str) -> Result<SessionName> {
        let invalid = |reason: String| CortexError::Invalid {
            field: "session".into(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_SESSION_NAME_BYTES {
            return Err(invalid(format!(
                "a session name is 1..={MAX_SESSION_NAME_BYTES} bytes, not {}",
                name.len()
            )));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(invalid(format!(
                "{name:?} must start with an ASCII letter or digit"
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(format!(
                "{name:?} holds {c:?}; a session name uses ASCII letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(SessionName(name.to_string()))
    }

    /// The default session, [`DEFAULT_SESSION`].
    pub fn default_session() -> SessionName {
        SessionName(DEFAULT_SESSION.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_SESSION
    }
}

impl Default for SessionName {
    fn default() -> Self {
        SessionName::default_session()
    }
}

impl TryFrom<String> for SessionName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        SessionName::parse(&s).map_err(|e| match e {
            CortexError::Invalid { reason, .. } => reason,
            e => e.to_string(),
        })
    }
}

impl From<SessionName> for String {
    fn from(s: SessionName) -> String {
        s.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kernel seed of a session: the configured seed for the default
/// session; for any other, the first 8 bytes (little-endian) of
/// BLAKE3-derive_key([`SEED_CONTEXT`], seed as 8 bytes little-endian ‖ the
/// name's bytes). Distinct names get independent seeds; the same name and
/// configured seed always the same one.
pub fn session_seed(seed: u64, name: &SessionName) -> u64 {
    if name.is_default() {
        return seed;
    }
    let mut h = blake3::Hasher::new_derive_key(SEED_CONTEXT);
    h.update(&seed.to_le_bytes());
    h.update(name.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The configured kernel with the session's seed.
pub fn session_config(base: &KernelConfig, name: &SessionName) -> KernelConfig {
    KernelConfig {
        seed: session_seed(base.seed, name),
        ..base.clone()
    }
}

/// Where evicted kernels' snapshots go: content-addressed, so an ID names
/// exactly the bytes it was given.
pub trait SnapshotStore: Send + Sync {
    /// Store `bytes`; returns the object ID.
    fn put(&self, bytes: &[u8]) -> std::result::Result<String, String>;
    /// The bytes stored under `id`, verified.
    fn get(&self, id: &str) -> std::result::Result<Vec<u8>, String>;
}

/// One session as `GET /v1/sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub name: String,
    /// The kernel's step count.
    pub steps: u64,
    /// `live` (in memory) or `snapshotted` (in the store).
    pub state: String,
    /// Nanoseconds since the Unix epoch of its last use.
    pub last_use: i64,
    /// The store object of its latest snapshot, if it was ever evicted.
    pub snapshot: Option<String>,
    /// The ledger entry that recorded that snapshot.
    pub snapshot_seq: Option<u64>,
}

/// A live kernel, shared by whoever steps it.
pub(crate) type Slot = Arc<Mutex<Kernel>>;

pub(crate) fn lock(slot: &Slot) -> MutexGuard<'_, Kernel> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

struct Entry {
    /// The kernel while live.
    live: Option<Slot>,
    /// The latest snapshot: object ID, ledger entry, step count, digest.
    snapshot: Option<(String, u64, u64, String)>,
    /// Use order (larger is more recent).
    tick: u64,
    last_use_ns: i64,
}

struct Table {
    map: HashMap<SessionName, Entry>,
    tick: u64,
    live: usize,
}

/// The kernels by session (see the module doc).
pub struct Sessions {
    base: KernelConfig,
    max_live: usize,
    resource: String,
    ledger: Arc<Ledger>,
    store: Option<Arc<dyn SnapshotStore>>,
    /// The default session's kernel (never evicted; found without the map).
    main: Slot,
    table: Mutex<Table>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Sessions {
    pub(crate) fn new(main: Kernel, resource: String, ledger: Arc<Ledger>) -> Sessions {
        let base = main.config().clone();
        let main: Slot = Arc::new(Mutex::new(main));
        let mut map = HashMap::new();
        map.insert(
            SessionName::default_session(),
            Entry {
                live: Some(main.clone()),
                snapshot: None,
                tick: 0,
                last_use_ns: now_ns(),
            },
        );
        Sessions {
            base,
            max_live: DEFAULT_MAX_LIVE,
            resource,
            ledger,
            store: None,
            main,
            table: Mutex::new(Table {
                map,
                tick: 0,
                live: 1,
            }),
        }
    }

    pub(crate) fn set_limit(
        &mut self,
        max_live: usize,
        store: Option<Arc<dyn SnapshotStore>>,
    ) -> Result<()> {
        if !(2..=MAX_LIVE_LIMIT).contains(&max_live) {
            return Err(CortexError::Invalid {
                field: "sessions.max_live".into(),
                reason: format!("{max_live} is outside 2..={MAX_LIVE_LIMIT}"),
            });
        }
        self.max_live = max_live;
        self.store = store;
        Ok(())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The default session's kernel.
    pub(crate) fn main(&self) -> &Slot {
        &self.main
    }

    /// The live kernel of `name`, made or restored (evicting another) when
    /// it is not in memory. Holding the returned slot keeps it live.
    pub(crate) fn acquire(&self, name: &SessionName) -> Result<Slot> {
        let mut t = self.table();
        t.tick += 1;
        let tick = t.tick;
        if let Some(e) = t.map.get_mut(name) {
            e.tick = tick;
            e.last_use_ns = now_ns();
            if let Some(slot) = &e.live {
                return Ok(slot.clone());
            }
        } else if t.map.len() >= MAX_SESSIONS {
            return Err(CortexError::Invalid {
                field: "session".into(),
                reason: format!("the service already holds {MAX_SESSIONS} sessions"),
            });
        }
        if t.live >= self.max_live {
            self.evict_one(&mut t, name)?;
        }
        let snapshot = t.map.get(name).and_then(|e| e.snapshot.clone());
        let kernel = match &snapshot {
            Some((id, _, _, digest)) => self.restore(name, id, digest)?,
            None => Kernel::new(session_config(&self.base, name))?,
        };
        let slot: Slot = Arc::new(Mutex::new(kernel));
        let entry = t.map.entry(name.clone()).or_insert(Entry {
            live: None,
            snapshot: None,
            tick,
            last_use_ns: now_ns(),
        });
        entry.live = Some(slot.clone());
        t.live += 1;
        Ok(slot)
    }

    fn restore(&self, name: &SessionName, id: &str, digest: &str) -> Result<Kernel> {
        let failed = |reason: String| CortexError::Snapshot {
            session: name.to_string(),
            reason,
        };
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| failed("no snapshot store".into()))?;
        let bytes = store.get(id).map_err(failed)?;
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            return Err(failed(format!(
                "object {id} is not the snapshot the ledger recorded"
            )));
        }
        Ok(capsule_kernel::restore(&bytes)?)
    }

    /// Snapshot the least recently used idle session other than `keep` to
    /// the store and drop its kernel, recording the snapshot's ID.
    fn evict_one(&self, t: &mut Table, keep: &SessionName) -> Result<()> {
        let busy = || CortexError::Snapshot {
            session: keep.to_string(),
            reason: format!(
                "all {} live sessions are in use or halted; retry shortly",
                self.max_live
            ),
        };
        let Some(store) = &self.store else {
            return Err(CortexError::Snapshot {
                session: keep.to_string(),
                reason: format!(
                    "{} sessions are live, the limit, and no snapshot store is configured",
                    t.live
                ),
            });
        };
        let mut candidates: Vec<(u64, &SessionName, &Slot)> = t
            .map
            .iter()
            .filter(|(n, _)| !n.is_default() && *n != keep)
            .filter_map(|(n, e)| e.live.as_ref().map(|s| (e.tick, n, s)))
            // Nobody else holds it, and nobody can take it without the map.
            .filter(|(_, _, s)| Arc::strong_count(s) == 1)
            .collect();
        candidates.sort_by_key(|c| c.0);
        let mut victim = None;
        for (_, name, slot) in candidates {
            let kernel = lock(slot);
            if kernel.halted().is_some() {
                continue;
            }
            victim = Some((
                name.clone(),
                capsule_kernel::snapshot(&kernel)?,
                kernel.step_count(),
            ));
            break;
        }
        let (name, bytes, steps) = victim.ok_or_else(busy)?;
        let failed = |reason: String| CortexError::Snapshot {
            session: name.to_string(),
            reason,
        };
        let id = store.put(&bytes).map_err(failed)?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let mut record = Record::new("service", SNAPSHOT_ACTION, "ok");
        record.subject = self.resource.clone();
        record.reason = format!("session {name} evicted at step {steps} (least recently used)");
        record.meta = serde_json::json!({
            "kind": SNAPSHOT_ACTION,
            "session": name,
            "object": id,
            "state_digest": digest,
            "step": steps,
        });
        let seq = self.ledger.append(record)?.seq;
        if let Some(e) = t.map.get_mut(&name) {
            e.live = None;
            e.snapshot = Some((id, seq, steps, digest));
        }
        t.live -= 1;
        Ok(())
    }

    /// Every known session, by name.
    pub fn list(&self) -> Vec<SessionInfo> {
        let rows: Vec<_> = {
            let t = self.table();
            t.map
                .iter()
                .map(|(n, e)| {
                    (
                        n.to_string(),
                        e.live.clone(),
                        e.snapshot.clone(),
                        e.last_use_ns,
                    )
                })
                .collect()
        };
        let mut out: Vec<SessionInfo> = rows
            .into_iter()
            .map(|(name, live, snapshot, last_use)| SessionInfo {
                name,
                steps: match &live {
                    Some(slot) => lock(slot).step_count(),
                    None => snapshot.as_ref().map_or(0, |s| s.2),
                },
                state: if live.is_some() {
                    "live"
                } else {
                    "snapshotted"
                }
                .into(),
                last_use,
                snapshot: snapshot.as_ref().map(|s| s.0.clone()),
                snapshot_seq: snapshot.as_ref().map(|s| s.1),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// How many kernels are in memory.
    pub fn live(&self) -> usize {
        self.table().live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: CortexError) -> String {
        match e {
            CortexError::Invalid { field, .. } => field,
            e => panic!("not Invalid: {e}"),
        }
    }

    #[test]
    fn names_are_checked_at_their_bounds() {
        assert!(SessionName::parse(&"a".repeat(MAX_SESSION_NAME_BYTES)).is_ok());
        for bad in ["", "-a", ".a", "a b", "a/b", "é", "a\n"] {
            assert_eq!(
                field_of(SessionName::parse(bad).unwrap_err()),
                "session",
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_SESSION_NAME_BYTES + 1);
        assert_eq!(field_of(SessionName::parse(&long).unwrap_err()), "session");
        let parsed: std::result::Result<SessionName, _> = serde_json::from_str("\"a b\"");
        assert!(parsed.is_err());
        let name: SessionName = serde_json::from_str("\"A-1_b.c\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"A-1_b.c\"");
    }

    #[test]
    fn the_default_session_keeps_the_configured_seed_and_others_derive_one() {
        assert_eq!(session_seed(42, &SessionName::default()), 42);
        let a = SessionName::parse("a").unwrap();
        let b = SessionName::parse("b").unwrap();
        assert_eq!(session_seed(42, &a), session_seed(42, &a));
        assert_ne!(session_seed(42, &a), session_seed(42, &b));
        assert_ne!(session_seed(42, &a), session_seed(43, &a));
        // The derivation as documented, spelled out once.
        let mut h = blake3::Hasher::new_derive_key(SEED_CONTEXT);
        h.update(&42u64.to_le_bytes());
        h.update(b"a");
        let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().unwrap();
        assert_eq!(session_seed(42, &a), u64::from_le_bytes(bytes));
    }
}
