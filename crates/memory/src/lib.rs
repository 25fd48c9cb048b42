//! `capsule-memory`: what the agent remembers (SPEC section M).
//!
//! **Owns:** the episodic events of SPEC M1 ({id, ts, kind, lane, glyph,
//! payload ref, body}); their SQLite store with its schema and schema
//! version ([`EventStore`]); queries by glyph, kind and time window; and
//! replay, which folds the events in id order into any state
//! ([`EventStore::fold`]).
//!
//! **Must never:** do network I/O or know about HTTP, gRPC or the CLI;
//! rewrite an event in place. Events are append-only; the one exception is
//! [`EventStore::retract`], which removes the *last* event to undo an
//! operation that failed after it was remembered.
//!
//! **Invariants:** ids are strictly increasing and never reused, not even
//! after a retract (SQLite `AUTOINCREMENT`); `ts` is in nanoseconds since the
//! Unix epoch and never decreases within one [`EventStore`]; `body` is
//! always a JSON object of at most [`MAX_BODY_BYTES`] serialized bytes;
//! `kind` and `lane` are short lowercase names and `glyph` has no control
//! characters (see the `MAX_*` limits).
//!
//! The store runs SQLite in WAL mode with `synchronous = NORMAL`: a crash of
//! the machine may lose the last few events, never corrupt the file. The
//! audit ledger, not this store, is the durable record of what happened.
//! Both SQLite files here are checkpointed by a background thread
//! (`wal.rs`), so an append or add never waits for an fsync; the log is
//! bounded by a commit-path checkpoint past [`WalConfig::backstop_pages`].
//!
//! **Vector recall** (SPEC M2, [`VectorIndex`]) keeps unit-length
//! embeddings (384-d for MiniLM) in a SQLite table, the source of truth,
//! and an HNSW graph over them in `vectors.usearch`, a cache that is loaded
//! only when its checksum, count and highest key match SQLite and is
//! otherwise rebuilt. Search returns the top-k keys by cosine similarity,
//! filtered by kind and lane. The graph comes from the usearch crate
//! (Unum's C++ HNSW, through cxx) rather than a hand-written HNSW: it is
//! maintained, SIMD-accelerated, lets searches run during an add,
//! supports filtered search, soft deletion and a stable file format, and
//! `benches/vector_bench.sh` measures it against hnswlib on 1 M × 384
//! vectors. Its `unsafe` stays inside that crate; this one still forbids
//! it. The workspace builds a vendored copy of usearch 2.26.6
//! (`vendor/usearch`) whose search prefetches the vectors and nodes it is
//! about to visit: upstream's dense index passes a no-op prefetch hook,
//! and at 1 M vectors that left it at 0.9× hnswlib's queries/s. The patch
//! and its measurements are in `vendor/usearch/CAPSULE-PATCH.md`.

#![forbid(unsafe_code)]

pub mod error;
pub mod events;
pub mod vector;
pub mod wal;

pub use error::{MemoryError, Result};
pub use events::{
    Event, EventQuery, EventStore, NewEvent, DEFAULT_QUERY_LIMIT, FOLD_PAGE_SIZE, MAX_BODY_BYTES,
    MAX_GLYPH_BYTES, MAX_KIND_BYTES, MAX_LANE_BYTES, MAX_PAYLOAD_REF_BYTES, MAX_QUERY_LIMIT,
    SCHEMA_VERSION,
};
pub use vector::{
    Filter, Hit, NewVector, Recovery, VectorIndex, CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH,
    MAX_BATCH, MAX_CONCURRENT_OPS, MAX_DIMS, MAX_EXPANSION_SEARCH, MAX_K, VECTOR_SCHEMA_VERSION,
};
pub use wal::{WalConfig, MAX_BACKSTOP_PAGES};
