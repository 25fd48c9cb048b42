//! The object store (SPEC S2, S5): objects as cube files, an SQLite index
//! from (namespace, hash) to cubes and metadata, verified reads, and
//! quarantine.
//!
//! ```text
//! DIR/index.db                         objects and quarantine tables
//! DIR/cubes/<ns>/<hash>.<i>.cube       cube i of an object
//! DIR/quarantine/<ns>_<hash>.<i>.cube  cubes that failed verification
//! ```
//!
//! A put writes every cube to a temporary file, fsyncs, renames it into
//! place and fsyncs the directory, and only then records the object in the
//! index; identical content in a namespace is stored once. A read verifies
//! every cube it touches before returning a byte; a cube that fails is moved
//! to quarantine, the object is marked quarantined and never served again
//! (until identical content is put anew), and the event is a ledger entry.
//! Deletion happens only on a decision the policy engine made, re-decided
//! before it is acted on, each decision once (see [`Store::delete`]).

use crate::cube::{self, capacity, CubeError, Expected, VERTEX_BYTES};
use crate::error::{Result, StoreError};
use crate::id::{check_namespace, ContentHash, Day, ObjectId};
use crate::keyring::KeyProvider;
use capsule_ledger::{Ledger, Record};
use capsule_policy::approvals::{ApprovalQueue, ApprovalRequest};
use capsule_policy::redecide::redecide;
use capsule_policy::PolicyEngine;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest object, in bytes.
pub const MAX_OBJECT: u64 = 4 << 30;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Raw bytes.
    Blob,
    /// Typed JSON artifacts.
    Spec,
    Artifact,
    Composite,
    MergedResult,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Spec => "spec",
            Kind::Artifact => "artifact",
            Kind::Composite => "composite",
            Kind::MergedResult => "merged_result",
        }
    }

    pub fn parse(text: &str) -> Result<Kind> {
        [
            Kind::Blob,
            Kind::Spec,
            Kind::Artifact,
            Kind::Composite,
            Kind::MergedResult,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| {
            StoreError::invalid(
                "kind",
                format!("{text:?} is not blob, spec, artifact, composite or merged_result"),
            )
        })
    }
}

/// What the index knows of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// The ID it was first stored under.
    pub id: String,
    pub kind: Kind,
    pub length: u64,
    pub cubes: u32,
    pub encrypted: bool,
    /// `ok` or `quarantined`.
    pub status: String,
}

/// One quarantined cube.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub object: String,
    pub cube: u32,
    pub path: String,
    pub reason: String,
}

/// What a deletion stands on: a decision the policy engine made and, for
/// a decision that waits for approval, the approval that releases it.
pub struct DeleteAuthority<'a> {
    /// The engine the decision must re-decide under (its active rules, its
    /// present circumstances and kill switch); it must record to the
    /// store's ledger.
    pub engine: &'a PolicyEngine,
    /// The ledger sequence number of the decision.
    pub decision_seq: u64,
    /// For a held decision: the approval that covers its request.
    pub approval: Option<HeldApproval<'a>>,
}

/// An approval in the queue, presented to release a held decision.
pub struct HeldApproval<'a> {
    pub queue: &'a mut ApprovalQueue,
    pub id: i64,
}

pub struct Store {
    dir: PathBuf,
    keys: Arc<dyn KeyProvider>,
    db: Mutex<Connection>,
    ledger: Arc<Ledger>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

impl Store {
    /// Open (creating) the store in `dir`, with `keys`, auditing to `ledger`.
    pub fn open(dir: &Path, keys: Arc<dyn KeyProvider>, ledger: Arc<Ledger>) -> Result<Store> {
        for sub in ["cubes", "quarantine"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| StoreError::io(&dir.join(sub), e))?;
        }
        let conn = Connection::open(dir.join("index.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS objects (
               namespace TEXT NOT NULL, hash TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL,
               length INTEGER NOT NULL, cubes INTEGER NOT NULL, encrypted INTEGER NOT NULL,
               status TEXT NOT NULL CHECK (status IN ('ok', 'quarantined')), created_ns INTEGER NOT NULL,
               PRIMARY KEY (namespace, hash));
             CREATE TABLE IF NOT EXISTS deletions (
               decision_seq INTEGER PRIMARY KEY, namespace TEXT NOT NULL, hash TEXT NOT NULL, deleted_ns INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS quarantine (
               id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, hash TEXT NOT NULL,
               cube INTEGER NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL, moved_ns INTEGER NOT NULL);",
        )?;
        let store = Store {
            dir: dir.to_path_buf(),
            keys,
            db: Mutex::new(conn),
            ledger,
        };
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(b"capsule store keyring\0");
            h.update(store.keys.verifying_key().as_bytes());
            h.update(store.keys.vertex_mac_key("\0check"));
            hex::encode(h.finalize())
        };
        store.check_or_record("keyring", &fingerprint, || {
            format!(
                "{}: the keyring is not the one this store was written with",
                dir.display()
            )
        })?;
        Ok(store)
    }

    /// Compare a stored check value with `value`, recording it the first time.
    fn check_or_record(
        &self,
        name: &str,
        value: &str,
        mismatch: impl FnOnce() -> String,
    ) -> Result<()> {
        let db = self.db();
        let stored: Option<String> = db
            .query_row(
                "SELECT value FROM store_meta WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            Some(v) if v == value => Ok(()),
            Some(_) => Err(StoreError::invalid("key", mismatch())),
            None => {
                db.execute(
                    "INSERT INTO store_meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )?;
                Ok(())
            }
        }
    }

    /// Refuse, without touching any cube, a namespace whose AEAD key is
    /// missing or not the one its objects were written with.
    fn check_aead_key(&self, namespace: &str, encrypted: bool) -> Result<()> {
        let key = self.keys.aead_key(namespace);
        match (encrypted, key) {
            (false, _) => Ok(()),
            (true, None) => Err(StoreError::invalid(
                "key",
                format!("namespace {namespace} is encrypted and the keyring has no key for it"),
            )),
            (true, Some(key)) => {
                let check = hex::encode(Sha256::digest(
                    [&b"capsule store aead check\0"[..], &key].concat(),
                ));
                self.check_or_record(&format!("aead:{namespace}"), &check, || {
                    format!("the keyring's key for namespace {namespace} is not the one its objects were written with")
                })
            }
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cube_path(&self, namespace: &str, hash: &ContentHash, index: u32) -> PathBuf {
        self.dir
            .join("cubes")
            .join(namespace)
            .join(format!("{hash}.{index}.cube"))
    }

    /// Store `bytes` in `namespace`; returns its ID (minted today). The same
    /// content already stored in the namespace is not written again.
    pub fn put(&self, namespace: &str, kind: Kind, bytes: &[u8]) -> Result<ObjectId> {
        check_namespace(namespace)?;
        if bytes.len() as u64 > MAX_OBJECT {
            return Err(StoreError::invalid(
                "object",
                format!("{} bytes exceeds the limit of {MAX_OBJECT}", bytes.len()),
            ));
        }
        let id = ObjectId::for_content(namespace, Day::today(), bytes)?;
        let hash = *id.hash();
        let existing: Option<String> = self
            .db()
            .query_row(
                "SELECT status FROM objects WHERE namespace = ?1 AND hash = ?2",
                params![namespace, hash.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        if existing.as_deref() == Some("ok") {
            return Ok(id);
        }
        let encrypted = self.keys.aead_key(namespace).is_some();
        self.check_aead_key(namespace, encrypted)?;
        let chunk = capacity(encrypted);
        let count = bytes.len().div_ceil(chunk).max(1) as u32;
        let ns_dir = self.dir.join("cubes").join(namespace);
        fs::create_dir_all(&ns_dir).map_err(|e| StoreError::io(&ns_dir, e))?;
        for i in 0..count {
            let start = i as usize * chunk;
            let part = &bytes[start.min(bytes.len())..(start + chunk).min(bytes.len())];
            let sealed = cube::seal(
                self.keys.as_ref(),
                namespace,
                &hash,
                bytes.len() as u64,
                i,
                count,
                part,
            )?;
            let path = self.cube_path(namespace, &hash, i);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(&sealed)?;
                f.sync_all()?;
                fs::rename(&tmp, &path)
            };
            write().map_err(|e| StoreError::io(&path, e))?;
        }
        sync_dir(&ns_dir)?;
        self.db().execute(
            "INSERT INTO objects (namespace, hash, day, kind, length, cubes, encrypted, status, created_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'ok', ?8)
             ON CONFLICT (namespace, hash) DO UPDATE SET status = 'ok', cubes = ?6, encrypted = ?7",
            params![namespace, hash.to_string(), id.day().to_string(), kind.as_str(), bytes.len() as i64, count, encrypted, now_ns()],
        )?;
        Ok(id)
    }

    /// Store a typed JSON artifact, in canonical form (sorted keys, compact).
    pub fn put_json(
        &self,
        namespace: &str,
        kind: Kind,
        value: &serde_json::Value,
    ) -> Result<ObjectId> {
        if kind == Kind::Blob {
            return Err(StoreError::invalid(
                "kind",
                "a JSON artifact is spec, artifact, composite or merged_result",
            ));
        }
        self.put(
            namespace,
            kind,
            &capsule_ledger::entry::canonical_json(value),
        )
    }

    /// The index columns an [`ObjectInfo`] is read from.
    const INFO_COLUMNS: &'static str =
        "namespace, day, hash, kind, length, cubes, encrypted, status";

    fn info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ObjectInfo, String)> {
        let (ns, day, hash): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let info = ObjectInfo {
            id: format!("{ns}_{day}_{hash}"),
            kind: Kind::Blob,
            length: r.get::<_, i64>(4)? as u64,
            cubes: r.get(5)?,
            encrypted: r.get(6)?,
            status: r.get(7)?,
        };
        Ok((info, r.get(3)?))
    }

    /// Finish a row read by [`Self::info_from_row`]: parse its kind.
    fn with_kind((mut info, kind): (ObjectInfo, String)) -> Result<ObjectInfo> {
        info.kind = Kind::parse(&kind)?;
        Ok(info)
    }

    /// What the index knows of `id` (any day).
    pub fn stat(&self, id: &ObjectId) -> Result<ObjectInfo> {
        let row = self
            .db()
            .query_row(
                &format!(
                    "SELECT {} FROM objects WHERE namespace = ?1 AND hash = ?2",
                    Self::INFO_COLUMNS
                ),
                params![id.namespace(), id.hash().to_string()],
                Self::info_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        Self::with_kind(row)
    }

    pub fn exists(&self, id: &ObjectId) -> Result<bool> {
        match self.stat(id) {
            Ok(info) => Ok(info.status == "ok"),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object (of `namespace`), in namespace and hash order.
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {} FROM objects WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, hash",
            Self::INFO_COLUMNS
        ))?;
        let rows = stmt.query_map([namespace], Self::info_from_row)?;
        rows.map(|row| Self::with_kind(row?)).collect()
    }

    fn servable(&self, id: &ObjectId) -> Result<ObjectInfo> {
        let info = self.stat(id)?;
        if info.status != "ok" {
            let reason: String = self
                .db()
                .query_row(
                    "SELECT reason FROM quarantine WHERE namespace = ?1 AND hash = ?2 ORDER BY id DESC LIMIT 1",
                    params![id.namespace(), id.hash().to_string()],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or_default();
            return Err(StoreError::Quarantined(id.to_string(), reason));
        }
        self.check_aead_key(id.namespace(), info.encrypted)?;
        Ok(info)
    }

    /// Move a failed cube to quarantine, mark its object, audit it, and
    /// return the error to report.
    fn quarantine(&self, id: &ObjectId, index: u32, path: &Path, err: CubeError) -> StoreError {
        let target = self.dir.join("quarantine").join(format!(
            "{}_{}.{index}.{}.cube",
            id.namespace(),
            id.hash(),
            now_ns()
        ));
        let moved = match fs::rename(path, &target) {
            Ok(()) => target.display().to_string(),
            Err(_) => format!("{} (could not be moved)", path.display()),
        };
        let reason = format!("cube {index}: offset {}: {}", err.offset, err.reason);
        let recorded = (|| -> Result<()> {
            let db = self.db();
            db.execute(
                "UPDATE objects SET status = 'quarantined' WHERE namespace = ?1 AND hash = ?2",
                params![id.namespace(), id.hash().to_string()],
            )?;
            db.execute(
                "INSERT INTO quarantine (namespace, hash, cube, path, reason, moved_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id.namespace(), id.hash().to_string(), index, moved, reason, now_ns()],
            )?;
            drop(db);
            let mut record = Record::new("store", "store.quarantine", "quarantined");
            record.subject = id.to_string();
            record.reason = reason.clone();
            record.meta = serde_json::json!({"cube": index, "moved_to": moved});
            self.ledger.append(record)?;
            Ok(())
        })();
        if let Err(e) = recorded {
            return e;
        }
        StoreError::Corrupt {
            file: path.display().to_string(),
            offset: err.offset,
            reason: err.reason,
        }
    }

    fn expected<'a>(id: &'a ObjectId, info: &ObjectInfo, index: u32) -> Expected<'a> {
        Expected {
            namespace: id.namespace(),
            hash: id.hash(),
            index,
            count: info.cubes,
            object_len: info.length,
        }
    }

    /// Open cube `index` of `id`; a missing cube file is a failed cube.
    fn open_cube(&self, id: &ObjectId, index: u32) -> Result<(PathBuf, File)> {
        let path = self.cube_path(id.namespace(), id.hash(), index);
        match File::open(&path) {
            Ok(file) => Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let missing = CubeError {
                    offset: 0,
                    reason: "cube file is missing".into(),
                };
                Err(self.quarantine(id, index, &path, missing))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn read_cube(&self, id: &ObjectId, info: &ObjectInfo, index: u32) -> Result<Vec<u8>> {
        let (path, mut file) = self.open_cube(id, index)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| StoreError::io(&path, e))?;
        cube::open(self.keys.as_ref(), &Self::expected(id, info, index), &bytes)
            .map_err(|e| self.quarantine(id, index, &path, e))
    }

    /// The whole object, verified cube by cube and against its content hash.
    pub fn get(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let info = self.servable(id)?;
        self.read_object(id, &info)
    }

    fn read_object(&self, id: &ObjectId, info: &ObjectInfo) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(info.length as usize);
        for i in 0..info.cubes {
            out.extend_from_slice(&self.read_cube(id, info, i)?);
        }
        if out.len() as u64 != info.length || ContentHash::of(&out) != *id.hash() {
            let path = self.cube_path(id.namespace(), id.hash(), 0);
            return Err(self.quarantine(
                id,
                0,
                &path,
                CubeError {
                    offset: 0,
                    reason: "object does not hash to its ID".into(),
                },
            ));
        }
        Ok(out)
    }

    /// A typed JSON artifact.
    pub fn get_json(&self, id: &ObjectId) -> Result<(Kind, serde_json::Value)> {
        let info = self.servable(id)?;
        if info.kind == Kind::Blob {
            return Err(StoreError::invalid(
                "id",
                format!("{id} is a blob, not a JSON artifact"),
            ));
        }
        let bytes = self.read_object(id, &info)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::invalid("artifact", e.to_string()))?;
        Ok((info.kind, value))
    }

    /// `len` bytes from `offset`. In a plaintext namespace only the cube
    /// headers and the vertices that hold the range are read and verified;
    /// an encrypted cube is verified and decrypted whole.
    pub fn get_range(&self, id: &ObjectId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let info = self.servable(id)?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= info.length)
            .ok_or_else(|| {
                StoreError::invalid(
                    "range",
                    format!(
                        "{offset}+{len} is outside the object's {} bytes",
                        info.length
                    ),
                )
            })?;
        let chunk = capacity(info.encrypted) as u64;
        let mut out = Vec::with_capacity(len as usize);
        let mut pos = offset;
        while pos < end {
            let index = (pos / chunk) as u32;
            let cube_start = index as u64 * chunk;
            let (from, to) = (
                (pos - cube_start) as usize,
                ((end - cube_start).min(chunk)) as usize,
            );
            if info.encrypted {
                out.extend_from_slice(&self.read_cube(id, &info, index)?[from..to]);
            } else {
                out.extend_from_slice(&self.read_plain_range(id, &info, index, from, to)?);
            }
            pos = cube_start + to as u64;
        }
        Ok(out)
    }

    fn read_plain_range(
        &self,
        id: &ObjectId,
        info: &ObjectInfo,
        index: u32,
        from: usize,
        to: usize,
    ) -> Result<Vec<u8>> {
        let (path, file) = self.open_cube(id, index)?;
        let file_len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len() as usize;
        let prefix_len = (cube::HEADER_LEN + 32 * cube::VERTICES + 96).min(file_len);
        let mut prefix = vec![0u8; prefix_len];
        file.read_exact_at(&mut prefix, 0)
            .map_err(|e| StoreError::io(&path, e))?;
        let verified = cube::verify_prefix(
            self.keys.as_ref(),
            &Self::expected(id, info, index),
            &prefix,
            file_len,
        )
        .map_err(|e| self.quarantine(id, index, &path, e))?;
        let (first, last) = (from / VERTEX_BYTES, (to - 1) / VERTEX_BYTES);
        let span_start = first * VERTEX_BYTES;
        let span_end = ((last + 1) * VERTEX_BYTES).min(verified.header.stored_len);
        let mut span = vec![0u8; span_end - span_start];
        file.read_exact_at(&mut span, (verified.payload_offset + span_start) as u64)
            .map_err(|e| StoreError::io(&path, e))?;
        for (k, vertex) in span.chunks(VERTEX_BYTES).enumerate() {
            verified
                .check_vertex(self.keys.as_ref(), first + k, vertex)
                .map_err(|e| self.quarantine(id, index, &path, e))?;
        }
        Ok(span[from - span_start..to - span_start].to_vec())
    }

    /// Delete an object on the strength of a decision the policy engine
    /// made. The ledger entry at `authority.decision_seq` must re-decide
    /// identically under the engine's active rules and present
    /// circumstances ([`capsule_policy::redecide`]), so an entry appended by
    /// anything but the engine is refused; it must decide `object.delete`
    /// on `object:<this object's ID>`; the kill switch must not be armed
    /// now; and each decision deletes once. A decision that allows goes
    /// ahead; one that waits (`pending_review`, `requires_human`) needs an
    /// approval from the queue that is approved and covers exactly the
    /// recorded request, and releases it (exactly once). A refusal names
    /// its reason and changes nothing.
    pub fn delete(&self, id: &ObjectId, authority: DeleteAuthority<'_>) -> Result<()> {
        let DeleteAuthority {
            engine,
            decision_seq,
            approval,
        } = authority;
        let refuse = |reason: String| {
            StoreError::invalid("decision", format!("ledger entry {decision_seq}: {reason}"))
        };
        if !Arc::ptr_eq(engine.ledger(), &self.ledger) {
            return Err(StoreError::invalid(
                "engine",
                "the policy engine records to another ledger than the store",
            ));
        }
        if engine.kill_switch().is_armed() {
            return Err(refuse(
                "not acted on: the kill switch is armed (an operator must disarm it)".into(),
            ));
        }
        let size = self.ledger.size();
        if decision_seq >= size {
            return Err(refuse(format!("no such entry (the ledger holds {size})")));
        }
        let entry = self.ledger.entry(decision_seq)?;
        let redecided = redecide(&engine.rules(), &engine.circumstances(), &entry.record)
            .map_err(|m| refuse(m.to_string()))?;
        let (request, decision) = (&redecided.request, &redecided.decision);
        if request.action != "object.delete" {
            return Err(refuse(format!(
                "decides {:?}, not object.delete",
                request.action
            )));
        }
        let named: Option<ObjectId> = request
            .resource
            .strip_prefix("object:")
            .and_then(|t| t.parse().ok());
        if !named.is_some_and(|n| n.same_object(id)) {
            return Err(refuse(format!(
                "is about {:?}, not object:{id}",
                request.resource
            )));
        }
        let outcome = decision.outcome;
        let release = match (outcome.allows(), outcome.needs_approval(), approval) {
            (true, _, None) => None,
            (true, _, Some(held)) => {
                return Err(StoreError::invalid(
                    "approval",
                    format!(
                        "approval {}: ledger entry {decision_seq} was {} and needs no approval",
                        held.id,
                        outcome.as_str()
                    ),
                ))
            }
            (false, true, Some(held)) => Some(held),
            (false, true, None) => {
                return Err(refuse(format!(
                    "was {}: the delete waits for an approved approval from the queue",
                    outcome.as_str()
                )))
            }
            (false, false, _) => {
                return Err(refuse(format!(
                    "was {}, not an approval ({})",
                    outcome.as_str(),
                    decision.explanation
                )))
            }
        };
        let info = self.stat(id)?;
        {
            let mut db = self.db();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let used: Option<i64> = tx
                .query_row(
                    "SELECT decision_seq FROM deletions WHERE decision_seq = ?1",
                    [decision_seq as i64],
                    |row| row.get(0),
                )
                .optional()?;
            if used.is_some() {
                return Err(refuse("was already used for a deletion".into()));
            }
            let mut record = Record::new(&request.principal, "store.delete", "deleted");
            record.subject = id.to_string();
            record.reason = format!("policy decision at ledger entry {decision_seq}");
            record.meta = serde_json::json!({ "decision_seq": decision_seq });
            // The approval is released last among the checks: once released,
            // it is spent, so nothing that can refuse may follow it.
            if let Some(held) = release {
                let presented = ApprovalRequest {
                    action: request.action.clone(),
                    actor: request.principal.clone(),
                    resource: request.resource.clone(),
                    args: request.args.clone(),
                    policy_version: decision.policy_version.clone(),
                };
                held.queue.release(held.id, &presented, &self.ledger)?;
                record
                    .reason
                    .push_str(&format!(", released by approval {}", held.id));
                record.meta["approval_id"] = serde_json::json!(held.id);
            }
            self.ledger.append(record)?;
            tx.execute(
                "DELETE FROM objects WHERE namespace = ?1 AND hash = ?2",
                params![id.namespace(), id.hash().to_string()],
            )?;
            tx.execute(
                "INSERT INTO deletions (decision_seq, namespace, hash, deleted_ns) VALUES (?1, ?2, ?3, ?4)",
                params![decision_seq as i64, id.namespace(), id.hash().to_string(), now_ns()],
            )?;
            tx.commit()?;
        }
        for i in 0..info.cubes {
            let path = self.cube_path(id.namespace(), id.hash(), i);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        sync_dir(&self.dir.join("cubes").join(id.namespace()))
    }

    /// Read and verify every stored object; failures are quarantined.
    /// Returns (objects verified, IDs that failed).
    pub fn verify_all(&self) -> Result<(u64, Vec<String>)> {
        let mut ok = 0;
        let mut failed = Vec::new();
        for info in self.list(None)? {
            if info.status != "ok" {
                continue;
            }
            let id: ObjectId = info.id.parse()?;
            match self.get(&id) {
                Ok(_) => ok += 1,
                Err(StoreError::Corrupt { .. }) => failed.push(info.id),
                Err(e) => return Err(e),
            }
        }
        Ok((ok, failed))
    }

    /// Every quarantined cube, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT namespace, hash, cube, path, reason FROM quarantine ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Quarantined {
                    object: format!("{}/{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    cube: r.get(2)?,
                    path: r.get(3)?,
                    reason: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
