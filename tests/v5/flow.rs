//! Flow towards the client (Receive Maximum, Maximum Packet Size), topic aliases from the client,
//! and Message Expiry Interval.

use std::time::Duration;

use mqttd::protocol::reason::v5;
use mqttd::protocol::{Connect, DisconnectReason, Packet, Properties, PubResp, QoS};

use super::{expiry, publish_packet, publish_with};
use crate::common::{RawClient, TestBroker, connect_v5};

#[tokio::test]
async fn receive_maximum_bounds_unacknowledged_qos1() {
    let broker = TestBroker::start().await;
    let props = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let (mut sub, _) = RawClient::connected_v5(broker.addr, "slow", props).await;
    sub.subscribe("rm/t", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for i in 1..=5u16 {
        pubber
            .publish("rm/t", &[b'0' + i as u8], QoS::AtLeastOnce, false, i)
            .await;
    }
    let first = sub.expect_publish().await;
    let second = sub.expect_publish().await;
    sub.expect_silence(Duration::from_millis(300)).await;
    // Each PUBACK opens the window by exactly one.
    let mut got = vec![first.payload.clone(), second.payload.clone()];
    let mut unacked = vec![first.packet_id, second.packet_id];
    while got.len() < 5 {
        let id = unacked.remove(0);
        sub.send(&Packet::PubAck(PubResp::new(id))).await;
        let next = sub.expect_publish().await;
        unacked.push(next.packet_id);
        got.push(next.payload.clone());
        if got.len() < 5 {
            sub.expect_silence(Duration::from_millis(100)).await;
        }
    }
    let expected: Vec<&[u8]> = vec![b"1", b"2", b"3", b"4", b"5"];
    assert_eq!(got.iter().map(|b| &b[..]).collect::<Vec<_>>(), expected);
    broker.stop().await;
}

#[tokio::test]
async fn messages_over_the_client_maximum_packet_size_are_not_sent() {
    let broker = TestBroker::start().await;
    let props = Properties {
        maximum_packet_size: Some(100),
        ..Properties::default()
    };
    let (mut sub, _) = RawClient::connected_v5(broker.addr, "small", props).await;
    sub.subscribe("mps/t", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("mps/t", &[b'x'; 500], QoS::AtLeastOnce, false, 1)
        .await;
    pubber
        .publish("mps/t", b"small", QoS::AtLeastOnce, false, 2)
        .await;
    let p = sub.receive().await;
    assert_eq!(&p.payload[..], b"small");
    sub.ping().await;
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_stands_for_its_topic() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connected_v5(broker.addr, "sub", Properties::default()).await;
    sub.subscribe("alias/full/topic", QoS::AtLeastOnce, 1).await;
    let (mut pubber, _) = RawClient::connected_v5(broker.addr, "pub", Properties::default()).await;
    let alias = |a| Properties {
        topic_alias: Some(a),
        ..Properties::default()
    };
    let ack = publish_with(
        &mut pubber,
        "alias/full/topic",
        b"set",
        QoS::AtLeastOnce,
        1,
        alias(10),
    )
    .await;
    assert_eq!(ack.map(|a| u8::from(a.reason)), Some(v5::SUCCESS));
    let ack = publish_with(&mut pubber, "", b"use", QoS::AtLeastOnce, 2, alias(10)).await;
    assert_eq!(ack.map(|a| u8::from(a.reason)), Some(v5::SUCCESS));
    for payload in [&b"set"[..], b"use"] {
        let p = sub.receive().await;
        assert_eq!((&*p.topic, &p.payload[..]), ("alias/full/topic", payload));
        // The alias belongs to the publisher's connection; it is not forwarded.
        assert_eq!(p.properties, None);
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_zero_or_above_the_maximum_is_invalid() {
    let broker = TestBroker::start().await;
    for (id, alias) in [("zero", 0), ("eleven", 11)] {
        let (mut c, _) = RawClient::connected_v5(broker.addr, id, Properties::default()).await;
        let props = Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        };
        c.send(&publish_packet("ta/t", b"x", QoS::AtMostOnce, 0, props))
            .await;
        let d = c.expect_disconnect().await;
        assert_eq!(
            d.reason,
            DisconnectReason::TopicAliasInvalid,
            "alias {alias}"
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn unknown_topic_alias_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "forgot", Properties::default()).await;
    let props = Properties {
        topic_alias: Some(3),
        ..Properties::default()
    };
    c.send(&publish_packet("", b"x", QoS::AtMostOnce, 0, props))
        .await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::ProtocolError);
    broker.stop().await;
}

fn message_expiry(secs: u32) -> Properties {
    Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    }
}

/// On paused tokio time over in-memory connections: the expiry is exact and costs no real time.
#[tokio::test(start_paused = true)]
async fn expired_messages_are_not_delivered_from_an_offline_session() {
    let broker = TestBroker::start().await;
    let persistent = || Connect {
        clean_start: false,
        ..connect_v5("away", expiry(60))
    };
    let (mut c, _) = RawClient::connect_v5_on(broker.pipe(), persistent()).await;
    c.subscribe("me/#", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    let (mut pubber, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("pub", Properties::default())).await;
    publish_with(
        &mut pubber,
        "me/short",
        b"short",
        QoS::AtLeastOnce,
        1,
        message_expiry(1),
    )
    .await;
    publish_with(
        &mut pubber,
        "me/long",
        b"long",
        QoS::AtLeastOnce,
        2,
        message_expiry(60),
    )
    .await;
    // Let the short expiry interval pass while the session is offline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut c, ack) = RawClient::connect_v5_on(broker.pipe(), persistent()).await;
    assert!(ack.session_present);
    let p = c.receive().await;
    assert_eq!(&p.payload[..], b"long");
    let remaining = p.properties.and_then(|p| p.message_expiry_interval);
    assert!(
        remaining.is_some_and(|r| (50..60).contains(&r)),
        "remaining expiry: {remaining:?}"
    );
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

/// On paused tokio time over in-memory connections: the expiry is exact and costs no real time.
#[tokio::test(start_paused = true)]
async fn retained_message_expires() {
    let broker = TestBroker::start().await;
    let (mut pubber, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("pub", Properties::default())).await;
    let mut retained = publish_packet("rme/t", b"fleeting", QoS::AtLeastOnce, 1, message_expiry(1));
    if let Packet::Publish(p) = &mut retained {
        p.retain = true;
    }
    pubber.send(&retained).await;
    assert!(matches!(pubber.recv().await, Some(Packet::PubAck(_))));
    // Still there at once, with its remaining expiry.
    let (mut early, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("early", Properties::default())).await;
    early.subscribe("rme/t", QoS::AtLeastOnce, 1).await;
    let p = early.receive().await;
    assert!(p.retain);
    assert_eq!(
        p.properties.and_then(|p| p.message_expiry_interval),
        Some(1)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut late, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("late", Properties::default())).await;
    late.subscribe("rme/t", QoS::AtLeastOnce, 1).await;
    late.ping().await;
    late.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn receive_maximum_bounds_messages_resent_on_reconnect() {
    let broker = TestBroker::start().await;
    let connect = |receive_maximum| Connect {
        clean_start: false,
        ..connect_v5(
            "resumer",
            Properties {
                receive_maximum: Some(receive_maximum),
                ..expiry(60)
            },
        )
    };
    let (mut c, _) = RawClient::connect_v5_with(broker.addr, connect(10)).await;
    c.subscribe("rmr/t", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for i in 1..=4u16 {
        pubber
            .publish("rmr/t", b"m", QoS::AtLeastOnce, false, i)
            .await;
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(c.expect_publish().await.packet_id); // not acknowledged
    }
    c.disconnect().await;
    // Back with a smaller window: the four unacknowledged messages come again with their packet
    // ids, two at a time.
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect(2)).await;
    assert!(ack.session_present);
    let mut resent = Vec::new();
    for _ in 0..2 {
        let p = c.expect_publish().await;
        assert!(p.dup);
        resent.push(p.packet_id);
    }
    c.expect_silence(Duration::from_millis(300)).await;
    for i in 0..2 {
        c.send(&Packet::PubAck(PubResp::new(resent[i]))).await;
        let p = c.expect_publish().await;
        assert!(p.dup);
        resent.push(p.packet_id);
        c.expect_silence(Duration::from_millis(100)).await;
    }
    assert_eq!(resent, ids);
    broker.stop().await;
}
