//! Session Expiry Interval: at CONNECT, changed at DISCONNECT, and Clean Start.
//! On paused tokio time over in-memory connections: expiry is exact and costs no real time.

use std::time::Duration;

use tokio::io::DuplexStream;

use mqttd::protocol::{ConnAckReason, Connect, Disconnect, DisconnectReason, Packet, QoS};

use super::expiry;
use crate::common::{self, RawClient, TestBroker, connect_v5};

/// A 5.0 CONNECT with Clean Start = 0 and the given Session Expiry Interval; returns the client and
/// "session present".
async fn resume(broker: &TestBroker, id: &str, secs: u32) -> (RawClient<DuplexStream>, bool) {
    let connect = Connect {
        clean_start: false,
        ..connect_v5(id, expiry(secs))
    };
    let (c, ack) = RawClient::connect_v5_on(broker.pipe(), connect).await;
    assert_eq!(ack.code, ConnAckReason::Success);
    (c, ack.session_present)
}

/// Sends DISCONNECT with a Session Expiry Interval and waits for the close.
async fn disconnect_with_expiry(mut c: RawClient<DuplexStream>, secs: u32) {
    let d = Disconnect {
        reason: DisconnectReason::NormalDisconnection,
        properties: Some(Box::new(expiry(secs))),
    };
    c.send(&Packet::Disconnect(d)).await;
    c.expect_closed().await;
}

#[tokio::test(start_paused = true)]
async fn expiry_zero_ends_the_session_with_the_connection() {
    let broker = TestBroker::start().await;
    let (mut c, _) = resume(&broker, "brief", 0).await;
    c.subscribe("se0/#", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    common::eventually("session gone", || broker.router.session_count() == 0).await;
    let (mut c, present) = resume(&broker, "brief", 0).await;
    assert!(!present);
    let mut pubber = RawClient::connected_on(broker.pipe(), "pub").await;
    pubber
        .publish("se0/x", b"lost", QoS::AtLeastOnce, false, 1)
        .await;
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn expiry_keeps_the_session_for_its_interval_only() {
    let broker = TestBroker::start().await;
    let (mut c, present) = resume(&broker, "two-secs", 2).await;
    assert!(!present);
    c.subscribe("se2/#", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    let mut pubber = RawClient::connected_on(broker.pipe(), "pub").await;
    pubber
        .publish("se2/q", b"queued", QoS::AtLeastOnce, false, 1)
        .await;
    pubber.disconnect().await;

    let (mut c, present) = resume(&broker, "two-secs", 2).await;
    assert!(present, "session present within its expiry interval");
    let p = c.receive().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("se2/q", &b"queued"[..]));
    c.disconnect().await;

    let left = tokio::time::Instant::now();
    common::eventually("session expired", || broker.router.session_count() == 0).await;
    let after = left.elapsed();
    // Paused time: exact, give or take the polling step of `eventually`.
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2050)).contains(&after),
        "expired after {after:?}, not 2 s"
    );
    let (_c, present) = resume(&broker, "two-secs", 2).await;
    assert!(!present, "session gone after its expiry interval");
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn disconnect_cannot_set_an_expiry_when_connect_had_zero() {
    let broker = TestBroker::start().await;
    let (mut c, _) = resume(&broker, "zero-then-ten", 0).await;
    let d = Disconnect {
        reason: DisconnectReason::NormalDisconnection,
        properties: Some(Box::new(expiry(10))),
    };
    c.send(&Packet::Disconnect(d)).await;
    let d = c.expect_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::ProtocolError);
    // The session still ends with the connection, as CONNECT asked.
    common::eventually("session gone", || broker.router.session_count() == 0).await;
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn disconnect_with_expiry_zero_discards_the_session() {
    let broker = TestBroker::start().await;
    let (mut c, _) = resume(&broker, "ten-then-zero", 10).await;
    c.subscribe("sez/#", QoS::AtLeastOnce, 1).await;
    disconnect_with_expiry(c, 0).await;
    common::eventually("session gone", || broker.router.session_count() == 0).await;
    let (_c, present) = resume(&broker, "ten-then-zero", 10).await;
    assert!(!present);
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn clean_start_discards_a_stored_session() {
    let broker = TestBroker::start().await;
    let (mut c, _) = resume(&broker, "fresh", 60).await;
    c.subscribe("cs/#", QoS::AtLeastOnce, 1).await;
    c.disconnect().await;
    let mut pubber = RawClient::connected_on(broker.pipe(), "pub").await;
    pubber
        .publish("cs/1", b"stored", QoS::AtLeastOnce, false, 1)
        .await;

    let (mut c, ack) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("fresh", expiry(60))).await;
    assert_eq!(ack.code, ConnAckReason::Success);
    assert!(!ack.session_present, "Clean Start = 1 never resumes");
    // Neither the queued message nor the subscription survived.
    pubber
        .publish("cs/2", b"live", QoS::AtLeastOnce, false, 2)
        .await;
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}
