//! Cubes (SPEC S3): the on-disk unit. A cube holds up to 1 MiB of an
//! object's stored bytes as 16 vertices of 64 KiB; objects larger than one
//! cube span several. Small objects are not padded.
//!
//! The byte-by-byte layout is in the crate documentation (`lib.rs`).
//!
//! The header binds each cube to its object, position and namespace; the
//! MACs bind every vertex to the header; the signature binds the header to
//! all MACs. A reader checks the header, root and signature (a few hundred
//! bytes), then only the vertices it reads. In an encrypted namespace the
//! payload is XChaCha20-Poly1305 ciphertext (tag included, so a cube holds
//! 1 MiB − 16 plaintext bytes) with the header as associated data, and a
//! read decrypts, so it touches the whole cube.

use crate::id::{check_namespace, ContentHash, HASH_BYTES};
use crate::keyring::KeyProvider;
use capsule_ledger::merkle::{leaf_hash, root, MemoryTree};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: &[u8; 8] = b"CAPSCUBE";
pub const VERSION: u8 = 1;
pub const CUBE_BYTES: usize = 1 << 20;
pub const VERTEX_BYTES: usize = 64 << 10;
pub const VERTICES: usize = CUBE_BYTES / VERTEX_BYTES;
pub const HEADER_LEN: usize = 104;
pub const TAG_LEN: usize = 16;
const TRAILER_LEN: usize = 32 + 64;

/// Plaintext bytes a cube holds.
pub fn capacity(encrypted: bool) -> usize {
    if encrypted {
        CUBE_BYTES - TAG_LEN
    } else {
        CUBE_BYTES
    }
}

/// Why a cube is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CubeError {
    pub offset: u64,
    pub reason: String,
}

fn fail<T>(offset: usize, reason: impl Into<String>) -> Result<T, CubeError> {
    Err(CubeError {
        offset: offset as u64,
        reason: reason.into(),
    })
}

/// What a cube must say about itself for the reader to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    pub namespace: &'a str,
    pub hash: &'a ContentHash,
    pub index: u32,
    pub count: u32,
    pub object_len: u64,
}

/// The parsed fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub encrypted: bool,
    pub vertices: usize,
    pub stored_len: usize,
    pub index: u32,
    pub count: u32,
    pub object_len: u64,
    pub nonce: [u8; 24],
    pub hash: [u8; HASH_BYTES],
    pub namespace: String,
}

impl Header {
    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8] = VERSION;
        h[9] = u8::from(self.encrypted);
        h[10] = self.vertices as u8;
        h[11] = self.namespace.len() as u8;
        h[12..16].copy_from_slice(&(self.stored_len as u32).to_le_bytes());
        h[16..20].copy_from_slice(&self.index.to_le_bytes());
        h[20..24].copy_from_slice(&self.count.to_le_bytes());
        h[24..32].copy_from_slice(&self.object_len.to_le_bytes());
        h[32..56].copy_from_slice(&self.nonce);
        h[56..76].copy_from_slice(&self.hash);
        h[76..76 + self.namespace.len()].copy_from_slice(self.namespace.as_bytes());
        h
    }

    /// Parse and check a header against what the reader expects and the
    /// file's length.
    pub fn parse(b: &[u8], expected: &Expected<'_>, file_len: usize) -> Result<Header, CubeError> {
        if b.len() < HEADER_LEN {
            return fail(b.len(), "file is shorter than a cube header");
        }
        if &b[0..8] != MAGIC {
            return fail(0, "magic is not CAPSCUBE");
        }
        if b[8] != VERSION {
            return fail(8, format!("unknown cube version {}", b[8]));
        }
        if b[9] > 1 {
            return fail(9, format!("unknown flags {:#04x}", b[9]));
        }
        let ns_len = b[11] as usize;
        let ns = std::str::from_utf8(&b[76..76 + ns_len.min(22)]).unwrap_or("");
        if ns_len == 0
            || ns_len > 22
            || check_namespace(ns).is_err()
            || b[76 + ns_len..104].iter().any(|&x| x != 0)
        {
            return fail(11, "namespace field is malformed");
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let header = Header {
            encrypted: b[9] == 1,
            vertices: b[10] as usize,
            stored_len: u32_at(12) as usize,
            index: u32_at(16),
            count: u32_at(20),
            object_len: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
            nonce: b[32..56].try_into().expect("24 bytes"),
            hash: b[56..76].try_into().expect("20 bytes"),
            namespace: ns.to_string(),
        };
        if header.stored_len > CUBE_BYTES {
            return fail(
                12,
                format!("payload length {} exceeds a cube", header.stored_len),
            );
        }
        if header.vertices != header.stored_len.div_ceil(VERTEX_BYTES) {
            return fail(
                10,
                format!(
                    "{} vertices for {} payload bytes",
                    header.vertices, header.stored_len
                ),
            );
        }
        if file_len != HEADER_LEN + 32 * header.vertices + TRAILER_LEN + header.stored_len {
            return fail(
                12,
                format!(
                    "file is {file_len} bytes; the header implies {}",
                    HEADER_LEN + 32 * header.vertices + TRAILER_LEN + header.stored_len
                ),
            );
        }
        if header.namespace != expected.namespace {
            return fail(
                76,
                format!("cube belongs to namespace {}", header.namespace),
            );
        }
        if &header.hash != expected.hash.as_bytes() {
            return fail(56, "cube belongs to another object");
        }
        if header.index != expected.index || header.count != expected.count {
            return fail(
                16,
                format!(
                    "cube is {} of {}; expected {} of {}",
                    header.index, header.count, expected.index, expected.count
                ),
            );
        }
        if header.object_len != expected.object_len {
            return fail(24, "object length differs from the index");
        }
        Ok(header)
    }
}

fn vertex_mac(key: &[u8; 32], header: &[u8], j: usize, vertex: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(header);
    mac.update(&[j as u8]);
    mac.update(vertex);
    mac
}

fn mac_root(macs: &[[u8; 32]]) -> [u8; 32] {
    let mut tree = MemoryTree::new();
    for m in macs {
        tree.push(leaf_hash(m));
    }
    root(&tree, macs.len() as u64).expect("a tree holds its own size")
}

/// Seal chunk `index` of `count` of an object into a cube's bytes.
pub fn seal(
    keys: &dyn KeyProvider,
    namespace: &str,
    hash: &ContentHash,
    object_len: u64,
    index: u32,
    count: u32,
    chunk: &[u8],
) -> crate::Result<Vec<u8>> {
    let aead_key = keys.aead_key(namespace);
    let encrypted = aead_key.is_some();
    if chunk.len() > capacity(encrypted) {
        return Err(crate::StoreError::invalid(
            "chunk",
            format!("{} bytes exceed a cube", chunk.len()),
        ));
    }
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce)
        .map_err(|e| crate::StoreError::invalid("nonce", format!("no system randomness: {e}")))?;
    let stored_len = chunk.len() + if encrypted { TAG_LEN } else { 0 };
    let header = Header {
        encrypted,
        vertices: stored_len.div_ceil(VERTEX_BYTES),
        stored_len,
        index,
        count,
        object_len,
        nonce,
        hash: *hash.as_bytes(),
        namespace: namespace.into(),
    };
    let head = header.to_bytes();
    let payload = match aead_key {
        Some(key) => XChaCha20Poly1305::new(&key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: chunk,
                    aad: &head,
                },
            )
            .map_err(|_| crate::StoreError::invalid("chunk", "encryption failed"))?,
        None => chunk.to_vec(),
    };
    debug_assert_eq!(payload.len(), stored_len);
    let mac_key = keys.vertex_mac_key(namespace);
    let macs: Vec<[u8; 32]> = payload
        .chunks(VERTEX_BYTES)
        .enumerate()
        .map(|(j, v)| {
            vertex_mac(&mac_key, &head, j, v)
                .finalize()
                .into_bytes()
                .into()
        })
        .collect();
    let root = mac_root(&macs);
    let mut signed = head.to_vec();
    signed.extend_from_slice(&root);
    let signature = keys.sign(&signed);
    let mut out = Vec::with_capacity(HEADER_LEN + 32 * macs.len() + TRAILER_LEN + payload.len());
    out.extend_from_slice(&head);
    for m in &macs {
        out.extend_from_slice(m);
    }
    out.extend_from_slice(&root);
    out.extend_from_slice(&signature);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The verified part of a cube before its payload: header, MACs, and the
/// offset where the payload starts.
pub struct Verified {
    pub header: Header,
    macs: Vec<[u8; 32]>,
    head: [u8; HEADER_LEN],
    pub payload_offset: usize,
}

/// Check a cube's header, MAC table, root and signature. `prefix` holds at
/// least the bytes before the payload.
pub fn verify_prefix(
    keys: &dyn KeyProvider,
    expected: &Expected<'_>,
    prefix: &[u8],
    file_len: usize,
) -> Result<Verified, CubeError> {
    let header = Header::parse(prefix, expected, file_len)?;
    let v = header.vertices;
    let macs_end = HEADER_LEN + 32 * v;
    let payload_offset = macs_end + TRAILER_LEN;
    if prefix.len() < payload_offset {
        return fail(prefix.len(), "cube ends before its payload");
    }
    let macs: Vec<[u8; 32]> = prefix[HEADER_LEN..macs_end]
        .chunks(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let stored_root = &prefix[macs_end..macs_end + 32];
    if mac_root(&macs) != stored_root {
        return fail(macs_end, "Merkle root does not match the vertex MACs");
    }
    let head: [u8; HEADER_LEN] = prefix[..HEADER_LEN].try_into().expect("header");
    let mut signed = head.to_vec();
    signed.extend_from_slice(stored_root);
    let sig = Signature::from_bytes(
        prefix[macs_end + 32..payload_offset]
            .try_into()
            .expect("64 bytes"),
    );
    let vk: VerifyingKey = keys.verifying_key();
    if vk.verify_strict(&signed, &sig).is_err() {
        return fail(
            macs_end + 32,
            "signature over header and root does not verify",
        );
    }
    Ok(Verified {
        header,
        macs,
        head,
        payload_offset,
    })
}

impl Verified {
    /// Check vertex `j`'s bytes against its MAC.
    pub fn check_vertex(
        &self,
        keys: &dyn KeyProvider,
        j: usize,
        bytes: &[u8],
    ) -> Result<(), CubeError> {
        let key = keys.vertex_mac_key(&self.header.namespace);
        if vertex_mac(&key, &self.head, j, bytes)
            .verify_slice(&self.macs[j])
            .is_err()
        {
            return fail(
                self.payload_offset + j * VERTEX_BYTES,
                format!("vertex {j} fails its HMAC"),
            );
        }
        Ok(())
    }

    /// Check every vertex of the stored payload and return the plaintext
    /// (decrypted when the cube is encrypted).
    pub fn open_payload(
        &self,
        keys: &dyn KeyProvider,
        payload: &[u8],
    ) -> Result<Vec<u8>, CubeError> {
        if payload.len() != self.header.stored_len {
            return fail(
                self.payload_offset,
                "payload length differs from the header",
            );
        }
        for (j, v) in payload.chunks(VERTEX_BYTES).enumerate() {
            self.check_vertex(keys, j, v)?;
        }
        if !self.header.encrypted {
            return Ok(payload.to_vec());
        }
        let Some(key) = keys.aead_key(&self.header.namespace) else {
            return fail(
                9,
                format!(
                    "cube is encrypted but namespace {} has no key",
                    self.header.namespace
                ),
            );
        };
        XChaCha20Poly1305::new(&key.into())
            .decrypt(
                XNonce::from_slice(&self.header.nonce),
                Payload {
                    msg: payload,
                    aad: &self.head,
                },
            )
            .or_else(|_| {
                fail(
                    self.payload_offset,
                    "decryption failed (wrong key, or damaged ciphertext)",
                )
            })
    }
}

/// Verify a whole cube and return its plaintext chunk.
pub fn open(
    keys: &dyn KeyProvider,
    expected: &Expected<'_>,
    bytes: &[u8],
) -> Result<Vec<u8>, CubeError> {
    let verified = verify_prefix(keys, expected, bytes, bytes.len())?;
    verified.open_payload(keys, &bytes[verified.payload_offset..])
}
