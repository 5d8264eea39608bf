//! Codec behaviour from the outside: malformed byte strings, framing (incomplete vs. too large),
//! round trips for every packet type, and robustness against arbitrary input.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Password, Properties,
    ProtocolVersion, PubResp, Publish, QoS, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe, decode, encode, encoded_len,
};
use proptest::prelude::*;

use ProtocolVersion::{V5, V31, V311};

const MAX: usize = 1 << 20;

/// A packet with the remaining length computed from `body` (which may itself be inconsistent).
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A string as on the wire.
fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT body: protocol name, level, flags, keep-alive 60, then `rest`.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    cat(&[&s(name), &[level, flags, 0, 60], rest])
}

fn dec(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, version, MAX)
}

fn enc(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    assert_eq!(
        out.len(),
        encoded_len(packet, version),
        "encoded_len of {packet:?}"
    );
    out
}

fn malformed_v311() -> Vec<(&'static str, Vec<u8>)> {
    let will = |flags: u8| pkt(0x10, &connect_body(b"MQTT", 4, flags, &s(b"c")));
    vec![
        (
            "remaining length with 5 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "remaining length 4 continuation bytes",
            vec![0x30, 0x80, 0x80, 0x80, 0x80],
        ),
        ("remaining length non-minimal", vec![0xC0, 0x80, 0x00]),
        ("packet type 0", vec![0x00, 0x00]),
        ("AUTH in 3.1.1", vec![0xF0, 0x00]),
        ("PINGREQ flags", vec![0xC1, 0x00]),
        ("PINGRESP flags", vec![0xD8, 0x00]),
        ("DISCONNECT flags", vec![0xE2, 0x00]),
        (
            "CONNECT flags",
            pkt(0x12, &connect_body(b"MQTT", 4, 2, &s(b"c"))),
        ),
        ("CONNACK flags", vec![0x21, 2, 0, 0]),
        ("PUBACK flags", vec![0x42, 2, 0, 1]),
        ("PUBREC flags", vec![0x51, 2, 0, 1]),
        ("PUBREL flags 0000", vec![0x60, 2, 0, 1]),
        ("PUBCOMP flags", vec![0x72, 2, 0, 1]),
        (
            "SUBSCRIBE flags 0000",
            pkt(0x80, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        (
            "SUBSCRIBE flags 0011",
            pkt(0x83, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        ("SUBACK flags", vec![0x92, 3, 0, 1, 0]),
        ("UNSUBSCRIBE flags", pkt(0xA0, &cat(&[&[0, 1], &s(b"a")]))),
        ("UNSUBACK flags", vec![0xB2, 2, 0, 1]),
        ("PUBLISH QoS 3", pkt(0x36, &cat(&[&s(b"a"), &[0, 1]]))),
        ("PUBLISH QoS 0 with DUP", pkt(0x38, &s(b"a"))),
        ("PUBLISH '#' topic", pkt(0x30, &s(b"a/#"))),
        ("PUBLISH '+' topic", pkt(0x30, &s(b"+/a"))),
        ("PUBLISH empty topic", pkt(0x30, &s(b""))),
        ("PUBLISH U+0000 in topic", pkt(0x30, &s(b"a\0b"))),
        ("PUBLISH invalid UTF-8 topic", pkt(0x30, &s(&[0xC3, 0x28]))),
        (
            "PUBLISH surrogate in topic",
            pkt(0x30, &s(&[0xED, 0xA0, 0x80])),
        ),
        ("PUBLISH overlong UTF-8 topic", pkt(0x30, &s(&[0xC0, 0xAF]))),
        (
            "PUBLISH QoS 1 packet id 0",
            pkt(0x32, &cat(&[&s(b"a"), &[0, 0]])),
        ),
        ("PUBLISH topic past the end", vec![0x30, 3, 0, 5, b'a']),
        ("PUBLISH QoS 1 without packet id", pkt(0x32, &s(b"a"))),
        ("PUBACK packet id 0", vec![0x40, 2, 0, 0]),
        ("PUBREC packet id 0", vec![0x50, 2, 0, 0]),
        ("PUBREL packet id 0", vec![0x62, 2, 0, 0]),
        ("PUBCOMP packet id 0", vec![0x70, 2, 0, 0]),
        ("PUBACK short", vec![0x40, 1, 0]),
        ("PUBACK trailing byte", vec![0x40, 3, 0, 1, 0]),
        ("PUBREL trailing byte", vec![0x62, 3, 0, 1, 0]),
        (
            "SUBSCRIBE packet id 0",
            pkt(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
        ),
        ("SUBSCRIBE no filters", vec![0x82, 2, 0, 1]),
        ("SUBSCRIBE no packet id", vec![0x82, 0]),
        (
            "SUBSCRIBE missing options byte",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a")])),
        ),
        (
            "SUBSCRIBE QoS 3",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[3]])),
        ),
        (
            "SUBSCRIBE reserved bits",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[4]])),
        ),
        (
            "SUBSCRIBE 5.0 options in 3.1.1",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0x2C]])),
        ),
        (
            "SUBSCRIBE U+0000 in filter",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a\0"), &[0]])),
        ),
        (
            "SUBSCRIBE invalid UTF-8",
            pkt(0x82, &cat(&[&[0, 1], &s(&[0xFF]), &[0]])),
        ),
        ("SUBACK return code 3", vec![0x90, 3, 0, 1, 3]),
        ("SUBACK packet id 0", vec![0x90, 3, 0, 0, 0]),
        (
            "UNSUBSCRIBE packet id 0",
            pkt(0xA2, &cat(&[&[0, 0], &s(b"a")])),
        ),
        ("UNSUBSCRIBE no filters", vec![0xA2, 2, 0, 1]),
        (
            "UNSUBSCRIBE filter past the end",
            vec![0xA2, 5, 0, 1, 0, 9, b'a'],
        ),
        ("UNSUBACK trailing byte", vec![0xB0, 3, 0, 1, 0]),
        ("CONNACK trailing byte", vec![0x20, 3, 0, 0, 0]),
        ("CONNACK reserved flags", vec![0x20, 2, 2, 0]),
        ("CONNACK return code 6", vec![0x20, 2, 0, 6]),
        ("CONNACK short", vec![0x20, 1, 0]),
        ("PINGREQ with body", vec![0xC0, 1, 0]),
        ("PINGRESP with body", vec![0xD0, 1, 0]),
        ("DISCONNECT with body", vec![0xE0, 1, 0]),
        ("CONNECT reserved flag", will(0x03)),
        ("CONNECT will QoS without will", will(0x08)),
        ("CONNECT will retain without will", will(0x20)),
        (
            "CONNECT will QoS 3",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x1C, &cat(&[&s(b"c"), &s(b"t"), &s(b"p")])),
            ),
        ),
        (
            "CONNECT password without user name",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x40, &cat(&[&s(b"c"), &s(b"p")])),
            ),
        ),
        ("CONNECT user name flag, no user name", will(0x80)),
        ("CONNECT will flag, no will", will(0x04)),
        (
            "CONNECT will topic wildcard",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x04, &cat(&[&s(b"c"), &s(b"t/#"), &s(b"p")])),
            ),
        ),
        (
            "CONNECT will topic empty",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x04, &cat(&[&s(b"c"), &s(b""), &s(b"p")])),
            ),
        ),
        (
            "CONNECT client id invalid UTF-8",
            pkt(0x10, &connect_body(b"MQTT", 4, 0x02, &s(&[0xFE]))),
        ),
        (
            "CONNECT client id with U+0000",
            pkt(0x10, &connect_body(b"MQTT", 4, 0x02, &s(b"a\0"))),
        ),
        (
            "CONNECT user name invalid UTF-8",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x80, &cat(&[&s(b"c"), &s(&[0x80])])),
            ),
        ),
        (
            "CONNECT trailing bytes",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x02, &cat(&[&s(b"c"), &[0]])),
            ),
        ),
        (
            "CONNECT truncated",
            pkt(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 4]),
        ),
        (
            "CONNECT protocol name invalid UTF-8",
            pkt(0x10, &connect_body(&[0xFF, 0xFE], 4, 2, &s(b"c"))),
        ),
    ]
}

#[test]
fn malformed_v311_packets_are_errors() {
    for (name, bytes) in malformed_v311() {
        for version in [V31, V311] {
            match dec(&bytes, version) {
                Err(DecodeError::Malformed(rule)) => {
                    assert!(rule.starts_with("MQTT-"), "{name}: rule not named: {rule}")
                }
                other => panic!("{name} ({version:?}): expected Malformed, got {other:?}"),
            }
        }
    }
}

#[test]
fn truncated_prefixes_wait_and_consume_nothing() {
    // Every strict prefix of a malformed packet whose framing is sound is "need more"; the
    // packets rejected from the fixed header alone are rejected as soon as it is there.
    for (name, bytes) in malformed_v311() {
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            match decode(&mut buf, V311, MAX) {
                Ok(None) => assert_eq!(buf.len(), cut, "{name}: consumed bytes while waiting"),
                Err(_) => {}
                Ok(Some(p)) => panic!("{name}: prefix of {cut} bytes decoded as {p:?}"),
            }
        }
    }
}

#[test]
fn unsupported_protocols() {
    let cases: &[(&[u8], u8)] = &[
        (b"MQTT", 3),
        (b"MQTT", 6),
        (b"MQIsdp", 4),
        (b"MQTT", 0),
        (b"mqtt", 4),
        (b"", 4),
    ];
    for &(name, level) in cases {
        let bytes = pkt(0x10, &connect_body(name, level, 0x02, &s(b"c")));
        for version in [V31, V311, V5] {
            match dec(&bytes, version) {
                Err(DecodeError::UnsupportedProtocol { name: n, level: l }) => {
                    assert_eq!((n.as_bytes(), l), (name, level));
                }
                other => panic!("{name:?}/{level}: {other:?}"),
            }
        }
    }
}

#[test]
fn connect_takes_its_version_from_its_header() {
    for (name, level, expect) in [
        (&b"MQIsdp"[..], 3, V31),
        (b"MQTT", 4, V311),
        (b"MQTT", 5, V5),
    ] {
        let rest: Vec<u8> = if level == 5 {
            cat(&[&[0], &s(b"c")])
        } else {
            s(b"c")
        };
        let bytes = pkt(0x10, &connect_body(name, level, 0x02, &rest));
        for version in [V31, V311, V5] {
            let Ok(Some(Packet::Connect(c))) = dec(&bytes, version) else {
                panic!("{expect:?} CONNECT on a {version:?} connection");
            };
            assert_eq!(c.protocol, expect);
            assert_eq!(c.client_id, "c");
            assert!(c.clean_start);
            assert_eq!(c.keep_alive, 60);
        }
    }
}

#[test]
fn connect_binary_password_and_empty_client_id() {
    let bytes = pkt(
        0x10,
        &connect_body(
            b"MQTT",
            4,
            0xC0,
            &cat(&[&s(b""), &s(b"user"), &s(&[0, 0xFF, 0x80])]),
        ),
    );
    let Ok(Some(Packet::Connect(c))) = dec(&bytes, V311) else {
        panic!("CONNECT with binary password");
    };
    assert_eq!(c.client_id, "");
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(
        c.password.as_ref().map(Password::as_bytes),
        Some(&[0, 0xFF, 0x80][..])
    );
    assert!(!c.clean_start);
}

#[test]
fn too_large_is_rejected_from_the_fixed_header() {
    // PUBLISH declaring 1000 bytes of body; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    assert_eq!(
        decode(&mut buf, V311, 1002),
        Err(DecodeError::TooLarge {
            size: 1003,
            max: 1002
        })
    );
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    assert_eq!(decode(&mut buf, V311, 1003), Ok(None));
    assert_eq!(buf.len(), 3);
    // Largest remaining length, header only.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert!(matches!(
        decode(&mut buf, V311, MAX),
        Err(DecodeError::TooLarge { .. })
    ));
    // Exactly at the limit is fine.
    let ping = [0xC0, 0x00];
    let mut buf = BytesMut::from(&ping[..]);
    assert_eq!(decode(&mut buf, V311, 2), Ok(Some(Packet::PingReq)));
}

#[test]
fn consumes_exactly_one_packet_and_payload_is_zero_copy() {
    let publish = pkt(0x32, &cat(&[&s(b"a/b"), &[0x12, 0x34], b"hello"]));
    let mut bytes = publish.clone();
    bytes.extend_from_slice(&[0xC0, 0x00, 0xD0]);
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V311, MAX) else {
        panic!("PUBLISH");
    };
    assert_eq!(
        (&*p.topic, p.packet_id, p.qos),
        ("a/b", 0x1234, QoS::AtLeastOnce)
    );
    assert_eq!(&p.payload[..], b"hello");
    let at = p.payload.as_ptr() as usize;
    assert!(
        at >= start && at < start + bytes.len(),
        "payload was copied"
    );
    assert_eq!(decode(&mut buf, V311, MAX), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, V311, MAX), Ok(None));
    assert_eq!(&buf[..], &[0xD0]);
}

/// Feeds `bytes` one byte at a time: `Ok(None)` until the last byte, then the packet.
fn trickle(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let out = decode(&mut buf, version, MAX);
        if i + 1 < bytes.len() {
            assert_eq!(out, Ok(None), "byte {i} of {bytes:?}");
            assert_eq!(buf.len(), i + 1);
        } else {
            assert!(buf.is_empty());
            return out.ok().flatten().expect("complete packet decodes");
        }
    }
    unreachable!("empty input")
}

#[test]
fn one_byte_at_a_time() {
    let publish = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: Arc::from("sensors/é/1"),
        packet_id: 9,
        payload: Bytes::from(vec![7u8; 300]),
        properties: None,
    });
    for version in [V311, V5] {
        let bytes = enc(&publish, version);
        assert_eq!(trickle(&bytes, version), publish);
    }
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 30,
        client_id: "id".into(),
        will: Some(LastWill {
            topic: Arc::from("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
        }),
        username: Some("u".into()),
        password: Some(Password::new(b"p".to_vec())),
        properties: None,
    }));
    assert_eq!(trickle(&enc(&connect, V311), V311), connect);
}

fn malformed_v5() -> Vec<(&'static str, Vec<u8>)> {
    let publish = |props: &[u8]| pkt(0x30, &cat(&[&s(b"a"), props, b"payload"]));
    let subscribe =
        |props: &[u8], opts: u8| pkt(0x82, &cat(&[&[0, 1], props, &s(b"a/b"), &[opts]]));
    let connect = |props: &[u8]| {
        pkt(
            0x10,
            &connect_body(b"MQTT", 5, 0x02, &cat(&[props, &s(b"c")])),
        )
    };
    vec![
        ("AUTH flags", vec![0xF1, 0]),
        ("AUTH reason 0x01", vec![0xF0, 1, 0x01]),
        ("AUTH trailing after properties", vec![0xF0, 3, 0x18, 0, 0]),
        ("PINGREQ with body", vec![0xC0, 1, 0]),
        ("DISCONNECT reason 0x05", vec![0xE0, 1, 0x05]),
        (
            "DISCONNECT property past the end",
            vec![0xE0, 3, 0, 4, 0x11],
        ),
        ("PUBACK reason 0x92", vec![0x40, 3, 0, 1, 0x92]),
        ("PUBCOMP reason 0x10", vec![0x70, 3, 0, 1, 0x10]),
        (
            "PUBREC Topic Alias property",
            vec![0x50, 7, 0, 1, 0, 3, 0x23, 0, 1],
        ),
        ("PUBLISH without property length", pkt(0x30, &s(b"a"))),
        (
            "PUBLISH Session Expiry property",
            publish(&[5, 0x11, 0, 0, 0, 1]),
        ),
        ("PUBLISH unknown property 0x7F", publish(&[2, 0x7F, 0])),
        ("PUBLISH property id 0", publish(&[2, 0x00, 0])),
        (
            "PUBLISH property id not minimal",
            publish(&[3, 0x81, 0x00, 1]),
        ),
        (
            "PUBLISH property length past the end",
            pkt(0x30, &cat(&[&s(b"a"), &[9, 0x01]])),
        ),
        ("PUBLISH property value truncated", publish(&[2, 0x02, 0])),
        (
            "PUBLISH Payload Format Indicator twice",
            publish(&[4, 0x01, 0, 0x01, 1]),
        ),
        ("PUBLISH Payload Format Indicator 2", publish(&[2, 0x01, 2])),
        ("PUBLISH Topic Alias 0", publish(&[3, 0x23, 0, 0])),
        (
            "PUBLISH Topic Alias twice",
            publish(&[6, 0x23, 0, 1, 0x23, 0, 2]),
        ),
        ("PUBLISH Subscription Identifier 0", publish(&[2, 0x0B, 0])),
        (
            "PUBLISH Response Topic wildcard",
            publish(&[4, 0x08, 0, 1, b'+']),
        ),
        (
            "PUBLISH Content Type invalid UTF-8",
            publish(&[4, 0x03, 0, 1, 0xFF]),
        ),
        (
            "PUBLISH User Property U+0000",
            publish(&[7, 0x26, 0, 1, 0, 0, 1, b'v']),
        ),
        (
            "PUBLISH User Property without value",
            publish(&[4, 0x26, 0, 1, b'k']),
        ),
        (
            "PUBLISH empty topic without alias",
            pkt(0x30, &cat(&[&s(b""), &[0]])),
        ),
        (
            "PUBLISH QoS 2 packet id 0",
            pkt(0x34, &cat(&[&s(b"a"), &[0, 0, 0]])),
        ),
        ("SUBSCRIBE Retain Handling 3", subscribe(&[0], 0x30)),
        ("SUBSCRIBE reserved bit 6", subscribe(&[0], 0x40)),
        ("SUBSCRIBE reserved bit 7", subscribe(&[0], 0x80)),
        ("SUBSCRIBE QoS 3", subscribe(&[0], 0x03)),
        (
            "SUBSCRIBE two Subscription Identifiers",
            subscribe(&[4, 0x0B, 1, 0x0B, 2], 0),
        ),
        (
            "SUBSCRIBE Subscription Identifier 0",
            subscribe(&[2, 0x0B, 0], 0),
        ),
        (
            "SUBSCRIBE Subscription Identifier of 5 bytes",
            subscribe(&[6, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 1], 0),
        ),
        (
            "SUBSCRIBE Reason String property",
            subscribe(&[4, 0x1F, 0, 1, b'x'], 0),
        ),
        (
            "SUBSCRIBE without property length",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        ("SUBSCRIBE no filters", vec![0x82, 3, 0, 1, 0]),
        (
            "SUBSCRIBE No Local on a shared subscription",
            pkt(0x82, &cat(&[&[0, 1, 0], &s(b"$share/g/a"), &[0x04]])),
        ),
        ("UNSUBSCRIBE no filters", vec![0xA2, 3, 0, 1, 0]),
        (
            "UNSUBSCRIBE Subscription Identifier",
            pkt(0xA2, &cat(&[&[0, 1, 2, 0x0B, 1], &s(b"a")])),
        ),
        ("SUBACK reason 0x05", vec![0x90, 4, 0, 1, 0, 0x05]),
        ("UNSUBACK reason 0x01", vec![0xB0, 4, 0, 1, 0, 0x01]),
        ("UNSUBACK without property length", vec![0xB0, 2, 0, 1]),
        ("CONNACK reason 0x01", vec![0x20, 3, 0, 0x01, 0]),
        ("CONNACK without property length", vec![0x20, 2, 0, 0]),
        ("CONNACK Maximum QoS 2", vec![0x20, 5, 0, 0, 2, 0x24, 2]),
        (
            "CONNACK Retain Available twice",
            vec![0x20, 7, 0, 0, 4, 0x25, 1, 0x25, 1],
        ),
        ("CONNECT Receive Maximum 0", connect(&[3, 0x21, 0, 0])),
        (
            "CONNECT Maximum Packet Size 0",
            connect(&[5, 0x27, 0, 0, 0, 0]),
        ),
        (
            "CONNECT Request Problem Information 2",
            connect(&[2, 0x17, 2]),
        ),
        (
            "CONNECT Request Response Information 2",
            connect(&[2, 0x19, 2]),
        ),
        (
            "CONNECT Session Expiry twice",
            connect(&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
        ),
        ("CONNECT Topic Alias property", connect(&[3, 0x23, 0, 1])),
        (
            "CONNECT Authentication Data without Method",
            connect(&[4, 0x16, 0, 1, 9]),
        ),
        (
            "CONNECT without property length",
            pkt(0x10, &connect_body(b"MQTT", 5, 0x02, &[0, 1, b'c'])),
        ),
        (
            "CONNECT will property Session Expiry",
            pkt(
                0x10,
                &connect_body(
                    b"MQTT",
                    5,
                    0x04,
                    &cat(&[&[0], &s(b"c"), &[5, 0x11, 0, 0, 0, 1], &s(b"t"), &s(b"p")]),
                ),
            ),
        ),
        (
            "CONNECT will Payload Format Indicator 3",
            pkt(
                0x10,
                &connect_body(
                    b"MQTT",
                    5,
                    0x04,
                    &cat(&[&[0], &s(b"c"), &[2, 0x01, 3], &s(b"t"), &s(b"p")]),
                ),
            ),
        ),
    ]
}

#[test]
fn malformed_v5_packets_are_errors() {
    for (name, bytes) in malformed_v5() {
        match dec(&bytes, V5) {
            Err(DecodeError::Malformed(rule) | DecodeError::Protocol(rule)) => {
                assert!(rule.starts_with("MQTT-"), "{name}: rule not named: {rule}")
            }
            other => panic!("{name}: expected an error, got {other:?}"),
        }
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            if let Ok(Some(p)) = decode(&mut buf, V5, MAX) {
                panic!("{name}: prefix of {cut} bytes decoded as {p:?}");
            }
        }
    }
}

#[test]
fn v5_error_kinds() {
    let publish = |props: &[u8]| pkt(0x30, &cat(&[&s(b"a"), props]));
    // Not valid for the packet type: Malformed (2.2.2.2); repeated or out of range: Protocol Error.
    assert!(matches!(
        dec(&publish(&[5, 0x11, 0, 0, 0, 1]), V5),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        dec(&publish(&[4, 0x01, 0, 0x01, 1]), V5),
        Err(DecodeError::Protocol(_))
    ));
    assert!(matches!(
        dec(&publish(&[3, 0x23, 0, 0]), V5),
        Err(DecodeError::Protocol(_))
    ));
    let e = dec(&publish(&[2, 0x01, 2]), V5).unwrap_err();
    assert_eq!(e.reason_code(), 0x82);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /_$é😀-]{1,24}"
}

/// Any string the decoder accepts as a filter: wildcard placement is the broker's business.
fn raw_filter() -> impl Strategy<Value = String> {
    "[a-z/+#$é]{0,16}"
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é😀-]{0,12}"
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn v311_packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect_v3(),
        (any::<bool>(), 0u8..=5).prop_map(|(session_present, code)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties: None,
            })
        }),
        publish(None),
        packet_id().prop_map(|id| Packet::PubAck(PubResp::new(id))),
        packet_id().prop_map(|id| Packet::PubRec(PubResp::new(id))),
        packet_id().prop_map(|id| Packet::PubRel(PubResp::new(id))),
        packet_id().prop_map(|id| Packet::PubComp(PubResp::new(id))),
        (
            packet_id(),
            proptest::collection::vec((raw_filter(), qos()), 1..5)
        )
            .prop_map(|(packet_id, filters)| {
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters: filters
                        .into_iter()
                        .map(|(filter, q)| SubscribeFilter {
                            filter,
                            options: SubscriptionOptions::new(q),
                        })
                        .collect(),
                    properties: None,
                })
            }),
        (
            packet_id(),
            proptest::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0x80]), 0..5)
        )
            .prop_map(|(packet_id, return_codes)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    return_codes,
                    properties: None,
                })
            }),
        (packet_id(), proptest::collection::vec(raw_filter(), 1..5)).prop_map(
            |(packet_id, filters)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters,
                    properties: None,
                })
            }
        ),
        packet_id().prop_map(|packet_id| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons: Vec::new(),
                properties: None,
            })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect(Disconnect::default())),
    ]
}

fn will(props: Option<BoxedStrategy<Option<Box<Properties>>>>) -> impl Strategy<Value = LastWill> {
    let props = props.unwrap_or_else(|| Just(None).boxed());
    (topic(), bytes(32), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties,
        },
    )
}

fn connect_v3() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![Just(V31), Just(V311)],
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of(will(None)),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(
            |(protocol, clean_start, keep_alive, client_id, will, username, password)| {
                // 3.1.1 forbids a password without a user name (MQTT-3.1.2-22).
                let username = if password.is_some() {
                    username.or(Some(String::new()))
                } else {
                    username
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password: password.map(Password::new),
                    properties: None,
                }))
            },
        )
}

/// A PUBLISH; with `props`, 5.0 properties drawn from it.
fn publish(props: Option<BoxedStrategy<Option<Box<Properties>>>>) -> impl Strategy<Value = Packet> {
    let props = props.unwrap_or_else(|| Just(None).boxed());
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        packet_id(),
        bytes(64),
        props,
    )
        .prop_map(|(qos, dup, retain, topic, id, payload, properties)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic: Arc::from(topic),
                packet_id: if at_most_once { 0 } else { id },
                payload,
                properties,
            })
        })
}

/// Where a property block sits, for drawing only the properties that packet may carry.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// The property identifiers each packet may carry (MQTT 5.0 section 2.2.2.2), written out
/// independently of the decoder's table.
fn allowed(ctx: Ctx) -> &'static [u8] {
    match ctx {
        Ctx::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        Ctx::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
        Ctx::ConnAck => &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
            0x28, 0x29, 0x2A,
        ],
        Ctx::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
        Ctx::Ack => &[0x1F, 0x26],
        Ctx::Subscribe => &[0x0B, 0x26],
        Ctx::Unsubscribe => &[0x26],
        Ctx::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
        Ctx::Auth => &[0x15, 0x16, 0x1F, 0x26],
    }
}

fn set_property(p: &mut Properties, ctx: Ctx, id: u8, n: u32, text: String, data: Bytes) {
    let flag = Some((n % 2) as u8);
    let non_zero = Some((n % 65_535 + 1) as u16);
    match id {
        0x01 => p.payload_format_indicator = flag,
        0x02 => p.message_expiry_interval = Some(n),
        0x03 => p.content_type = Some(text),
        0x08 => p.response_topic = Some(format!("r/{text}")),
        0x09 => p.correlation_data = Some(data),
        0x0B if ctx == Ctx::Subscribe => p.subscription_identifiers = vec![n % 268_435_455 + 1],
        0x0B => p.subscription_identifiers.push(n % 268_435_455 + 1),
        0x11 => p.session_expiry_interval = Some(n),
        0x12 => p.assigned_client_identifier = Some(text),
        0x13 => p.server_keep_alive = Some(n as u16),
        0x15 => p.authentication_method = Some(text),
        0x16 => p.authentication_data = Some(data),
        0x17 => p.request_problem_information = flag,
        0x18 => p.will_delay_interval = Some(n),
        0x19 => p.request_response_information = flag,
        0x1A => p.response_information = Some(text),
        0x1C => p.server_reference = Some(text),
        0x1F => p.reason_string = Some(text),
        0x21 => p.receive_maximum = non_zero,
        0x22 => p.topic_alias_maximum = Some(n as u16),
        0x23 => p.topic_alias = non_zero,
        0x24 => p.maximum_qos = flag,
        0x25 => p.retain_available = flag,
        0x26 => p.user_properties.push((text, n.to_string())),
        0x27 => p.maximum_packet_size = Some(n.max(1)),
        0x28 => p.wildcard_subscription_available = flag,
        0x29 => p.subscription_identifier_available = flag,
        0x2A => p.shared_subscription_available = flag,
        _ => unreachable!("identifier {id:#x} is not in the tables"),
    }
}

/// `None` or a non-empty set of the properties `ctx` allows (an empty block decodes to `None`).
fn props(ctx: Ctx) -> BoxedStrategy<Option<Box<Properties>>> {
    let entry = (any::<prop::sample::Index>(), any::<u32>(), text(), bytes(8));
    proptest::collection::vec(entry, 0..6)
        .prop_map(move |entries| {
            let ids = allowed(ctx);
            let mut p = Properties::default();
            for (i, n, text, data) in entries {
                set_property(&mut p, ctx, ids[i.index(ids.len())], n, text, data);
            }
            if ctx == Ctx::Connect && p.authentication_data.is_some() {
                p.authentication_method.get_or_insert_with(|| "m".into());
            }
            (p != Properties::default()).then(|| Box::new(p))
        })
        .boxed()
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = u8> {
    prop::sample::select(codes)
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

fn pub_resp(codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    (packet_id(), reason(codes), props(Ctx::Ack)).prop_map(|(packet_id, reason, properties)| {
        PubResp {
            packet_id,
            reason,
            properties,
        }
    })
}

fn connect_v5() -> impl Strategy<Value = Packet> {
    (
        (any::<bool>(), any::<u16>(), text(), props(Ctx::Connect)),
        proptest::option::of(will(Some(props(Ctx::Will)))),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(
            |((clean_start, keep_alive, client_id, properties), will, username, password)| {
                Packet::Connect(Box::new(Connect {
                    protocol: V5,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password: password.map(Password::new),
                    properties,
                }))
            },
        )
}

fn options_v5() -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::SendOnSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend),
    ];
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        },
    )
}

fn v5_packet() -> impl Strategy<Value = Packet> {
    let connack_codes: &'static [u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    let suback_codes: &'static [u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    let unsuback_codes: &'static [u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    let disconnect_codes: &'static [u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    prop_oneof![
        connect_v5(),
        (any::<bool>(), reason(connack_codes), props(Ctx::ConnAck)).prop_map(
            |(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                    properties,
                })
            }
        ),
        publish(Some(props(Ctx::Publish))),
        pub_resp(PUBACK_CODES).prop_map(Packet::PubAck),
        pub_resp(PUBACK_CODES).prop_map(Packet::PubRec),
        pub_resp(PUBREL_CODES).prop_map(Packet::PubRel),
        pub_resp(PUBREL_CODES).prop_map(Packet::PubComp),
        (
            packet_id(),
            proptest::collection::vec((raw_filter(), options_v5()), 1..5),
            props(Ctx::Subscribe)
        )
            .prop_map(|(packet_id, filters, properties)| {
                let filters = filters
                    .into_iter()
                    .map(|(filter, mut options)| {
                        // No Local on a shared subscription is a Protocol Error (MQTT-3.8.3-4).
                        options.no_local &= !filter.starts_with("$share/");
                        SubscribeFilter { filter, options }
                    })
                    .collect();
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            }),
        (
            packet_id(),
            proptest::collection::vec(reason(suback_codes), 0..5),
            props(Ctx::Ack)
        )
            .prop_map(|(packet_id, return_codes, properties)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    return_codes,
                    properties,
                })
            }),
        (
            packet_id(),
            proptest::collection::vec(raw_filter(), 1..5),
            props(Ctx::Unsubscribe)
        )
            .prop_map(|(packet_id, filters, properties)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters,
                    properties,
                })
            }),
        (
            packet_id(),
            proptest::collection::vec(reason(unsuback_codes), 0..5),
            props(Ctx::Ack)
        )
            .prop_map(|(packet_id, reasons, properties)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons,
                    properties,
                })
            }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (reason(disconnect_codes), props(Ctx::Disconnect)).prop_map(|(reason, properties)| {
            Packet::Disconnect(Disconnect { reason, properties })
        }),
        (reason(&[0x00, 0x18, 0x19]), props(Ctx::Auth))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
    ]
}

fn check_round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = enc(packet, version);
    let decoded = decode(&mut buf, version, MAX);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_v311(packet in v311_packet()) {
        check_round_trip(&packet, V311)?;
        // MQTT 3.1 shares the layout (CONNECT carries its own name and level).
        check_round_trip(&packet, V31)?;
    }

    #[test]
    fn round_trip_v5(packet in v5_packet()) {
        check_round_trip(&packet, V5)?;
    }

    #[test]
    fn mutated_v5_packets_never_panic(
        packet in v5_packet(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = enc(&packet, V5).to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, V5, MAX) {}
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for version in [V31, V311, V5] {
            let mut buf = BytesMut::from(&data[..]);
            // Decode until the input is used up, needs more, or is rejected; always progressing.
            while let Ok(Some(_)) = decode(&mut buf, version, 256) {}
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        packet in v311_packet(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = enc(&packet, V311).to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        for version in [V311, V5] {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, version, MAX) {}
        }
    }
}
