//! `capsule-store`: agents pass IDs, not payloads; the store resolves an
//! ID to verified bytes (SPEC section S).
//!
//! **Owns:** content-addressed object IDs ([`ObjectId`], S1); the object
//! store with its SQLite index, typed JSON artifacts and raw blobs
//! ([`Store`], S2); the signed, MAC'd 1 MiB cube format with its byte
//! layout ([`cube`], S3); keys and encryption at rest behind
//! [`KeyProvider`] ([`keyring`], S4); quarantine with a ledger entry (S5);
//! the ID-only wire envelope ([`Envelope`], S6); deletion on a policy
//! decision ([`Store::delete`]).
//!
//! **Must never:** return a byte it has not verified; serve a quarantined
//! cube; write plaintext of an encrypted namespace to disk; accept an ID it
//! cannot parse back to itself; put a payload in an envelope; delete an
//! object on a ledger entry that the policy engine does not re-decide
//! identically now, while the kill switch is armed, or on a decision
//! already used; know about HTTP.
//!
//! **Invariants:** an object's identity is its content hash; the same
//! content has the same hash on any day and is stored once per namespace;
//! `parse(format(id)) == id`; every cube is bound to its object, position
//! and namespace by its signed header; each deletion is a ledger entry
//! naming the decision it used, and a refused deletion changes nothing.
//!
//! The cube format is written here (no crate offers this layout); it uses
//! `hmac`/`sha2` for vertex MACs, the ledger's RFC 6962 Merkle code for the
//! root, `ed25519-dalek` for signatures, `chacha20poly1305` for
//! XChaCha20-Poly1305, `blake3` for content hashes. Deletion depends on the
//! policy crate: its engine re-decides the decision a deletion stands on,
//! and its approval queue releases a held one.
//!
//! # On-disk layout of a cube
//!
//! Version 1; integers little-endian. A cube file is `DIR/cubes/<ns>/<hash>.<i>.cube`.
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CAPSCUBE` |
//! | 8 | 1 | version, 1 |
//! | 9 | 1 | flags: bit 0 = encrypted |
//! | 10 | 1 | vertex count v = ⌈L / 65 536⌉ (0..=16) |
//! | 11 | 1 | namespace length (1..=22) |
//! | 12 | 4 | L: stored payload bytes in this cube (≤ 1 MiB) |
//! | 16 | 4 | cube index i |
//! | 20 | 4 | cube count n |
//! | 24 | 8 | object length (plaintext bytes of the whole object) |
//! | 32 | 24 | nonce (random per cube; the AEAD nonce when encrypted) |
//! | 56 | 20 | content hash (the object ID's hash) |
//! | 76 | 22 | namespace, zero-padded |
//! | 98 | 6 | zero |
//! | 104 | 32·v | vertex MACs: HMAC-SHA256(namespace MAC key, header ‖ j as u8 ‖ vertex j) |
//! | … | 32 | root: RFC 6962 Merkle root (SHA-256) over the vertex MACs |
//! | … | 64 | Ed25519 signature over header ‖ root |
//! | … | L | payload: vertex 0, vertex 1, … (the last may be short) |
//!
//! The Merkle tree's leaves are the vertex MACs (keyed SHA-256 digests of
//! the vertices) rather than plain SHA-256 digests, so a reader can check
//! the root and signature from the few hundred bytes before the payload and
//! then verify only the vertices it reads.

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
pub use store::{DeleteAuthority, HeldApproval, Kind, ObjectInfo, Store};
