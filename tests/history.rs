//! The message history with the real binary (`[history]`, see src/store/history/): what real
//! clients publish is recorded in `data/history.db`, `mqttd history` prints it while the broker
//! runs, `$SYS` and unmatched topics stay out, `max_rows` keeps the newest, and with the
//! default configuration there is no history at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProcess, RawClient, WAIT, command, login_packet, output_within, spawn};
use mqttd::protocol::{Packet, Properties, Publish, QoS};

const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");

/// A broker configuration in `dir` (its data: `dir/data`, the default relative path).
fn config_in(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("mqttd.toml");
    let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n\n[log]\nlevel = \"info\"\n{extra}");
    std::fs::write(&path, text).unwrap();
    path
}

/// `mqttd history --config CONF ARGS`, run where the broker runs (so `data/` is the same).
async fn history(conf: &Path, args: &[&str]) -> Output {
    let mut cmd = command(MQTTD);
    cmd.arg("history")
        .arg("--config")
        .arg(conf)
        .args(args)
        .current_dir(conf.parent().unwrap())
        .env_remove("RUST_LOG");
    output_within(spawn(&mut cmd), WAIT).await
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `mqttd history` until it prints `n` lines (the recorder writes every 100 ms, and
/// retention runs every second), bounded.
async fn history_until(
    conf: &Path,
    args: &[&str],
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    loop {
        let out = history(conf, args).await;
        if out.status.success() {
            let got = lines(&out);
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mqttd history {args:?} never printed what was expected; last: {got:#?}"
            );
        } else {
            // The file appears once the broker has opened it (before it listens): an error
            // here is real.
            panic!("mqttd history {args:?} failed: {out:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 5.0 PUBLISH with a binary payload and properties, at QoS 1, acknowledged.
async fn publish_v5(c: &mut RawClient, topic: &str, payload: &'static [u8], props: Properties) {
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: 9,
        payload: Bytes::from_static(payload),
        properties: Some(Box::new(props)),
    }))
    .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, 9),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn records_what_its_filters_match_and_mqttd_history_prints_it_while_the_broker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_in(
        dir.path(),
        "[sys]\ninterval = 0\n\n[history]\nenabled = true\nfilters = [\"sensors/#\", \"lab/+\"]\n",
    );
    let broker = BrokerProcess::start(&conf).await;

    let mut dev1 = RawClient::connect(broker.addr).await;
    assert_eq!(
        dev1.login(login_packet("dev1", Some("alice"), None)).await,
        0
    );
    dev1.publish("other/t", b"not recorded", QoS::AtMostOnce, false, 0)
        .await;
    dev1.publish("sensors/a/temp", b"21.5", QoS::AtLeastOnce, false, 1)
        .await;
    dev1.publish("sensors/b/temp", b"19", QoS::AtMostOnce, true, 0)
        .await;
    dev1.publish("lab/x/y", b"too deep for lab/+", QoS::AtMostOnce, false, 0)
        .await;
    dev1.publish("lab/door", b"open", QoS::ExactlyOnce, false, 2)
        .await;
    let (mut dev5, _) = RawClient::connected_v5(broker.addr, "dev5", Properties::default()).await;
    let props = Properties {
        content_type: Some("application/octet-stream".into()),
        user_properties: vec![("site".into(), "lab".into())],
        ..Properties::default()
    };
    publish_v5(&mut dev5, "lab/bin", &[0x00, 0xff], props).await;
    // And a client that is not ours.
    let port = broker.addr.port().to_string();
    let out = output_within(
        spawn(command("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "mosq",
            "-u",
            "bob",
            "-q",
            "1",
            "-t",
            "sensors/c/hum",
            "-m",
            "40",
        ])),
        WAIT,
    )
    .await;
    assert!(out.status.success(), "{out:?}");

    let got = history_until(&conf, &["--json", "--since", "1h"], |l| l.len() >= 5).await;
    assert_eq!(got.len(), 5, "{got:#?}");
    let expect: [&[&str]; 5] = [
        &[
            r#""topic":"sensors/a/temp""#,
            r#""qos":1,"retain":false,"client_id":"dev1","username":"alice""#,
            r#""payload":"21.5","payload_encoding":"utf8","properties":null"#,
        ],
        &[r#""topic":"sensors/b/temp""#, r#""qos":0,"retain":true"#],
        &[r#""topic":"lab/door""#, r#""qos":2"#, r#""payload":"open""#],
        &[
            r#""topic":"lab/bin""#,
            r#""client_id":"dev5","username":null"#,
            r#""payload":"AP8=","payload_encoding":"base64""#,
            r#""content_type":"application/octet-stream","user_properties":[["site","lab"]]"#,
        ],
        &[
            r#""topic":"sensors/c/hum""#,
            r#""client_id":"mosq","username":"bob""#,
        ],
    ];
    for (line, parts) in got.iter().zip(expect) {
        for part in parts {
            assert!(line.contains(part), "{part} not in {line}");
        }
    }

    // Text, one filter.
    let out = history(&conf, &["--filter", "lab/+"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = lines(&out);
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].ends_with(r#" lab/door qos=2 retain=0 client=dev1 user=alice "open""#),
        "{}",
        text[0]
    );
    assert!(
        text[1].ends_with(" lab/bin qos=1 retain=0 client=dev5 hex:00ff"),
        "{}",
        text[1]
    );
    // The newest of two, and a word that there are more.
    let out = history(&conf, &["--filter", "sensors/+/temp", "-n", "1", "--json"]).await;
    let one = lines(&out);
    assert_eq!(one.len(), 1, "{one:#?}");
    assert!(one[0].contains(r#""topic":"sensors/b/temp""#), "{}", one[0]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("showing the newest 1 message(s)"),
        "{stderr}"
    );
    // Long before: nothing.
    let out = history(&conf, &["--until", "2000-01-01T00:00:00Z"]).await;
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    // A filter that is not one.
    let out = history(&conf, &["--filter", "a/#/b"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--filter \"a/#/b\" is not a topic filter"),
        "{stderr}"
    );

    let log = broker.stop().await;
    assert!(
        log.contains("history closed: 5 message(s) recorded, 0 dropped"),
        "{log}"
    );
}

#[tokio::test]
async fn sys_topics_are_not_recorded_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_in(
        dir.path(),
        "[sys]\ninterval = 1\n\n[history]\nenabled = true\n",
    );
    let broker = BrokerProcess::start(&conf).await;
    let mut c = RawClient::connected(broker.addr, "watcher").await;
    c.subscribe("$SYS/broker/uptime", QoS::AtMostOnce, 1).await;
    // A $SYS message has been routed (to the recorder's queue too) ...
    let sys = tokio::time::timeout(2 * WAIT, c.expect_publish())
        .await
        .expect("a $SYS message in time");
    assert_eq!(&*sys.topic, "$SYS/broker/uptime");
    // ... before this one, which the recorder writes after it.
    c.publish("marker", b"m", QoS::AtLeastOnce, false, 2).await;
    history_until(&conf, &["--filter", "marker"], |l| l.len() == 1).await;

    let out = history(&conf, &["--filter", "$SYS/#"]).await;
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("data/history.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (all, sys): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE topic LIKE '$%') FROM messages",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((all, sys), (1, 0));
    broker.stop().await;
}

#[tokio::test]
async fn max_rows_keeps_the_newest_even_without_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_in(
        dir.path(),
        "[persistence]\nenabled = false\n\n[history]\nenabled = true\nmax_rows = 5\n",
    );
    let broker = BrokerProcess::start(&conf).await;
    let mut c = RawClient::connected(broker.addr, "counter").await;
    for i in 0..20u16 {
        c.publish(&format!("n/{i}"), b"x", QoS::AtLeastOnce, false, i + 1)
            .await;
    }
    let got = history_until(&conf, &["--filter", "n/+"], |l| {
        l.len() == 5 && l[4].contains(" n/19 ")
    })
    .await;
    for (line, i) in got.iter().zip(15..) {
        assert!(line.contains(&format!(" n/{i} ")), "{line}");
    }
    assert!(!dir.path().join("data/mqttd.db").exists());
    broker.stop().await;
}

#[tokio::test]
async fn history_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_in(dir.path(), "");
    let broker = BrokerProcess::start(&conf).await;
    let mut c = RawClient::connected(broker.addr, "pub").await;
    c.publish("a/b", b"private", QoS::AtLeastOnce, true, 1)
        .await;
    broker.stop().await;
    let data = dir.path().join("data");
    assert!(
        data.join("mqttd.db").exists(),
        "persistence is on by default"
    );
    assert!(!data.join("history.db").exists(), "no history by default");

    let out = history(&conf, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data/history.db does not exist")
            && stderr.contains("[history] enabled = true"),
        "{stderr}"
    );
}
