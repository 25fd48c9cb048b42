//! Versioned Ed25519 signing keys in files, and key rotation as a logged,
//! signed event.
//!
//! Version N lives in `keys/ledger-vN.pem` (PKCS#8 PEM, created with mode
//! 0600; a key file that group or others can read is refused) beside
//! `keys/ledger-vN.pub` (its verifier key line). A rotation is an audit
//! entry (action [`ROTATE_ACTION`]) whose meta names the old and new
//! verifier keys and carries the old key's signature over
//! [`rotation_statement`]; verifiers start from a key they trust and follow
//! these entries, using for a checkpoint of size s the key set by the last
//! rotation with seq < s.

use crate::entry::{AuditEntry, Record};
use crate::error::{LedgerError, Result};
use crate::layout::write_new_file;
use crate::note::{Checkpoint, KeySigner, NoteSigner, VerifierKey};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use std::fs;
use std::path::{Path, PathBuf};

/// The action of a key-rotation entry.
pub const ROTATE_ACTION: &str = "ledger.key_rotate";

/// The key files of one ledger.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    name: String,
}

impl KeyStore {
    /// Keys in `dir`, named `name` (the log's origin) in signed notes.
    pub fn new(dir: &Path, name: &str) -> Self {
        KeyStore {
            dir: dir.to_path_buf(),
            name: name.into(),
        }
    }

    fn private_path(&self, version: u32) -> PathBuf {
        self.dir.join(format!("ledger-v{version}.pem"))
    }

    fn public_path(&self, version: u32) -> PathBuf {
        self.dir.join(format!("ledger-v{version}.pub"))
    }

    /// The versions present, ascending.
    pub fn versions(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(LedgerError::io(&self.dir)(e)),
        };
        for item in entries {
            let item = item.map_err(LedgerError::io(&self.dir))?;
            let name = item.file_name();
            if let Some(v) = name
                .to_str()
                .and_then(|n| n.strip_prefix("ledger-v"))
                .and_then(|n| n.strip_suffix(".pem"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Make a new random key as version `version`; refuses to overwrite.
    pub fn create(&self, version: u32) -> Result<KeySigner> {
        fs::create_dir_all(&self.dir).map_err(LedgerError::io(&self.dir))?;
        create_key_file(
            &self.private_path(version),
            &self.public_path(version),
            &self.name,
        )
    }

    /// Load the private key of `version`.
    pub fn load(&self, version: u32) -> Result<KeySigner> {
        load_key_file(&self.private_path(version), &self.name)
    }

    /// The verifier key of `version`, from its `.pub` file.
    pub fn load_public(&self, version: u32) -> Result<VerifierKey> {
        let path = self.public_path(version);
        let text = fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
        VerifierKey::parse(&text)
            .map_err(|e| LedgerError::invalid(path.display().to_string(), e.to_string()))
    }

    /// The private key whose public half is `key`.
    pub fn find(&self, key: &VerifierKey) -> Result<(u32, KeySigner)> {
        for v in self.versions()?.into_iter().rev() {
            if self.load_public(v).ok().as_ref() == Some(key) {
                return Ok((v, self.load(v)?));
            }
        }
        Err(LedgerError::invalid(
            "keys",
            format!(
                "no key file in {} holds the signing key {key}",
                self.dir.display()
            ),
        ))
    }
}

/// Make a random Ed25519 key: the private half in `private` (PKCS#8 PEM,
/// mode 0600), the verifier key line (named `name`) in `public`. Refuses to
/// overwrite either.
pub fn create_key_file(private: &Path, public: &Path, name: &str) -> Result<KeySigner> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| LedgerError::invalid("key", format!("no system randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| LedgerError::invalid("key", format!("cannot encode PKCS#8: {e}")))?;
    let signer = KeySigner::new(name, key)?;
    write_new_file(private, pem.as_bytes(), 0o600)?;
    write_new_file(public, format!("{}\n", signer.verifier()).as_bytes(), 0o644)?;
    Ok(signer)
}

/// Load a private key file (PKCS#8 PEM), naming it `name`; a file that
/// group or others can read is refused.
pub fn load_key_file(path: &Path, name: &str) -> Result<KeySigner> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(LedgerError::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LedgerError::invalid(
            path.display().to_string(),
            format!("private key file has mode {mode:o}; it must be 0600 (chmod 600 it)"),
        ));
    }
    let pem = fs::read_to_string(path).map_err(LedgerError::io(path))?;
    let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        LedgerError::invalid(
            path.display().to_string(),
            format!("not an Ed25519 PKCS#8 key: {e}"),
        )
    })?;
    KeySigner::new(name, key)
}

/// The text the old key signs to hand over to the new one.
pub fn rotation_statement(origin: &str, old: &VerifierKey, new: &VerifierKey) -> String {
    format!("capsule ledger key rotation\norigin {origin}\nold {old}\nnew {new}\n")
}

/// The record of a rotation from `old` to `new`, signed by `old`.
pub fn rotation_record(
    origin: &str,
    old: &dyn NoteSigner,
    new: &VerifierKey,
    version: u32,
) -> Record {
    let statement = rotation_statement(origin, old.verifier(), new);
    let mut record = Record::new("ledger", ROTATE_ACTION, "ok");
    record.subject = new.to_string();
    record.reason = format!("signing key rotated to version {version}");
    record.meta = serde_json::json!({
        "old_key": old.verifier().to_string(),
        "new_key": new.to_string(),
        "version": version,
        "signature": B64.encode(old.sign(statement.as_bytes())),
    });
    record
}

/// If `entry` is a rotation, check it against the key in force (`current`)
/// and return the new key. A rotation entry that names another old key or
/// whose signature fails is an error.
pub fn follow_rotation(
    origin: &str,
    entry: &AuditEntry,
    current: &VerifierKey,
) -> Result<Option<VerifierKey>> {
    if entry.record.action != ROTATE_ACTION {
        return Ok(None);
    }
    let field = format!("entry {} (key rotation)", entry.seq);
    let bad = |reason: &str| LedgerError::invalid(field.clone(), reason.to_string());
    let meta = &entry.record.meta;
    let text = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(&format!("meta.{k} missing")))
    };
    let old = VerifierKey::parse(text("old_key")?)?;
    let new = VerifierKey::parse(text("new_key")?)?;
    if &old != current {
        return Err(bad(&format!(
            "names old key {old}, but the key in force is {current}"
        )));
    }
    let sig: [u8; 64] = B64
        .decode(text("signature")?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("meta.signature is not base64 of 64 bytes"))?;
    if !old.verify(rotation_statement(origin, &old, &new).as_bytes(), &sig) {
        return Err(bad(
            "the old key's signature over the new key does not verify",
        ));
    }
    Ok(Some(new))
}

/// The keys in force over a log: version 1 from size 0, then each key named
/// by a rotation entry from the size just past it.
#[derive(Debug, Clone)]
pub struct KeySchedule {
    origin: String,
    /// (first tree size the key signs, key), ascending.
    keys: Vec<(u64, VerifierKey)>,
}

impl KeySchedule {
    pub fn new(origin: &str, first: VerifierKey) -> Self {
        KeySchedule {
            origin: origin.into(),
            keys: vec![(0, first)],
        }
    }

    /// Take note of entry `entry`; a rotation must be signed by the key in force.
    pub fn follow(&mut self, entry: &AuditEntry) -> Result<()> {
        if let Some(next) = follow_rotation(&self.origin, entry, self.current())? {
            self.keys.push((entry.seq + 1, next));
        }
        Ok(())
    }

    /// The key that must sign a checkpoint of `size`.
    pub fn key_for(&self, size: u64) -> &VerifierKey {
        &self
            .keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= size)
            .expect("the first key covers size 0")
            .1
    }

    /// The key in force after the last rotation.
    pub fn current(&self) -> &VerifierKey {
        &self.keys.last().expect("the first key").1
    }

    pub fn rotations(&self) -> u64 {
        self.keys.len() as u64 - 1
    }

    /// Verify a stored checkpoint note with the key its size calls for, and
    /// check its origin.
    pub fn verify_note(&self, text: &str) -> Result<Checkpoint> {
        let size: u64 = text
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| LedgerError::invalid("checkpoint", "no tree size line"))?;
        let cp = Checkpoint::verify(text, self.key_for(size))?;
        if cp.head().origin != self.origin {
            return Err(LedgerError::invalid(
                "checkpoint",
                format!(
                    "origin {:?} is not this log's {:?}",
                    cp.head().origin,
                    self.origin
                ),
            ));
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_private_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), "capsule.test/log");
        let made = store.create(1).unwrap();
        let mode = fs::metadata(dir.path().join("ledger-v1.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.load(1).unwrap().verifier(), made.verifier());
        assert_eq!(&store.load_public(1).unwrap(), made.verifier());
        assert!(store.create(1).is_err(), "must not overwrite a key");
        fs::set_permissions(
            dir.path().join("ledger-v1.pem"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(store.load(1).unwrap_err().to_string().contains("0600"));
    }

    #[test]
    fn rotation_is_followed_only_from_the_key_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), "o");
        let (k1, k2, k3) = (
            store.create(1).unwrap(),
            store.create(2).unwrap(),
            store.create(3).unwrap(),
        );
        let record = rotation_record("o", &k1, k2.verifier(), 2);
        let entry = AuditEntry {
            seq: 3,
            ts: 0,
            record,
        };
        assert_eq!(
            follow_rotation("o", &entry, k1.verifier())
                .unwrap()
                .as_ref(),
            Some(k2.verifier())
        );
        assert!(follow_rotation("o", &entry, k3.verifier()).is_err());
        assert!(follow_rotation("other", &entry, k1.verifier()).is_err());
    }
}
