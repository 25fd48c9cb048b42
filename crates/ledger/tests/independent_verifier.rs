//! A checkpoint the ledger signs verifies with a signed-note verifier
//! written here from the C2SP specs alone (signed-note, tlog-checkpoint),
//! sharing no code with the signer: only the public key text, the note
//! text, ed25519-dalek, sha2 and base64. An inclusion proof is checked with
//! an equally independent RFC 9162 §2.1.3.2 routine.

use base64::{engine::general_purpose::STANDARD, Engine};
use capsule_ledger::{Ledger, LedgerConfig, Record};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

struct Key {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

/// signed-note verifier key: `<name>+<hex(key hash)>+<base64(alg ‖ key)>`,
/// key hash = SHA-256(name ‖ "\n" ‖ alg ‖ key)[:4], alg 0x01 = Ed25519.
fn parse_vkey(text: &str) -> Key {
    let parts: Vec<&str> = text.trim().splitn(3, '+').collect(); // base64 may hold '+'
    assert_eq!(parts.len(), 3, "three +-separated fields");
    let raw = STANDARD.decode(parts[2]).unwrap();
    assert_eq!(raw.len(), 33);
    assert_eq!(raw[0], 1, "Ed25519 algorithm byte");
    let mut hasher = Sha256::new();
    hasher.update(parts[0].as_bytes());
    hasher.update(b"\n");
    hasher.update(&raw);
    let digest = hasher.finalize();
    let id: [u8; 4] = digest[..4].try_into().unwrap();
    assert_eq!(hex::encode(id), parts[1], "key hash in the key text");
    Key {
        name: parts[0].to_string(),
        id,
        key: VerifyingKey::from_bytes(raw[1..].try_into().unwrap()).unwrap(),
    }
}

/// Returns (origin, size, root) when a signature by `key` verifies.
fn verify_note(note: &str, key: &Key) -> Option<(String, u64, Vec<u8>)> {
    // The signatures follow the last blank line; the text signed is
    // everything before it, through its final newline.
    let cut = note.rfind("\n\n")?;
    let (text, sigs) = (&note[..cut + 1], &note[cut + 2..]);
    let mut ok = false;
    for line in sigs.lines() {
        let rest = line.strip_prefix("\u{2014} ")?;
        let (name, b64) = rest.split_once(' ')?;
        let blob = STANDARD.decode(b64).ok()?;
        if name == key.name && blob.len() == 68 && blob[..4] == key.id {
            let sig = Signature::from_bytes(blob[4..].try_into().ok()?);
            ok |= key.key.verify(text.as_bytes(), &sig).is_ok();
        }
    }
    if !ok {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let size = lines.get(1)?.parse().ok()?;
    let root = STANDARD.decode(lines.get(2)?).ok()?;
    Some((lines[0].to_string(), size, root))
}

fn h(parts: &[&[u8]]) -> Vec<u8> {
    let mut s = Sha256::new();
    for p in parts {
        s.update(p);
    }
    s.finalize().to_vec()
}

/// RFC 9162 §2.1.3.2, written out again.
fn inclusion_ok(index: u64, size: u64, leaf: &[u8], path: &[Vec<u8>], root: &[u8]) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnn, mut snn, mut r) = (index, size - 1, leaf.to_vec());
    for p in path {
        if snn == 0 {
            return false;
        }
        if fnn % 2 == 1 || fnn == snn {
            r = h(&[&[1], p, &r]);
            while fnn % 2 == 0 && fnn != 0 {
                fnn /= 2;
                snn /= 2;
            }
        } else {
            r = h(&[&[1], &r, p]);
        }
        fnn /= 2;
        snn /= 2;
    }
    snn == 0 && r == root
}

#[test]
fn ledger_checkpoints_and_proofs_verify_with_independent_code() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::create(
        tmp.path(),
        "capsule.test/independent",
        LedgerConfig::default(),
    )
    .unwrap();
    for i in 0..13u64 {
        let mut r = Record::new("agent:x", "memory.append", "allow");
        r.subject = format!("obj/{i}");
        ledger.append(r).unwrap();
    }
    let cp = ledger.checkpoint().unwrap();
    let key = parse_vkey(&ledger.verifier_key().to_string());
    let (origin, size, root) = verify_note(cp.text(), &key).expect("signature verifies");
    assert_eq!(origin, "capsule.test/independent");
    assert_eq!(size, 13);
    for i in 0..13 {
        let proof = ledger.inclusion_proof(i, size).unwrap();
        let leaf = h(&[&[0], &ledger.entry(i).unwrap().encode()]);
        let path: Vec<Vec<u8>> = proof.path.iter().map(|p| p.to_vec()).collect();
        assert!(inclusion_ok(i, size, &leaf, &path, &root), "entry {i}");
        assert!(!inclusion_ok(i, size, &h(&[b"x"]), &path, &root));
    }
    // A changed byte anywhere in the signed text breaks the signature.
    let tampered = cp.text().replacen("13\n", "14\n", 1);
    assert!(verify_note(&tampered, &key).is_none());
}
