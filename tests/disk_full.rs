//! A full disk (here: a file-size limit on the broker process, which makes SQLite's writes fail
//! as a full disk does): the publishes the store cannot keep are refused (5.0: PUBACK 0x80;
//! 3.1.1: the connection closes without a PUBACK, so the client sends it again), the failure is
//! logged once (not once per message), the broker keeps serving, and nothing it acknowledged
//! before is lost.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProcess, RawClient};
use mqttd::protocol::{Packet, Properties, Publish, QoS};

/// Files the broker may write are cut off at this size.
const FILE_LIMIT: u64 = 2 << 20;

fn limited(cmd: &mut std::process::Command) {
    // SAFETY: setrlimit(2) and signal(2) are async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_LIMIT,
                rlim_max: FILE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A write past the limit fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

fn retained(topic: &str, id: u16, size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: topic.into(),
        packet_id: id,
        payload: Bytes::from(vec![b'x'; size]),
        properties: None,
    })
}

#[tokio::test]
async fn a_full_disk_refuses_what_it_cannot_keep_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let conf = common::config_file(dir.path(), "");
    let broker = BrokerProcess::start_with(&conf, limited).await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "filler", Properties::default()).await;
    let mut kept = 0;
    let mut refused = 0;
    for i in 1..=400u16 {
        c.send(&retained(&format!("fill/{i}"), i, 20_000)).await;
        match c.recv().await {
            Some(Packet::PubAck(a)) if u8::from(a.reason) < 0x80 => kept += 1,
            Some(Packet::PubAck(a)) => {
                assert_eq!(u8::from(a.reason), 0x80, "{a:?}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert!(kept > 10, "some fit before the limit: {kept}");
    assert_eq!(refused, 5, "the limit was reached");

    // 3.1.1 has no failure code: the connection closes without the PUBACK.
    let mut v3 = RawClient::connected(broker.addr, "v3").await;
    v3.send(&retained("fill/v3", 1, 20_000)).await;
    v3.expect_closed().await;

    // Still serving what needs no disk.
    let mut sub = RawClient::connected(broker.addr, "live").await;
    sub.subscribe("live/#", QoS::AtMostOnce, 1).await;
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "live/t".into(),
        packet_id: 0,
        payload: Bytes::from_static(b"still here"),
        properties: None,
    }))
    .await;
    assert_eq!(
        sub.expect_publish().await.payload,
        Bytes::from_static(b"still here")
    );
    let out = broker.stop().await;
    let logged = out.matches("the store could not commit").count();
    assert_eq!(logged, 1, "logged once a minute, not per message: {out}");

    // Everything acknowledged is there after a restart (without the limit).
    let broker = BrokerProcess::start(&conf).await;
    let mut reader = RawClient::connected(broker.addr, "reader").await;
    reader.subscribe("fill/#", QoS::AtMostOnce, 1).await;
    let mut got = 0;
    while reader.recv_within(Duration::from_millis(500)).await.is_ok() {
        got += 1;
    }
    assert_eq!(got, kept, "every acknowledged message, and no refused one");
    broker.stop().await;
}
