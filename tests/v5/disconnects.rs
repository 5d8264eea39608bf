//! DISCONNECTs the broker sends, each with its exact reason code.

use std::time::Duration;

use mqttd::protocol::{Connect, DisconnectReason, Packet, Properties, QoS};

use super::publish_packet;
use crate::common::{self, RawClient, TestBroker, connect_v5};

#[tokio::test]
async fn malformed_packet() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "garbled", Properties::default()).await;
    // PUBLISH "a" QoS 0 whose property block holds the unknown identifier 0x7F.
    c.send_bytes(&[0x30, 6, 0, 1, b'a', 2, 0x7F, 0]).await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::MalformedPacket);
    broker.stop().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "twice", Properties::default()).await;
    c.send(&Packet::Connect(Box::new(connect_v5(
        "twice",
        Properties::default(),
    ))))
    .await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::ProtocolError);
    broker.stop().await;
}

#[tokio::test]
async fn takeover_tells_the_old_connection() {
    let broker = TestBroker::start().await;
    let (mut old, _) = RawClient::connected_v5(broker.addr, "same-id", Properties::default()).await;
    let (mut new, _) = RawClient::connected_v5(broker.addr, "same-id", Properties::default()).await;
    let d = old.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::SessionTakenOver);
    new.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout() {
    let broker = TestBroker::start().await;
    let connect = Connect {
        keep_alive: 1,
        ..connect_v5("sleepy", Properties::default())
    };
    let (mut c, _) = RawClient::connect_v5_with(broker.addr, connect).await;
    let start = tokio::time::Instant::now();
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::KeepAliveTimeout);
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(1400),
        "closed after {after:?}, before 1.5 x keep alive"
    );
    broker.stop().await;
}

#[tokio::test]
async fn packet_too_large() {
    let mut config = common::config();
    config.limits.max_packet_size = 1024;
    let broker = TestBroker::start_with(config).await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "bulky", Properties::default()).await;
    c.send(&publish_packet(
        "big",
        &[0u8; 2000],
        QoS::AtMostOnce,
        0,
        Properties::default(),
    ))
    .await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::PacketTooLarge);
    broker.stop().await;
}
