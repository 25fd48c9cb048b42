//! Keys of the store (SPEC S3, S4) behind the [`KeyProvider`] trait, and
//! the file keyring that implements it.
//!
//! The keyring file is JSON, created with mode 0600 (a file that group or
//! others can read is refused):
//! `{"version": 1, "signing_key": hex32, "mac_key": hex32,
//!   "namespaces": {"<ns>": hex32, …}}`. `signing_key` is the Ed25519 seed
//! that signs cubes; `mac_key` keys the per-vertex HMACs (per namespace:
//! HMAC-SHA256(mac_key, "capsule store vertex mac\0" ‖ ns)); a namespace
//! listed under `namespaces` is encrypted at rest with that
//! XChaCha20-Poly1305 key.

use crate::error::{Result, StoreError};
use crate::id::check_namespace;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the store's keys come from: a file today, a KMS adapter later.
pub trait KeyProvider: Send + Sync {
    /// The HMAC key for the vertices of `namespace`.
    fn vertex_mac_key(&self, namespace: &str) -> [u8; 32];
    /// The AEAD key of `namespace`, if it is encrypted at rest.
    fn aead_key(&self, namespace: &str) -> Option<[u8; 32]>;
    /// An Ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> [u8; 64];
    /// The key that verifies cube signatures.
    fn verifying_key(&self) -> VerifyingKey;
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    version: u32,
    signing_key: String,
    mac_key: String,
    #[serde(default)]
    namespaces: BTreeMap<String, String>,
}

/// The keyring file.
pub struct FileKeyring {
    path: PathBuf,
    signing: SigningKey,
    mac_key: [u8; 32],
    namespaces: BTreeMap<String, [u8; 32]>,
}

fn random32() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)
        .map_err(|e| StoreError::invalid("keyring", format!("no system randomness: {e}")))?;
    Ok(k)
}

fn key_hex(field: &str, text: &str) -> Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::invalid(field, "must be 64 hex digits"))
}

impl FileKeyring {
    /// Make a keyring with fresh keys at `path` (which must not exist);
    /// `encrypted` namespaces get an AEAD key each.
    pub fn create(path: &Path, encrypted: &[&str]) -> Result<FileKeyring> {
        let mut namespaces = BTreeMap::new();
        for ns in encrypted {
            check_namespace(ns)?;
            namespaces.insert(ns.to_string(), random32()?);
        }
        let ring = FileKeyring {
            path: path.to_path_buf(),
            signing: SigningKey::from_bytes(&random32()?),
            mac_key: random32()?,
            namespaces,
        };
        ring.write(true)?;
        Ok(ring)
    }

    fn write(&self, new: bool) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = KeyringFile {
            version: 1,
            signing_key: hex::encode(self.signing.to_bytes()),
            mac_key: hex::encode(self.mac_key),
            namespaces: self
                .namespaces
                .iter()
                .map(|(k, v)| (k.clone(), hex::encode(v)))
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&file).expect("plain struct");
        let tmp = self.path.with_extension("tmp");
        let io = |e| StoreError::io(&self.path, e);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(0o600);
        if new {
            opts.create_new(true);
            let mut f = opts.open(&self.path).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        } else {
            opts.create(true).truncate(true);
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &self.path).map_err(io)?;
        }
        Ok(())
    }

    /// Read a keyring file.
    pub fn open(path: &Path) -> Result<FileKeyring> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::invalid(
                path.display().to_string(),
                format!("keyring has mode {mode:o}; it must be 0600 (chmod 600 it)"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
        let file: KeyringFile = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::invalid(path.display().to_string(), format!("not a keyring: {e}"))
        })?;
        if file.version != 1 {
            return Err(StoreError::invalid(
                "keyring.version",
                format!("{} is not supported", file.version),
            ));
        }
        let mut namespaces = BTreeMap::new();
        for (ns, key) in &file.namespaces {
            check_namespace(ns)?;
            namespaces.insert(
                ns.clone(),
                key_hex(&format!("keyring.namespaces.{ns}"), key)?,
            );
        }
        Ok(FileKeyring {
            path: path.to_path_buf(),
            signing: SigningKey::from_bytes(&key_hex("keyring.signing_key", &file.signing_key)?),
            mac_key: key_hex("keyring.mac_key", &file.mac_key)?,
            namespaces,
        })
    }

    /// Encrypt `namespace` from now on (a fresh key); refuses if it already is.
    pub fn add_encrypted_namespace(&mut self, namespace: &str) -> Result<()> {
        check_namespace(namespace)?;
        if self.namespaces.contains_key(namespace) {
            return Err(StoreError::invalid(
                "namespace",
                format!("{namespace} is already encrypted"),
            ));
        }
        self.namespaces.insert(namespace.into(), random32()?);
        self.write(false)
    }

    pub fn encrypted_namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }
}

impl KeyProvider for FileKeyring {
    fn vertex_mac_key(&self, namespace: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        mac.update(b"capsule store vertex mac\0");
        mac.update(namespace.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn aead_key(&self, namespace: &str) -> Option<[u8; 32]> {
        self.namespaces.get(namespace).copied()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}
