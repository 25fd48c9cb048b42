//! Episodic events (SPEC M1): an append-only SQLite table of what happened,
//! queried by glyph, kind and time window and replayed by folding.
//!
//! ```text
//! meta(key TEXT PRIMARY KEY, value TEXT)        schema_version = 1
//! events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts, kind, lane, glyph, payload_ref, body)
//! index events(glyph, ts), index events(kind, ts)
//! ```

use crate::error::{MemoryError, Result};
use crate::wal::{Checkpointer, WalConfig};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest `kind`, in bytes.
pub const MAX_KIND_BYTES: usize = 64;
/// Longest `lane`, in bytes.
pub const MAX_LANE_BYTES: usize = 64;
/// Longest `glyph`, in bytes.
pub const MAX_GLYPH_BYTES: usize = 128;
/// Longest `payload_ref`, in bytes.
pub const MAX_PAYLOAD_REF_BYTES: usize = 256;
/// Largest `body`, in bytes of compact JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most events one query returns; a larger `limit` is capped to this.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// The `limit` of [`EventQuery::default`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;
/// Events read per page by [`EventStore::fold`].
pub const FOLD_PAGE_SIZE: usize = 256;
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &str = "schema_version";
const COLUMNS: &str = "id, ts, kind, lane, glyph, payload_ref, body";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An event to remember; [`EventStore::append`] validates it and assigns
/// its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// What happened, e.g. `think` (1..=64 bytes of `[a-z0-9_.-]`).
    pub kind: String,
    /// The policy lane it happened in (same alphabet as `kind`).
    pub lane: String,
    /// The glyph id it concerns; may be empty (no control characters).
    pub glyph: String,
    /// Where a large payload lives (e.g. an object-store id), if anywhere.
    pub payload_ref: Option<String>,
    /// The recorded content (plan, model and tool outputs): a JSON object.
    pub body: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, never reused.
    pub id: i64,
    /// Nanoseconds since the Unix epoch; non-decreasing in id order within
    /// one store.
    pub ts: i64,
    pub kind: String,
    pub lane: String,
    pub glyph: String,
    pub payload_ref: Option<String>,
    /// Always a JSON object.
    pub body: serde_json::Value,
}

/// Which events [`EventStore::query`] returns: those matching every filter
/// that is set, in ascending id order, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events about this glyph.
    pub glyph: Option<String>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events with `ts >= from_ts`.
    pub from_ts: Option<i64>,
    /// Only events with `ts < to_ts` (the window is half-open).
    pub to_ts: Option<i64>,
    /// Only events with `id > after_id` (for paging).
    pub after_id: Option<i64>,
    /// Most events returned: 1 or more; above [`MAX_QUERY_LIMIT`] it is
    /// capped.
    pub limit: usize,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            glyph: None,
            kind: None,
            from_ts: None,
            to_ts: None,
            after_id: None,
            limit: DEFAULT_QUERY_LIMIT,
        }
    }
}

struct Inner {
    conn: Connection,
    /// The largest `ts` this store has written or found; the next event's
    /// `ts` is never smaller.
    last_ts: i64,
    /// The largest id this store has assigned or found.
    last_id: i64,
}

/// The episodic event store: one SQLite file, safe to share between threads.
pub struct EventStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Checkpoints the WAL on its own thread, so appends never do.
    _checkpointer: Checkpointer,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EventStore>();
};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Check a `kind` or `lane`: 1..=`max` bytes of `[a-z0-9_.-]`.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(MemoryError::invalid(
            field,
            format!("{} bytes is outside 1..={max}", value.len()),
        ));
    }
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-');
    if let Some((at, c)) = value.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(MemoryError::invalid(
            field,
            format!("{value:?} has {c:?} at byte {at}; use only a-z, 0-9, '_', '.' and '-'"),
        ));
    }
    Ok(())
}

fn check_glyph(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_GLYPH_BYTES {
        return Err(MemoryError::invalid(
            field,
            format!(
                "{} bytes exceeds the limit of {MAX_GLYPH_BYTES}",
                value.len()
            ),
        ));
    }
    if let Some((at, c)) = value.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(MemoryError::invalid(
            field,
            format!("control character {c:?} at byte {at}"),
        ));
    }
    Ok(())
}

/// Validate `e` and return its body as compact JSON.
fn validate(e: &NewEvent) -> Result<String> {
    check_name("kind", &e.kind, MAX_KIND_BYTES)?;
    check_name("lane", &e.lane, MAX_LANE_BYTES)?;
    check_glyph("glyph", &e.glyph)?;
    if let Some(r) = &e.payload_ref {
        if r.len() > MAX_PAYLOAD_REF_BYTES {
            return Err(MemoryError::invalid(
                "payload_ref",
                format!(
                    "{} bytes exceeds the limit of {MAX_PAYLOAD_REF_BYTES}",
                    r.len()
                ),
            ));
        }
    }
    if !e.body.is_object() {
        return Err(MemoryError::invalid(
            "body",
            format!("must be a JSON object, not {}", json_type(&e.body)),
        ));
    }
    let body = serde_json::to_string(&e.body)
        .map_err(|err| MemoryError::invalid("body", err.to_string()))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(MemoryError::invalid(
            "body",
            format!(
                "{} bytes of JSON exceeds the limit of {MAX_BODY_BYTES}; store the payload elsewhere and put its id in payload_ref",
                body.len()
            ),
        ));
    }
    Ok(body)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A row as stored, before its body is parsed.
struct StoredRow {
    id: i64,
    ts: i64,
    kind: String,
    lane: String,
    glyph: String,
    payload_ref: Option<String>,
    body: String,
}

impl StoredRow {
    /// Read the columns of [`COLUMNS`], in order.
    fn read(r: &Row<'_>) -> rusqlite::Result<StoredRow> {
        Ok(StoredRow {
            id: r.get(0)?,
            ts: r.get(1)?,
            kind: r.get(2)?,
            lane: r.get(3)?,
            glyph: r.get(4)?,
            payload_ref: r.get(5)?,
            body: r.get(6)?,
        })
    }

    fn into_event(self, path: &Path) -> Result<Event> {
        let corrupt = |reason: String| MemoryError::Corrupt {
            path: path.display().to_string(),
            id: self.id,
            reason,
        };
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .map_err(|e| corrupt(format!("body is not JSON: {e}")))?;
        if !body.is_object() {
            return Err(corrupt(format!(
                "body is {}, not a JSON object",
                json_type(&body)
            )));
        }
        Ok(Event {
            id: self.id,
            ts: self.ts,
            kind: self.kind,
            lane: self.lane,
            glyph: self.glyph,
            payload_ref: self.payload_ref,
            body,
        })
    }
}

impl EventStore {
    /// Open the event store at `path`, creating the file and its schema if
    /// needed. Refuses a file whose schema version is not
    /// [`SCHEMA_VERSION`].
    ///
    /// WAL journal with `synchronous = NORMAL`: an append does not wait for
    /// an fsync, so a power loss may drop the newest events but never
    /// corrupts the file. The audit ledger is the durable record. The WAL is
    /// checkpointed by a background thread ([`WalConfig::default`]), not by
    /// appends.
    pub fn open(path: &Path) -> Result<EventStore> {
        EventStore::open_with(path, &WalConfig::default())
    }

    /// [`EventStore::open`] with the WAL checkpointed as `wal` says.
    pub fn open_with(path: &Path, wal: &WalConfig) -> Result<EventStore> {
        wal.check()?;
        let mut conn = Connection::open(path).map_err(MemoryError::sqlite(path, "open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(MemoryError::sqlite(path, "set busy timeout"))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(MemoryError::sqlite(path, "set journal mode"))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(MemoryError::sqlite(path, "begin schema transaction"))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(MemoryError::sqlite(path, "create meta table"))?;
        let found: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [SCHEMA_KEY], |r| {
                r.get(0)
            })
            .optional()
            .map_err(MemoryError::sqlite(path, "read schema version"))?;
        if let Some(found) = &found {
            if found.as_str() != SCHEMA_VERSION.to_string() {
                return Err(MemoryError::Schema {
                    path: path.display().to_string(),
                    found: found.clone(),
                    expected: SCHEMA_VERSION,
                });
            }
        }
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               ts INTEGER NOT NULL,
               kind TEXT NOT NULL,
               lane TEXT NOT NULL,
               glyph TEXT NOT NULL,
               payload_ref TEXT,
               body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_glyph_ts ON events (glyph, ts);
             CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts);",
        )
        .map_err(MemoryError::sqlite(path, "create events table"))?;
        if found.is_none() {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![SCHEMA_KEY, SCHEMA_VERSION.to_string()],
            )
            .map_err(MemoryError::sqlite(path, "record schema version"))?;
        }
        tx.commit()
            .map_err(MemoryError::sqlite(path, "commit schema"))?;
        let (last_id, last_ts): (i64, i64) = conn
            .query_row(
                "SELECT COALESCE(MAX(id), 0), COALESCE(MAX(ts), 0) FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(MemoryError::sqlite(path, "read last event"))?;
        wal.apply(&conn, path)?;
        let checkpointer = Checkpointer::start(path, wal)?;
        Ok(EventStore {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                conn,
                last_ts,
                last_id,
            }),
            _checkpointer: checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validate and store `e`, assigning the next id and the current time
    /// (never earlier than the previous event's). Returns the stored event.
    pub fn append(&self, e: NewEvent) -> Result<Event> {
        let body = validate(&e)?;
        let path = self.path.as_path();
        let mut inner = self.lock();
        let ts = now_ns().max(inner.last_ts);
        let id = inner
            .conn
            .prepare_cached(
                "INSERT INTO events (ts, kind, lane, glyph, payload_ref, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.insert(params![ts, e.kind, e.lane, e.glyph, e.payload_ref, body])
            })
            .map_err(MemoryError::sqlite(path, "append event"))?;
        debug_assert!(id > inner.last_id, "event id {id} after {}", inner.last_id);
        inner.last_ts = ts;
        inner.last_id = id;
        Ok(Event {
            id,
            ts,
            kind: e.kind,
            lane: e.lane,
            glyph: e.glyph,
            payload_ref: e.payload_ref,
            body: e.body,
        })
    }

    /// Remove event `id` if it is the last event, to undo an operation that
    /// failed after it was remembered. `Ok(false)` when there is no such
    /// event; an error naming `id` when it exists but is not the last. Its
    /// id is never assigned again.
    pub fn retract(&self, id: i64) -> Result<bool> {
        let path = self.path.as_path();
        let inner = self.lock();
        let removed = inner
            .conn
            .prepare_cached(
                "DELETE FROM events WHERE id = ?1 AND id = (SELECT MAX(id) FROM events)",
            )
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(MemoryError::sqlite(path, "retract event"))?;
        if removed == 1 {
            return Ok(true);
        }
        let last: Option<i64> = inner
            .conn
            .prepare_cached("SELECT MAX(id) FROM events")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(MemoryError::sqlite(path, "read last event"))?;
        match last {
            Some(last) if id < last && self.exists(&inner.conn, id)? => Err(MemoryError::invalid(
                "id",
                format!(
                    "event {id} is not the last event (the last is {last}); only the last event can be retracted"
                ),
            )),
            _ => Ok(false),
        }
    }

    fn exists(&self, conn: &Connection, id: i64) -> Result<bool> {
        conn.prepare_cached("SELECT 1 FROM events WHERE id = ?1")
            .and_then(|mut stmt| stmt.exists([id]))
            .map_err(MemoryError::sqlite(&self.path, "look up event"))
    }

    /// The event with this id.
    pub fn get(&self, id: i64) -> Result<Event> {
        let path = self.path.as_path();
        let row = self
            .lock()
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([id], StoredRow::read).optional())
            .map_err(MemoryError::sqlite(path, "read event"))?;
        row.ok_or(MemoryError::NotFound { id })?.into_event(path)
    }

    /// The events matching `q`, in ascending id order, at most
    /// `min(q.limit, MAX_QUERY_LIMIT)`.
    pub fn query(&self, q: &EventQuery) -> Result<Vec<Event>> {
        if q.limit == 0 {
            return Err(MemoryError::invalid(
                "limit",
                format!("must be 1..={MAX_QUERY_LIMIT}, not 0"),
            ));
        }
        if let Some(glyph) = &q.glyph {
            check_glyph("glyph", glyph)?;
        }
        if let Some(kind) = &q.kind {
            check_name("kind", kind, MAX_KIND_BYTES)?;
        }
        if let (Some(from), Some(to)) = (q.from_ts, q.to_ts) {
            if from > to {
                return Err(MemoryError::invalid(
                    "to_ts",
                    format!("{to} is before from_ts {from}"),
                ));
            }
        }
        let limit = q.limit.min(MAX_QUERY_LIMIT);
        let filter = Filter {
            glyph: q.glyph.as_deref(),
            kind: q.kind.as_deref(),
            from_ts: q.from_ts,
            to_ts: q.to_ts,
            after_id: q.after_id,
            up_to_id: None,
        };
        self.select(&filter, limit)
    }

    /// How many events are stored.
    pub fn count(&self) -> Result<u64> {
        self.lock()
            .conn
            .prepare_cached("SELECT COUNT(*) FROM events")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(MemoryError::sqlite(&self.path, "count events"))
    }

    /// Replay: call `f` on every event with id > `after_id` that is stored
    /// when the fold starts, in id order, threading the state from `init`.
    /// Reads [`FOLD_PAGE_SIZE`] events at a time and holds no lock while `f`
    /// runs, so `f` may use the store.
    pub fn fold<T>(&self, after_id: i64, init: T, mut f: impl FnMut(T, &Event) -> T) -> Result<T> {
        let end: Option<i64> = self
            .lock()
            .conn
            .prepare_cached("SELECT MAX(id) FROM events")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(MemoryError::sqlite(&self.path, "read last event"))?;
        let Some(end) = end else {
            return Ok(init);
        };
        let mut state = init;
        let mut cursor = after_id;
        loop {
            let filter = Filter {
                after_id: Some(cursor),
                up_to_id: Some(end),
                ..Filter::default()
            };
            let page = self.select(&filter, FOLD_PAGE_SIZE)?;
            for event in &page {
                debug_assert!(event.id > cursor, "fold out of order at {}", event.id);
                cursor = event.id;
                state = f(state, event);
            }
            if page.len() < FOLD_PAGE_SIZE {
                return Ok(state);
            }
        }
    }

    /// Events matching `filter`, ascending id, at most `limit`.
    fn select(&self, filter: &Filter<'_>, limit: usize) -> Result<Vec<Event>> {
        debug_assert!((1..=MAX_QUERY_LIMIT).contains(&limit));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1");
        let mut args: Vec<(&str, &dyn ToSql)> = Vec::with_capacity(7);
        let conditions: [(&str, &str, Option<&dyn ToSql>); 6] = [
            (
                " AND glyph = :glyph",
                ":glyph",
                filter.glyph.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND kind = :kind",
                ":kind",
                filter.kind.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND ts >= :from_ts",
                ":from_ts",
                filter.from_ts.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND ts < :to_ts",
                ":to_ts",
                filter.to_ts.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND id > :after_id",
                ":after_id",
                filter.after_id.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                " AND id <= :up_to_id",
                ":up_to_id",
                filter.up_to_id.as_ref().map(|v| v as &dyn ToSql),
            ),
        ];
        for (clause, name, value) in conditions {
            if let Some(value) = value {
                sql.push_str(clause);
                args.push((name, value));
            }
        }
        sql.push_str(" ORDER BY id LIMIT :limit");
        args.push((":limit", &limit));
        let path = self.path.as_path();
        let rows = {
            let inner = self.lock();
            let mut stmt = inner
                .conn
                .prepare_cached(&sql)
                .map_err(MemoryError::sqlite(path, "prepare query"))?;
            let rows = stmt
                .query_map(args.as_slice(), StoredRow::read)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(MemoryError::sqlite(path, "query events"))?;
            rows
        };
        rows.into_iter().map(|r| r.into_event(path)).collect()
    }
}

/// The conditions of one SELECT; `None` means no condition.
#[derive(Default)]
struct Filter<'a> {
    glyph: Option<&'a str>,
    kind: Option<&'a str>,
    from_ts: Option<i64>,
    to_ts: Option<i64>,
    after_id: Option<i64>,
    up_to_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, body: serde_json::Value) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            lane: "default".into(),
            glyph: "g1".into(),
            payload_ref: None,
            body,
        }
    }

    fn field_of(err: MemoryError) -> String {
        match err {
            MemoryError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_name_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
        let at_limit = "a".repeat(MAX_KIND_BYTES);
        assert!(check_name("kind", &at_limit, MAX_KIND_BYTES).is_ok());
        let over = "a".repeat(MAX_KIND_BYTES + 1);
        assert_eq!(
            field_of(check_name("kind", &over, MAX_KIND_BYTES).unwrap_err()),
            "kind"
        );
    }

    #[test]
    fn names_accept_only_lowercase_digits_underscore_dot_and_dash() {
        assert!(check_name("lane", "think.plan_v2-a", MAX_LANE_BYTES).is_ok());
        for bad in ["", "Think", "a b", "a/b", "é", "a\n"] {
            assert_eq!(
                field_of(check_name("lane", bad, MAX_LANE_BYTES).unwrap_err()),
                "lane",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn glyph_may_be_empty_or_unicode_but_not_hold_control_characters() {
        assert!(check_glyph("glyph", "").is_ok());
        assert!(check_glyph("glyph", "ψ-glyph ✓").is_ok());
        assert!(check_glyph("glyph", &"g".repeat(MAX_GLYPH_BYTES)).is_ok());
        for bad in [
            "a\tb".to_string(),
            "\u{7f}".into(),
            "g".repeat(MAX_GLYPH_BYTES + 1),
        ] {
            assert_eq!(field_of(check_glyph("glyph", &bad).unwrap_err()), "glyph");
        }
    }

    #[test]
    fn payload_ref_is_bounded_at_its_limit() {
        let mut e = event("think", json!({}));
        e.payload_ref = Some("r".repeat(MAX_PAYLOAD_REF_BYTES));
        assert!(validate(&e).is_ok());
        e.payload_ref = Some("r".repeat(MAX_PAYLOAD_REF_BYTES + 1));
        assert_eq!(field_of(validate(&e).unwrap_err()), "payload_ref");
    }

    #[test]
    fn body_must_be_an_object() {
        for body in [json!(null), json!(1), json!("x"), json!([1]), json!(true)] {
            assert_eq!(
                field_of(validate(&event("think", body)).unwrap_err()),
                "body"
            );
        }
    }

    #[test]
    fn body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
        // {"x":"..."} is 8 bytes of framing around the string.
        let fill = "a".repeat(MAX_BODY_BYTES - 8);
        let body = validate(&event("think", json!({ "x": fill }))).unwrap();
        assert_eq!(body.len(), MAX_BODY_BYTES);
        let fill = "a".repeat(MAX_BODY_BYTES - 7);
        assert_eq!(
            field_of(validate(&event("think", json!({ "x": fill }))).unwrap_err()),
            "body"
        );
    }

    #[test]
    fn default_query_returns_at_most_the_default_limit() {
        assert_eq!(EventQuery::default().limit, DEFAULT_QUERY_LIMIT);
    }
}
