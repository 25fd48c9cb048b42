//! The durable approval queue (SPEC P3, P10), in SQLite.
//!
//! An action that the autonomy table sends to review waits here with the
//! canonical digest of {action, actor, args, policy_version, resource}.
//! Approvers sign `capsule approval v1\n<id>\n<digest>\n` with Ed25519; a
//! quorum of distinct approver keys approves it. Releasing presents the
//! action again: if anything in the digest changed the approval is void.
//!
//! Running an approved action exactly once, across crashes: the runner
//! first *claims* it (`approved → running`, one SQLite transaction that
//! also stores the ledger size at the claim), then appends the action's own
//! record (carrying `meta.approval_id`) and the `approval.release` entry in
//! one ledger batch, then *finishes* it (`running → released`, with the
//! outcome and the ledger sequence numbers). The release is made
//! idempotent by approval id: after a crash, [`ApprovalQueue::recover`]
//! looks in the ledger, from the size at the claim on, for entries whose
//! `meta.approval_id` is the claimed id. Both there: it ran, mark it
//! released. The action's record without the release entry (the batch was
//! cut after it): append the missing release entry, mark it released.
//! Neither: it never ran, back to `approved`, to be run once. So a crash at
//! any point between the SQLite commit and the ledger append leaves exactly
//! one execution and one release entry.
//!
//! Approvals that wait longer than their time to live (`approval_ttl_s`,
//! default 24 h) expire (recorded).

use crate::error::{PolicyError, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::entry::canonical_json;
use capsule_ledger::{Ledger, Record, VerifierKey};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most signatures stored per approval.
pub const MAX_SIGNATURES: usize = 32;
/// Largest canonical request, in bytes.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// What an approval covers; any change voids it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    pub action: String,
    pub actor: String,
    pub resource: String,
    /// The action's arguments (a JSON object).
    pub args: serde_json::Value,
    pub policy_version: String,
}

impl ApprovalRequest {
    fn canonical(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("plain struct"))
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }
}

/// The text an approver signs.
pub fn approval_statement(id: i64, digest: &str) -> String {
    format!("capsule approval v1\n{id}\n{digest}\n")
}

/// One approver's signature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signed {
    pub approver: String,
    pub signature: String,
}

/// One queued approval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: i64,
    /// pending, approved, running, released, void or expired.
    pub status: String,
    /// The decision that held it (pending_review or requires_human).
    pub outcome: String,
    pub quorum: u32,
    pub digest: String,
    pub request: ApprovalRequest,
    pub approvers: Vec<String>,
    pub signatures: Vec<Signed>,
    pub created_ns: i64,
    pub expires_ns: i64,
    /// Once run: what the action did.
    pub result: Option<serde_json::Value>,
    /// Once run: the ledger entries of the action and of its release.
    pub ledger_seqs: Vec<u64>,
}

/// The ledger action of a release entry; its meta carries `approval_id`.
pub const RELEASE_ACTION: &str = "approval.release";

/// The release entry of `approval`, appended in the same ledger batch as,
/// and after, the action's own record.
pub fn release_record(approval: &Approval) -> Record {
    let mut record = Record::new(&approval.request.actor, RELEASE_ACTION, "released");
    record.subject = format!("approval/{}", approval.id);
    record.reason = format!(
        "{} on {} released by {} approver(s)",
        approval.request.action,
        approval.request.resource,
        approval.approvers.len()
    );
    record.meta = serde_json::json!({
        "kind": RELEASE_ACTION,
        "approval_id": approval.id,
        "digest": approval.digest,
        "approvers": approval.approvers,
    });
    record
}

pub struct ApprovalQueue {
    conn: Connection,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl ApprovalQueue {
    /// Open (creating) the queue database at `path`.
    pub fn open(path: &Path) -> Result<ApprovalQueue> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            // Version 1 adds running/expired, the time to live, the claim
            // and the result; a version-0 table is copied over.
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS approvals (
                   id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL,
                   request TEXT NOT NULL, outcome TEXT NOT NULL,
                   quorum INTEGER NOT NULL, status TEXT NOT NULL,
                   created_ns INTEGER NOT NULL, released_ns INTEGER);
                 CREATE TABLE approvals_v1 (
                   id INTEGER PRIMARY KEY AUTOINCREMENT,
                   digest TEXT NOT NULL,
                   request TEXT NOT NULL,
                   outcome TEXT NOT NULL,
                   quorum INTEGER NOT NULL CHECK (quorum >= 1),
                   status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'running', 'released', 'void', 'expired')),
                   created_ns INTEGER NOT NULL,
                   expires_ns INTEGER NOT NULL,
                   released_ns INTEGER,
                   claimed_size INTEGER,
                   result TEXT,
                   ledger_seqs TEXT
                 );
                 INSERT INTO approvals_v1 (id, digest, request, outcome, quorum, status, created_ns, expires_ns, released_ns)
                   SELECT id, digest, request, outcome, quorum, status, created_ns, 9223372036854775807, released_ns FROM approvals;
                 DROP TABLE approvals;
                 ALTER TABLE approvals_v1 RENAME TO approvals;
                 CREATE TABLE IF NOT EXISTS signatures (
                   approval_id INTEGER NOT NULL REFERENCES approvals(id),
                   approver TEXT NOT NULL,
                   signature TEXT NOT NULL,
                   PRIMARY KEY (approval_id, approver)
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(ApprovalQueue { conn })
    }

    /// Queue an action that needs `quorum` approver signatures (expiring
    /// after the default 24 hours).
    pub fn enqueue(&self, request: &ApprovalRequest, outcome: &str, quorum: u32) -> Result<i64> {
        self.enqueue_for(
            request,
            outcome,
            quorum,
            crate::engine::DEFAULT_APPROVAL_TTL_S,
        )
    }

    /// Queue an action that needs `quorum` approver signatures and expires
    /// after `ttl_s` seconds.
    pub fn enqueue_for(
        &self,
        request: &ApprovalRequest,
        outcome: &str,
        quorum: u32,
        ttl_s: u64,
    ) -> Result<i64> {
        if quorum == 0 || quorum as usize > MAX_SIGNATURES {
            return Err(PolicyError::invalid(
                "quorum",
                format!("{quorum} is outside 1..={MAX_SIGNATURES}"),
            ));
        }
        if !request.args.is_object() {
            return Err(PolicyError::invalid("args", "must be a JSON object"));
        }
        let canonical = request.canonical();
        if canonical.len() > MAX_REQUEST_LEN {
            return Err(PolicyError::invalid(
                "args",
                format!("request exceeds {MAX_REQUEST_LEN} bytes"),
            ));
        }
        self.conn.execute(
            "INSERT INTO approvals (digest, request, outcome, quorum, status, created_ns, expires_ns) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
            params![request.digest(), String::from_utf8(canonical).expect("JSON is UTF-8"), outcome, quorum, now_ns(),
                now_ns().saturating_add(ttl_s.min(i64::MAX as u64 / 1_000_000_000) as i64 * 1_000_000_000)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn load(conn: &Connection, id: i64) -> Result<Approval> {
        let row = conn
            .query_row(
                "SELECT status, outcome, quorum, digest, request, created_ns, expires_ns, result, ledger_seqs FROM approvals WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| PolicyError::Approval { id, reason: "no such approval".into() })?;
        let request: ApprovalRequest =
            serde_json::from_str(&row.4).map_err(|e| PolicyError::Approval {
                id,
                reason: format!("stored request unreadable: {e}"),
            })?;
        let mut stmt = conn.prepare(
            "SELECT approver, signature FROM signatures WHERE approval_id = ?1 ORDER BY approver",
        )?;
        let signatures = stmt
            .query_map([id], |r| {
                Ok(Signed {
                    approver: r.get(0)?,
                    signature: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Approval {
            id,
            status: row.0,
            outcome: row.1,
            quorum: row.2,
            digest: row.3,
            request,
            approvers: signatures.iter().map(|s| s.approver.clone()).collect(),
            signatures,
            created_ns: row.5,
            expires_ns: row.6,
            result: row.7.and_then(|t| serde_json::from_str(&t).ok()),
            ledger_seqs: row
                .8
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
        })
    }

    pub fn show(&self, id: i64) -> Result<Approval> {
        Self::load(&self.conn, id)
    }

    /// Approvals with `status` (all when `None`), oldest first.
    pub fn list(&self, status: Option<&str>) -> Result<Vec<Approval>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM approvals WHERE ?1 IS NULL OR status = ?1 ORDER BY id")?;
        let ids = stmt
            .query_map([status], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| Self::load(&self.conn, id))
            .collect()
    }

    /// Add an approver's signature; returns the approval, `approved` once a
    /// quorum of distinct allowed keys has signed. The same key twice counts
    /// once. Recorded in the ledger.
    pub fn sign(
        &mut self,
        id: i64,
        approver: &str,
        signature: &str,
        allowed: &[VerifierKey],
        ledger: &Ledger,
    ) -> Result<Approval> {
        let err = |reason: String| PolicyError::Approval { id, reason };
        let key = VerifierKey::parse(approver)
            .map_err(|e| PolicyError::invalid("approver", e.to_string()))?;
        if !allowed.contains(&key) {
            return Err(err(format!("{key} is not an approver key")));
        }
        let sig: [u8; 64] = B64
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| PolicyError::invalid("signature", "not base64 of 64 bytes"))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let approval = Self::load(&tx, id)?;
        if approval.status != "pending" && approval.status != "approved" {
            return Err(err(format!(
                "is {}, not open for signatures",
                approval.status
            )));
        }
        if !key.verify(approval_statement(id, &approval.digest).as_bytes(), &sig) {
            return Err(err(
                "signature does not verify over this approval's digest".into()
            ));
        }
        if approval.approvers.len() >= MAX_SIGNATURES {
            return Err(err(format!("already holds {MAX_SIGNATURES} signatures")));
        }
        tx.execute(
            "INSERT OR IGNORE INTO signatures (approval_id, approver, signature) VALUES (?1, ?2, ?3)",
            params![id, key.to_string(), signature],
        )?;
        let count: u32 = tx.query_row(
            "SELECT COUNT(*) FROM signatures WHERE approval_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if count >= approval.quorum {
            tx.execute(
                "UPDATE approvals SET status = 'approved' WHERE id = ?1 AND status = 'pending'",
                [id],
            )?;
        }
        let after = Self::load(&tx, id)?;
        let mut record = Record::new(&format!("approver:{}", key.name()), "approval.sign", "ok");
        record.subject = format!("approval/{id}");
        record.reason = format!(
            "{count} of {} signatures; status {}",
            approval.quorum, after.status
        );
        record.meta = serde_json::json!({"digest": approval.digest, "approver": key.to_string()});
        // Ledger first: a signature the ledger did not record is not counted.
        ledger.append(record)?;
        tx.commit()?;
        Ok(after)
    }

    /// Release an approved action, presented as it is about to run, for an
    /// executor outside the service (e.g. `capsule store delete`): claims
    /// it and records the release at once. Exactly once: a second release,
    /// or a racing one, is refused. If the presented action differs from
    /// the approved one in anything, the approval becomes void.
    pub fn release(
        &mut self,
        id: i64,
        presented: &ApprovalRequest,
        ledger: &Ledger,
    ) -> Result<Approval> {
        let approval = self.claim(id, presented, ledger)?;
        let receipt = ledger.append(release_record(&approval))?;
        self.finish(id, &serde_json::json!({"released": true}), &[receipt.seq])
    }

    /// Claim an approved action for running: `approved → running`, storing
    /// the ledger size now. If the presented action differs from the
    /// approved one in anything, the approval becomes void (recorded).
    pub fn claim(
        &mut self,
        id: i64,
        presented: &ApprovalRequest,
        ledger: &Ledger,
    ) -> Result<Approval> {
        let err = |reason: String| PolicyError::Approval { id, reason };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let approval = Self::load(&tx, id)?;
        match approval.status.as_str() {
            "approved" => {}
            "released" | "running" => return Err(err("was already released".into())),
            other => return Err(err(format!("is {other}, not approved"))),
        }
        if approval.expires_ns < now_ns() {
            return Err(err("has expired".into()));
        }
        if presented.digest() != approval.digest {
            let changed: Vec<&str> = [
                ("action", presented.action != approval.request.action),
                ("actor", presented.actor != approval.request.actor),
                ("resource", presented.resource != approval.request.resource),
                ("args", presented.args != approval.request.args),
                (
                    "policy_version",
                    presented.policy_version != approval.request.policy_version,
                ),
            ]
            .into_iter()
            .filter_map(|(f, c)| c.then_some(f))
            .collect();
            tx.execute("UPDATE approvals SET status = 'void' WHERE id = ?1", [id])?;
            let mut record = Record::new("policy", "approval.void", "void");
            record.subject = format!("approval/{id}");
            record.reason = format!("{} changed after approval", changed.join(", "));
            record.meta = serde_json::json!({"kind": "approval.void", "approval_id": id});
            ledger.append(record)?;
            tx.commit()?;
            return Err(err(format!(
                "void: {} changed after approval",
                changed.join(", ")
            )));
        }
        tx.execute(
            "UPDATE approvals SET status = 'running', claimed_size = ?2 WHERE id = ?1",
            params![id, ledger.size() as i64],
        )?;
        tx.commit()?;
        Self::load(&self.conn, id)
    }

    /// A claimed action ran: `running → released` with what it did and
    /// the ledger entries of the action and its release.
    pub fn finish(
        &mut self,
        id: i64,
        result: &serde_json::Value,
        seqs: &[u64],
    ) -> Result<Approval> {
        let changed = self.conn.execute(
            "UPDATE approvals SET status = 'released', released_ns = ?2, result = ?3, ledger_seqs = ?4 WHERE id = ?1 AND status = 'running'",
            params![id, now_ns(), result.to_string(), serde_json::to_string(seqs).unwrap_or_default()],
        )?;
        if changed != 1 {
            return Err(PolicyError::Approval {
                id,
                reason: "is not running".into(),
            });
        }
        Self::load(&self.conn, id)
    }

    /// Drop a pending approval that was never recorded (its decision could
    /// not be written): nothing may wait that the ledger does not know.
    pub fn discard(&self, id: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM approvals WHERE id = ?1 AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM signatures WHERE approval_id = ?1)",
            [id],
        )?;
        Ok(())
    }

    /// A claimed action could not run (it changed nothing): back to `approved`.
    pub fn unclaim(&mut self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE approvals SET status = 'approved', claimed_size = NULL WHERE id = ?1 AND status = 'running'",
            [id],
        )?;
        Ok(())
    }

    /// After a restart: settle every claimed (`running`) approval from the
    /// ledger (see the module doc). Returns the ids that went back to
    /// `approved` because their action never ran.
    pub fn recover(&mut self, ledger: &Ledger) -> Result<Vec<i64>> {
        let running: Vec<(i64, i64)> = {
            let mut stmt = self.conn.prepare(
                "SELECT id, COALESCE(claimed_size, 0) FROM approvals WHERE status = 'running' ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        let mut back = Vec::new();
        for (id, from) in running {
            let mut action_seq = None;
            let mut release_seq = None;
            for seq in (from.max(0) as u64)..ledger.size() {
                let entry = ledger.entry(seq)?;
                if entry
                    .record
                    .meta
                    .get("approval_id")
                    .and_then(|v| v.as_i64())
                    != Some(id)
                {
                    continue;
                }
                if entry.record.action == RELEASE_ACTION {
                    release_seq = Some(seq);
                } else if entry.record.action != "approval.void" {
                    action_seq = Some(seq);
                }
            }
            match (action_seq, release_seq) {
                (None, None) => {
                    self.unclaim(id)?;
                    back.push(id);
                }
                (action, release) => {
                    let approval = self.show(id)?;
                    let release = match release {
                        Some(s) => s,
                        None => ledger.append(release_record(&approval))?.seq,
                    };
                    let seqs: Vec<u64> = action.into_iter().chain([release]).collect();
                    self.finish(
                        id,
                        &serde_json::json!({"recovered": true, "ran": action.is_some()}),
                        &seqs,
                    )?;
                }
            }
        }
        Ok(back)
    }

    /// Expire every pending or approved approval whose time is up
    /// (recorded); returns their ids.
    pub fn expire(&mut self, ledger: &Ledger) -> Result<Vec<i64>> {
        let now = now_ns();
        let ids: Vec<i64> = {
            let mut stmt = self.conn.prepare(
                "SELECT id FROM approvals WHERE status IN ('pending', 'approved') AND expires_ns < ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([now], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for &id in &ids {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE approvals SET status = 'expired' WHERE id = ?1 AND status IN ('pending', 'approved')",
                [id],
            )?;
            if n == 1 {
                let mut record = Record::new("policy", "approval.expire", "expired");
                record.subject = format!("approval/{id}");
                record.reason = "its time to live ran out before it was released".into();
                record.meta = serde_json::json!({"kind": "approval.expire", "approval_id": id});
                ledger.append(record)?;
            }
            tx.commit()?;
        }
        Ok(ids)
    }
}
