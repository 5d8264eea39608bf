//! Sessions: clean session = 0 keeps subscriptions and queues QoS 1/2 while offline (bounded,
//! oldest dropped); unacknowledged messages are re-sent with DUP; takeover of a connected id.

mod common;

use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet};
use mqttd::protocol::{Packet, PubResp, QoS};

async fn connect_persistent(broker: &TestBroker, id: &str) -> (RawClient, bool) {
    let mut c = RawClient::connect(broker.addr).await;
    let mut connect = connect_packet(id);
    connect.clean_start = false;
    c.send(&Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(u8::from(a.code), 0);
            (c, a.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn persistent_session_queues_while_offline() {
    let broker = TestBroker::start().await;
    let (mut c, present) = connect_persistent(&broker, "keeper").await;
    assert!(!present);
    c.subscribe("q/#", QoS::ExactlyOnce, 1).await;
    c.disconnect().await;
    // The DISCONNECT is handled on the broker's side after it is written here: until then the
    // session is connected, and the QoS 0 message below would be queued for it.
    common::eventually("keeper's session detached", || {
        broker.router.client("keeper").is_some_and(|v| !v.connected)
    })
    .await;

    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("q/0", b"zero", QoS::AtMostOnce, false, 0)
        .await; // not queued offline
    pubber
        .publish("q/1", b"one", QoS::AtLeastOnce, false, 1)
        .await;
    pubber
        .publish("q/2", b"two", QoS::ExactlyOnce, false, 2)
        .await;

    let (mut c, present) = connect_persistent(&broker, "keeper").await;
    assert!(present, "session present after reconnect");
    let a = c.receive().await;
    let b = c.receive().await;
    assert_eq!((&a.payload[..], a.qos), (&b"one"[..], QoS::AtLeastOnce));
    assert_eq!((&b.payload[..], b.qos), (&b"two"[..], QoS::ExactlyOnce));
    // Subscriptions survived too.
    pubber
        .publish("q/live", b"live", QoS::AtLeastOnce, false, 3)
        .await;
    assert_eq!(&c.receive().await.payload[..], b"live");
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn offline_queue_is_bounded_and_drops_the_oldest() {
    let mut config = common::config();
    config.limits.max_queued_messages = 3;
    let broker = TestBroker::start_with(config).await;
    let (mut c, _) = connect_persistent(&broker, "small").await;
    c.subscribe("b", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for i in 0..5u16 {
        pubber
            .publish(
                "b",
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .await;
    }
    let (mut c, _) = connect_persistent(&broker, "small").await;
    for expect in ["2", "3", "4"] {
        assert_eq!(&c.receive().await.payload[..], expect.as_bytes());
    }
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        broker
            .router
            .stats
            .publish_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    broker.stop().await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup() {
    let broker = TestBroker::start().await;
    let (mut c, _) = connect_persistent(&broker, "forgetful").await;
    c.subscribe("d/#", QoS::ExactlyOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("d/1", b"q1", QoS::AtLeastOnce, false, 1)
        .await;
    pubber
        .publish("d/2", b"q2", QoS::ExactlyOnce, false, 2)
        .await;
    pubber
        .publish("d/3", b"q2-rel", QoS::ExactlyOnce, false, 3)
        .await;
    let p1 = c.expect_publish().await;
    let p2 = c.expect_publish().await;
    let p3 = c.expect_publish().await;
    assert!(!p1.dup && !p2.dup && !p3.dup);
    // Acknowledge only the first step of the third: PUBREC, so the broker owes a PUBREL.
    c.send(&Packet::PubRec(PubResp::new(p3.packet_id))).await;
    match c.recv().await {
        Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, p3.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(c); // connection lost without acknowledging

    let (mut c, present) = connect_persistent(&broker, "forgetful").await;
    assert!(present);
    let r1 = c.expect_publish().await;
    let r2 = c.expect_publish().await;
    assert_eq!(
        (r1.dup, r1.packet_id, &r1.payload[..]),
        (true, p1.packet_id, &b"q1"[..])
    );
    assert_eq!(
        (r2.dup, r2.packet_id, &r2.payload[..]),
        (true, p2.packet_id, &b"q2"[..])
    );
    match c.recv().await {
        Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, p3.packet_id),
        other => panic!("expected re-sent PUBREL, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn clean_session_discards_state() {
    let broker = TestBroker::start().await;
    let (mut c, _) = connect_persistent(&broker, "flip").await;
    c.subscribe("f", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    let mut clean = RawClient::connected(broker.addr, "flip").await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber.publish("f", b"x", QoS::AtLeastOnce, false, 1).await;
    clean.ping().await;
    clean.expect_silence(Duration::from_millis(200)).await;
    clean.disconnect().await;
    let (_c, present) = connect_persistent(&broker, "flip").await;
    assert!(!present);
    broker.stop().await;
}

#[tokio::test]
async fn same_client_id_takes_over() {
    let broker = TestBroker::start().await;
    let mut first = RawClient::connected(broker.addr, "twin").await;
    let mut second = RawClient::connected(broker.addr, "twin").await;
    first.expect_closed().await;
    second.ping().await;
    common::eventually("one connected client", || {
        broker
            .router
            .stats
            .clients_connected
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn qos2_inbound_is_exactly_once() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("e", QoS::ExactlyOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    let publish = mqttd::protocol::Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "e".into(),
        packet_id: 42,
        payload: bytes::Bytes::from_static(b"once"),
        properties: None,
    };
    pubber.send(&Packet::Publish(publish.clone())).await;
    assert!(matches!(pubber.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 42));
    // The publisher re-sends (DUP) before PUBREL: it must not be routed twice.
    pubber
        .send(&Packet::Publish(mqttd::protocol::Publish {
            dup: true,
            ..publish
        }))
        .await;
    assert!(matches!(pubber.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 42));
    pubber.send(&Packet::PubRel(PubResp::new(42))).await;
    assert!(matches!(pubber.recv().await, Some(Packet::PubComp(r)) if r.packet_id == 42));
    assert_eq!(&sub.receive().await.payload[..], b"once");
    sub.ping().await;
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

/// Found by the `session` fuzz target: after a malformed packet a 5.0 client got DISCONNECT 0x81
/// and then a second DISCONNECT (0x80), though nothing may follow a DISCONNECT (MQTT-3.14.4-1).
#[tokio::test]
async fn one_disconnect_after_a_malformed_packet() {
    use mqttd::protocol::{Connect, ProtocolVersion};
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        ..connect_packet("malformed")
    };
    c.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(a)) if u8::from(a.code) == 0));
    c.send_bytes(&[0x00, 0x00]).await; // reserved packet type 0
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(u8::from(d.reason), 0x81, "Malformed Packet"),
        other => panic!("expected DISCONNECT 0x81, got {other:?}"),
    }
    assert_eq!(c.recv().await, None, "nothing after the DISCONNECT");
    broker.stop().await;
}

/// Found by the `session` fuzz target: a second CONNECT with an unknown protocol name was answered
/// with DISCONNECT 0x84, a CONNACK-only code that is not valid in DISCONNECT (so a strict client
/// reports our DISCONNECT as malformed). A second CONNECT is a Protocol Error: 0x82.
#[tokio::test]
async fn second_connect_with_an_unknown_protocol_is_a_protocol_error() {
    use mqttd::protocol::{Connect, ProtocolVersion};
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        ..connect_packet("twice")
    };
    c.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(a)) if u8::from(a.code) == 0));
    // CONNECT, protocol name "sport" (as the fuzzer had it), level 4, clean, keep alive 60, id "c".
    c.send_bytes(&[
        0x10, 14, 0, 5, b's', b'p', b'o', b'r', b't', 4, 0x02, 0, 60, 0, 1, b'c',
    ])
    .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(u8::from(d.reason), 0x82, "Protocol Error"),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    broker.stop().await;
}
