//! The mesh's SQLite file: the task table (status and result of each task
//! by content hash — the result cache) and the pattern table (SPEC M3).
//! WAL, with one connection for writes and one for reads, each behind a
//! mutex: a writer holding its transaction (a new task's row waits for its
//! ledger record) never stalls the cache look-ups of other submits, which
//! read the last committed state. The ledger is the record of what
//! happened; this file is the working state it describes.

use crate::error::Result;
use crate::patterns::{Layer, Pattern};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// One task's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// The content hash (the ID without namespace and day).
    pub hash: String,
    /// The ID as first minted.
    pub id: String,
    pub domain: String,
    /// queued, running, done, failed, blocked or pending_approval.
    pub status: String,
    pub lane: String,
    /// Who submitted it first (the bot runs as them).
    pub principal: String,
    pub result_id: Option<String>,
    pub error: Option<String>,
    pub reused_from: Option<String>,
    pub approval_id: Option<i64>,
    pub duration_ms: Option<f64>,
    /// Ledger entries of the task's life (submission, release, result,
    /// feedback); cache hits are counted, not listed.
    pub ledger: Vec<u64>,
    pub trace: serde_json::Value,
    pub hits: u64,
    pub created_ns: i64,
    pub updated_ns: i64,
}

pub struct Db {
    write: Mutex<Connection>,
    read: Mutex<Connection>,
}

const TASK_COLUMNS: &str = "hash, id, domain, status, lane, result_id, error, reused_from, approval_id, duration_ms, ledger, trace, hits, created_ns, updated_ns, principal";
const PATTERN_COLUMNS: &str =
    "hash, task_id, domain, layer, confidence_bp, usage, last_used_ns, result_id, embedding";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let ledger: String = r.get(10)?;
    let trace: String = r.get(11)?;
    Ok(TaskRow {
        hash: r.get(0)?,
        id: r.get(1)?,
        domain: r.get(2)?,
        status: r.get(3)?,
        lane: r.get(4)?,
        result_id: r.get(5)?,
        error: r.get(6)?,
        reused_from: r.get(7)?,
        approval_id: r.get(8)?,
        duration_ms: r.get(9)?,
        ledger: serde_json::from_str(&ledger).unwrap_or_default(),
        trace: serde_json::from_str(&trace).unwrap_or(serde_json::Value::Null),
        hits: r.get::<_, i64>(12)? as u64,
        created_ns: r.get(13)?,
        updated_ns: r.get(14)?,
        principal: r.get(15)?,
    })
}

fn pattern_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pattern> {
    let layer: String = r.get(3)?;
    let blob: Option<Vec<u8>> = r.get(8)?;
    Ok(Pattern {
        task_id: r.get(1)?,
        hash: r.get(0)?,
        domain: r.get(2)?,
        layer: Layer::parse(&layer).unwrap_or(Layer::Immediate),
        confidence_bp: r.get(4)?,
        usage: r.get::<_, i64>(5)? as u64,
        last_used_ns: r.get(6)?,
        result_id: r.get(7)?,
        embedding: blob.map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }),
    })
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let open = || -> Result<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(conn)
        };
        let conn = open()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tasks (
                hash TEXT PRIMARY KEY,
                id TEXT NOT NULL,
                domain TEXT NOT NULL,
                status TEXT NOT NULL,
                lane TEXT NOT NULL,
                result_id TEXT,
                error TEXT,
                reused_from TEXT,
                approval_id INTEGER,
                duration_ms REAL,
                ledger TEXT NOT NULL DEFAULT '[]',
                trace TEXT NOT NULL DEFAULT 'null',
                hits INTEGER NOT NULL DEFAULT 0,
                created_ns INTEGER NOT NULL,
                updated_ns INTEGER NOT NULL,
                principal TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
            CREATE TABLE IF NOT EXISTS patterns (
                hash TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                domain TEXT NOT NULL,
                layer TEXT NOT NULL,
                confidence_bp INTEGER NOT NULL,
                usage INTEGER NOT NULL,
                last_used_ns INTEGER NOT NULL,
                result_id TEXT NOT NULL,
                embedding BLOB
            );",
        )?;
        Ok(Db {
            write: Mutex::new(conn),
            read: Mutex::new(open()?),
        })
    }

    /// The connection that writes (and whose transactions hold it).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection that reads the last committed state.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn task(&self, hash: &str) -> Result<Option<TaskRow>> {
        let conn = self.reader();
        let mut st =
            conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE hash = ?1"))?;
        Ok(st.query_row([hash], task_from_row).optional()?)
    }

    /// The status and result of a task, the cache look-up of every submit.
    pub fn cached(&self, hash: &str) -> Result<Option<(String, Option<String>)>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached("SELECT status, result_id FROM tasks WHERE hash = ?1")?;
        Ok(st
            .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn tasks_in(&self, statuses: &[&str]) -> Result<Vec<TaskRow>> {
        let conn = self.reader();
        let marks = vec!["?"; statuses.len()].join(",");
        let mut st = conn.prepare(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ({marks}) ORDER BY updated_ns"
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(statuses), task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Insert or replace the row (a new task, or one that runs again).
    pub fn put_task(&self, t: &TaskRow) -> Result<()> {
        put_task(&self.conn(), t)
    }

    /// Add `n` cache hits.
    pub fn add_hits(&self, hits: &[(String, u64)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (hash, n) in hits {
            tx.execute(
                "UPDATE tasks SET hits = hits + ?2 WHERE hash = ?1",
                params![hash, *n as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn pattern(&self, hash: &str) -> Result<Option<Pattern>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {PATTERN_COLUMNS} FROM patterns WHERE hash = ?1"
        ))?;
        Ok(st.query_row([hash], pattern_from_row).optional()?)
    }

    pub fn patterns(&self, domain: Option<&str>, layer: Option<Layer>) -> Result<Vec<Pattern>> {
        let conn = self.reader();
        let mut st = conn.prepare(&format!(
            "SELECT {PATTERN_COLUMNS} FROM patterns
             WHERE (?1 IS NULL OR domain = ?1) AND (?2 IS NULL OR layer = ?2)
             ORDER BY domain, last_used_ns DESC"
        ))?;
        let rows = st.query_map(params![domain, layer.map(|l| l.as_str())], pattern_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn put_pattern(&self, p: &Pattern) -> Result<()> {
        let blob: Option<Vec<u8>> = p
            .embedding
            .as_ref()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect());
        self.conn().execute(
            &format!(
                "INSERT OR REPLACE INTO patterns ({PATTERN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                p.hash,
                p.task_id,
                p.domain,
                p.layer.as_str(),
                p.confidence_bp,
                p.usage as i64,
                p.last_used_ns,
                p.result_id,
                blob
            ],
        )?;
        Ok(())
    }

    pub fn delete_pattern(&self, hash: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM patterns WHERE hash = ?1", [hash])?;
        Ok(())
    }

    /// Record uses of patterns: `usage += n`, `last_used = at`.
    pub fn use_patterns(&self, uses: &[(String, u64, i64)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (hash, n, at) in uses {
            tx.execute(
                "UPDATE patterns SET usage = usage + ?2, last_used_ns = MAX(last_used_ns, ?3) WHERE hash = ?1",
                params![hash, *n as i64, at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Patterns per layer (for the metrics).
    pub fn pattern_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.reader();
        let mut st = conn.prepare_cached("SELECT layer, COUNT(*) FROM patterns GROUP BY layer")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

pub fn put_task(conn: &Connection, t: &TaskRow) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))?
    .execute(params![
        t.hash,
        t.id,
        t.domain,
        t.status,
        t.lane,
        t.result_id,
        t.error,
        t.reused_from,
        t.approval_id,
        t.duration_ms,
        serde_json::to_string(&t.ledger).unwrap_or_default(),
        t.trace.to_string(),
        t.hits as i64,
        t.created_ns,
        t.updated_ns,
        t.principal,
    ])?;
    Ok(())
}
