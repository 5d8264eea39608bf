//! Will messages: published on socket loss, protocol error and keep-alive timeout; not after
//! DISCONNECT.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, TestBroker, connect_packet};
use mqttd::protocol::{LastWill, Packet, QoS};

async fn with_will(broker: &TestBroker, id: &str, keep_alive: u16) -> RawClient {
    let mut c = RawClient::connect(broker.addr).await;
    let mut connect = connect_packet(id);
    connect.keep_alive = keep_alive;
    connect.will = Some(LastWill {
        topic: "system/status".into(),
        payload: Bytes::from_static(b"Client offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    });
    c.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(a)) if u8::from(a.code) == 0));
    c
}

async fn watcher(broker: &TestBroker) -> RawClient {
    let mut w = RawClient::connected(broker.addr, "watcher").await;
    w.subscribe("system/status", QoS::AtLeastOnce, 1).await;
    w
}

#[tokio::test]
async fn will_on_socket_loss() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker).await;
    let c = with_will(&broker, "dev1", 60).await;
    drop(c);
    let p = w.receive().await;
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("system/status", &b"Client offline"[..], QoS::AtLeastOnce)
    );
    broker.stop().await;
}

#[tokio::test]
async fn will_on_protocol_error() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker).await;
    let mut c = with_will(&broker, "dev2", 60).await;
    c.send_bytes(&[0x36, 0x00]).await; // PUBLISH with QoS 3: malformed
    c.expect_closed().await;
    assert_eq!(&w.receive().await.payload[..], b"Client offline");
    broker.stop().await;
}

#[tokio::test]
async fn will_on_keep_alive_timeout() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker).await;
    let started = tokio::time::Instant::now();
    let mut c = with_will(&broker, "dev3", 1).await;
    c.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(&w.receive().await.payload[..], b"Client offline");
    broker.stop().await;
}

#[tokio::test]
async fn no_will_after_disconnect() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker).await;
    let c = with_will(&broker, "dev4", 60).await;
    c.disconnect().await;
    w.ping().await;
    w.expect_silence(Duration::from_millis(300)).await;
    broker.stop().await;
}
