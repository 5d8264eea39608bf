//! Codec behaviour from the outside: malformed byte strings, framing (incomplete vs. too large),
//! round trips for every packet type, and robustness against arbitrary input.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Password, Properties,
    ProtocolVersion, PubResp, Publish, QoS, SubAck, Subscribe, SubscribeFilter,
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
