//! Malformed and forbidden input, byte by byte. Every case runs on its own connection; the broker
//! must close exactly that connection (MQTT 3.1.1 has no way to say why) and keep serving a
//! bystander that was connected before: a PINGREQ still gets its PINGRESP and a publish from
//! another client still arrives.

mod common;

use std::time::Duration;

use common::wire::{connect_311, connect_bytes, packet, string};
use common::{RawClient, TestBroker, WAIT, config};
use mqttd::protocol::{ConnAckReason, Connect, Packet, ProtocolVersion, QoS};
use tokio::time::Instant;

/// Two healthy clients connected before the faulty one: one subscribed, one publishing to it.
struct Bystanders {
    subscriber: RawClient,
    publisher: RawClient,
    round: u16,
}

impl Bystanders {
    async fn connect(broker: &TestBroker) -> Bystanders {
        let mut subscriber = RawClient::connected(broker.addr, "bystander-sub").await;
        let codes = subscriber
            .suback_codes(1, &[("health/#", QoS::AtLeastOnce)])
            .await;
        assert_eq!(codes, [1]);
        let publisher = RawClient::connected(broker.addr, "bystander-pub").await;
        Bystanders {
            subscriber,
            publisher,
            round: 0,
        }
    }

    /// Both still answered: PINGREQ -> PINGRESP, and a QoS 1 publish goes end to end.
    async fn still_served(&mut self) {
        self.round += 1;
        let topic = format!("health/{}", self.round);
        self.subscriber.pingpong().await;
        self.publisher.pingpong().await;
        self.publisher
            .publish_raw(&topic, b"alive", QoS::AtLeastOnce, self.round)
            .await;
        let p = self.subscriber.take_publish().await;
        assert_eq!((&*p.topic, &p.payload[..]), (topic.as_str(), &b"alive"[..]));
        self.subscriber.puback(p.packet_id).await;
    }
}

/// Where the faulty bytes go.
#[derive(Clone, Copy, PartialEq)]
enum When {
    /// After a successful CONNECT/CONNACK.
    AfterConnect,
    /// As the very first bytes on the connection.
    First,
    /// Both, each on its own connection.
    Both,
}

/// Sends `bytes` as `when` says and asserts the broker closes without answering, then that the
/// bystanders are still served.
async fn closes(when: When, bytes: Vec<u8>) {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    if when != When::First {
        let mut c = RawClient::connected(broker.addr, "faulty").await;
        c.send_bytes(&bytes).await;
        c.expect_eof().await;
        bystanders.still_served().await;
    }
    if when != When::AfterConnect {
        let mut c = RawClient::connect(broker.addr).await;
        c.send_bytes(&bytes).await;
        c.expect_eof().await;
        bystanders.still_served().await;
    }
    broker.stop().await;
}

/// `table! { name: When bytes; ... }`: one test per row, so a single row can be ignored.
macro_rules! table {
    ($($(#[$meta:meta])* $name:ident: $when:ident $bytes:expr;)*) => {$(
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            closes(When::$when, $bytes).await;
        }
    )*};
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// PUBLISH QoS 0 to `topic` (raw bytes) with payload "x".
fn publish0(topic: &[u8]) -> Vec<u8> {
    packet(0x30, &cat(&[&string(topic), b"x"]))
}

table! {
    // Framing.
    remaining_length_of_five_bytes: Both vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    remaining_length_longer_than_content_pingreq: AfterConnect vec![0xC0, 0x01, 0x00];
    remaining_length_longer_than_content_puback: AfterConnect packet(0x40, &[0, 1, 0]);
    remaining_length_longer_than_content_subscribe:
        AfterConnect packet(0x82, &cat(&[&[0, 1], &string(b"t"), &[0, 0x55]]));
    content_longer_than_remaining_length: AfterConnect packet(0x30, &cat(&[&[0, 5], b"a"]));
    reserved_packet_type_0: Both vec![0x00, 0x00];
    reserved_packet_type_15_in_311: AfterConnect vec![0xF0, 0x00];

    // Reserved fixed-header flags.
    subscribe_flags_0000: AfterConnect packet(0x80, &cat(&[&[0, 1], &string(b"t"), &[0]]));
    unsubscribe_flags_0000: AfterConnect packet(0xA0, &cat(&[&[0, 1], &string(b"t")]));
    pubrel_flags_0000: AfterConnect packet(0x60, &[0, 1]);
    pingreq_flags_0001: AfterConnect vec![0xC1, 0x00];
    puback_flags_0010: AfterConnect packet(0x42, &[0, 1]);
    disconnect_flags_0001: AfterConnect vec![0xE1, 0x00];
    connect_flags_0001: Both {
        let mut c = connect_311("c");
        c[0] = 0x11;
        c
    };

    // PUBLISH.
    publish_qos_3: AfterConnect packet(0x36, &cat(&[&string(b"t"), &[0, 1], b"x"]));
    publish_qos_0_with_dup: AfterConnect packet(0x38, &cat(&[&string(b"t"), b"x"]));
    publish_topic_with_plus: AfterConnect publish0(b"a/+/c");
    publish_topic_with_hash: AfterConnect publish0(b"a/#");
    publish_topic_hash_alone: AfterConnect publish0(b"#");
    publish_topic_with_nul: AfterConnect publish0(b"a\0b");
    publish_topic_invalid_utf8: AfterConnect publish0(&[b'a', 0xFF, 0xFE]);
    publish_topic_overlong_utf8_nul: AfterConnect publish0(&[b'a', 0xC0, 0x80]);
    publish_topic_utf16_surrogate: AfterConnect publish0(&[b'a', 0xED, 0xA0, 0x80]);
    publish_topic_empty: AfterConnect publish0(b"");
    publish_qos1_packet_id_0: AfterConnect packet(0x32, &cat(&[&string(b"t"), &[0, 0], b"x"]));
    publish_qos2_packet_id_0: AfterConnect packet(0x34, &cat(&[&string(b"t"), &[0, 0], b"x"]));

    // SUBSCRIBE / UNSUBSCRIBE.
    subscribe_packet_id_0: AfterConnect packet(0x82, &cat(&[&[0, 0], &string(b"t"), &[0]]));
    unsubscribe_packet_id_0: AfterConnect packet(0xA2, &cat(&[&[0, 0], &string(b"t")]));
    subscribe_without_filters: AfterConnect packet(0x82, &[0, 1]);
    unsubscribe_without_filters: AfterConnect packet(0xA2, &[0, 1]);
    subscribe_requested_qos_3: AfterConnect packet(0x82, &cat(&[&[0, 1], &string(b"t"), &[3]]));
    subscribe_reserved_option_bits_in_311:
        AfterConnect packet(0x82, &cat(&[&[0, 1], &string(b"t"), &[0x04]]));
    subscribe_filter_with_nul: AfterConnect packet(0x82, &cat(&[&[0, 1], &string(b"a\0"), &[0]]));
    subscribe_filter_invalid_utf8:
        AfterConnect packet(0x82, &cat(&[&[0, 1], &string(&[0xFF]), &[0]]));
    subscribe_filter_without_options_byte: AfterConnect packet(0x82, &cat(&[&[0, 1], &string(b"t")]));

    // Packet order and direction.
    second_connect: AfterConnect connect_311("again");
    publish_before_connect: First publish0(b"t");
    pingreq_before_connect: First vec![0xC0, 0x00];
    subscribe_before_connect: First packet(0x82, &cat(&[&[0, 1], &string(b"t"), &[0]]));
    connack_from_client: AfterConnect vec![0x20, 0x02, 0x00, 0x00];
    suback_from_client: AfterConnect packet(0x90, &[0, 1, 0]);
    unsuback_from_client: AfterConnect packet(0xB0, &[0, 1]);
    pingresp_from_client: AfterConnect vec![0xD0, 0x00];

    // CONNECT content.
    connect_reserved_flag_bit_0: Both connect_bytes(b"MQTT", 4, 0x03, 60, &string(b"c"));
    connect_will_qos_without_will_flag: Both connect_bytes(b"MQTT", 4, 0x0A, 60, &string(b"c"));
    connect_will_retain_without_will_flag:
        Both connect_bytes(b"MQTT", 4, 0x22, 60, &string(b"c"));
    connect_will_qos_3: Both connect_bytes(
        b"MQTT", 4, 0x1E, 60, &cat(&[&string(b"c"), &string(b"w"), &string(b"x")]));
    connect_will_topic_with_wildcard: Both connect_bytes(
        b"MQTT", 4, 0x06, 60, &cat(&[&string(b"c"), &string(b"w/#"), &string(b"x")]));
    connect_password_without_username: Both connect_bytes(
        b"MQTT", 4, 0x42, 60, &cat(&[&string(b"c"), &string(b"pw")]));
    connect_client_id_invalid_utf8: Both connect_bytes(b"MQTT", 4, 0x02, 60, &string(&[0xC3, 0x28]));
    connect_missing_client_id: Both connect_bytes(b"MQTT", 4, 0x02, 60, &[]);
    connect_username_flag_without_username:
        Both connect_bytes(b"MQTT", 4, 0x82, 60, &string(b"c"));
    connect_will_topic_empty: Both connect_bytes(
        b"MQTT", 4, 0x06, 60, &cat(&[&string(b"c"), &string(b""), &string(b"x")]));
    connect_will_without_payload: Both connect_bytes(
        b"MQTT", 4, 0x06, 60, &cat(&[&string(b"c"), &string(b"w")]));
    connect_trailing_bytes: Both connect_bytes(b"MQTT", 4, 0x02, 60, &cat(&[&string(b"c"), &[0]]));
}

/// Unknown protocol level: CONNACK 0x01 (unacceptable protocol version), then close
/// (MQTT-3.1.2-2).
#[tokio::test]
async fn connect_protocol_level_6_gets_connack_1_then_close() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    for (name, level) in [
        (&b"MQTT"[..], 6),
        (b"MQTT", 2),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
    ] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send_bytes(&connect_bytes(name, level, 0x02, 60, &string(b"c")))
            .await;
        c.expect_connack(0x01).await;
        c.expect_eof().await;
        bystanders.still_served().await;
    }
    broker.stop().await;
}

/// Unknown protocol name: the connection is closed (MQTT-3.1.2-1). The spec leaves open whether a
/// CONNACK 0x01 comes first; nothing else may.
#[tokio::test]
async fn connect_unknown_protocol_name_closes() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    for name in [&b"MQTX"[..], b"mqtt", b"", b"MQIsdpX"] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send_bytes(&connect_bytes(name, 4, 0x02, 60, &string(b"c")))
            .await;
        match c.recv().await {
            None => {}
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(
                    c.wire_code(&ack),
                    0x01,
                    "CONNACK for protocol name {name:?}"
                );
                c.expect_eof().await;
            }
            Some(other) => panic!("protocol name {name:?}: got {other:?}"),
        }
        bystanders.still_served().await;
    }
    broker.stop().await;
}

/// Invalid filters are refused one by one in the SUBACK (0x80), not by closing the connection;
/// the valid filters of the same SUBSCRIBE are granted and work.
#[tokio::test]
async fn invalid_topic_filters_get_0x80_in_suback() {
    let broker = TestBroker::start_with(config()).await;
    let mut c = RawClient::connected(broker.addr, "filters").await;
    let codes = c
        .suback_codes(
            7,
            &[
                ("a/#/b", QoS::AtLeastOnce),
                ("ok/+", QoS::AtLeastOnce),
                ("a+", QoS::AtMostOnce),
                ("x/#", QoS::ExactlyOnce),
                ("#/", QoS::AtMostOnce),
                ("b/c#", QoS::AtLeastOnce),
                ("+/d", QoS::AtMostOnce),
                ("", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(codes, [0x80, 0x01, 0x80, 0x02, 0x80, 0x80, 0x00, 0x80]);
    c.pingpong().await;

    let mut publisher = RawClient::connected(broker.addr, "publisher").await;
    publisher
        .publish_raw("ok/1", b"one", QoS::AtLeastOnce, 1)
        .await;
    let p = c.take_publish().await;
    assert_eq!((&*p.topic, p.qos), ("ok/1", QoS::AtLeastOnce));
    c.puback(p.packet_id).await;
    publisher
        .publish_raw("x/y/z", b"two", QoS::AtMostOnce, 0)
        .await;
    let p = c.take_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("x/y/z", &b"two"[..]));
    // Nothing was subscribed under the refused filters.
    for topic in ["a/x/b", "a/b", "b/c", "a"] {
        publisher
            .publish_raw(topic, b"no", QoS::AtMostOnce, 0)
            .await;
    }
    publisher.pingpong().await;
    c.pingpong().await;
    broker.stop().await;
}

/// Half a packet, then our FIN: the broker closes (it cannot ever complete).
#[tokio::test]
async fn truncated_packet_then_eof_closes() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    let publish = packet(0x30, &cat(&[&string(b"topic"), &[b'x'; 20]]));
    let connect = connect_311("half");

    let mut c = RawClient::connected(broker.addr, "faulty").await;
    c.send_bytes(&publish[..publish.len() / 2]).await;
    c.shutdown_write().await;
    c.expect_eof().await;
    bystanders.still_served().await;

    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect[..connect.len() / 2]).await;
    c.shutdown_write().await;
    c.expect_eof().await;
    bystanders.still_served().await;

    // Only the fixed header's first byte.
    let mut c = RawClient::connected(broker.addr, "faulty2").await;
    c.send_bytes(&[0x30]).await;
    c.shutdown_write().await;
    c.expect_eof().await;
    bystanders.still_served().await;
    broker.stop().await;
}

/// Half a CONNECT, then silence: nothing happens until `connect_timeout`, then the close.
#[tokio::test]
async fn truncated_connect_waits_for_connect_timeout() {
    let mut cfg = config();
    cfg.limits.connect_timeout = Duration::from_millis(800);
    let broker = TestBroker::start_with(cfg).await;
    let connect = connect_311("half");
    let mut c = RawClient::connect(broker.addr).await;
    let start = Instant::now();
    c.send_bytes(&connect[..connect.len() / 2]).await;
    c.expect_silence(Duration::from_millis(500)).await;
    c.expect_eof().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    broker.stop().await;
}

/// Half a PUBLISH after CONNECT (keep alive 1 s), then silence: an incomplete packet does not
/// count as activity, so the keep-alive (1.5 s) closes the connection, not earlier.
#[tokio::test]
async fn truncated_packet_waits_for_keep_alive() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    let mut connect = common::connect_packet("half");
    connect.keep_alive = 1;
    let start = Instant::now();
    let mut c = RawClient::connected_with(broker.addr, connect).await;
    let publish = packet(0x30, &cat(&[&string(b"topic"), &[b'x'; 20]]));
    c.send_bytes(&publish[..publish.len() / 2]).await;
    c.expect_silence(Duration::from_millis(1000)).await;
    c.expect_eof().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    bystanders.still_served().await;
    broker.stop().await;
}

/// A well-formed CONNECT the codec builds itself still works on a broker that just closed a
/// dozen faulty connections: the close path leaves no residue in the session table.
#[tokio::test]
async fn faulty_connections_leave_no_sessions_behind() {
    let broker = TestBroker::start_with(config()).await;
    for i in 0..12u8 {
        let mut c = RawClient::connected(broker.addr, &format!("faulty-{i}")).await;
        c.send_bytes(&[0xC1, 0x00]).await;
        c.expect_eof().await;
    }
    common::eventually("faulty sessions are gone", || {
        broker.router.session_count() == 0
    })
    .await;
    let mut c = RawClient::connected_with(
        broker.addr,
        Connect {
            client_id: "faulty-0".into(),
            ..common::connect_packet("")
        },
    )
    .await;
    c.pingpong().await;
    broker.stop().await;
}

/// A 5.0 CONNECT for `client_id`, clean start, no properties.
fn connect_v5(client_id: &str) -> Vec<u8> {
    connect_bytes(
        b"MQTT",
        5,
        0x02,
        60,
        &cat(&[&[0], &string(client_id.as_bytes())]),
    )
}

/// Connects with MQTT 5.0, sends `bytes`, and returns the reason codes of the DISCONNECTs the
/// broker sent before closing (anything else is a failure).
async fn v5_close_reasons(broker: &TestBroker, bytes: &[u8]) -> Vec<u8> {
    let mut c = RawClient::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    c.send_bytes(&connect_v5("v5-faulty")).await;
    c.expect_connack(0).await;
    c.send_bytes(bytes).await;
    let mut got = Vec::new();
    loop {
        match c.recv_within(WAIT).await {
            Ok(Some(Packet::Disconnect(d))) => got.push(d.reason.into()),
            Ok(Some(p)) => panic!("expected only DISCONNECT, got {p:?}"),
            Ok(None) => return got,
            Err(()) => panic!("broker did not close; got {got:?}"),
        }
    }
}

/// MQTT 5.0 says why: a malformed packet gets exactly one DISCONNECT 0x81 (Malformed Packet), and
/// nothing may follow a DISCONNECT (MQTT-3.14.4-1).
#[tokio::test]
async fn v5_malformed_packet_gets_one_disconnect_0x81() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    for bytes in [
        packet(0x36, &cat(&[&string(b"t"), &[0, 1], &[0], b"x"])),
        packet(0x30, &cat(&[&string(b"a/#"), &[0], b"x"])),
        vec![0xC1, 0x00],
    ] {
        assert_eq!(v5_close_reasons(&broker, &bytes).await, [0x81]);
        bystanders.still_served().await;
    }
    broker.stop().await;
}

/// MQTT 5.0: a second CONNECT is a Protocol Error (MQTT-3.1.0-2): one DISCONNECT 0x82; so are
/// CONNACK and PINGRESP from a client.
#[tokio::test]
async fn v5_protocol_errors_get_one_disconnect_0x82() {
    let broker = TestBroker::start_with(config()).await;
    let got = v5_close_reasons(&broker, &connect_v5("again")).await;
    assert_eq!(got, [0x82]);
    // Server-only packets from a client are Protocol Errors too.
    for bytes in [packet(0x20, &[0, 0, 0]), vec![0xD0, 0x00]] {
        assert_eq!(v5_close_reasons(&broker, &bytes).await, [0x82]);
    }
    broker.stop().await;
}

/// A client with a will that is closed for a protocol violation did not DISCONNECT: its will is
/// published (MQTT-3.1.2-8).
#[tokio::test]
async fn malformed_close_publishes_the_will() {
    let broker = TestBroker::start_with(config()).await;
    let mut watcher = RawClient::connected(broker.addr, "watcher").await;
    assert_eq!(
        watcher
            .suback_codes(1, &[("wills/#", QoS::AtMostOnce)])
            .await,
        [0]
    );
    let payload = cat(&[
        &string(b"doomed"),
        &string(b"wills/doomed"),
        &string(b"gone"),
    ]);
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&connect_bytes(b"MQTT", 4, 0x06, 60, &payload))
        .await;
    c.expect_connack(0).await;
    c.send_bytes(&[0xC1, 0x00]).await;
    c.expect_eof().await;
    let will = watcher.take_publish().await;
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        ("wills/doomed", &b"gone"[..])
    );
    broker.stop().await;
}

/// Issue 11 item 2: a 5.0 CONNECT whose Authentication Method is 30,000 bytes of U+0001 got a
/// CONNACK whose Reason String quoted the method Debug-escaped (150,040 bytes) behind a length
/// wrapped at 16 bits: a malformed packet. Now the CONNACK decodes with our strict decoder (the
/// harness's), and the Reason String shows a short, escaped, marked cut of the method.
#[tokio::test]
async fn huge_authentication_method_gets_a_short_reason_string() {
    let broker = TestBroker::start_with(config()).await;
    let mut bystanders = Bystanders::connect(&broker).await;
    let method = "\u{1}".repeat(30_000);
    let props = mqttd::protocol::Properties {
        authentication_method: Some(method),
        ..Default::default()
    };
    let connect = common::connect_v5("long-method", props);
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert_eq!(ack.code, ConnAckReason::BadAuthenticationMethod);
    let why = ack
        .properties
        .and_then(|p| p.reason_string)
        .expect("a Reason String");
    assert!(why.len() <= 300, "{} bytes: {why}", why.len());
    assert!(
        why.starts_with(r#"authentication method "\x01\x01"#),
        "{why}"
    );
    assert!(why.contains("…(+29"), "the cut is marked: {why}");
    c.expect_closed().await;
    bystanders.still_served().await;
    broker.stop().await;
}

/// The client's Maximum Packet Size bounds the CONNACK too (MQTT-3.1.2-24): a refusal that would
/// not fit with its Reason String goes out without it (3.2.2.3.7), still saying why in its code.
#[tokio::test]
async fn refusal_fits_the_client_maximum_packet_size() {
    let broker = TestBroker::start_with(config()).await;
    let props = mqttd::protocol::Properties {
        authentication_method: Some("NOT-OFFERED".into()),
        maximum_packet_size: Some(16),
        ..Default::default()
    };
    let connect = common::connect_v5("tiny-max", props);
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert_eq!(ack.code, ConnAckReason::BadAuthenticationMethod);
    assert_eq!(ack.properties, None, "the Reason String does not fit");
    let size = mqttd::protocol::encoded_len(&Packet::ConnAck(ack), ProtocolVersion::V5);
    assert!(size <= 16, "{size} bytes");
    c.expect_closed().await;
    broker.stop().await;
}
