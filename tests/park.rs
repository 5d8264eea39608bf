//! Parked connections (src/park.rs): an idle plain-TCP connection gives up its task and waits in
//! the parker's epoll set, and everything the protocol promises still happens: packets are read,
//! messages delivered, keep alive enforced, takeover, wills and shutdown.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{RawClient, TestBroker, WAIT, connect_packet, connect_v5};
use mqttd::protocol::reason::v5;
use mqttd::protocol::{self, LastWill, Packet, Properties, QoS};
use tokio::time::Instant;

#[tokio::test]
async fn idle_client_parks_right_after_connack_and_still_answers() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connected(broker.addr, "sleepy").await;
    broker.parked(1).await;
    // A packet resumes it as a task; quiet again, it parks again.
    c.ping().await;
    c.ping().await;
    broker.parked(1).await;
    c.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn parked_subscriber_gets_its_messages() {
    let broker = TestBroker::start().await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    assert_eq!(
        sub.subscribe("sensors/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    broker.parked(2).await;
    // The outbox wakes the parked subscriber; the PUBACK reaches it parked again, later.
    publisher
        .publish("sensors/temperature", b"21.5", QoS::AtLeastOnce, false, 7)
        .await;
    let p = sub.receive().await;
    assert_eq!(&*p.topic, "sensors/temperature");
    assert_eq!(p.payload, Bytes::from_static(b"21.5"));
    broker.parked(2).await;
    publisher
        .publish("sensors/humidity", b"40", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&*sub.receive().await.topic, "sensors/humidity");
    broker.stop().await;
}

#[tokio::test]
async fn parked_client_silent_past_its_keep_alive_is_closed_and_its_will_published() {
    let broker = TestBroker::start().await;
    let mut watcher = RawClient::connected(broker.addr, "watcher").await;
    watcher.subscribe("status/#", QoS::AtMostOnce, 1).await;
    let mut connect = connect_packet("silent");
    connect.keep_alive = 1;
    connect.will = Some(LastWill {
        topic: "status/silent".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    });
    let started = Instant::now();
    let mut silent = RawClient::connect(broker.addr).await;
    silent.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(silent.recv().await, Some(Packet::ConnAck(_))));
    broker.parked(2).await;
    // 1.5 x keep alive, found by the parker's sweep (every 0.5 s).
    silent.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(5000),
        "closed after {waited:?}"
    );
    let will = watcher.receive().await;
    assert_eq!(will.payload, Bytes::from_static(b"offline"));
    broker.stop().await;
}

#[tokio::test]
async fn parked_connection_is_taken_over() {
    let broker = TestBroker::start().await;
    let (mut old, _) =
        RawClient::connected_v5(broker.addr, "device-7", Properties::default()).await;
    broker.parked(1).await;
    let (mut new, _) =
        RawClient::connected_v5(broker.addr, "device-7", Properties::default()).await;
    let d = old.expect_disconnect().await;
    assert_eq!(u8::from(d.reason), v5::SESSION_TAKEN_OVER);
    new.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn peer_closing_a_parked_connection_publishes_its_will() {
    let broker = TestBroker::start().await;
    let mut watcher = RawClient::connected(broker.addr, "watcher").await;
    watcher.subscribe("status/#", QoS::AtLeastOnce, 1).await;
    let mut connect = connect_packet("doomed");
    connect.will = Some(LastWill {
        topic: "status/doomed".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    });
    let mut doomed = RawClient::connect(broker.addr).await;
    doomed.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(doomed.recv().await, Some(Packet::ConnAck(_))));
    broker.parked(2).await;
    drop(doomed);
    let will = watcher.receive().await;
    assert_eq!(&*will.topic, "status/doomed");
    broker.stop().await;
}

#[tokio::test]
async fn half_read_packet_survives_parking() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connected(broker.addr, "halting").await;
    let mut sub = BytesMut::new();
    let packet = Packet::Subscribe(protocol::Subscribe {
        packet_id: 9,
        filters: vec![protocol::SubscribeFilter {
            filter: "a/b".into(),
            options: protocol::SubscriptionOptions::new(QoS::AtMostOnce),
        }],
        properties: None,
    });
    protocol::encode(&packet, c.version, &mut sub).expect("encode SUBSCRIBE");
    let (head, tail) = sub.split_at(4);
    c.send_bytes(head).await;
    // Read, kept in the parked connection's buffer; then quiet long enough to park.
    broker.parked(0).await;
    broker.parked(1).await;
    c.send_bytes(tail).await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_with_0x8b() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "parked-v5", Properties::default()).await;
    let mut c3 = RawClient::connected(broker.addr, "parked-311").await;
    broker.parked(2).await;
    let parker = broker.parker.clone();
    let started = Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < WAIT,
        "the drain waited for parked connections"
    );
    assert_eq!(
        u8::from(c.expect_disconnect().await.reason),
        v5::SERVER_SHUTTING_DOWN
    );
    c3.expect_closed().await;
    assert_eq!(parker.parked(), 0);
}

#[tokio::test]
async fn messages_queued_while_offline_reach_a_client_that_parks_at_once() {
    let broker = TestBroker::start().await;
    let props = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let mut connect = connect_v5("returning", props);
    connect.clean_start = false;
    let (mut c, _) = RawClient::connect_v5_with(broker.addr, connect.clone()).await;
    c.subscribe("q/#", QoS::AtLeastOnce, 1).await;
    c.send(&Packet::Disconnect(protocol::Disconnect {
        reason: protocol::DisconnectReason::NormalDisconnection,
        properties: None,
    }))
    .await;
    c.expect_closed().await;
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    for i in 0..3u16 {
        publisher
            .publish(
                "q/x",
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .await;
    }
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert!(ack.session_present);
    for i in 0..3 {
        assert_eq!(c.receive().await.payload, format!("m{i}").into_bytes());
    }
    broker.parked(2).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_fleet_of_parked_subscribers_all_get_the_command() {
    const FLEET: usize = 100;
    let broker = TestBroker::start().await;
    let mut fleet = Vec::new();
    for i in 0..FLEET {
        let mut c = RawClient::connected(broker.addr, &format!("device-{i}")).await;
        assert_eq!(c.subscribe("fleet/cmd", QoS::AtLeastOnce, 1).await, vec![1]);
        fleet.push(c);
    }
    let mut operator = RawClient::connected(broker.addr, "operator").await;
    broker.parked(FLEET + 1).await;
    operator
        .publish("fleet/cmd", b"reboot", QoS::AtLeastOnce, false, 1)
        .await;
    for c in &mut fleet {
        assert_eq!(c.receive().await.payload, Bytes::from_static(b"reboot"));
    }
    // All acknowledged, quiet again: every one of them parks again.
    broker.parked(FLEET + 1).await;
    broker.stop().await;
}
