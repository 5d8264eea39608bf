//! Persistent sessions survive a restart (with the real binary; persistence is on by default):
//! subscriptions with their options and identifiers, queued messages in order, in-flight
//! messages re-sent with DUP, QoS 2 state, expiry deadlines across downtime, and wills.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BrokerProcess, RawClient, connect_v5};
use mqttd::protocol::{
    Connect, LastWill, Packet, Properties, PubResp, Publish, QoS, RetainHandling,
    SubscriptionOptions,
};

/// A 5.0 CONNECT for a session that lives `expiry` seconds, resumed if there is one.
fn resume(client_id: &str, expiry: u32) -> Connect {
    let mut c = connect_v5(
        client_id,
        Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        },
    );
    c.clean_start = false;
    c
}

fn publish(topic: &str, payload: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: None,
    })
}

/// Publishes at QoS 1 or 2 and waits for the PUBACK or PUBREC (then completes QoS 2).
async fn publish_acked(c: &mut RawClient, topic: &str, payload: &str, qos: QoS, id: u16) {
    c.send(&publish(topic, payload, qos, id)).await;
    match (qos, c.recv().await) {
        (QoS::AtLeastOnce, Some(Packet::PubAck(a))) => assert_eq!(a.packet_id, id),
        (QoS::ExactlyOnce, Some(Packet::PubRec(a))) => {
            assert_eq!(a.packet_id, id);
            c.send(&Packet::PubRel(PubResp::new(id))).await;
            assert!(matches!(c.recv().await, Some(Packet::PubComp(_))));
        }
        (_, other) => panic!("expected the ack of {payload}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_with_its_subscriptions_queue_and_inflight_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let conf = common::config_file(dir.path(), "");
    let broker = BrokerProcess::start(&conf).await;

    let (mut sub, ack) = RawClient::connect_v5_with(broker.addr, resume("keeper", 3600)).await;
    assert!(!ack.session_present);
    let options = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendIfNew,
    };
    sub.subscribe_with("plant/#", options, Some(7), 1).await;
    sub.subscribe_with(
        "other/+",
        SubscriptionOptions::new(QoS::AtLeastOnce),
        None,
        2,
    )
    .await;

    let mut p = RawClient::connected(broker.addr, "pub").await;
    // Two the subscriber takes and does not acknowledge: in flight at the restart, one of them
    // (QoS 2) past PUBREC.
    publish_acked(&mut p, "plant/a", "inflight-1", QoS::AtLeastOnce, 1).await;
    publish_acked(&mut p, "plant/b", "inflight-2", QoS::ExactlyOnce, 2).await;
    let first = sub.expect_publish().await;
    assert_eq!(first.payload, Bytes::from_static(b"inflight-1"));
    let second = sub.expect_publish().await;
    assert_eq!(second.qos, QoS::ExactlyOnce);
    sub.send(&Packet::PubRec(PubResp::new(second.packet_id)))
        .await;
    match sub.recv().await {
        Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, second.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(sub);
    // Queued while it is away, in order.
    for (i, topic) in ["plant/c", "other/x", "plant/d"].iter().enumerate() {
        let qos = if i == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publish_acked(&mut p, topic, &format!("queued-{i}"), qos, 10 + i as u16).await;
    }
    p.disconnect().await;
    let out = broker.stop().await;
    assert!(out.contains("store closed"), "{out}");

    let broker = BrokerProcess::start(&conf).await;
    broker
        .wait_for_line("1 session(s) and 5 queued message(s)")
        .await;
    let (mut sub, ack) = RawClient::connect_v5_with(broker.addr, resume("keeper", 3600)).await;
    assert!(ack.session_present, "the session came back");
    // The in-flight ones first, as they were: PUBLISH again with DUP, PUBREL again.
    let again = sub.expect_publish().await;
    assert!(again.dup, "re-sent with DUP: {again:?}");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload, Bytes::from_static(b"inflight-1"));
    match sub.recv().await {
        Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, second.packet_id),
        other => panic!("expected PUBREL again, got {other:?}"),
    }
    sub.send(&Packet::PubAck(PubResp::new(again.packet_id)))
        .await;
    sub.send(&Packet::PubComp(PubResp::new(second.packet_id)))
        .await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        let m = sub.expect_publish().await;
        assert!(!m.dup);
        let ids = m
            .properties
            .as_ref()
            .map(|p| p.subscription_identifiers.clone())
            .unwrap_or_default();
        queued.push((m.topic.to_string(), m.qos, ids));
        match m.qos {
            QoS::AtLeastOnce => sub.send(&Packet::PubAck(PubResp::new(m.packet_id))).await,
            _ => sub.send(&Packet::PubRec(PubResp::new(m.packet_id))).await,
        }
    }
    assert_eq!(
        queued,
        [
            ("plant/c".into(), QoS::ExactlyOnce, vec![7]),
            ("other/x".into(), QoS::AtLeastOnce, vec![]),
            ("plant/d".into(), QoS::ExactlyOnce, vec![7]),
        ]
    );
    // The subscriptions are there, with their options: No Local keeps the subscriber's own
    // message from it, the identifier is still 7.
    let mut p = RawClient::connected(broker.addr, "pub").await;
    publish_acked(&mut p, "plant/new", "after", QoS::AtLeastOnce, 1).await;
    loop {
        match sub.recv().await {
            Some(Packet::PubRel(r)) => sub.send(&Packet::PubComp(PubResp::new(r.packet_id))).await,
            Some(Packet::Publish(m)) => {
                assert_eq!(m.payload, Bytes::from_static(b"after"));
                let ids = &m.properties.as_ref().unwrap().subscription_identifiers;
                assert_eq!(ids, &[7]);
                sub.send(&Packet::PubAck(PubResp::new(m.packet_id))).await;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    sub.send(&publish("plant/mine", "own", QoS::AtLeastOnce, 99))
        .await;
    loop {
        match sub.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == 99 => break,
            Some(Packet::PubRel(r)) => sub.send(&Packet::PubComp(PubResp::new(r.packet_id))).await,
            other => panic!("No Local: expected only the PUBACK, got {other:?}"),
        }
    }
    sub.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_session_expires_across_downtime_and_one_that_did_not_stays() {
    let dir = tempfile::tempdir().unwrap();
    let conf = common::config_file(dir.path(), "");
    let broker = BrokerProcess::start(&conf).await;
    let (mut short, _) = RawClient::connect_v5_with(broker.addr, resume("short", 1)).await;
    short.subscribe("s/#", QoS::AtLeastOnce, 1).await;
    let (mut long, _) = RawClient::connect_v5_with(broker.addr, resume("long", 3600)).await;
    long.subscribe("s/#", QoS::AtLeastOnce, 1).await;
    short.disconnect().await;
    long.disconnect().await;
    let stopped = Instant::now();
    broker.stop().await;
    // The expiry is a wall-clock deadline: it runs while the broker is down.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(stopped.elapsed())).await;
    let broker = BrokerProcess::start(&conf).await;
    let (_, ack) = RawClient::connect_v5_with(broker.addr, resume("short", 1)).await;
    assert!(!ack.session_present, "expired while the broker was down");
    let (_, ack) = RawClient::connect_v5_with(broker.addr, resume("long", 3600)).await;
    assert!(ack.session_present);
    broker.stop().await;
}

/// A will survives a broker crash: the restart ends the connection the crash cut, so the will
/// is due its delay after the restart, unless the client returns first.
#[tokio::test]
async fn a_will_survives_kill_9_and_is_published_after_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let conf = common::config_file(dir.path(), "");
    let broker = BrokerProcess::start(&conf).await;
    let will = |name: &str| LastWill {
        topic: format!("status/{name}").into(),
        payload: Bytes::from(format!("{name} gone")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Box::new(Properties {
            will_delay_interval: Some(1),
            ..Properties::default()
        })),
    };
    for name in ["stays-away", "comes-back"] {
        let mut c = resume(name, 3600);
        c.will = Some(will(name));
        let (c, _) = RawClient::connect_v5_with(broker.addr, c).await;
        std::mem::forget(c);
    }
    let (mut watcher, _) = RawClient::connect_v5_with(broker.addr, resume("watcher", 3600)).await;
    watcher.subscribe("status/#", QoS::AtLeastOnce, 1).await;
    broker.kill().await;

    let broker = BrokerProcess::start(&conf).await;
    let (mut back, ack) = RawClient::connect_v5_with(broker.addr, resume("comes-back", 3600)).await;
    assert!(ack.session_present);
    let (mut watcher, _) = RawClient::connect_v5_with(broker.addr, resume("watcher", 3600)).await;
    let m = watcher.expect_publish().await;
    assert_eq!(m.payload, Bytes::from_static(b"stays-away gone"));
    watcher
        .send(&Packet::PubAck(PubResp::new(m.packet_id)))
        .await;
    watcher.expect_silence(Duration::from_millis(1500)).await;
    back.ping().await;
    broker.stop().await;
}
