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
