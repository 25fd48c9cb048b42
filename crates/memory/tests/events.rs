//! The episodic event store through its public API, on temporary files.

use capsule_memory::{
    Event, EventQuery, EventStore, MemoryError, NewEvent, FOLD_PAGE_SIZE, MAX_QUERY_LIMIT,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use tempfile::TempDir;

fn open() -> (TempDir, EventStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(&dir.path().join("events.db")).unwrap();
    (dir, store)
}

fn new(kind: &str, glyph: &str, body: Value) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        lane: "default".into(),
        glyph: glyph.into(),
        payload_ref: None,
        body,
    }
}

fn invalid_field(err: MemoryError) -> String {
    match err {
        MemoryError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn ids(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

#[test]
fn an_appended_event_reads_back_identical() {
    let (_dir, store) = open();
    let mut e = new(
        "think",
        "glyph-7",
        json!({"plan": {"op": "brain.step"}, "x": 1.5}),
    );
    e.payload_ref = Some("obj:artifact:2026-01-01:abc".into());
    let stored = store.append(e.clone()).unwrap();
    assert_eq!(stored.kind, e.kind);
    assert_eq!(stored.lane, e.lane);
    assert_eq!(stored.glyph, e.glyph);
    assert_eq!(stored.payload_ref, e.payload_ref);
    assert_eq!(stored.body, e.body);
    assert_eq!(store.get(stored.id).unwrap(), stored);
}

#[test]
fn ids_strictly_increase_and_timestamps_never_decrease() {
    let (_dir, store) = open();
    let events: Vec<Event> = (0..50)
        .map(|i| store.append(new("think", "g", json!({ "i": i }))).unwrap())
        .collect();
    for pair in events.windows(2) {
        assert!(pair[1].id > pair[0].id);
        assert!(pair[1].ts >= pair[0].ts);
    }
    assert!(
        events[0].ts > 1_600_000_000_000_000_000,
        "ts is ns since epoch"
    );
    assert_eq!(store.count().unwrap(), 50);
}

#[test]
fn get_of_a_missing_id_is_not_found() {
    let (_dir, store) = open();
    assert!(matches!(
        store.get(42),
        Err(MemoryError::NotFound { id: 42 })
    ));
}

#[test]
fn query_by_glyph_returns_only_that_glyph_in_id_order() {
    let (_dir, store) = open();
    for i in 0..10 {
        let glyph = if i % 2 == 0 { "even" } else { "odd" };
        store
            .append(new("think", glyph, json!({ "i": i })))
            .unwrap();
    }
    let q = EventQuery {
        glyph: Some("odd".into()),
        ..EventQuery::default()
    };
    let found = store.query(&q).unwrap();
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|e| e.glyph == "odd"));
    assert!(found.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn query_by_kind_and_glyph_matches_both() {
    let (_dir, store) = open();
    store.append(new("think", "a", json!({}))).unwrap();
    let want = store.append(new("tool.call", "a", json!({}))).unwrap();
    store.append(new("tool.call", "b", json!({}))).unwrap();
    let q = EventQuery {
        glyph: Some("a".into()),
        kind: Some("tool.call".into()),
        ..EventQuery::default()
    };
    assert_eq!(store.query(&q).unwrap(), vec![want]);
}

#[test]
fn query_by_time_window_includes_from_and_excludes_to() {
    let (_dir, store) = open();
    let events: Vec<Event> = (0..6)
        .map(|i| store.append(new("think", "g", json!({ "i": i }))).unwrap())
        .collect();
    let (from, to) = (events[1].ts, events[4].ts);
    let q = EventQuery {
        glyph: Some("g".into()),
        from_ts: Some(from),
        to_ts: Some(to),
        ..EventQuery::default()
    };
    let found = store.query(&q).unwrap();
    let expected: Vec<i64> = events
        .iter()
        .filter(|e| e.ts >= from && e.ts < to)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids(&found), expected);
    assert!(found.iter().any(|e| e.id == events[1].id));
}

#[test]
fn query_pages_with_after_id() {
    let (_dir, store) = open();
    let events: Vec<Event> = (0..5)
        .map(|i| store.append(new("think", "g", json!({ "i": i }))).unwrap())
        .collect();
    let q = EventQuery {
        after_id: Some(events[2].id),
        ..EventQuery::default()
    };
    assert_eq!(ids(&store.query(&q).unwrap()), ids(&events[3..]));
}

#[test]
fn query_with_a_window_that_ends_before_it_starts_is_rejected_naming_to_ts() {
    let (_dir, store) = open();
    let q = EventQuery {
        from_ts: Some(10),
        to_ts: Some(9),
        ..EventQuery::default()
    };
    assert_eq!(invalid_field(store.query(&q).unwrap_err()), "to_ts");
}

#[test]
fn query_with_limit_zero_is_rejected_naming_limit() {
    let (_dir, store) = open();
    let q = EventQuery {
        limit: 0,
        ..EventQuery::default()
    };
    assert_eq!(invalid_field(store.query(&q).unwrap_err()), "limit");
}

#[test]
fn query_returns_at_most_limit_events() {
    let (_dir, store) = open();
    for i in 0..5 {
        store.append(new("think", "g", json!({ "i": i }))).unwrap();
    }
    let q = EventQuery {
        limit: 3,
        ..EventQuery::default()
    };
    assert_eq!(store.query(&q).unwrap().len(), 3);
}

#[test]
fn query_limit_is_capped_at_max_query_limit() {
    let (_dir, store) = open();
    for i in 0..=MAX_QUERY_LIMIT {
        store.append(new("think", "g", json!({ "i": i }))).unwrap();
    }
    let at = EventQuery {
        limit: MAX_QUERY_LIMIT,
        ..EventQuery::default()
    };
    assert_eq!(store.query(&at).unwrap().len(), MAX_QUERY_LIMIT);
    let over = EventQuery {
        limit: MAX_QUERY_LIMIT + 1,
        ..EventQuery::default()
    };
    assert_eq!(store.query(&over).unwrap().len(), MAX_QUERY_LIMIT);
    let huge = EventQuery {
        limit: usize::MAX,
        ..EventQuery::default()
    };
    assert_eq!(store.query(&huge).unwrap().len(), MAX_QUERY_LIMIT);
}

#[test]
fn an_invalid_kind_is_rejected_naming_kind_and_nothing_is_stored() {
    let (_dir, store) = open();
    store.append(new("think", "g", json!({}))).unwrap();
    let err = store.append(new("Think!", "g", json!({}))).unwrap_err();
    assert_eq!(invalid_field(err), "kind");
    assert_eq!(store.count().unwrap(), 1);
}

#[test]
fn a_body_that_is_not_an_object_is_rejected_naming_body_and_nothing_is_stored() {
    let (_dir, store) = open();
    let err = store.append(new("think", "g", json!([1, 2]))).unwrap_err();
    assert_eq!(invalid_field(err), "body");
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn an_oversized_body_is_rejected_naming_body_and_nothing_is_stored() {
    let (_dir, store) = open();
    let big = "x".repeat(capsule_memory::MAX_BODY_BYTES);
    let err = store
        .append(new("think", "g", json!({ "x": big })))
        .unwrap_err();
    assert_eq!(invalid_field(err), "body");
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn retract_removes_the_last_event() {
    let (_dir, store) = open();
    store.append(new("think", "g", json!({}))).unwrap();
    let last = store.append(new("think", "g", json!({}))).unwrap();
    assert!(store.retract(last.id).unwrap());
    assert_eq!(store.count().unwrap(), 1);
    assert!(matches!(
        store.get(last.id),
        Err(MemoryError::NotFound { .. })
    ));
}

#[test]
fn retract_of_an_event_that_is_not_the_last_is_refused_and_keeps_it() {
    let (_dir, store) = open();
    let first = store.append(new("think", "g", json!({}))).unwrap();
    store.append(new("think", "g", json!({}))).unwrap();
    assert_eq!(invalid_field(store.retract(first.id).unwrap_err()), "id");
    assert_eq!(store.get(first.id).unwrap(), first);
    assert_eq!(store.count().unwrap(), 2);
}

#[test]
fn retract_of_a_missing_id_returns_false() {
    let (_dir, store) = open();
    assert!(!store.retract(1).unwrap());
    let e = store.append(new("think", "g", json!({}))).unwrap();
    assert!(!store.retract(e.id + 1).unwrap());
    assert!(store.retract(e.id).unwrap());
    assert!(!store.retract(e.id).unwrap());
}

#[test]
fn a_retracted_id_is_never_assigned_again() {
    let (dir, store) = open();
    let e = store.append(new("think", "g", json!({}))).unwrap();
    assert!(store.retract(e.id).unwrap());
    let next = store.append(new("think", "g", json!({}))).unwrap();
    assert!(next.id > e.id);
    assert!(store.retract(next.id).unwrap());
    drop(store);
    let store = EventStore::open(&dir.path().join("events.db")).unwrap();
    assert!(store.append(new("think", "g", json!({}))).unwrap().id > next.id);
}

#[test]
fn reopening_keeps_every_event_and_keeps_ids_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let before: Vec<Event> = {
        let store = EventStore::open(&path).unwrap();
        (0..20)
            .map(|i| store.append(new("think", "g", json!({ "i": i }))).unwrap())
            .collect()
    };
    let store = EventStore::open(&path).unwrap();
    assert_eq!(store.path(), path.as_path());
    assert_eq!(store.count().unwrap(), 20);
    assert_eq!(store.query(&EventQuery::default()).unwrap(), before);
    let after = store.append(new("think", "g", json!({}))).unwrap();
    let last = before.last().unwrap();
    assert!(after.id > last.id);
    assert!(after.ts >= last.ts);
}

#[test]
fn open_refuses_an_unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    drop(EventStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    match EventStore::open(&path) {
        Err(MemoryError::Schema { found, .. }) => assert_eq!(found, "99"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn open_of_a_file_that_is_not_a_database_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = EventStore::open(&path).unwrap_err();
    assert!(matches!(err, MemoryError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("events.db"), "{err}");
}

#[test]
fn fold_visits_every_event_in_order_across_pages() {
    let (_dir, store) = open();
    let n = 2 * FOLD_PAGE_SIZE + 7;
    for i in 0..n {
        store.append(new("think", "g", json!({ "i": i }))).unwrap();
    }
    let seen = store
        .fold(0, Vec::new(), |mut acc, e| {
            acc.push((e.id, e.body["i"].as_u64().unwrap()));
            acc
        })
        .unwrap();
    assert_eq!(seen.len(), n);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(seen.iter().enumerate().all(|(i, &(_, b))| b == i as u64));
}

#[test]
fn fold_of_an_exact_number_of_pages_visits_them_all() {
    let (_dir, store) = open();
    for i in 0..FOLD_PAGE_SIZE {
        store.append(new("think", "g", json!({ "i": i }))).unwrap();
    }
    assert_eq!(store.fold(0, 0usize, |n, _| n + 1).unwrap(), FOLD_PAGE_SIZE);
}

#[test]
fn fold_starts_after_the_given_id() {
    let (_dir, store) = open();
    let events: Vec<Event> = (0..10)
        .map(|i| store.append(new("think", "g", json!({ "i": i }))).unwrap())
        .collect();
    let visited = store
        .fold(events[6].id, Vec::new(), |mut acc, e| {
            acc.push(e.id);
            acc
        })
        .unwrap();
    assert_eq!(visited, ids(&events[7..]));
}

#[test]
fn fold_of_an_empty_store_returns_the_initial_state() {
    let (_dir, store) = open();
    assert_eq!(store.fold(0, 7, |n, _| n + 1).unwrap(), 7);
}

#[test]
fn fold_ignores_events_appended_while_it_runs() {
    let (_dir, store) = open();
    for _ in 0..3 {
        store.append(new("think", "g", json!({}))).unwrap();
    }
    let visited = store
        .fold(0, 0, |n, _| {
            store.append(new("think", "g", json!({}))).unwrap();
            n + 1
        })
        .unwrap();
    assert_eq!(visited, 3);
    assert_eq!(store.count().unwrap(), 6);
}

#[test]
fn the_store_can_be_shared_between_threads() {
    let (_dir, store) = open();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                for i in 0..25 {
                    store
                        .append(new("think", "g", json!({ "t": t, "i": i })))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.count().unwrap(), 100);
    let all = store.fold(0, Vec::new(), |mut acc, e| {
        acc.push(e.clone());
        acc
    });
    let all = all.unwrap();
    assert!(all
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].ts <= w[1].ts));
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_new_event() -> impl Strategy<Value = NewEvent> {
    (
        "[a-z0-9_.-]{1,64}",
        "[a-z0-9_.-]{1,64}",
        "[^\\p{Cc}]{0,32}",
        prop::option::of(".{0,64}"),
        prop::collection::btree_map(any::<String>(), json_value(), 0..8),
    )
        .prop_map(|(kind, lane, glyph, payload_ref, body)| NewEvent {
            kind,
            lane,
            glyph,
            payload_ref,
            body: Value::Object(body.into_iter().collect()),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_valid_new_event_round_trips_exactly_through_append_and_get(e in valid_new_event()) {
        let (_dir, store) = open();
        let stored = store.append(e.clone()).unwrap();
        prop_assert_eq!(&stored.kind, &e.kind);
        prop_assert_eq!(&stored.lane, &e.lane);
        prop_assert_eq!(&stored.glyph, &e.glyph);
        prop_assert_eq!(&stored.payload_ref, &e.payload_ref);
        prop_assert_eq!(&stored.body, &e.body);
        prop_assert_eq!(store.get(stored.id).unwrap(), stored);
    }
}

mod wal {
    use super::new;
    use capsule_memory::{EventStore, MemoryError, WalConfig};
    use serde_json::json;
    use std::path::Path;
    use std::time::{Duration, Instant};

    const PAGE: u64 = 4096;

    fn len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Append events of about 3 KiB each until the WAL holds `pages` pages.
    fn fill(store: &EventStore, wal: &Path, pages: u64) {
        let text = "x".repeat(3000);
        let mut n = 0;
        while len(wal) < pages * PAGE {
            store
                .append(new("think", "g", json!({ "text": text })))
                .unwrap();
            n += 1;
            assert!(n < 100_000, "the WAL never reached {pages} pages");
        }
    }

    #[test]
    fn appends_leave_the_wal_to_the_background_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        let wal = dir.path().join("events.db-wal");
        // No background checkpoint during the test: SQLite's default would
        // have checkpointed (and so fsynced) inside the commit at 1000 pages.
        let config = WalConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..WalConfig::default()
        };
        let store = EventStore::open_with(&db, &config).unwrap();
        let db_len = len(&db);
        fill(&store, &wal, 1500);
        assert_eq!(
            len(&db),
            db_len,
            "an append copied the WAL into the database"
        );
    }

    #[test]
    fn the_background_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        let wal = dir.path().join("events.db-wal");
        let config = WalConfig {
            checkpoint_interval: Duration::from_millis(20),
            ..WalConfig::default()
        };
        let store = EventStore::open_with(&db, &config).unwrap();
        let db_len = len(&db);
        fill(&store, &wal, 50);
        let deadline = Instant::now() + Duration::from_secs(10);
        while len(&db) < db_len + 10 * PAGE {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_backstop_bounds_the_wal_when_no_background_checkpoint_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        let wal = dir.path().join("events.db-wal");
        let config = WalConfig {
            checkpoint_interval: Duration::from_secs(3600),
            backstop_pages: 100,
        };
        let store = EventStore::open_with(&db, &config).unwrap();
        let text = "x".repeat(3000);
        for _ in 0..2000 {
            store
                .append(new("think", "g", json!({ "text": text })))
                .unwrap();
            // The commit that passes the backstop checkpoints; the next one
            // restarts the log from its beginning.
            assert!(len(&wal) <= 110 * PAGE, "WAL of {} bytes", len(&wal));
        }
    }

    #[test]
    fn a_wal_config_out_of_bounds_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        for (config, field) in [
            (
                WalConfig {
                    backstop_pages: 0,
                    ..WalConfig::default()
                },
                "backstop_pages",
            ),
            (
                WalConfig {
                    checkpoint_interval: Duration::ZERO,
                    ..WalConfig::default()
                },
                "checkpoint_interval",
            ),
        ] {
            match EventStore::open_with(&db, &config) {
                Err(MemoryError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected Invalid {field}, got {other:?}"),
            }
        }
    }
}
