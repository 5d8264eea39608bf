//! Persistence with the real binary (`[persistence]`, on by default; see src/store/): retained
//! messages survive a restart and a `kill -9`, and a PUBACK for a retained message means it is
//! committed. (Persistent sessions and their queues are not stored yet.)

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProcess, RawClient, WAIT, command, config_file, output_within};
use mqttd::protocol::{self, Packet, Properties, Publish, QoS};

/// Every retained message the broker sends a new subscriber to `#`, as (topic, payload),
/// sorted; waits until `expect` of them came (bounded), then for silence.
async fn retained_of(broker: &BrokerProcess, expect: usize) -> Vec<(String, Bytes)> {
    let mut c = RawClient::connected(broker.addr, "reader").await;
    c.subscribe("#", QoS::AtMostOnce, 1).await;
    let mut got = Vec::new();
    while got.len() < expect {
        let p = c.expect_publish().await;
        assert!(p.retain, "a retained message has RETAIN set: {p:?}");
        got.push((p.topic.to_string(), p.payload));
    }
    c.expect_silence(Duration::from_millis(100)).await;
    got.sort();
    got
}

#[tokio::test]
async fn retained_messages_and_their_properties_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(dir.path(), "");
    let broker = BrokerProcess::start(&conf).await;
    let (mut v5, _) = RawClient::connected_v5(broker.addr, "pub5", Properties::default()).await;
    let props = Properties {
        content_type: Some("application/json".into()),
        user_properties: vec![("site".into(), "lab".into())],
        message_expiry_interval: Some(3600),
        ..Properties::default()
    };
    v5.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "lab/temp".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"{\"c\":21.5}"),
        properties: Some(Box::new(props.clone())),
    }))
    .await;
    match v5.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let mut v3 = RawClient::connected(broker.addr, "pub3").await;
    v3.publish("lab/door", b"open", QoS::AtMostOnce, true, 0)
        .await;
    v3.publish("lab/old", b"gone soon", QoS::ExactlyOnce, true, 2)
        .await;
    // An empty retained message clears the topic, on disk too.
    v3.publish("lab/old", b"", QoS::AtLeastOnce, true, 3).await;
    v3.ping().await;
    let out = broker.stop().await;
    assert!(out.contains("store closed"), "{out}");

    let broker = BrokerProcess::start(&conf).await;
    broker.wait_for_line("restored 2 retained message(s)").await;
    let (mut sub, _) = RawClient::connected_v5(broker.addr, "sub5", Properties::default()).await;
    sub.subscribe("lab/#", QoS::AtLeastOnce, 1).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = sub.expect_publish().await;
        if p.qos != QoS::AtMostOnce {
            sub.send(&Packet::PubAck(protocol::PubResp::new(p.packet_id)))
                .await;
        }
        got.push(p);
    }
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(&*got[0].topic, "lab/door");
    assert_eq!(got[0].payload, Bytes::from_static(b"open"));
    assert_eq!(&*got[1].topic, "lab/temp");
    assert_eq!(got[1].qos, QoS::AtLeastOnce);
    let p = got[1].properties.as_deref().expect("properties kept");
    assert_eq!(p.content_type, props.content_type);
    assert_eq!(p.user_properties, props.user_properties);
    // The expiry kept counting while the broker was down: what is left, never more.
    let left = p.message_expiry_interval.expect("expiry kept");
    assert!((3500..=3600).contains(&left), "{left}");
    sub.expect_silence(Duration::from_millis(100)).await;
    broker.stop().await;
}

/// A PUBACK for a retained message means it is committed: kill -9 right after the last PUBACK,
/// ten times over, and every acknowledged message is there after each restart. Half of each
/// round's messages are pipelined (all written, then all PUBACKs read), so many commit together.
#[tokio::test]
async fn every_acknowledged_retained_message_survives_kill_9() {
    const ROUNDS: usize = 10;
    const EACH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(dir.path(), "");
    let mut acknowledged = 0;
    for round in 0..ROUNDS {
        let broker = BrokerProcess::start(&conf).await;
        if round > 0 {
            assert_eq!(retained_of(&broker, acknowledged).await.len(), acknowledged);
        }
        let mut c = RawClient::connected(broker.addr, "writer").await;
        for i in 0..EACH / 2 {
            let topic = format!("r{round}/one/{i}");
            c.publish(&topic, b"x", QoS::AtLeastOnce, true, 1).await;
        }
        let mut burst = bytes::BytesMut::new();
        for i in 0..EACH / 2 {
            let publish = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: format!("r{round}/burst/{i}").into(),
                packet_id: (i + 1) as u16,
                payload: Bytes::from_static(b"y"),
                properties: None,
            });
            protocol::encode(&publish, c.version, &mut burst).unwrap();
        }
        c.send_bytes(&burst).await;
        for i in 0..EACH / 2 {
            match c.recv().await {
                // In the order of the PUBLISHes (MQTT-4.6.0-2).
                Some(Packet::PubAck(a)) => assert_eq!(usize::from(a.packet_id), i + 1),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        acknowledged += EACH;
        broker.kill().await;
    }
    let broker = BrokerProcess::start(&conf).await;
    let got = retained_of(&broker, acknowledged).await;
    assert_eq!(got.len(), ROUNDS * EACH);
    broker.stop().await;
}

#[tokio::test]
async fn a_second_broker_on_the_same_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(dir.path(), "");
    let first = BrokerProcess::start(&conf).await;
    // Another port, the same store.
    let other = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let conf2 = config_file(
        other.path(),
        &format!("\n[persistence]\npath = {:?}\n", store.to_str().unwrap()),
    );
    let mut cmd = command(env!("CARGO_BIN_EXE_mqttd"));
    cmd.arg("--config").arg(&conf2).current_dir(other.path());
    let out = output_within(common::spawn(&mut cmd), WAIT).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another mqttd") && stderr.contains(&first.pid().to_string()),
        "names the store and the other broker: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:", conf2.display())),
        "names the file: {stderr}"
    );
    first.stop().await;
}

#[tokio::test]
async fn without_persistence_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(dir.path(), "\n[persistence]\nenabled = false\n");
    let broker = BrokerProcess::start(&conf).await;
    let mut c = RawClient::connected(broker.addr, "p").await;
    c.publish("kept/not", b"x", QoS::AtLeastOnce, true, 1).await;
    broker.stop().await;
    assert!(!dir.path().join("data").exists());
    let broker = BrokerProcess::start(&conf).await;
    assert!(retained_of(&broker, 0).await.is_empty());
    broker.stop().await;
}
