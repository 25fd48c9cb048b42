//! `capsule-store`: agents pass IDs, not payloads; the store resolves an
//! ID to verified bytes (SPEC section S).
//!
//! **Owns:** content-addressed object IDs ([`ObjectId`], S1); the object
//! store with its SQLite index, typed JSON artifacts and raw blobs
//! ([`Store`], S2); the signed, MAC'd 1 MiB cube format with its byte
//! layout ([`cube`], S3); keys and encryption at rest behind
//! [`KeyProvider`] ([`keyring`], S4); quarantine with a ledger entry (S5);
//! the ID-only wire envelope ([`Envelope`], S6).
//!
//! **Must never:** return a byte it has not verified; serve a quarantined
//! cube; write plaintext of an encrypted namespace to disk; accept an ID it
//! cannot parse back to itself; put a payload in an envelope; know about
//! HTTP.
//!
//! **Invariants:** an object's identity is its content hash; the same
//! content has the same hash on any day and is stored once per namespace;
//! `parse(format(id)) == id`; every cube is bound to its object, position
//! and namespace by its signed header.
//!
//! The cube format is written here (no crate offers this layout); it uses
//! `hmac`/`sha2` for vertex MACs, the ledger's RFC 6962 Merkle code for the
//! root, `ed25519-dalek` for signatures, `chacha20poly1305` for
//! XChaCha20-Poly1305, `blake3` for content hashes.

#![forbid(unsafe_code)]

pub mod cube;
pub mod envelope;
pub mod error;
pub mod id;
pub mod keyring;
pub mod store;

pub use envelope::Envelope;
pub use error::{Result, StoreError};
pub use id::{ContentHash, Day, ObjectId};
pub use keyring::{FileKeyring, KeyProvider};
pub use store::{Kind, ObjectInfo, Store};
