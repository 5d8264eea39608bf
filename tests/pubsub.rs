//! Publish/subscribe: every QoS pair, wildcards, the `$` rule, overlapping subscriptions, order.

mod common;

use std::time::Duration;

use common::{RawClient, TestBroker};
use mqttd::protocol::QoS;

const ALL: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn every_qos_pair_delivers_at_the_minimum() {
    let broker = TestBroker::start().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for sub_qos in ALL {
        let mut sub = RawClient::connected(broker.addr, "sub").await;
        let topic = format!("pairs/{}", sub_qos as u8);
        assert_eq!(sub.subscribe(&topic, sub_qos, 1).await, vec![sub_qos as u8]);
        for (i, pub_qos) in ALL.into_iter().enumerate() {
            let payload = format!("p{} s{}", pub_qos as u8, sub_qos as u8);
            pubber
                .publish(&topic, payload.as_bytes(), pub_qos, false, 10 + i as u16)
                .await;
            let got = sub.receive().await;
            assert_eq!(&got.payload[..], payload.as_bytes());
            assert_eq!(got.qos, pub_qos.min(sub_qos), "{payload}");
            assert!(!got.retain && !got.dup);
            assert_eq!(got.packet_id == 0, got.qos == QoS::AtMostOnce);
        }
        sub.disconnect().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn wildcards_match_as_the_spec_says() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    for (i, f) in ["a/+/c", "x/#", "+", "$SYS/+"].iter().enumerate() {
        assert_eq!(
            sub.subscribe(f, QoS::AtMostOnce, i as u16 + 1).await,
            vec![0]
        );
    }
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    // Matching and non-matching topics, then a marker; only matches may arrive before the marker.
    for t in [
        "a/b/c",
        "a/b/d",
        "a/c",
        "x",
        "x/y/z",
        "top",
        "top/level",
        "$SYS/foo",
        "$other",
        "a//c",
    ] {
        pubber
            .publish(t, t.as_bytes(), QoS::AtMostOnce, false, 0)
            .await;
    }
    pubber
        .publish("x/end", b"end", QoS::AtMostOnce, false, 0)
        .await;
    let mut got = vec![];
    loop {
        let p = sub.receive().await;
        if &p.payload[..] == b"end" {
            break;
        }
        got.push(p.topic.to_string());
    }
    // "a/+/c" matches "a//c" (an empty level); "x/#" matches "x" itself; "+" matches "top" but not
    // "$other" (MQTT-4.7.2-1); "$SYS/+" is an explicit $ filter.
    assert_eq!(got, vec!["a/b/c", "x", "x/y/z", "top", "$SYS/foo", "a//c"]);
    broker.stop().await;
}

#[tokio::test]
async fn hash_does_not_match_dollar_topics() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("#", QoS::AtMostOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("$private/x", b"no", QoS::AtMostOnce, false, 0)
        .await;
    pubber
        .publish("public", b"yes", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&sub.receive().await.payload[..], b"yes");
    broker.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("o/#", QoS::AtMostOnce, 1).await;
    sub.subscribe("o/+", QoS::ExactlyOnce, 2).await;
    sub.subscribe("o/t", QoS::AtLeastOnce, 3).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("o/t", b"once", QoS::ExactlyOnce, false, 7)
        .await;
    let p = sub.receive().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    sub.ping().await;
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn order_is_kept_per_topic_and_unsubscribe_stops_delivery() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("seq", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for i in 0..200u16 {
        let qos = ALL[usize::from(i % 3)];
        pubber
            .publish("seq", i.to_string().as_bytes(), qos, false, i + 1)
            .await;
    }
    for i in 0..200u16 {
        assert_eq!(sub.receive().await.payload, i.to_string().as_bytes());
    }
    sub.send(&mqttd::protocol::Packet::Unsubscribe(
        mqttd::protocol::Unsubscribe {
            packet_id: 9,
            filters: vec!["seq".into()],
            properties: None,
        },
    ))
    .await;
    match sub.recv().await {
        Some(mqttd::protocol::Packet::UnsubAck(a)) => assert_eq!(a.packet_id, 9),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    pubber
        .publish("seq", b"after", QoS::AtMostOnce, false, 0)
        .await;
    pubber.ping().await;
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn rumqttc_round_trip() {
    let broker = TestBroker::start().await;
    let (sub, mut rx, _ev) = common::rumqtt_client(common::mqtt_options(broker.addr, "rsub")).await;
    sub.subscribe("sensors/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (pubber, _rx2, _ev2) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "rpub")).await;
    // The SUBACK is not observable from here without racing, so publish until the first arrives.
    let mut first = None;
    for _ in 0..50 {
        pubber
            .publish(
                "sensors/temperature",
                rumqttc::QoS::AtLeastOnce,
                false,
                "24.3°C",
            )
            .await
            .unwrap();
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            first = Some(p);
            break;
        }
    }
    let p = first.expect("a publish arrives");
    assert_eq!(p.topic, "sensors/temperature");
    assert_eq!(&p.payload[..], "24.3°C".as_bytes());
    assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
    broker.stop().await;
}

/// Hostile-input review (the `session` fuzz target checks for it): a 5.0 PUBLISH with an empty
/// topic and a Topic Alias must never be routed with the empty topic (a `#` subscriber would get a
/// PUBLISH to "", malformed for 3.1.1). An alias the client never set is a protocol error
/// (DISCONNECT 0x82, nothing routed); a set alias is routed under its full topic, and the alias
/// itself is not forwarded.
#[tokio::test]
async fn topic_aliases_never_route_an_empty_topic() {
    use mqttd::protocol::{Connect, Packet, ProtocolVersion};
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("#", QoS::AtMostOnce, 1).await;
    let connect_v5 = |id: &str| Connect {
        protocol: ProtocolVersion::V5,
        ..common::connect_packet(id)
    };
    // PUBLISH QoS 0, `topic`, properties: Topic Alias 1, payload "x".
    let publish = |topic: &[u8]| {
        let mut p = vec![0x30, (2 + topic.len() + 5) as u8, 0, topic.len() as u8];
        p.extend_from_slice(topic);
        p.extend_from_slice(&[3, 0x23, 0, 1, b'x']);
        p
    };

    let mut unset = RawClient::connect(broker.addr).await;
    unset.version = ProtocolVersion::V5;
    unset
        .send(&Packet::Connect(Box::new(connect_v5("unset"))))
        .await;
    assert!(matches!(unset.recv().await, Some(Packet::ConnAck(a)) if u8::from(a.code) == 0));
    unset.send_bytes(&publish(b"")).await;
    match unset.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(u8::from(d.reason), 0x82, "unknown alias"),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    unset.expect_closed().await;

    let mut aliased = RawClient::connect(broker.addr).await;
    aliased.version = ProtocolVersion::V5;
    aliased
        .send(&Packet::Connect(Box::new(connect_v5("aliased"))))
        .await;
    assert!(matches!(aliased.recv().await, Some(Packet::ConnAck(a)) if u8::from(a.code) == 0));
    aliased.send_bytes(&publish(b"a/b")).await;
    aliased.send_bytes(&publish(b"")).await;
    aliased.ping().await;
    for _ in 0..2 {
        let p = sub.receive().await;
        assert_eq!((&*p.topic, &p.payload[..]), ("a/b", &b"x"[..]));
        assert!(p.properties.is_none(), "the alias is not forwarded");
    }
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}
