//! The recorder, the retention limits and the query, on a router and files of their own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::Properties;
use crate::router::{Message, PublishedBy, RouterLimits};

fn router() -> Arc<Router> {
    Arc::new(Router::new(RouterLimits {
        max_queued_messages: 1000,
        max_queued_bytes: 1 << 30,
        max_queued_bytes_per_client: 1 << 30,
        slow_subscriber_timeout: Duration::from_secs(1),
    }))
}

fn config(filters: &[&str]) -> HistoryConfig {
    HistoryConfig {
        enabled: true,
        filters: filters.iter().map(|f| f.to_string()).collect(),
        ..HistoryConfig::default()
    }
}

/// Routes a message as the ingress does after its checks.
fn publish(router: &Router, msg: Message) {
    router.publish(Arc::new(msg));
}

fn message(topic: &str, payload: &str) -> Message {
    Message::new(
        topic.into(),
        Bytes::copy_from_slice(payload.as_bytes()),
        QoS::AtLeastOnce,
        false,
    )
}

fn everything(db: &Path) -> Found {
    let conn = open_read_only(db).expect("history opens read-only");
    query::run(
        &conn,
        &Query {
            filter: "#".into(),
            since: None,
            until: None,
            limit: usize::MAX,
            before: None,
        },
    )
    .expect("query")
}

#[test]
fn records_what_its_filters_match_and_close_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let router = router();
    let history = History::start(&config(&["a/#", "$SYS/uptime"]), dir.path(), &router).unwrap();
    let mut by_alice = message("a/b", "one").with_properties(Some(Box::new(Properties {
        content_type: Some("text/plain".into()),
        ..Properties::default()
    })));
    by_alice.retain = true;
    by_alice.published_by = Some(Arc::new(PublishedBy {
        client_id: "dev1".into(),
        username: Some("alice".into()),
    }));
    publish(&router, by_alice);
    publish(&router, message("b/c", "not recorded"));
    publish(&router, message("$SYS/uptime", "12"));
    publish(&router, message("$SYS/load", "not named"));
    publish(&router, message("a", "parent"));
    // Nothing waits for the batch to fill: close writes what is queued.
    history.close();

    let found = everything(&db_path(dir.path()));
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let topics: Vec<_> = found.messages.iter().map(|m| m.topic.as_str()).collect();
    // `#` in the query does not match `$SYS` either.
    assert_eq!(topics, ["a/b", "a"]);
    let m = &found.messages[0];
    assert_eq!(m.payload, Bytes::from_static(b"one"));
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert!(m.retain);
    assert_eq!(m.client_id.as_deref(), Some("dev1"));
    assert_eq!(m.username.as_deref(), Some("alice"));
    let props = m.properties.as_deref().expect("properties kept");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(found.messages[1].client_id, None);

    let conn = open_read_only(&db_path(dir.path())).unwrap();
    let sys = query::run(
        &conn,
        &Query {
            filter: "$SYS/#".into(),
            since: None,
            until: None,
            limit: 10,
            before: None,
        },
    )
    .unwrap();
    assert_eq!(sys.messages.len(), 1);
    assert_eq!(sys.messages[0].payload, Bytes::from_static(b"12"));
    // Reading only.
    let e = conn.execute("DELETE FROM messages", []).unwrap_err();
    assert!(e.to_string().contains("readonly"), "{e}");
    // With the broker gone, a reader leaves no -wal or -shm file behind.
    drop(conn);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["history.db"]);
}

#[test]
fn a_recorder_that_is_behind_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let router = router();
    let db = db_path(dir.path());
    // Another connection holding the write lock keeps the recorder from committing: it holds
    // at most a batch, what its handle took from the queue (the whole queue, at most) and a
    // full queue. The rest is dropped, however the threads are scheduled.
    let history = History::start(&config(&["#"]), dir.path(), &router).unwrap();
    let blocker = Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let sent = 3 * QUEUE_MESSAGES + writer::BATCH_MAX;
    for i in 0..sent {
        publish(&router, message("t", &i.to_string()));
    }
    let held = 2 * QUEUE_MESSAGES + writer::BATCH_MAX;
    assert!(
        history.dropped() >= (sent - held) as u64,
        "{}",
        history.dropped()
    );
    blocker.execute_batch("ROLLBACK;").unwrap();
    let dropped = history.dropped();
    history.close();
    let recorded = everything(&db).messages.len() as u64;
    let sent = sent as u64;
    assert!(recorded > 0);
    assert!(
        recorded + dropped <= sent,
        "{recorded} + {dropped} > {sent}"
    );
}

/// Inserts `n` rows of `payload_len` bytes at `time`, in one transaction.
fn fill(conn: &mut Connection, n: usize, time: i64, payload_len: usize) {
    let tx = conn.transaction().unwrap();
    for i in 0..n {
        let row = Recorded {
            time,
            topic: format!("t/{}", i % 7),
            qos: QoS::AtMostOnce,
            retain: false,
            client_id: None,
            username: None,
            payload: Bytes::from(vec![b'x'; payload_len]),
            properties: None,
        }
        .to_row();
        tx.execute(
            "INSERT INTO messages (time, topic, qos, retain, client_id, username, payload, payload_len, properties)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                row.time,
                String::from_utf8(row.topic).unwrap(),
                row.qos,
                row.retain,
                row.client_id,
                row.username,
                row.payload,
                row.payload_len,
                row.properties
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

fn limits() -> Retention {
    Retention {
        max_age: Duration::from_secs(3600),
        max_rows: None,
        max_bytes: None,
    }
}

#[test]
fn retention_by_age_and_by_rows_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&db_path(dir.path())).unwrap();
    let now = 10_000_000_000;
    fill(&mut conn, 5, now - 3_600_001, 10); // too old
    fill(&mut conn, 5, now - 3_599_999, 10);
    fill(&mut conn, 5, now, 10);
    assert!(!enforce(&conn, &limits(), now).unwrap());
    assert_eq!(count(&conn), 10);
    let oldest: i64 = conn
        .query_row("SELECT min(time) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(oldest, now - 3_599_999);

    let by_rows = Retention {
        max_rows: Some(3),
        ..limits()
    };
    assert!(!enforce(&conn, &by_rows, now).unwrap());
    assert_eq!(count(&conn), 3);
    let kept: Vec<i64> = conn
        .prepare("SELECT id FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kept, [13, 14, 15]);
    // Under the limit: nothing more goes.
    assert!(!enforce(&conn, &by_rows, now).unwrap());
    assert_eq!(count(&conn), 3);
}

#[test]
fn a_big_backlog_goes_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&db_path(dir.path())).unwrap();
    let n = writer::DELETE_CHUNK as usize + 10;
    fill(&mut conn, n, 0, 1);
    let now = 10_000_000_000;
    assert!(enforce(&conn, &limits(), now).unwrap(), "more to delete");
    assert_eq!(count(&conn), 10);
    assert!(!enforce(&conn, &limits(), now).unwrap());
    assert_eq!(count(&conn), 0);
}

#[test]
fn retention_by_bytes_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&db_path(dir.path())).unwrap();
    let now = 10_000_000_000;
    // 4 MiB of payloads.
    fill(&mut conn, 4096, now, 1024);
    let before = used_bytes(&conn).unwrap();
    assert!(before > 4 << 20, "{before}");
    let max = 1 << 20;
    let by_bytes = Retention {
        max_bytes: Some(max),
        ..limits()
    };
    for _ in 0..20 {
        if !enforce(&conn, &by_bytes, now).unwrap() {
            break;
        }
    }
    let pages: u64 = conn
        .pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    let size: u64 = conn
        .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    // The free pages went back: the file itself is within the limit.
    assert!(pages * size <= max, "{} > {max}", pages * size);
    let left = count(&conn);
    assert!((500..1024).contains(&left), "{left} rows left");
    // The newest were kept.
    let max_id: i64 = conn
        .query_row("SELECT max(id) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(max_id, 4096);
}

#[test]
fn query_by_filter_time_and_limit_and_bad_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(dir.path());
    let conn = connect(&db).unwrap();
    let rows: &[(i64, &str)] = &[
        (1000, "sensors/a/temp"),
        (2000, "sensors/b/temp"),
        (3000, "sensors"),
        (4000, "sensorsX/temp"),
        (5000, "sensors/a/hum"),
        (6000, "other"),
    ];
    for (time, topic) in rows {
        conn.execute(
            "INSERT INTO messages (time, topic, qos, retain, payload, payload_len)
             VALUES (?1, ?2, 0, 0, x'00', 1)",
            rusqlite::params![time, topic],
        )
        .unwrap();
    }
    // Bad rows, as a careless hand or a disk error could leave them.
    conn.execute_batch(
        "INSERT INTO messages (time, topic, qos, retain, payload, payload_len)
           VALUES (2500, 'sensors/c/temp', 7, 0, x'', 0);
         INSERT INTO messages (time, topic, qos, retain, payload, payload_len)
           VALUES (2600, x'ff', 0, 0, x'', 0);
         INSERT INTO messages (time, topic, qos, retain, payload, payload_len)
           VALUES (-5, 'sensors/d/temp', 0, 0, x'', 0);
         INSERT INTO messages (time, topic, qos, retain, payload, payload_len)
           VALUES ('soon', 'sensors/e/temp', 0, 0, x'', 0);",
    )
    .unwrap();
    let read = open_read_only(&db).unwrap();
    let run = |filter: &str, since, until, limit| {
        query::run(
            &read,
            &Query {
                filter: filter.into(),
                since,
                until,
                limit,
                before: None,
            },
        )
        .unwrap()
    };
    let topics =
        |f: &Found| -> Vec<String> { f.messages.iter().map(|m| m.topic.clone()).collect() };

    let f = run("sensors/+/temp", None, None, 100);
    assert_eq!(topics(&f), ["sensors/a/temp", "sensors/b/temp"]);
    assert_eq!(f.skipped.len(), 2, "{:?}", f.skipped);
    assert_eq!(f.skipped[0].1, RowError::Qos(7));
    assert_eq!(f.skipped[1].1, RowError::Time(-5));
    assert!(!f.more);

    let f = run("sensors/#", None, None, 100);
    assert_eq!(
        topics(&f),
        [
            "sensors/a/temp",
            "sensors/b/temp",
            "sensors",
            "sensors/a/hum"
        ]
    );
    let f = run("sensors/#", Some(2000), Some(3000), 100);
    assert_eq!(topics(&f), ["sensors/b/temp", "sensors"]);
    // The newest two, oldest first.
    let f = run("sensors/#", None, None, 2);
    assert_eq!(topics(&f), ["sensors", "sensors/a/hum"]);
    assert!(f.more);
    let f = run("other", None, None, 10);
    assert_eq!(topics(&f), ["other"]);
    let f = run("#", None, None, 100);
    assert_eq!(f.messages.len(), 6);
    // A time that is not a number is outside every range: not even read.
    assert_eq!(f.skipped.len(), 3, "{:?}", f.skipped);
    assert!(
        f.skipped.contains(&(Some(9), RowError::Time(-5))),
        "{:?}",
        f.skipped
    );
}

#[test]
fn missing_newer_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(dir.path());
    let e = open_read_only(&db).unwrap_err().to_string();
    assert!(e.contains("history.db does not exist"), "{e}");
    assert!(e.contains("[history] enabled = true"), "{e}");

    std::fs::write(
        &db,
        b"not a database, not at all, but long enough to look at",
    )
    .unwrap();
    let e = connect(&db).unwrap_err();
    assert!(matches!(e, HistoryError::Corrupt { .. }), "{e}");
    std::fs::remove_file(&db).unwrap();

    let conn = connect(&db).unwrap();
    conn.pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    drop(conn);
    let e = connect(&db).unwrap_err();
    assert!(matches!(e, HistoryError::Newer { .. }), "{e}");
    let e = open_read_only(&db).unwrap_err();
    assert!(matches!(e, HistoryError::Newer { .. }), "{e}");
}
