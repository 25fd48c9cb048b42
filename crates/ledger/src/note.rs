//! Checkpoints as C2SP signed notes.
//!
//! - C2SP `tlog-checkpoint`: the note body is three lines, the origin, the
//!   tree size in decimal, and the base64 root hash, each ending in `\n`.
//! - C2SP `signed-note`: the body, a blank line, then one line per signature
//!   `— <key name> <base64(key id ‖ signature)>\n` (U+2014 and a space).
//!   For Ed25519 the key id is the first 4 bytes of
//!   SHA-256(key name ‖ `\n` ‖ 0x01 ‖ public key) and the signature covers
//!   the body bytes. A verifier key is written
//!   `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use crate::error::{LedgerError, Result};
use crate::merkle::Hash;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte for Ed25519 in the signed-note spec.
const ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Largest note we parse, in bytes.
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// Most signature lines we look at in one note.
pub const MAX_SIGNATURES: usize = 16;

/// Check a key name or origin: non-empty, no whitespace, no `+`.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 {
        return Err(LedgerError::invalid(field, "must be 1..=256 bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(LedgerError::invalid(
            field,
            format!("{name:?} must not contain whitespace, control characters or '+'"),
        ));
    }
    Ok(())
}

/// A public key with its signed-note name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Name a public key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self> {
        check_name("key name", name)?;
        Ok(VerifierKey {
            name: name.into(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The 4-byte key id of the signed-note spec.
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([ED25519]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// Parse `<name>+<hex key id>+<base64(0x01 ‖ key)>`; the key id must
    /// match the key.
    pub fn parse(text: &str) -> Result<Self> {
        let field = "verifier key";
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LedgerError::invalid(
                field,
                "expected <name>+<hex key id>+<base64 key>",
            ));
        };
        let id = hex::decode(id_hex)
            .ok()
            .filter(|b| b.len() == 4 && id_hex.len() == 8)
            .ok_or_else(|| LedgerError::invalid(field, "key id must be 8 hex digits"))?;
        let raw = B64
            .decode(key_b64)
            .map_err(|e| LedgerError::invalid(field, format!("key is not base64: {e}")))?;
        if raw.len() != 33 || raw[0] != ED25519 {
            return Err(LedgerError::invalid(
                field,
                "key must be 0x01 followed by a 32-byte Ed25519 public key",
            ));
        }
        let key = VerifyingKey::from_bytes(raw[1..].try_into().expect("32 bytes"))
            .map_err(|e| LedgerError::invalid(field, format!("not an Ed25519 public key: {e}")))?;
        let vk = VerifierKey::new(name, key)?;
        if vk.key_id()[..] != id[..] {
            return Err(LedgerError::invalid(field, "key id does not match the key"));
        }
        Ok(vk)
    }

    /// Verify `signature` over `message` with this key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(raw)
        )
    }
}

/// Something that signs checkpoint bodies: a key file today, a KMS or HSM
/// adapter later.
pub trait NoteSigner: Send + Sync {
    /// The key that verifies this signer's signatures.
    fn verifier(&self) -> &VerifierKey;
    /// An Ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

/// An Ed25519 key held in memory.
pub struct KeySigner {
    key: SigningKey,
    verifier: VerifierKey,
}

impl std::fmt::Debug for KeySigner {
    /// Shows the public half only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySigner({})", self.verifier)
    }
}

impl KeySigner {
    pub fn new(name: &str, key: SigningKey) -> Result<Self> {
        let verifier = VerifierKey::new(name, key.verifying_key())?;
        Ok(KeySigner { key, verifier })
    }
}

impl NoteSigner for KeySigner {
    fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A tree head: the origin of the log, a size and the root at that size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl TreeHead {
    /// The tlog-checkpoint note body.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }
}

/// A checkpoint that carries a signature, made only by signing or by
/// parsing a note whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    head: TreeHead,
    text: String,
    key_id: [u8; 4],
}

impl Checkpoint {
    /// Sign a tree head.
    pub fn sign(head: TreeHead, signer: &dyn NoteSigner) -> Checkpoint {
        let body = head.body();
        let vk = signer.verifier();
        let mut blob = vk.key_id().to_vec();
        blob.extend_from_slice(&signer.sign(body.as_bytes()));
        let text = format!("{body}\n{SIG_PREFIX}{} {}\n", vk.name(), B64.encode(blob));
        Checkpoint {
            head,
            text,
            key_id: vk.key_id(),
        }
    }

    /// Parse a signed note and verify it with `key`: the note must carry a
    /// valid signature by `key` (other signatures are ignored, as the spec
    /// says). A body with extension lines is accepted; they are kept in the
    /// text but not interpreted.
    pub fn verify(text: &str, key: &VerifierKey) -> Result<Checkpoint> {
        let field = "checkpoint";
        let bad = |reason: String| LedgerError::invalid(field, reason);
        if text.len() > MAX_NOTE_LEN {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {MAX_NOTE_LEN}",
                text.len()
            )));
        }
        let split = text
            .find("\n\n")
            .ok_or_else(|| bad("no blank line between body and signatures".into()))?;
        let body = &text[..split + 1];
        let sigs = &text[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(bad("signature block must end with a newline".into()));
        }
        let mut lines = body.lines();
        let origin = lines.next().unwrap_or_default();
        check_name("checkpoint origin", origin)?;
        let size_text = lines
            .next()
            .ok_or_else(|| bad("missing the tree size line".into()))?;
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(bad(format!(
                "tree size {size_text:?} is not a decimal number"
            )));
        }
        let size: u64 = size_text
            .parse()
            .map_err(|_| bad(format!("tree size {size_text:?} does not fit in 64 bits")))?;
        let root_text = lines
            .next()
            .ok_or_else(|| bad("missing the root hash line".into()))?;
        let root: Hash = B64
            .decode(root_text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("root {root_text:?} is not base64 of 32 bytes")))?;
        let mut found = None;
        for (i, line) in sigs.lines().enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(bad(format!("more than {MAX_SIGNATURES} signature lines")));
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad(format!("signature line {} does not start with '— '", i + 1)))?;
            let (name, sig_b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad(format!("signature line {} has no signature", i + 1)))?;
            let blob = B64
                .decode(sig_b64)
                .map_err(|_| bad(format!("signature line {} is not base64", i + 1)))?;
            if name != key.name() || blob.len() != 68 || blob[..4] != key.key_id() {
                continue;
            }
            let sig: [u8; 64] = blob[4..].try_into().expect("64 bytes");
            if !key.verify(body.as_bytes(), &sig) {
                return Err(bad(format!(
                    "signature by {} (key id {}) does not verify",
                    key.name(),
                    hex::encode(key.key_id())
                )));
            }
            found = Some(key.key_id());
        }
        let key_id = found.ok_or_else(|| {
            bad(format!(
                "no signature by key {} (key id {})",
                key.name(),
                hex::encode(key.key_id())
            ))
        })?;
        Ok(Checkpoint {
            head: TreeHead {
                origin: origin.into(),
                size,
                root,
            },
            text: text.into(),
            key_id,
        })
    }

    pub fn head(&self) -> &TreeHead {
        &self.head
    }

    pub fn size(&self) -> u64 {
        self.head.size
    }

    pub fn root(&self) -> &Hash {
        &self.head.root
    }

    /// The signed note, ready to publish.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The key id of the verified signature.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> KeySigner {
        KeySigner::new("capsule.test/log", SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn head() -> TreeHead {
        TreeHead {
            origin: "capsule.test/log".into(),
            size: 42,
            root: [7; 32],
        }
    }

    #[test]
    fn signed_checkpoint_has_the_c2sp_layout_and_verifies() {
        let s = signer(1);
        let cp = Checkpoint::sign(head(), &s);
        let text = cp.text();
        assert!(text.starts_with("capsule.test/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n— capsule.test/log "));
        assert!(text.ends_with('\n'));
        let parsed = Checkpoint::verify(text, s.verifier()).unwrap();
        assert_eq!(parsed.head(), &head());
    }

    #[test]
    fn verifier_key_text_round_trips_and_checks_its_id() {
        let vk = signer(2).verifier().clone();
        let text = vk.to_string();
        assert_eq!(VerifierKey::parse(&text).unwrap(), vk);
        let other = signer(3).verifier().to_string();
        let (_, other_id_and_key) = other.split_once('+').unwrap();
        let (other_id, _) = other_id_and_key.split_once('+').unwrap();
        let forged = text.replacen(&hex::encode(vk.key_id()), other_id, 1);
        assert!(VerifierKey::parse(&forged)
            .unwrap_err()
            .to_string()
            .contains("key id"));
    }

    #[test]
    fn a_note_signed_by_another_key_or_altered_is_refused() {
        let cp = Checkpoint::sign(head(), &signer(1));
        let err = Checkpoint::verify(cp.text(), signer(2).verifier()).unwrap_err();
        assert!(err.to_string().contains("no signature by key"), "{err}");
        let altered = cp.text().replacen("42", "43", 1);
        let err = Checkpoint::verify(&altered, signer(1).verifier()).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn malformed_bodies_name_the_line() {
        let key = signer(1);
        for (text, want) in [
            ("o\n42\n", "blank line"),
            ("o\n042\nAA==\n\n— o x\n", "decimal"),
            ("o\n42\nAA==\n\n— o x\n", "32 bytes"),
            (
                "o\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\nsig\n",
                "start with",
            ),
        ] {
            let err = Checkpoint::verify(text, key.verifier())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
