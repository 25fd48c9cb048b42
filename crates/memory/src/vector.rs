//! Vector recall (SPEC M2): an HNSW index of unit vectors, persisted on disk,
//! searched by cosine similarity with filters by kind and lane.
//!
//! ```text
//! DIR/vectors.sqlite   the source of truth
//!   meta(key TEXT PRIMARY KEY, value TEXT)   schema_version, dims, saved_index
//!   vectors(key INTEGER PRIMARY KEY, kind TEXT, lane TEXT, vector BLOB)
//!   index vectors(kind, lane)                covers the label scan on open
//! DIR/vectors.usearch  the HNSW graph and vectors (usearch format): a cache
//! ```
//!
//! `vector` is `dims` little-endian f32, already scaled to unit length, so
//! the inner product is the cosine similarity. `saved_index` records the
//! count, highest key and CRC-32C of the index file as last saved; the file is
//! used only when it matches them, and rebuilt from SQLite otherwise.

use crate::error::{MemoryError, Result};
use crate::events::{check_name, MAX_KIND_BYTES, MAX_LANE_BYTES};
use crate::wal::{Checkpointer, WalConfig};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// HNSW connectivity M: links per node on the upper layers (2·M on the
/// base layer). 16 is the usual choice for 100–1000-d embeddings: recall
/// ≥ 0.95 at a moderate `ef`, while 32 would double graph memory and build
/// time for a point or two of recall.
pub const CONNECTIVITY: usize = 16;
/// HNSW `ef_construction`: candidates kept while linking a new node. 128
/// builds a graph good enough that search, not build, sets the recall.
pub const EXPANSION_ADD: usize = 128;
/// Default HNSW `ef_search` (raised to `k` when `k` is larger): recall@10
/// 0.97 on the 1 M × 384 benchmark (`benches/vector_bench.sh`), which first
/// passes 0.95 at 48; [`VectorIndex::set_ef_search`] changes it.
pub const EXPANSION_SEARCH: usize = 64;
/// How the graph holds vectors: bfloat16. Half the memory of f32, and on
/// CPUs with AVX512-BF16 (Zen 4, Sapphire Rapids) a native dot product:
/// about 2× the queries/s of f32 at the same recall@10 on the benchmark.
/// Scores are then within about 1e-3 of the exact cosine; SQLite keeps the
/// exact f32 vectors.
const QUANTIZATION: ScalarKind = ScalarKind::BF16;
/// Largest `ef_search` accepted.
pub const MAX_EXPANSION_SEARCH: usize = 4096;
/// Largest vector dimension accepted (MiniLM has 384).
pub const MAX_DIMS: usize = 4096;
/// Most hits one search returns.
pub const MAX_K: usize = 1000;
/// Most vectors one [`VectorIndex::add_batch`] takes.
pub const MAX_BATCH: usize = 100_000;
/// Most searches (and the one add) running at once; usearch keeps one
/// scratch context per concurrent call, and callers beyond this wait.
pub const MAX_CONCURRENT_OPS: usize = 64;
/// The schema version of `vectors.sqlite` this build writes and reads.
pub const VECTOR_SCHEMA_VERSION: u32 = 1;

/// Rows decoded per step when (re)building the index from SQLite.
const REBUILD_CHUNK: usize = 16_384;
/// Capacity reserved in a new index; it then grows by doubling.
const INITIAL_CAPACITY: usize = 1024;
const DB_FILE: &str = "vectors.sqlite";
const INDEX_FILE: &str = "vectors.usearch";
const INDEX_TMP_FILE: &str = "vectors.usearch.tmp";
const SCHEMA_KEY: &str = "schema_version";
const DIMS_KEY: &str = "dims";
const SAVED_KEY: &str = "saved_index";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which vectors a search may return: those matching every filter that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub kind: Option<String>,
    pub lane: Option<String>,
}

/// A search result: the caller's key and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub key: i64,
    /// In [-1, 1] (to about 1e-3: the graph holds bfloat16); higher is closer.
    pub score: f32,
}

/// A vector to store with [`VectorIndex::add_batch`].
#[derive(Debug, Clone, Copy)]
pub struct NewVector<'a> {
    /// The caller's id, e.g. an episodic event id; ≥ 0 and unique.
    pub key: i64,
    /// `dims` finite values, not all zero; stored scaled to unit length.
    pub vector: &'a [f32],
    /// Same alphabet and limit as an event's kind.
    pub kind: &'a str,
    /// Same alphabet and limit as an event's lane.
    pub lane: &'a str,
}

/// Where [`VectorIndex::open`] got its index from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The saved index file matched SQLite and was loaded as it is.
    Loaded,
    /// The saved file lacked only rows with keys above its highest key
    /// (new rows after the last save); those `added` rows were indexed.
    CaughtUp { added: usize },
    /// The file was missing, stale or corrupt (`reason`); the index was
    /// rebuilt from SQLite.
    Rebuilt { reason: String },
}

/// What the index file held when it was last saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    count: usize,
    /// -1 when empty.
    max_key: i64,
    crc32c: u32,
}

/// The kind and lane of every stored key, as ids into one table of names:
/// the filter predicate runs inside the HNSW search and must be cheap.
#[derive(Default)]
struct Labels {
    names: HashMap<String, u32>,
    of_key: HashMap<i64, (u32, u32)>,
}

impl Labels {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.insert(name.to_owned(), id);
        id
    }

    fn insert(&mut self, key: i64, kind: &str, lane: &str) {
        let labels = (self.intern(kind), self.intern(lane));
        self.of_key.insert(key, labels);
    }

    /// `Some(None)` for no condition, `Some(Some(id))` for a known name,
    /// `None` for a name no vector has (nothing can match).
    fn condition(&self, name: Option<&str>) -> Option<Option<u32>> {
        match name {
            None => Some(None),
            Some(name) => self.names.get(name).map(|&id| Some(id)),
        }
    }
}

/// Free usearch scratch contexts. usearch fails a call rather than wait
/// when every context is taken, so each call takes a slot here first.
struct Slots {
    free: Mutex<usize>,
    released: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn acquire(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.released.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// An embedded approximate-nearest-neighbour index (HNSW, via usearch) of
/// unit vectors of one dimension, on disk in one directory. Safe to share
/// between threads: searches run concurrently with each other and with
/// the one add, remove or save in progress (those are serialised). One
/// `VectorIndex` per directory at a time.
pub struct VectorIndex {
    dims: usize,
    db_path: PathBuf,
    index_path: PathBuf,
    /// Held by every writer (add, remove, save) for its whole operation.
    db: Mutex<Connection>,
    /// Read-locked for add and search (usearch runs them concurrently),
    /// write-locked to grow, remove, load or change `ef`.
    index: RwLock<Index>,
    labels: RwLock<Labels>,
    slots: Slots,
    ef_search: AtomicUsize,
    /// Changed since the index file was last written.
    dirty: AtomicBool,
    recovery: Recovery,
    /// Checkpoints `vectors.sqlite`'s WAL on its own thread, so adds never do.
    _checkpointer: Checkpointer,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("db_path", &self.db_path)
            .field("dims", &self.dims)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<VectorIndex>();
};

/// Check `vector` (length `dims`, finite, not zero) and append it, scaled to
/// unit length, to `out`. `what` names it in the error, e.g. "key 7".
fn push_unit(
    out: &mut Vec<f32>,
    field: &str,
    what: &str,
    vector: &[f32],
    dims: usize,
) -> Result<()> {
    let bad = |reason: String| Err(MemoryError::invalid(field, format!("{what}: {reason}")));
    if vector.len() != dims {
        return bad(format!("length {} is not dims = {dims}", vector.len()));
    }
    if let Some((i, x)) = vector.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return bad(format!("element {i} is {x}; every element must be finite"));
    }
    // f64 so that tiny or huge elements neither underflow nor overflow.
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return bad("all elements are zero; a direction is needed".into());
    }
    out.extend(vector.iter().map(|&x| (f64::from(x) / norm) as f32));
    Ok(())
}

fn check_key(key: i64) -> Result<()> {
    if key < 0 {
        return Err(MemoryError::invalid(
            "key",
            format!("{key} is negative; keys are ids ≥ 0"),
        ));
    }
    Ok(())
}

fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// CRC-32C of a whole file, read in 1 MiB blocks.
fn checksum(path: &Path) -> std::io::Result<u32> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0;
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(crc),
            n => crc = crc32c::crc32c_append(crc, &buf[..n]),
        }
    }
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        MemoryError::invalid(
            "dir",
            format!("{} is not valid UTF-8, which usearch needs", path.display()),
        )
    })
}

/// Open `vectors.sqlite`, creating its schema, and check its schema version
/// and dimension.
fn open_db(path: &Path, dims: usize) -> Result<Connection> {
    let sql = MemoryError::sqlite;
    let mut conn = Connection::open(path).map_err(sql(path, "open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql(path, "set busy timeout"))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(sql(path, "set journal mode"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "begin schema transaction"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS vectors (
           key INTEGER PRIMARY KEY,
           kind TEXT NOT NULL,
           lane TEXT NOT NULL,
           vector BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS vectors_labels ON vectors (kind, lane);",
    )
    .map_err(sql(path, "create tables"))?;
    let found = |key: &str| -> Result<Option<String>> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql(path, "read meta"))
    };
    match found(SCHEMA_KEY)? {
        Some(v) if v != VECTOR_SCHEMA_VERSION.to_string() => {
            return Err(MemoryError::Schema {
                path: path.display().to_string(),
                found: v,
                expected: VECTOR_SCHEMA_VERSION,
            })
        }
        _ => {}
    }
    match found(DIMS_KEY)? {
        Some(v) if v != dims.to_string() => {
            return Err(MemoryError::invalid(
                "dims",
                format!(
                    "{} holds {v}-dimensional vectors, not {dims}; open it with dims = {v} \
                     or use another directory",
                    path.display()
                ),
            ))
        }
        _ => {}
    }
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2), (?3, ?4)",
        params![
            SCHEMA_KEY,
            VECTOR_SCHEMA_VERSION.to_string(),
            DIMS_KEY,
            dims.to_string()
        ],
    )
    .map_err(sql(path, "record schema"))?;
    tx.commit().map_err(sql(path, "commit schema"))?;
    Ok(conn)
}

fn load_labels(conn: &Connection, path: &Path) -> Result<Labels> {
    let mut labels = Labels::default();
    let mut stmt = conn
        .prepare("SELECT key, kind, lane FROM vectors")
        .map_err(MemoryError::sqlite(path, "prepare label scan"))?;
    let mut rows = stmt
        .query([])
        .map_err(MemoryError::sqlite(path, "scan labels"))?;
    while let Some(row) = rows
        .next()
        .map_err(MemoryError::sqlite(path, "scan labels"))?
    {
        let (key, kind, lane): (i64, String, String) =
            (|| Ok::<_, rusqlite::Error>((row.get(0)?, row.get(1)?, row.get(2)?)))()
                .map_err(MemoryError::sqlite(path, "read labels"))?;
        labels.insert(key, &kind, &lane);
    }
    Ok(labels)
}

/// Row count and highest key (-1 when empty).
fn stats(conn: &Connection, path: &Path) -> Result<(usize, i64)> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(MAX(key), -1) FROM vectors",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)),
    )
    .map(|(n, max)| (usize::try_from(n).unwrap_or(0), max))
    .map_err(MemoryError::sqlite(path, "count vectors"))
}

impl VectorIndex {
    /// Open (or create) the index in `dir` for `dims`-dimensional vectors.
    /// Loads `vectors.usearch` when it matches SQLite, indexes only the new
    /// rows when the file is just behind, and rebuilds it from SQLite when
    /// it is missing, stale or corrupt ([`VectorIndex::recovery`] says
    /// which). A `dims` other than the store's is an error naming `dims`.
    pub fn open(dir: &Path, dims: usize) -> Result<VectorIndex> {
        if !(1..=MAX_DIMS).contains(&dims) {
            return Err(MemoryError::invalid(
                "dims",
                format!("{dims} is outside 1..={MAX_DIMS}"),
            ));
        }
        fs::create_dir_all(dir).map_err(MemoryError::io(dir, "create directory"))?;
        let db_path = dir.join(DB_FILE);
        let index_path = dir.join(INDEX_FILE);
        utf8(&index_path)?;
        let conn = open_db(&db_path, dims)?;
        let wal = WalConfig::default();
        wal.apply(&conn, &db_path)?;
        let checkpointer = Checkpointer::start(&db_path, &wal)?;
        let labels = load_labels(&conn, &db_path)?;
        let mut this = VectorIndex {
            dims,
            index: RwLock::new(Self::new_index(dims, &index_path)?),
            db_path,
            index_path,
            db: Mutex::new(conn),
            labels: RwLock::new(labels),
            slots: Slots {
                free: Mutex::new(MAX_CONCURRENT_OPS),
                released: Condvar::new(),
            },
            ef_search: AtomicUsize::new(EXPANSION_SEARCH),
            dirty: AtomicBool::new(false),
            recovery: Recovery::Loaded,
            _checkpointer: checkpointer,
        };
        this.recovery = this.recover()?;
        this.dirty
            .store(this.recovery != Recovery::Loaded, Ordering::Release);
        Ok(this)
    }

    fn new_index(dims: usize, path: &Path) -> Result<Index> {
        let options = IndexOptions {
            dimensions: dims,
            metric: MetricKind::IP,
            quantization: QUANTIZATION,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(MemoryError::index(path, "create"))?;
        index
            .reserve_capacity_and_threads(INITIAL_CAPACITY, MAX_CONCURRENT_OPS)
            .map_err(MemoryError::index(path, "reserve"))?;
        Ok(index)
    }

    /// Bring the (empty) in-memory index up to SQLite from the saved file,
    /// or from scratch.
    fn recover(&self) -> Result<Recovery> {
        let conn = lock(&self.db);
        let (count, max_key) = stats(&conn, &self.db_path)?;
        let saved: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [SAVED_KEY], |r| {
                r.get(0)
            })
            .optional()
            .map_err(MemoryError::sqlite(
                &self.db_path,
                "read saved index record",
            ))?;
        let reason = match saved.map(|s| serde_json::from_str::<Saved>(&s)) {
            None => "no saved index is recorded".to_owned(),
            Some(Err(e)) => format!("the saved index record is unreadable: {e}"),
            Some(Ok(saved)) => match self.load(&saved) {
                Err(reason) => reason,
                Ok(()) if (saved.count, saved.max_key) == (count, max_key) => {
                    return Ok(Recovery::Loaded)
                }
                Ok(()) => {
                    let below: i64 = conn
                        .query_row(
                            "SELECT COUNT(*) FROM vectors WHERE key <= ?1",
                            [saved.max_key],
                            |r| r.get(0),
                        )
                        .map_err(MemoryError::sqlite(&self.db_path, "count vectors"))?;
                    if usize::try_from(below).ok() == Some(saved.count) {
                        let added = self.index_rows(&conn, saved.max_key)?;
                        return Ok(Recovery::CaughtUp { added });
                    }
                    format!(
                        "the index file holds {} vectors up to key {}, but {DB_FILE} has \
                         {below} up to that key",
                        saved.count, saved.max_key
                    )
                }
            },
        };
        *write(&self.index) = Self::new_index(self.dims, &self.index_path)?;
        self.index_rows(&conn, -1)?;
        Ok(Recovery::Rebuilt { reason })
    }

    /// Load the index file if its checksum, dimension and size are those
    /// recorded in `saved`; the reason otherwise.
    fn load(&self, saved: &Saved) -> std::result::Result<(), String> {
        let crc = checksum(&self.index_path)
            .map_err(|e| format!("the index file cannot be read: {e}"))?;
        if crc != saved.crc32c {
            return Err(format!(
                "the index file's CRC-32C {crc:08x} is not the saved {:08x}",
                saved.crc32c
            ));
        }
        let index = write(&self.index);
        let path = self.index_path.to_str().unwrap_or_default();
        index
            .load(path)
            .map_err(|e| format!("usearch cannot load the index file: {e}"))?;
        let (dims, size, scalar) = (index.dimensions(), index.size(), index.scalar_kind());
        if (dims, size, scalar) != (self.dims, saved.count, QUANTIZATION) {
            return Err(format!(
                "the index file holds {size} vectors of {dims} × {scalar:?}, not {} of {} × \
                 {QUANTIZATION:?}",
                saved.count, self.dims
            ));
        }
        index.change_expansion_add(EXPANSION_ADD);
        index.change_expansion_search(self.ef_search.load(Ordering::Acquire));
        index
            .reserve_capacity_and_threads(size.max(INITIAL_CAPACITY), MAX_CONCURRENT_OPS)
            .map_err(|e| format!("usearch cannot reserve capacity: {e}"))
    }

    /// Index every row with key > `after`, in key order and in chunks;
    /// returns how many.
    fn index_rows(&self, conn: &Connection, after: i64) -> Result<usize> {
        let sql = MemoryError::sqlite;
        let path = self.db_path.as_path();
        let mut stmt = conn
            .prepare("SELECT key, vector FROM vectors WHERE key > ?1 ORDER BY key")
            .map_err(sql(path, "prepare vector scan"))?;
        let mut rows = stmt.query([after]).map_err(sql(path, "scan vectors"))?;
        let mut keys = Vec::with_capacity(REBUILD_CHUNK);
        let mut flat = Vec::with_capacity(REBUILD_CHUNK * self.dims);
        let mut total = 0;
        loop {
            let row = rows.next().map_err(sql(path, "scan vectors"))?;
            if let Some(row) = row {
                let key: i64 = row.get(0).map_err(sql(path, "read vector"))?;
                let blob = row
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_blob()?))
                    .map_err(sql(path, "read vector"))?;
                if blob.len() != self.dims * 4 {
                    return Err(MemoryError::Corrupt {
                        path: path.display().to_string(),
                        id: key,
                        reason: format!(
                            "vector has {} bytes, not {} (dims {} × 4)",
                            blob.len(),
                            self.dims * 4,
                            self.dims
                        ),
                    });
                }
                keys.push(key);
                flat.extend(
                    blob.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            if keys.len() == REBUILD_CHUNK || (row.is_none() && !keys.is_empty()) {
                self.insert(&keys, &flat)?;
                total += keys.len();
                keys.clear();
                flat.clear();
            }
            if row.is_none() {
                return Ok(total);
            }
        }
    }

    /// Grow the index, if needed, to hold `extra` more vectors.
    fn reserve(&self, extra: usize) -> Result<()> {
        let needed = {
            let index = read(&self.index);
            let needed = index.size() + extra;
            if needed <= index.capacity() {
                return Ok(());
            }
            needed
        };
        let index = write(&self.index);
        let target = needed.max(index.capacity().saturating_mul(2));
        index
            .reserve_capacity_and_threads(target, MAX_CONCURRENT_OPS)
            .map_err(MemoryError::index(&self.index_path, "reserve"))?;
        if index.capacity() < needed {
            return Err(MemoryError::Index {
                path: self.index_path.display().to_string(),
                operation: "reserve",
                reason: format!("capacity for {needed} vectors could not be allocated"),
            });
        }
        Ok(())
    }

    /// Add unit vectors (`flat` holds `keys.len()` of them) to the HNSW
    /// index, one at a time: usearch 2.26's concurrent `add` can leave
    /// nodes that search never reaches (unum-cloud/USearch issue #735, seen
    /// here too), so adds are serialised by the `db` lock, even in bulk.
    /// Searches still run alongside.
    fn insert(&self, keys: &[i64], flat: &[f32]) -> Result<()> {
        debug_assert_eq!(keys.len() * self.dims, flat.len());
        self.reserve(keys.len())?;
        let index = read(&self.index);
        let _slot = self.slots.acquire();
        for (&key, vector) in keys.iter().zip(flat.chunks_exact(self.dims)) {
            index
                .add(key as u64, vector)
                .map_err(MemoryError::index(&self.index_path, "add"))?;
        }
        Ok(())
    }

    /// Take `keys` back out of the in-memory index and labels after a
    /// failed add.
    fn forget(&self, keys: &[i64]) {
        let index = write(&self.index);
        let mut labels = write(&self.labels);
        for &key in keys {
            // The key may not have been added; either way it must be gone.
            let _ = index.remove(key as u64);
            labels.of_key.remove(&key);
        }
    }

    /// How the index was obtained when this store was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The dimension of every vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How many vectors are stored.
    pub fn len(&self) -> usize {
        read(&self.labels).of_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Store one vector under `key`; see [`VectorIndex::add_batch`].
    pub fn add(&self, key: i64, vector: &[f32], kind: &str, lane: &str) -> Result<()> {
        self.add_batch(&[NewVector {
            key,
            vector,
            kind,
            lane,
        }])
    }

    /// Store up to [`MAX_BATCH`] vectors in one SQLite transaction and index
    /// them: all or none. Each is checked (key ≥ 0 and not yet
    /// stored nor repeated, `dims` finite values not all zero, kind and
    /// lane names) and scaled to unit length.
    pub fn add_batch(&self, batch: &[NewVector<'_>]) -> Result<()> {
        if batch.len() > MAX_BATCH {
            return Err(MemoryError::invalid(
                "batch",
                format!(
                    "{} vectors exceeds the limit of {MAX_BATCH}; split it",
                    batch.len()
                ),
            ));
        }
        let mut keys = Vec::with_capacity(batch.len());
        let mut flat = Vec::with_capacity(batch.len() * self.dims);
        let mut seen = HashSet::with_capacity(batch.len());
        for v in batch {
            check_key(v.key)?;
            check_name("kind", v.kind, MAX_KIND_BYTES)?;
            check_name("lane", v.lane, MAX_LANE_BYTES)?;
            push_unit(
                &mut flat,
                "vector",
                &format!("key {}", v.key),
                v.vector,
                self.dims,
            )?;
            if !seen.insert(v.key) {
                return Err(MemoryError::invalid(
                    "key",
                    format!("{} appears twice in the batch", v.key),
                ));
            }
            keys.push(v.key);
        }
        let sql = MemoryError::sqlite;
        let path = self.db_path.as_path();
        let mut conn = lock(&self.db);
        if let Some(key) = {
            let labels = read(&self.labels);
            keys.iter().find(|k| labels.of_key.contains_key(k)).copied()
        } {
            return Err(MemoryError::invalid(
                "key",
                format!("{key} is already stored; remove it first to replace its vector"),
            ));
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin add"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO vectors (key, kind, lane, vector) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql(path, "prepare add"))?;
            for (v, unit) in batch.iter().zip(flat.chunks_exact(self.dims)) {
                stmt.execute(params![v.key, v.kind, v.lane, encode(unit)])
                    .map_err(sql(path, "insert vector"))?;
            }
        }
        {
            let mut labels = write(&self.labels);
            for v in batch {
                labels.insert(v.key, v.kind, v.lane);
            }
        }
        let done = self
            .insert(&keys, &flat)
            .and_then(|()| tx.commit().map_err(sql(path, "commit add")));
        match done {
            Ok(()) => self.dirty.store(true, Ordering::Release),
            Err(_) => self.forget(&keys),
        }
        done
    }

    /// Remove the vector stored under `key`; `Ok(false)` if there is none.
    pub fn remove(&self, key: i64) -> Result<bool> {
        let sql = MemoryError::sqlite;
        let path = self.db_path.as_path();
        let mut conn = lock(&self.db);
        let tx = conn.transaction().map_err(sql(path, "begin remove"))?;
        if tx
            .execute("DELETE FROM vectors WHERE key = ?1", [key])
            .map_err(sql(path, "delete vector"))?
            == 0
        {
            return Ok(false);
        }
        // The saved file still holds the key: it must not be loaded again.
        tx.execute("DELETE FROM meta WHERE key = ?1", [SAVED_KEY])
            .map_err(sql(path, "invalidate saved index"))?;
        tx.commit().map_err(sql(path, "commit remove"))?;
        self.dirty.store(true, Ordering::Release);
        write(&self.labels).of_key.remove(&key);
        write(&self.index)
            .remove(key as u64)
            .map_err(MemoryError::index(&self.index_path, "remove"))?;
        Ok(true)
    }

    /// Set HNSW `ef_search` (1..=[`MAX_EXPANSION_SEARCH`]): higher finds
    /// more of the true nearest neighbours, more slowly. Not persisted.
    pub fn set_ef_search(&self, ef: usize) -> Result<()> {
        if !(1..=MAX_EXPANSION_SEARCH).contains(&ef) {
            return Err(MemoryError::invalid(
                "ef_search",
                format!("{ef} is outside 1..={MAX_EXPANSION_SEARCH}"),
            ));
        }
        let index = write(&self.index);
        index.change_expansion_search(ef);
        self.ef_search.store(ef, Ordering::Release);
        Ok(())
    }

    /// The `k` (1..=[`MAX_K`]) stored vectors most similar to `query` that
    /// match `filter`, by descending cosine similarity. Approximate: HNSW
    /// may miss a true neighbour, and a filter that few vectors match may
    /// return fewer than `k` hits.
    pub fn search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>> {
        if !(1..=MAX_K).contains(&k) {
            return Err(MemoryError::invalid(
                "k",
                format!("{k} is outside 1..={MAX_K}"),
            ));
        }
        if let Some(kind) = &filter.kind {
            check_name("kind", kind, MAX_KIND_BYTES)?;
        }
        if let Some(lane) = &filter.lane {
            check_name("lane", lane, MAX_LANE_BYTES)?;
        }
        let mut unit = Vec::with_capacity(self.dims);
        push_unit(&mut unit, "query", "query", query, self.dims)?;
        let matches = {
            let index = read(&self.index);
            let _slot = self.slots.acquire();
            if filter.kind.is_none() && filter.lane.is_none() {
                index.search(&unit, k)
            } else {
                let labels = read(&self.labels);
                let (Some(kind), Some(lane)) = (
                    labels.condition(filter.kind.as_deref()),
                    labels.condition(filter.lane.as_deref()),
                ) else {
                    return Ok(Vec::new());
                };
                index.filtered_search(&unit, k, |key| {
                    labels.of_key.get(&(key as i64)).is_some_and(|&(kd, ln)| {
                        kind.is_none_or(|x| x == kd) && lane.is_none_or(|x| x == ln)
                    })
                })
            }
        }
        .map_err(MemoryError::index(&self.index_path, "search"))?;
        let mut hits: Vec<Hit> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &distance)| Hit {
                key: key as i64,
                // usearch's inner-product distance is 1 − a·b; bfloat16
                // rounding can take it a little past ±1.
                score: (1.0 - distance).clamp(-1.0, 1.0),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
        Ok(hits)
    }

    /// Write the index file atomically (temporary file, fsync, rename) and
    /// record its count, highest key and checksum, so the next open can
    /// load it instead of rebuilding. Adds and removes wait meanwhile.
    pub fn save(&self) -> Result<()> {
        let conn = lock(&self.db);
        let (count, max_key) = stats(&conn, &self.db_path)?;
        let dir = self.index_path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(INDEX_TMP_FILE);
        {
            let index = read(&self.index);
            if index.size() != count {
                return Err(MemoryError::Index {
                    path: self.index_path.display().to_string(),
                    operation: "save",
                    reason: format!(
                        "the index holds {} vectors but {DB_FILE} {count}; reopen to rebuild it",
                        index.size()
                    ),
                });
            }
            index
                .save(utf8(&tmp)?)
                .map_err(MemoryError::index(&tmp, "write index file"))?;
        }
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(MemoryError::io(&tmp, "sync"))?;
        let crc32c = checksum(&tmp).map_err(MemoryError::io(&tmp, "checksum"))?;
        fs::rename(&tmp, &self.index_path).map_err(MemoryError::io(&self.index_path, "rename"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(MemoryError::io(dir, "sync directory"))?;
        let saved = serde_json::to_string(&Saved {
            count,
            max_key,
            crc32c,
        })
        .map_err(|e| MemoryError::invalid("saved_index", e.to_string()))?;
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            [SAVED_KEY, saved.as_str()],
        )
        .map_err(MemoryError::sqlite(&self.db_path, "record saved index"))?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// Save (if anything changed) and close, reporting a failed save that
    /// `Drop` would have to ignore.
    pub fn close(self) -> Result<()> {
        let saved = if self.dirty.load(Ordering::Acquire) {
            self.save()
        } else {
            Ok(())
        };
        self.dirty.store(false, Ordering::Release);
        saved
    }
}

impl Drop for VectorIndex {
    /// Save if anything changed; a failure is ignored here (the next open
    /// rebuilds from SQLite), so call [`VectorIndex::close`] to see it.
    fn drop(&mut self) {
        if self.dirty.load(Ordering::Acquire) {
            let _ = self.save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: MemoryError) -> String {
        match err {
            MemoryError::Invalid { field, reason } => format!("{field}: {reason}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn push_unit_scales_to_unit_length() {
        let mut out = Vec::new();
        push_unit(&mut out, "vector", "key 1", &[3.0, 4.0], 2).unwrap();
        assert_eq!(out, vec![0.6, 0.8]);
    }

    #[test]
    fn push_unit_keeps_direction_of_tiny_and_huge_vectors() {
        for x in [1e-30_f32, 1e30] {
            let mut out = Vec::new();
            push_unit(&mut out, "vector", "key 1", &[x, x], 2).unwrap();
            let norm: f32 = out.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-6, "norm {norm} for {x}");
        }
    }

    #[test]
    fn push_unit_rejects_wrong_length_non_finite_and_zero_naming_the_field() {
        let cases: [(&[f32], &str); 5] = [
            (&[1.0], "length 1 is not dims = 2"),
            (&[1.0, f32::NAN], "element 1 is NaN"),
            (&[f32::INFINITY, 1.0], "element 0 is inf"),
            (&[0.0, 0.0], "all elements are zero"),
            (&[-0.0, 0.0], "all elements are zero"),
        ];
        for (vector, expected) in cases {
            let mut out = Vec::new();
            let err = push_unit(&mut out, "vector", "key 9", vector, 2).unwrap_err();
            let message = field_of(err);
            assert!(
                message.starts_with("vector: key 9: ") && message.contains(expected),
                "{message:?} should name the field and say {expected:?}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn encoded_vectors_are_little_endian_f32() {
        assert_eq!(encode(&[1.0, -2.5]), [0, 0, 128, 63, 0, 0, 32, 192]);
    }

    #[test]
    fn labels_intern_each_name_once_and_unknown_names_match_nothing() {
        let mut labels = Labels::default();
        labels.insert(1, "think", "prod");
        labels.insert(2, "think", "candidate");
        labels.insert(3, "prod", "prod");
        assert_eq!(labels.names.len(), 3);
        assert_eq!(labels.of_key[&1].0, labels.of_key[&2].0);
        assert_eq!(labels.of_key[&3].0, labels.of_key[&1].1);
        assert_eq!(labels.condition(None), Some(None));
        assert_eq!(
            labels.condition(Some("think")),
            Some(Some(labels.of_key[&1].0))
        );
        assert_eq!(labels.condition(Some("tool")), None);
    }

    #[test]
    fn negative_keys_are_rejected() {
        assert!(field_of(check_key(-1).unwrap_err()).starts_with("key: -1"));
        assert!(check_key(0).is_ok());
    }

    #[test]
    fn slots_bound_concurrent_calls_and_are_returned_on_drop() {
        let slots = Slots {
            free: Mutex::new(2),
            released: Condvar::new(),
        };
        let a = slots.acquire();
        let b = slots.acquire();
        assert_eq!(*lock(&slots.free), 0);
        drop(a);
        let _c = slots.acquire();
        drop(b);
        assert_eq!(*lock(&slots.free), 1);
    }
}
