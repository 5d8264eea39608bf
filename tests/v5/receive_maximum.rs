//! Flow control towards the broker: the Receive Maximum it announces (`limits.max_inflight_in`)
//! bounds a client's QoS 2 PUBLISHes awaiting PUBREL; one more ends the connection with
//! DISCONNECT 0x93 (MQTT-3.3.4-7), as Paho's `test_flow_control2` expects.

use tokio::io::{AsyncRead, AsyncWrite};

use mqttd::protocol::{DisconnectReason, Packet, Properties, PubResp, Publish, QoS};

use super::publish_packet;
use crate::common::{self, RawClient, TestBroker, connect_v5};

/// A broker announcing Receive Maximum `max`.
async fn broker_with(max: u16) -> TestBroker {
    let mut config = common::config();
    config.limits.max_inflight_in = max;
    TestBroker::start_with(config).await
}

/// Sends a QoS 2 PUBLISH (`dup` as given) and expects its PUBREC; sends no PUBREL.
async fn unreleased<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    packet_id: u16,
    dup: bool,
) {
    let mut packet = publish_packet(
        "rm/in",
        b"q2",
        QoS::ExactlyOnce,
        packet_id,
        Properties::default(),
    );
    if let Packet::Publish(Publish { dup: d, .. }) = &mut packet {
        *d = dup;
    }
    c.send(&packet).await;
    match c.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, packet_id),
        other => panic!("expected PUBREC {packet_id}, got {other:?}"),
    }
}

async fn release<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, packet_id: u16) {
    c.send(&Packet::PubRel(PubResp::new(packet_id))).await;
    match c.recv().await {
        Some(Packet::PubComp(r)) => assert_eq!(r.packet_id, packet_id),
        other => panic!("expected PUBCOMP {packet_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn connack_announces_receive_maximum() {
    let broker = TestBroker::start().await;
    let (c, ack) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_v5("rm-default", Properties::default()),
    )
    .await;
    let props = ack.properties.expect("5.0 CONNACK has properties");
    assert_eq!(
        props.receive_maximum,
        Some(1024),
        "the default max_inflight_in"
    );
    c.disconnect().await;
    broker.stop().await;
    // 65535 is what no Receive Maximum means: not sent.
    let broker = broker_with(u16::MAX).await;
    let (c, ack) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("rm-none", Properties::default())).await;
    assert_eq!(ack.properties.and_then(|p| p.receive_maximum), None);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn one_qos2_publish_over_the_receive_maximum_is_disconnected() {
    let broker = broker_with(3).await;
    let (mut sub, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("rm-sub", Properties::default())).await;
    sub.subscribe("rm/#", QoS::AtMostOnce, 1).await;
    let (mut c, ack) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("rm-pub", Properties::default())).await;
    assert_eq!(ack.properties.and_then(|p| p.receive_maximum), Some(3));
    // Three awaiting PUBREL: allowed; QoS 1 is not counted.
    for id in 1..=3 {
        unreleased(&mut c, id, false).await;
    }
    for id in 10..=14 {
        c.publish("rm/q1", b"q1", QoS::AtLeastOnce, false, id).await;
    }
    c.ping().await;
    // A PUBREL gives one back.
    release(&mut c, 1).await;
    unreleased(&mut c, 4, false).await;
    // The fourth awaiting PUBREL is one too many.
    c.send(&publish_packet(
        "rm/in",
        b"over",
        QoS::ExactlyOnce,
        5,
        Properties::default(),
    ))
    .await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::ReceiveMaximumExceeded);
    // Not routed: the subscriber got the four QoS 2 and five QoS 1 messages, not "over".
    for _ in 0..9 {
        assert_ne!(&sub.expect_publish().await.payload[..], b"over");
    }
    sub.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_resent_qos2_publish_is_not_counted_again() {
    let broker = broker_with(2).await;
    let (mut c, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("rm-dup", Properties::default())).await;
    unreleased(&mut c, 1, false).await;
    unreleased(&mut c, 2, false).await;
    // Its PUBREC got lost, say: the client sends it again with DUP. Still two awaiting PUBREL.
    unreleased(&mut c, 2, true).await;
    unreleased(&mut c, 1, true).await;
    c.ping().await;
    c.send(&publish_packet(
        "rm/in",
        b"3",
        QoS::ExactlyOnce,
        3,
        Properties::default(),
    ))
    .await;
    assert_eq!(
        c.expect_disconnect().await.reason,
        DisconnectReason::ReceiveMaximumExceeded
    );
    broker.stop().await;
}

/// The quota is per connection (MQTT 5.0 section 4.9): a client back with PUBLISHes awaiting
/// PUBREL from before may send Receive Maximum new ones; 3.1.1 has no Receive Maximum at all.
#[tokio::test]
async fn the_quota_starts_afresh_with_each_connection_and_not_for_3_1_1() {
    let broker = broker_with(2).await;
    let persistent = || mqttd::protocol::Connect {
        clean_start: false,
        ..connect_v5("rm-back", super::expiry(60))
    };
    let (mut c, _) = RawClient::connect_v5_on(broker.pipe(), persistent()).await;
    unreleased(&mut c, 1, false).await;
    unreleased(&mut c, 2, false).await;
    // Back on a new connection (taking the session over, should the old one linger).
    drop(c);
    let (mut c, ack) = RawClient::connect_v5_on(broker.pipe(), persistent()).await;
    assert!(ack.session_present);
    unreleased(&mut c, 3, false).await;
    unreleased(&mut c, 4, false).await;
    // The old ones are still known: their re-sends are not new.
    unreleased(&mut c, 1, true).await;
    c.ping().await;
    c.send(&publish_packet(
        "rm/in",
        b"5",
        QoS::ExactlyOnce,
        5,
        Properties::default(),
    ))
    .await;
    assert_eq!(
        c.expect_disconnect().await.reason,
        DisconnectReason::ReceiveMaximumExceeded
    );

    let mut old = RawClient::connected_on(broker.pipe(), "rm-311").await;
    for id in 1..=5 {
        unreleased(&mut old, id, false).await;
    }
    old.ping().await;
    broker.stop().await;
}

/// Paho's `test_flow_control2` exactly: the client writes Receive Maximum + 1 QoS 2 PUBLISHes at
/// once and answers each PUBREC with PUBREL as it reads it. The broker has already closed by
/// then, and must close without resetting the connection (it reads what the client still
/// sends), or the client's PUBRELs fail and the DISCONNECT 0x93 may never be read.
#[tokio::test]
async fn a_client_still_releasing_when_disconnected_for_receive_maximum_reads_the_disconnect() {
    const MAX: u16 = 20;
    let broker = broker_with(MAX).await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "rm-paho", Properties::default()).await;
    let mut burst = bytes::BytesMut::new();
    for id in 1..=MAX + 1 {
        let p = publish_packet("rm/in", b"q2", QoS::ExactlyOnce, id, Properties::default());
        mqttd::protocol::encode(&p, c.version, &mut burst).unwrap();
    }
    c.send_bytes(&burst).await;
    let mut released = 0;
    loop {
        match c.recv().await {
            Some(Packet::PubRec(r)) => {
                c.send(&Packet::PubRel(PubResp::new(r.packet_id))).await;
                released += 1;
            }
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, DisconnectReason::ReceiveMaximumExceeded);
                break;
            }
            other => panic!("expected PUBREC or DISCONNECT, got {other:?}"),
        }
    }
    assert_eq!(released, usize::from(MAX));
    c.expect_closed().await;
    broker.stop().await;
}
