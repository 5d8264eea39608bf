use super::*;

use bytes::Bytes;

use crate::protocol::{Properties, QoS};

fn config(dir: &Path) -> PersistenceConfig {
    PersistenceConfig {
        path: dir.join("data"),
        ..PersistenceConfig::default()
    }
}

fn retained(topic: &str, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message::new(
        topic.into(),
        Bytes::from_static(payload),
        QoS::AtLeastOnce,
        true,
    ))
}

#[tokio::test]
async fn retained_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, restored) = Store::open(&config(dir.path())).unwrap();
    assert!(restored.retained.is_empty());
    let props = Properties {
        content_type: Some("text/plain".into()),
        ..Properties::default()
    };
    let with_props = Message::new(
        "a/p".into(),
        Bytes::from_static(b"x"),
        QoS::ExactlyOnce,
        true,
    )
    .with_properties(Some(Box::new(props.clone())));
    store.submit(Op::Retain(retained("a/1", b"one")));
    store.submit(Op::Retain(retained("a/2", b"two")));
    store.submit(Op::Retain(Arc::new(with_props)));
    store.submit(Op::Retain(retained("a/1", b"uno")));
    let last = store.submit(Op::Unretain("a/2".into()));
    store.committed(last).await.unwrap();
    drop(store);

    let (store, restored) = Store::open(&config(dir.path())).unwrap();
    let mut got: Vec<(String, Bytes)> = restored
        .retained
        .iter()
        .map(|m| (m.topic.to_string(), m.payload.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a/1".into(), Bytes::from_static(b"uno")),
            ("a/p".into(), Bytes::from_static(b"x")),
        ]
    );
    let p = restored
        .retained
        .iter()
        .find(|m| &*m.topic == "a/p")
        .unwrap();
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert_eq!(p.properties.as_deref(), Some(&props));
    assert_eq!(restored.skipped, 0);
    drop(store);
}

#[tokio::test]
async fn a_ticket_is_committed_only_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&config(dir.path())).unwrap();
    let t = store.submit(Op::Retain(retained("t", b"1")));
    store.committed(t).await.unwrap();
    assert_eq!(store.outcome(t), Some(Ok(())));
    // Visible to another connection to the file: it is in the database, not only in memory.
    let other = Connection::open(store.db_path()).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM retained", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = Store::open(&config(dir.path())).unwrap();
    let e = Store::open(&config(dir.path())).unwrap_err().to_string();
    assert!(e.contains("in use by another mqttd"), "{e}");
    assert!(
        e.contains(&format!("pid {}", std::process::id())),
        "names the owner: {e}"
    );
}

#[test]
fn the_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let (_store, _) = Store::open(&c).unwrap();
    let mode = std::fs::metadata(&c.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_corrupt_file_is_refused_or_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    std::fs::create_dir_all(&c.path).unwrap();
    std::fs::write(
        c.path.join("mqttd.db"),
        b"this is not a database, not at all....",
    )
    .unwrap();
    let e = Store::open(&c).unwrap_err().to_string();
    assert!(e.contains("mqttd.db cannot be read"), "{e}");
    assert!(e.contains("on_corrupt"), "says what to do: {e}");
    c.on_corrupt = OnCorrupt::MoveAside;
    let (store, restored) = Store::open(&c).unwrap();
    assert!(restored.retained.is_empty());
    drop(store);
    let aside = std::fs::read_dir(&c.path)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mqttd.db.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn a_database_from_a_newer_mqttd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    drop(Store::open(&c).unwrap());
    let conn = Connection::open(c.path.join("mqttd.db")).unwrap();
    conn.pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    drop(conn);
    let e = Store::open(&c).unwrap_err().to_string();
    assert!(e.contains("newer mqttd"), "{e}");
}

#[test]
fn bad_rows_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    drop(Store::open(&c).unwrap());
    let conn = Connection::open(c.path.join("mqttd.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO retained VALUES ('good', 0, x'01', NULL, NULL, 0);
         INSERT INTO retained VALUES ('bad/#', 0, x'01', NULL, NULL, 0);
         INSERT INTO retained VALUES ('badqos', 7, x'01', NULL, NULL, 0);
         INSERT INTO retained VALUES ('badprops', 1, x'01', x'0501', NULL, 0);
         INSERT INTO retained VALUES ('expired', 1, x'01', NULL, 1000, 0);",
    )
    .unwrap();
    drop(conn);
    let (_store, restored) = Store::open(&c).unwrap();
    let topics: Vec<&str> = restored.retained.iter().map(|m| &*m.topic).collect();
    assert_eq!(topics, vec!["good"]);
    assert_eq!(restored.skipped, 3);
}

#[tokio::test]
async fn periodic_sync_acknowledges_at_once_and_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let c = PersistenceConfig {
        sync: SyncMode::Periodic,
        interval: Duration::from_millis(50),
        ..config(dir.path())
    };
    let (store, _) = Store::open(&c).unwrap();
    let t = store.submit(Op::Retain(retained("p", b"1")));
    assert_eq!(store.outcome(t), Some(Ok(())));
    store.committed(t).await.unwrap();
    drop(store);
    let (_store, restored) = Store::open(&c).unwrap();
    assert_eq!(restored.retained.len(), 1);
}

/// Rows in `table` (read with a second connection: WAL readers see what was committed).
fn count(dir: &Path, table: &str) -> i64 {
    let conn = Connection::open(dir.join("data").join("mqttd.db")).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// A QoS 1 message as queued for sessions.
fn queued_message() -> Arc<Message> {
    Arc::new(Message::new(
        "t".into(),
        Bytes::from_static(b"p"),
        QoS::AtLeastOnce,
        false,
    ))
}

fn delivery(msg: &Arc<Message>, seq: u64) -> crate::router::state::Delivery {
    let mut d = crate::router::state::Delivery::new(msg.clone(), QoS::AtLeastOnce, false);
    d.seq = seq;
    d
}

fn session_op(id: u64, client_id: &str) -> Op {
    Op::Session {
        id,
        client_id: client_id.into(),
        expiry: 60,
        username: None,
    }
}

#[tokio::test]
async fn a_message_queued_for_two_sessions_is_stored_once_and_goes_with_its_last_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&config(dir.path())).unwrap();
    let msg = queued_message();
    store.submit(session_op(1, "a"));
    store.submit(session_op(2, "b"));
    store.submit(Op::Enqueue {
        id: 1,
        deliveries: vec![delivery(&msg, 1)],
    });
    let t = store.submit(Op::Enqueue {
        id: 2,
        deliveries: vec![delivery(&msg, 1)],
    });
    store.committed(t).await.unwrap();
    assert_eq!(
        count(dir.path(), "messages"),
        1,
        "the payload is stored once"
    );
    assert_eq!(count(dir.path(), "deliveries"), 2);
    let t = store.submit(Op::Remove {
        id: 1,
        removed: vec![(1, msg.clone())],
    });
    store.committed(t).await.unwrap();
    assert_eq!(count(dir.path(), "messages"), 1, "still queued for b");
    let t = store.submit(Op::EndSession(2));
    store.committed(t).await.unwrap();
    assert_eq!(
        count(dir.path(), "messages"),
        0,
        "gone with its last delivery"
    );
    assert_eq!(count(dir.path(), "deliveries"), 0);
    assert_eq!(count(dir.path(), "sessions"), 1);
}

#[test]
fn a_delivery_queued_and_acknowledged_in_one_group_is_never_written() {
    let msg = queued_message();
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    let mut refs = ops::Refs::new();
    let group = vec![
        (1, session_op(1, "a")),
        (
            2,
            Op::Enqueue {
                id: 1,
                deliveries: vec![delivery(&msg, 1), delivery(&msg, 2)],
            },
        ),
        (
            3,
            Op::Sent {
                id: 1,
                sent: vec![(1, 10), (2, 11)],
            },
        ),
        (
            4,
            Op::Remove {
                id: 1,
                removed: vec![(1, msg.clone())],
            },
        ),
    ];
    ops::apply(&mut conn, &group, &mut refs).unwrap();
    let rows: Vec<(i64, Option<i64>)> = conn
        .prepare("SELECT seq, packet_id FROM deliveries")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(2, Some(11))], "only the one still in flight");
    assert_eq!(refs.values().sum::<u32>(), 1);
}

#[test]
fn a_group_that_fails_leaves_memory_as_it_was() {
    let msg = queued_message();
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    // A trigger makes the delivery's insert fail, as a full disk would.
    conn.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'full'); END;",
    )
    .unwrap();
    let mut refs = ops::Refs::new();
    let group = vec![(
        1,
        Op::Enqueue {
            id: 1,
            deliveries: vec![delivery(&msg, 1)],
        },
    )];
    assert!(ops::apply(&mut conn, &group, &mut refs).is_err());
    assert_eq!(
        msg.store_id.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "its row was rolled back: it gets a new one next time"
    );
    assert!(refs.is_empty());
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

/// Found by the `store_sessions` fuzz target: a key column holding another type (SQLite
/// allows any) made the whole load fail, so the broker would not start.
#[test]
fn rows_with_keys_of_another_type_are_left_out_not_fatal() {
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    conn.execute_batch(
        "INSERT INTO sessions (id, client_id, expiry) VALUES (1, 'c', 60);
         INSERT INTO subscriptions (session, filter, options) VALUES ('x', 'a/#', 1);
         INSERT INTO subscriptions (session, filter, options) VALUES (1, 'b/#', 1);
         INSERT INTO messages (id, topic, qos, retain, payload) VALUES (1, 't', 1, 0, x'00');
         INSERT INTO deliveries (session, seq, message, qos, retain) VALUES (1, 1, 'm', 1, 0);
         INSERT INTO deliveries (session, seq, message, qos, retain) VALUES (1, 2, 1, 1, 0);
         INSERT INTO inbound_qos2 (session, packet_id) VALUES (1, 'p');",
    )
    .unwrap();
    let sessions = load_sessions_for_fuzzing(&mut conn).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].subscriptions.len(), 1);
    assert_eq!(sessions[0].deliveries.len(), 1);
    assert!(sessions[0].inbound_qos2.is_empty());
}

/// A store written by the previous version (schema 1: retained messages only) is migrated in
/// place: its retained messages stay, and sessions can be stored from then on.
#[tokio::test]
async fn a_version_1_store_is_migrated_and_keeps_its_retained_messages() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    std::fs::create_dir_all(&c.path).unwrap();
    let conn = Connection::open(c.path.join("mqttd.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE retained (
             topic TEXT PRIMARY KEY NOT NULL, qos INTEGER NOT NULL, payload BLOB NOT NULL,
             properties BLOB, expires_at INTEGER, stored_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         INSERT INTO retained VALUES ('old/topic', 1, x'6869', NULL, NULL, 0);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let (store, restored) = Store::open(&c).unwrap();
    assert_eq!(restored.retained.len(), 1);
    assert_eq!(&*restored.retained[0].topic, "old/topic");
    let t = store.submit(session_op(1, "after-upgrade"));
    store.committed(t).await.unwrap();
    drop(store);
    let (_, restored) = Store::open(&c).unwrap();
    assert_eq!(restored.sessions.len(), 1);
    assert_eq!(&*restored.sessions[0].client_id, "after-upgrade");
}
