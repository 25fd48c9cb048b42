//! The durable approval queue (SPEC P3, P10), in SQLite.
//!
//! An action that the autonomy table sends to review waits here with the
//! canonical digest of {action, actor, args, policy_version, resource}.
//! Approvers sign `capsule approval v1\n<id>\n<digest>\n` with Ed25519; a
//! quorum of distinct approver keys approves it. Releasing presents the
//! action again: if anything in the digest changed the approval is void.
//! Release is one SQLite transaction from `approved` to `released`, so an
//! approved action is released exactly once, across crashes, restarts and
//! racing releasers.

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

/// One queued approval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: i64,
    pub status: String,
    pub outcome: String,
    pub quorum: u32,
    pub digest: String,
    pub request: ApprovalRequest,
    pub approvers: Vec<String>,
    pub created_ns: i64,
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
             PRAGMA foreign_keys = ON;
             CREATE TABLE IF NOT EXISTS approvals (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               digest TEXT NOT NULL,
               request TEXT NOT NULL,
               outcome TEXT NOT NULL,
               quorum INTEGER NOT NULL CHECK (quorum >= 1),
               status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'released', 'void')),
               created_ns INTEGER NOT NULL,
               released_ns INTEGER
             );
             CREATE TABLE IF NOT EXISTS signatures (
               approval_id INTEGER NOT NULL REFERENCES approvals(id),
               approver TEXT NOT NULL,
               signature TEXT NOT NULL,
               PRIMARY KEY (approval_id, approver)
             );",
        )?;
        Ok(ApprovalQueue { conn })
    }

    /// Queue an action that needs `quorum` approver signatures.
    pub fn enqueue(&self, request: &ApprovalRequest, outcome: &str, quorum: u32) -> Result<i64> {
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
            "INSERT INTO approvals (digest, request, outcome, quorum, status, created_ns) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            params![request.digest(), String::from_utf8(canonical).expect("JSON is UTF-8"), outcome, quorum, now_ns()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn load(conn: &Connection, id: i64) -> Result<Approval> {
        let row = conn
            .query_row(
                "SELECT status, outcome, quorum, digest, request, created_ns FROM approvals WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
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
        let mut stmt = conn
            .prepare("SELECT approver FROM signatures WHERE approval_id = ?1 ORDER BY approver")?;
        let approvers = stmt
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Approval {
            id,
            status: row.0,
            outcome: row.1,
            quorum: row.2,
            digest: row.3,
            request,
            approvers,
            created_ns: row.5,
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

    /// Release an approved action, presented as it is about to run. Exactly
    /// once: a second release, or a racing one, is refused. If the
    /// presented action differs from the approved one in anything, the
    /// approval becomes void.
    pub fn release(
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
            "released" => return Err(err("was already released".into())),
            other => return Err(err(format!("is {other}, not approved"))),
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
            ledger.append(record)?;
            tx.commit()?;
            return Err(err(format!(
                "void: {} changed after approval",
                changed.join(", ")
            )));
        }
        tx.execute(
            "UPDATE approvals SET status = 'released', released_ns = ?2 WHERE id = ?1",
            params![id, now_ns()],
        )?;
        let mut record = Record::new(&approval.request.actor, "approval.release", "released");
        record.subject = format!("approval/{id}");
        record.reason = format!(
            "{} on {} released by {} approver(s)",
            approval.request.action,
            approval.request.resource,
            approval.approvers.len()
        );
        record.meta =
            serde_json::json!({"digest": approval.digest, "approvers": approval.approvers});
        ledger.append(record)?;
        tx.commit()?;
        Self::load(&self.conn, id)
    }
}
