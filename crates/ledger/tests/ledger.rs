//! The ledger on disk: appends, proofs from stored nodes, checkpoints, key
//! rotation, recovery from a torn tail, refusal of damage, and tampering
//! caught by `verify`.

use capsule_ledger::merkle::{self, leaf_hash, MemoryTree};
use capsule_ledger::{verify, Ledger, LedgerConfig, LedgerError, LogReader, Record};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ORIGIN: &str = "capsule.test/audit";

fn config() -> LedgerConfig {
    LedgerConfig {
        checkpoint_interval: Duration::from_secs(3600),
        ..LedgerConfig::default()
    }
}

fn record(i: u64) -> Record {
    let mut r = Record::new("agent:test", "brain.step", "allow");
    r.subject = format!("kernel/{i}");
    r.reason = format!("step number {i}");
    r.meta = serde_json::json!({"i": i});
    r
}

fn new_ledger(dir: &Path, n: u64) -> Ledger {
    let ledger = Ledger::create(dir, ORIGIN, config()).unwrap();
    let records = (0..n).map(record).collect();
    ledger.append_batch(records).unwrap();
    ledger
}

fn trusted(dir: &Path) -> capsule_ledger::VerifierKey {
    let text = fs::read_to_string(dir.join("keys/ledger-v1.pub")).unwrap();
    capsule_ledger::VerifierKey::parse(&text).unwrap()
}

#[test]
fn appends_are_numbered_and_read_back_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let ledger = new_ledger(&dir, 10);
    let r = ledger.append(record(10)).unwrap();
    assert_eq!(r.seq, 10);
    assert_eq!(ledger.size(), 11);
    ledger.close().unwrap();
    drop(ledger);
    let ledger = Ledger::open(&dir, config()).unwrap();
    assert_eq!(ledger.size(), 11);
    let e = ledger.entry(10).unwrap();
    assert_eq!(e.seq, 10);
    assert_eq!(e.record, record(10));
    assert_eq!(leaf_hash(&e.encode()), r.leaf_hash);
    assert_eq!(ledger.recovery().rebuilt, 0);
}

#[test]
fn stored_proofs_equal_an_in_memory_tree_for_every_size() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 0);
    let mut mem = MemoryTree::new();
    for i in 0..70u64 {
        let receipt = ledger.append(record(i)).unwrap();
        mem.push(receipt.leaf_hash);
    }
    for n in 1..=70u64 {
        assert_eq!(ledger.root(n).unwrap(), merkle::root(&mem, n).unwrap());
        for i in (0..n).step_by(7) {
            let p = ledger.inclusion_proof(i, n).unwrap();
            assert_eq!(p.path, merkle::inclusion_proof(&mem, i, n).unwrap());
            p.verify().unwrap();
        }
        for m in (1..=n).step_by(5) {
            assert_eq!(
                ledger.consistency_proof(m, n).unwrap(),
                merkle::consistency_proof(&mem, m, n).unwrap()
            );
        }
    }
    assert!(matches!(
        ledger.inclusion_proof(0, 71),
        Err(LedgerError::Invalid { .. })
    ));
}

#[test]
fn concurrent_appenders_share_commits_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 0);
    let mut all = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ledger = &ledger;
                s.spawn(move || {
                    (0..50)
                        .map(|i| ledger.append(record(t * 1000 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            all.extend(h.join().unwrap());
        }
    });
    let mut seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    for r in &all {
        assert_eq!(
            leaf_hash(&ledger.entry(r.seq).unwrap().encode()),
            r.leaf_hash
        );
    }
    ledger.close().unwrap();
    verify(tmp.path(), &trusted(tmp.path())).unwrap();
}

#[test]
fn an_invalid_record_in_a_batch_queues_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 3);
    let mut bad = record(1);
    bad.decision = "ALLOW".into();
    let err = ledger
        .append_batch(vec![record(0), bad])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("records[1].decision"), "{err}");
    assert_eq!(ledger.size(), 3);
    assert_eq!(ledger.append(record(3)).unwrap().seq, 3);
}

#[test]
fn a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _ledger = new_ledger(tmp.path(), 1);
    assert!(matches!(
        Ledger::open(tmp.path(), config()),
        Err(LedgerError::Locked { .. })
    ));
}

#[test]
fn checkpoints_are_issued_on_demand_and_on_a_timer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::create(tmp.path(), ORIGIN, cfg).unwrap();
    ledger.append(record(0)).unwrap();
    let cp = ledger.checkpoint().unwrap();
    assert_eq!(cp.size(), 1);
    assert_eq!(cp.root(), &ledger.root(1).unwrap());
    ledger.append_batch((1..5).map(record).collect()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let latest = ledger.latest_checkpoint().unwrap();
    assert_eq!(
        latest.size(),
        5,
        "the timer issues a checkpoint without being asked"
    );
    ledger.close().unwrap();
    let reader = LogReader::open(tmp.path()).unwrap();
    let sizes: Vec<u64> = reader
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.size())
        .collect();
    assert_eq!(sizes, vec![1, 5]);
    let report = verify(tmp.path(), &trusted(tmp.path())).unwrap();
    assert_eq!((report.entries, report.checkpoints), (5, 2));
}

#[test]
fn appends_are_acknowledged_while_a_checkpoint_is_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(new_ledger(tmp.path(), 3));
    ledger.delay_next_checkpoint(Duration::from_secs(3));
    let asker = ledger.clone();
    let checkpoint = std::thread::spawn(move || asker.checkpoint().unwrap());
    // Give the checkpoint time to be under way.
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    for i in 3..6 {
        ledger.append(record(i)).unwrap();
    }
    let appended = started.elapsed();
    assert!(
        appended < Duration::from_secs(2),
        "three appends took {appended:?} while a checkpoint was written"
    );
    let cp = checkpoint.join().unwrap();
    assert_eq!(cp.size(), 3);
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert_eq!(ledger.checkpoint().unwrap().size(), 6);
}

#[test]
fn an_empty_ledger_checkpoints_the_empty_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 0);
    let cp = ledger.checkpoint().unwrap();
    assert_eq!(cp.size(), 0);
    assert_eq!(cp.root(), &merkle::empty_root());
    ledger.close().unwrap();
    assert_eq!(
        verify(tmp.path(), &trusted(tmp.path()))
            .unwrap()
            .checkpoints,
        1
    );
}

#[test]
fn key_rotation_is_logged_and_followed_by_verifiers() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 4);
    let first = ledger.checkpoint().unwrap();
    let old = ledger.verifier_key();
    let new = ledger.rotate_key().unwrap();
    assert_ne!(old, new);
    assert_eq!(ledger.verifier_key(), new);
    let rotation = ledger.entry(4).unwrap();
    assert_eq!(rotation.record.action, "ledger.key_rotate");
    let after = ledger.checkpoint().unwrap();
    assert_eq!(after.size(), 5);
    assert_eq!(after.key_id(), new.key_id());
    assert_ne!(first.key_id(), after.key_id());
    ledger.append(record(5)).unwrap();
    ledger.close().unwrap();
    drop(ledger);
    // The rotation survives a reopen: new checkpoints use the new key.
    let ledger = Ledger::open(tmp.path(), config()).unwrap();
    assert_eq!(ledger.verifier_key(), new);
    assert_eq!(ledger.checkpoint().unwrap().size(), 6);
    ledger.close().unwrap();
    let report = verify(tmp.path(), &old).unwrap();
    assert_eq!(report.key_rotations, 1);
    assert_eq!(report.current_key, new.to_string());
    // Starting from the new key alone does not verify the old checkpoints.
    assert!(verify(tmp.path(), &new).is_err());
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn a_torn_tail_is_cut_and_unacknowledged_entries_are_kept_or_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 20);
    ledger.close().unwrap();
    drop(ledger);
    // Entries durable in their segment but not yet in nodes/index (so no
    // checkpoint can cover them yet): rebuilt.
    fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("checkpoints"))
        .unwrap()
        .set_len(8)
        .unwrap();
    let index_len = fs::metadata(tmp.path().join("index")).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("index"))
        .unwrap()
        .set_len(index_len - 8 * 2)
        .unwrap();
    // Half a record at the end: a torn write.
    let seg = last_segment(tmp.path());
    let seg_len = fs::metadata(&seg).unwrap().len();
    let mut bytes = fs::read(&seg).unwrap();
    let torn = bytes[16..40].to_vec();
    bytes.extend_from_slice(&torn);
    fs::write(&seg, &bytes).unwrap();
    let ledger = Ledger::open(tmp.path(), config()).unwrap();
    let rec = ledger.recovery().clone();
    assert_eq!(rec.entries, 20);
    assert_eq!(rec.rebuilt, 2);
    assert_eq!(rec.truncated_bytes, 24);
    assert_eq!(fs::metadata(&seg).unwrap().len(), seg_len);
    assert_eq!(ledger.append(record(20)).unwrap().seq, 20);
    ledger.close().unwrap();
    verify(tmp.path(), &trusted(tmp.path())).unwrap();
}

#[test]
fn damage_to_an_acknowledged_entry_is_refused_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = new_ledger(tmp.path(), 20);
    ledger.close().unwrap();
    drop(ledger);
    let seg = last_segment(tmp.path());
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() - 5; // inside the last, acknowledged, record
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match Ledger::open(tmp.path(), config()) {
        Err(LedgerError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, seg);
            assert!(offset < at as u64 && offset > 16, "offset {offset}");
            assert!(reason.contains("acknowledged"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Nothing was cut: the damaged bytes are still there for inspection.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn segments_roll_over_and_proofs_span_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        segment_bytes: 4096,
        ..config()
    };
    let ledger = Ledger::create(tmp.path(), ORIGIN, cfg.clone()).unwrap();
    for chunk in 0..10u64 {
        ledger
            .append_batch((chunk * 30..chunk * 30 + 30).map(record).collect())
            .unwrap();
    }
    let segments = fs::read_dir(tmp.path().join("segments")).unwrap().count();
    assert!(segments > 5, "{segments} segments");
    ledger.checkpoint().unwrap();
    assert_eq!(ledger.entry(299).unwrap().record, record(299));
    ledger.close().unwrap();
    drop(ledger);
    let ledger = Ledger::open(tmp.path(), cfg).unwrap();
    assert_eq!(ledger.size(), 300);
    ledger.close().unwrap();
    verify(tmp.path(), &trusted(tmp.path())).unwrap();
}

/// Every byte of every segment and of the checkpoints file of a small
/// log, flipped in turn, makes `verify` fail and name that file.
#[test]
fn flipping_any_byte_of_segments_or_checkpoints_fails_verify_with_the_location() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ledger = new_ledger(dir, 3);
    ledger.checkpoint().unwrap();
    ledger.append(record(3)).unwrap();
    ledger.checkpoint().unwrap();
    ledger.close().unwrap();
    drop(ledger);
    let key = trusted(dir);
    verify(dir, &key).unwrap();
    let mut files = vec![
        dir.join("checkpoints"),
        dir.join("nodes"),
        dir.join("index"),
    ];
    files.extend(
        fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let mut checked = 0;
    for file in files {
        let original = fs::read(&file).unwrap();
        for i in 0..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01 << (i % 8);
            fs::write(&file, &bytes).unwrap();
            match verify(dir, &key) {
                Err(LedgerError::Corrupt {
                    file: f, offset, ..
                }) => {
                    assert_eq!(f, file, "byte {i} of {}", file.display());
                    assert!(offset <= i as u64, "byte {i} reported at {offset}");
                }
                other => panic!(
                    "byte {i} of {}: expected Corrupt, got {other:?}",
                    file.display()
                ),
            }
            checked += 1;
        }
        fs::write(&file, &original).unwrap();
    }
    assert!(checked > 1000, "{checked} positions");
    verify(dir, &key).unwrap();
}

fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// What a writer killed mid-append leaves: 20 entries in the segment, the
/// last 2 without index slots (never acknowledged), half a record after
/// them, and no checkpoint past the 18 acknowledged entries.
fn crashed_ledger(dir: &Path) -> PathBuf {
    let ledger = new_ledger(dir, 20);
    ledger.close().unwrap();
    drop(ledger);
    set_len(&dir.join("checkpoints"), 8);
    set_len(&dir.join("index"), 18 * 8);
    let seg = last_segment(dir);
    let mut bytes = fs::read(&seg).unwrap();
    let torn = bytes[16..40].to_vec();
    bytes.extend_from_slice(&torn);
    fs::write(&seg, &bytes).unwrap();
    seg
}

#[test]
fn verify_checks_the_acknowledged_prefix_and_reports_the_tail_that_recovery_then_settles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = crashed_ledger(dir);
    let seg_len = fs::metadata(&seg).unwrap().len();
    let report = verify(dir, &trusted(dir)).unwrap();
    assert_eq!(report.entries, 18);
    assert!(!report.is_clean());
    let tail = &report.tail;
    assert_eq!(tail.first_seq, 18);
    assert_eq!(tail.entries(), 2);
    assert_eq!(tail.records.len(), 1);
    assert_eq!(tail.records[0].file, seg);
    assert_eq!(tail.records[0].first_seq, 18);
    assert_eq!(tail.records[0].end, seg_len - 24);
    let cut = tail.cut.as_ref().unwrap();
    assert_eq!(
        (cut.file.as_path(), cut.offset, cut.bytes),
        (seg.as_path(), seg_len - 24, 24)
    );
    assert!(cut.torn && !cut.removes_file);
    // Nodes for the last 2 entries are stored, their index slots are not.
    assert!(tail.extra_node_bytes > 0);
    assert_eq!(tail.extra_index_bytes, 0);

    // Verify changed nothing; recovery does exactly what it reported.
    assert_eq!(fs::metadata(&seg).unwrap().len(), seg_len);
    let ledger = Ledger::open(dir, config()).unwrap();
    assert_eq!(&ledger.recovery().tail, tail);
    assert_eq!(ledger.size(), 20);
    ledger.close().unwrap();
    drop(ledger);
    let report = verify(dir, &trusted(dir)).unwrap();
    assert!(report.is_clean(), "{:?}", report.tail);
    assert_eq!(report.entries, 20);
}

#[test]
fn a_flipped_byte_in_the_acknowledged_prefix_is_damage_even_beside_a_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = crashed_ledger(dir);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[40] ^= 0x04; // inside entry 0's record
    fs::write(&seg, &bytes).unwrap();
    for result in [
        verify(dir, &trusted(dir)).map(|_| ()),
        Ledger::open(dir, config()).map(|_| ()),
    ] {
        match result {
            Err(LedgerError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, seg);
                assert_eq!(offset, 16);
            }
            other => panic!("expected damage, got {other:?}"),
        }
    }
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn a_checkpoint_past_the_acknowledged_prefix_is_damage_not_a_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ledger = new_ledger(dir, 20);
    ledger.close().unwrap();
    drop(ledger);
    // The checkpoint of size 20 proves 20 entries were acknowledged: losing
    // index slots under it is damage, however much it looks like a crash.
    set_len(&dir.join("index"), 18 * 8);
    match verify(dir, &trusted(dir)) {
        Err(LedgerError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, dir.join("checkpoints"));
            assert!(reason.contains("18 are acknowledged"), "{reason}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_bad_record_with_a_later_segment_after_it_is_damage_not_a_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = LedgerConfig {
        segment_bytes: 4096,
        ..config()
    };
    let ledger = Ledger::create(dir, ORIGIN, cfg.clone()).unwrap();
    for chunk in 0..4u64 {
        ledger
            .append_batch((chunk * 30..chunk * 30 + 30).map(record).collect())
            .unwrap();
    }
    ledger.close().unwrap();
    drop(ledger);
    // Nothing acknowledged (as if index and nodes were lost), then a record
    // of segment 2 garbled: a crash cannot do that with segment 3 present.
    set_len(&dir.join("checkpoints"), 8);
    set_len(&dir.join("index"), 0);
    set_len(&dir.join("nodes"), 0);
    let seg2 = dir.join("segments/00000002.seg");
    assert!(dir.join("segments/00000003.seg").exists());
    let mut bytes = fs::read(&seg2).unwrap();
    bytes[30] ^= 0x01;
    fs::write(&seg2, &bytes).unwrap();
    for result in [
        verify(dir, &trusted(dir)).map(|_| ()),
        Ledger::open(dir, cfg.clone()).map(|_| ()),
    ] {
        match result {
            Err(LedgerError::Corrupt { file, reason, .. }) => {
                assert_eq!(file, seg2);
                assert!(reason.contains(".seg follows"), "{reason}");
            }
            other => panic!("expected damage, got {other:?}"),
        }
    }
    assert_eq!(fs::read(&seg2).unwrap(), bytes);
}
