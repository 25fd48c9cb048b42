//! The store end to end: round trips at every size boundary, range reads,
//! dedup, tamper → quarantine → ledger, encryption at rest and wrong keys.
//! Deletion is tested in `delete.rs`.

use capsule_ledger::{Ledger, LedgerConfig};
use capsule_store::{Day, FileKeyring, Kind, ObjectId, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

const MIB: usize = 1 << 20;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Store,
    ledger: Arc<Ledger>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let keys = Arc::new(FileKeyring::create(&dir.join("keyring.json"), &["secret"]).unwrap());
    let ledger = Arc::new(
        Ledger::create(
            &dir.join("ledger"),
            "capsule.test/store",
            LedgerConfig::default(),
        )
        .unwrap(),
    );
    let store = Store::open(&dir.join("store"), keys, ledger.clone()).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
        ledger,
    }
}

/// Bytes that differ at every position (so a lost or shifted byte shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn cube_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(dir.join("store/cubes")).unwrap() {
        for f in std::fs::read_dir(ns.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn every_size_round_trips_exactly_plain_and_encrypted() {
    let f = fixture();
    for ns in ["plain", "secret"] {
        for (k, len) in [
            0,
            1,
            65_535,
            65_536,
            65_537,
            MIB - 1,
            MIB,
            MIB + 1,
            5 * MIB + 7,
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(len, k as u8);
            let id = f.store.put(ns, Kind::Blob, &data).unwrap();
            let back = f.store.get(&id).unwrap();
            assert_eq!(back.len(), len, "{ns} {len}");
            assert!(back == data, "{ns} {len}: bytes differ");
            let info = f.store.stat(&id).unwrap();
            assert_eq!((info.length, info.encrypted), (len as u64, ns == "secret"));
            if len > 2 {
                let (off, n) = (len as u64 / 3, (len as u64 / 2).max(1));
                assert_eq!(
                    f.store.get_range(&id, off, n).unwrap(),
                    &data[off as usize..(off + n) as usize],
                    "{ns} {len} range"
                );
            }
        }
    }
    let big = f
        .store
        .put("plain", Kind::Blob, &pattern(3 * MIB, 9))
        .unwrap();
    // A range across a cube boundary and a vertex boundary.
    let data = pattern(3 * MIB, 9);
    let (off, n) = (MIB as u64 - 10, 70_000);
    assert_eq!(
        f.store.get_range(&big, off, n).unwrap(),
        &data[off as usize..(off + n) as usize]
    );
    assert!(f.store.get_range(&big, 3 * MIB as u64 - 1, 2).is_err());
}

#[test]
fn identical_content_is_stored_once_and_found_by_hash_on_any_day() {
    let f = fixture();
    let a = f.store.put("spec", Kind::Spec, b"{\"a\":1}").unwrap();
    let before = cube_files(&f.dir);
    let b = f.store.put("spec", Kind::Spec, b"{\"a\":1}").unwrap();
    assert_eq!(cube_files(&f.dir), before, "nothing new written");
    assert_eq!(a.hash(), b.hash());
    let other_day: ObjectId =
        ObjectId::for_content("spec", Day::new(2030, 1, 2).unwrap(), b"{\"a\":1}").unwrap();
    assert_eq!(f.store.get(&other_day).unwrap(), b"{\"a\":1}");
    assert_eq!(f.store.list(None).unwrap().len(), 1);
    let json = serde_json::json!({"z": [1, 2], "a": {"k": "v"}});
    let id = f
        .store
        .put_json("artifacts", Kind::Composite, &json)
        .unwrap();
    assert_eq!(f.store.get_json(&id).unwrap(), (Kind::Composite, json));
    assert!(matches!(
        f.store
            .get(&ObjectId::for_content("spec", Day::today(), b"nope").unwrap()),
        Err(StoreError::NotFound(_))
    ));
}

fn ledger_quarantines(ledger: &Ledger) -> usize {
    (0..ledger.size())
        .filter(|&i| ledger.entry(i).unwrap().record.action == "store.quarantine")
        .count()
}

/// Every byte of a small cube, flipped in turn: the read fails, the cube
/// goes to quarantine, a ledger entry is written, and another object stays
/// readable. (Putting the same content again stores it afresh.)
#[test]
fn flipping_any_byte_of_a_small_cube_quarantines_it() {
    let f = fixture();
    let other = f.store.put("plain", Kind::Blob, b"bystander").unwrap();
    let data = pattern(300, 1);
    let id = f.store.put("plain", Kind::Blob, &data).unwrap();
    let path = cube_files(&f.dir)
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&id.hash().to_string()))
        .unwrap();
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    for i in 0..len {
        f.store.put("plain", Kind::Blob, &data).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[i] ^= 0x80 >> (i % 8);
        std::fs::write(&path, &bytes).unwrap();
        match f.store.get(&id) {
            Err(StoreError::Corrupt { offset, .. }) => assert!(offset as usize <= len, "byte {i}"),
            other => panic!("byte {i}: expected Corrupt, got {other:?}"),
        }
        assert!(!path.exists(), "byte {i}: cube not moved");
        assert!(
            matches!(f.store.get(&id), Err(StoreError::Quarantined(..))),
            "byte {i}: served again"
        );
        assert_eq!(f.store.get(&other).unwrap(), b"bystander");
    }
    assert_eq!(ledger_quarantines(&f.ledger), len);
    assert_eq!(f.store.quarantined().unwrap().len(), len);
}

#[test]
fn a_dense_sample_of_flips_in_a_large_cube_is_caught_even_by_range_reads() {
    let f = fixture();
    let data = pattern(MIB, 3);
    let id = f.store.put("plain", Kind::Blob, &data).unwrap();
    let path = cube_files(&f.dir)[0].clone();
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let mut checked = 0;
    for i in (0..len).step_by(4099) {
        f.store.put("plain", Kind::Blob, &data).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[i] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        // A range read that covers the flipped byte's vertex (or the header).
        let payload_start = len - MIB;
        let at = i.saturating_sub(payload_start) as u64;
        let result = f.store.get_range(&id, at.min(MIB as u64 - 1), 1);
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "byte {i}: {result:?}"
        );
        checked += 1;
    }
    assert!(checked > 250);
}

#[test]
fn an_encrypted_namespace_never_holds_plaintext_on_disk_and_a_wrong_key_fails_cleanly() {
    let f = fixture();
    let secret: Vec<u8> = b"TOP-SECRET-PAYLOAD-"
        .iter()
        .cycle()
        .take(200_000)
        .copied()
        .collect();
    let id = f.store.put("secret", Kind::Blob, &secret).unwrap();
    let needle = &secret[..19];
    let mut scanned = 0;
    for entry in walk(&f.dir.join("store")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext found in {}",
            entry.display()
        );
        scanned += 1;
    }
    assert!(scanned >= 2);
    // Same keyring except the namespace key.
    let ring_path = f.dir.join("keyring.json");
    let mut ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ring_path).unwrap()).unwrap();
    ring["namespaces"]["secret"] = serde_json::json!("11".repeat(32));
    let wrong_path = f.dir.join("wrong.json");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&wrong_path)
            .unwrap();
        file.write_all(ring.to_string().as_bytes()).unwrap();
    }
    let wrong = Store::open(
        &f.dir.join("store"),
        Arc::new(FileKeyring::open(&wrong_path).unwrap()),
        f.ledger.clone(),
    )
    .unwrap();
    let err = wrong.get(&id).unwrap_err().to_string();
    assert!(
        err.starts_with("key:") && err.contains("namespace secret"),
        "{err}"
    );
    assert_eq!(f.store.get(&id).unwrap(), secret, "nothing was quarantined");
    // A different keyring altogether is refused at open.
    let other = Arc::new(FileKeyring::create(&f.dir.join("other.json"), &[]).unwrap());
    let err = Store::open(&f.dir.join("store"), other, f.ledger.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not the one this store was written with"),
        "{err}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
