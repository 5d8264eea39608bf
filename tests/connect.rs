//! CONNECT rules with raw bytes and exact CONNACK codes: protocol versions, client identifiers,
//! binary passwords, and the CONNECT timeout that defeats slowloris.

mod common;

use std::time::Duration;

use common::wire::{connect_bytes, string};
use common::{RawClient, TestBroker, config};
use mqttd::protocol::{ProtocolVersion, QoS};
use tokio::time::Instant;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Subscribes to a topic of its own, publishes to it at QoS 1 and gets it back: the connection is
/// fully usable, not just acknowledged.
async fn assert_usable(c: &mut RawClient, topic: &str) {
    assert_eq!(c.suback_codes(1, &[(topic, QoS::AtLeastOnce)]).await, [1]);
    c.publish_raw(topic, b"hello", QoS::AtLeastOnce, 2).await;
    let p = c.take_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), (topic, &b"hello"[..]));
    c.puback(p.packet_id).await;
    c.pingpong().await;
}

#[tokio::test]
async fn mqtt_31_mqisdp_level_3_is_accepted() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(
        b"MQIsdp",
        3,
        0x02,
        60,
        &string(b"client-31"),
    ))
    .await;
    c.expect_connack(0x00).await;
    assert_usable(&mut c, "v31/t").await;
    broker.stop().await;
}

#[tokio::test]
async fn mqtt_311_is_accepted() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0x02, 60, &string(b"client-311")))
        .await;
    c.expect_connack(0x00).await;
    assert_usable(&mut c, "v311/t").await;
    broker.stop().await;
}

/// MQTT-3.1.3-6: an empty client id with clean session gets a unique id assigned. Two such
/// clients at once must not take each other over.
#[tokio::test]
async fn empty_client_id_with_clean_session_is_assigned_one() {
    let broker = TestBroker::start().await;
    let mut a = RawClient::connect(broker.addr).await;
    a.send_bytes(&connect_bytes(b"MQTT", 4, 0x02, 60, &string(b"")))
        .await;
    a.expect_connack(0x00).await;
    let mut b = RawClient::connect(broker.addr).await;
    b.send_bytes(&connect_bytes(b"MQTT", 4, 0x02, 60, &string(b"")))
        .await;
    b.expect_connack(0x00).await;
    assert_usable(&mut a, "anon/a").await;
    assert_usable(&mut b, "anon/b").await;
    assert_eq!(broker.router.session_count(), 2);
    broker.stop().await;
}

/// MQTT-3.1.3-8: an empty client id without clean session is refused with 0x02 (identifier
/// rejected), then the connection is closed, and no session is left behind.
#[tokio::test]
async fn empty_client_id_without_clean_session_gets_0x02_then_close() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0x00, 60, &string(b"")))
        .await;
    c.expect_connack(0x02).await;
    c.expect_eof().await;
    assert_eq!(broker.router.session_count(), 0);
    broker.stop().await;
}

/// MQTT 3.1 too (MQTT 3.1 even requires 1..=23 characters): identifier rejected.
#[tokio::test]
async fn empty_client_id_without_clean_session_in_31_gets_0x02() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQIsdp", 3, 0x00, 60, &string(b"")))
        .await;
    c.expect_connack(0x02).await;
    c.expect_eof().await;
    broker.stop().await;
}

/// Passwords are binary data (MQTT-3.1.3.5), not strings: bytes that are not UTF-8 (and a
/// zero byte) must decode, and an anonymous broker without a password file lets the client in.
#[tokio::test]
async fn binary_password_on_anonymous_broker_is_accepted() {
    let broker = TestBroker::start().await;
    let password: &[u8] = &[0x00, 0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80];
    let payload = cat(&[&string(b"bin-pw"), &string(b"user"), &string(password)]);
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0xC2, 60, &payload))
        .await;
    c.expect_connack(0x00).await;
    assert_usable(&mut c, "binpw/t").await;
    broker.stop().await;
}

/// The same binary password in MQTT 5.0, where a password may come without a user name.
#[tokio::test]
async fn binary_password_without_username_in_v5_is_accepted() {
    let broker = TestBroker::start().await;
    let password: &[u8] = &[0x00, 0xFF, 0xFE, 0x80];
    // Properties length 0, client id, password.
    let payload = cat(&[&[0], &string(b"bin-pw-5"), &string(password)]);
    let mut c = RawClient::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    c.send_bytes(&connect_bytes(b"MQTT", 5, 0x42, 60, &payload))
        .await;
    c.expect_connack(0x00).await;
    c.pingpong().await;
    broker.stop().await;
}

/// A user name without a password on an anonymous broker: accepted as that user.
#[tokio::test]
async fn username_without_password_on_anonymous_broker_is_accepted() {
    let broker = TestBroker::start().await;
    let payload = cat(&[&string(b"named"), &string(b"alice")]);
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0x82, 60, &payload))
        .await;
    c.expect_connack(0x00).await;
    c.pingpong().await;
    broker.stop().await;
}

/// A complete, valid will is accepted.
#[tokio::test]
async fn connect_with_will_is_accepted() {
    let broker = TestBroker::start().await;
    // Will flag, will QoS 1, will retain, clean session.
    let payload = cat(&[&string(b"willing"), &string(b"wills/x"), &string(b"gone")]);
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0x2E, 60, &payload))
        .await;
    c.expect_connack(0x00).await;
    c.pingpong().await;
    broker.stop().await;
}

fn short_timeout_config() -> mqttd::config::Config {
    let mut cfg = config();
    cfg.limits.connect_timeout = Duration::from_millis(300);
    cfg
}

/// A socket that never speaks is closed after `connect_timeout` (slowloris), without a CONNACK.
#[tokio::test]
async fn silent_socket_is_closed_after_connect_timeout() {
    let broker = TestBroker::start_with(short_timeout_config()).await;
    let start = Instant::now();
    let mut c = RawClient::connect(broker.addr).await;
    c.expect_eof().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    broker.stop().await;
}

/// Dribbling a CONNECT one byte at a time does not extend the deadline: the timeout covers the
/// whole first packet, not each read.
#[tokio::test]
async fn dribbled_connect_is_closed_after_connect_timeout() {
    let broker = TestBroker::start_with(short_timeout_config()).await;
    let connect = connect_bytes(b"MQTT", 4, 0x02, 60, &string(b"slowloris-client-id"));
    let start = Instant::now();
    let mut c = RawClient::connect(broker.addr).await;
    let mut closed = false;
    for byte in &connect[..connect.len() - 1] {
        // Each wait is the "nothing happens" proof between two bytes; a close ends the dribble.
        match c.recv_within(Duration::from_millis(50)).await {
            Err(()) => {}
            Ok(None) => {
                closed = true;
                break;
            }
            Ok(Some(p)) => panic!("got {p:?} before the CONNECT was complete"),
        }
        if c.stream.try_write(&[*byte]).is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        c.expect_eof().await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    broker.stop().await;
}

/// The CONNECT timeout only applies to the first packet: a connected client stays connected.
#[tokio::test]
async fn connect_timeout_does_not_apply_after_connack() {
    let broker = TestBroker::start_with(short_timeout_config()).await;
    let mut c = RawClient::connected(broker.addr, "in-time").await;
    c.expect_silence(Duration::from_millis(600)).await;
    c.pingpong().await;
    broker.stop().await;
}
