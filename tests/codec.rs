//! Codec behaviour from the outside: malformed byte strings, framing (incomplete vs. too large),
//! round trips for every packet type, and robustness against arbitrary input.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    Connect, DecodeError, LastWill, Packet, Password, ProtocolVersion, Publish, QoS, decode,
    encode, encoded_len,
};
use proptest::prelude::*;

use ProtocolVersion::{V5, V31, V311};

const MAX: usize = 1 << 20;

#[path = "codec/strategies.rs"]
mod strategies;
#[path = "codec/wire.rs"]
mod wire;

#[path = "codec/bounded.rs"]
mod bounded;
#[path = "codec/encoding.rs"]
mod encoding;

use strategies::{v5_packet, v311_packet};
use wire::{cat, connect_body, malformed_v5, malformed_v311, pkt, s};

fn dec(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, version, MAX)
}

fn enc(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    if let Err(e) = encode(packet, version, &mut out) {
        panic!("cannot encode {packet:?}: {e}");
    }
    assert_eq!(
        out.len(),
        encoded_len(packet, version),
        "encoded_len of {packet:?}"
    );
    out
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
fn short_content_waits_for_the_declared_length_then_fails() {
    // PUBLISH declaring 3 bytes whose topic claims 5: incomplete until all 3 are there, then
    // malformed; likewise a SUBSCRIBE whose last filter has no options byte.
    for bytes in [
        vec![0x30, 3, 0, 5, b'a'],
        pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0], &s(b"b")])),
    ] {
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let out = decode(&mut buf, V311, MAX);
            if i + 1 < bytes.len() {
                assert_eq!(out, Ok(None), "byte {i} of {bytes:?}");
            } else {
                assert!(
                    matches!(out, Err(DecodeError::Malformed(_))),
                    "{bytes:?}: {out:?}"
                );
            }
        }
    }
}

/// Found by the `decode_v311` fuzz target with `-malloc_limit_mb=64` (reproducer as found): a
/// PINGRESP header declaring a remaining length of ~145 MB made `decode` reserve all of it before
/// a single byte of the body arrived. Only a bounded amount is reserved ahead now.
#[test]
fn declared_length_is_not_reserved_ahead_of_the_bytes() {
    for (bytes, max) in [
        (&[0xD0, 0x9D, 0xD0, 0x9D, 0x45][..], 268_435_460),
        (&[0x30, 0xFF, 0xFF, 0x3F][..], MAX + 5),
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V311, max), Ok(None));
        assert_eq!(&buf[..], bytes, "nothing consumed while waiting");
        assert!(
            buf.capacity() <= 128 * 1024,
            "{} bytes reserved for a {}-byte header",
            buf.capacity(),
            bytes.len()
        );
    }
    // A large packet still decodes once all of it is there.
    let mut big = vec![0x30, 0xFF, 0xFF, 0x3F, 0, 1, b't'];
    big.resize(4 + 0x0F_FFFF, b'x');
    let mut buf = BytesMut::from(&big[..5]);
    assert_eq!(decode(&mut buf, V311, MAX + 5), Ok(None));
    buf.extend_from_slice(&big[5..]);
    assert!(
        matches!(decode(&mut buf, V311, MAX + 5), Ok(Some(Packet::Publish(p))) if p.payload.len() == 0x0F_FFFF - 3)
    );
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
    // Topic Alias 0 is left to the session, which answers Topic Alias Invalid (0x94).
    assert!(matches!(
        dec(&publish(&[3, 0x23, 0, 0]), V5),
        Ok(Some(Packet::Publish(_)))
    ));
    let e = dec(&publish(&[2, 0x01, 2]), V5).unwrap_err();
    assert_eq!(u8::from(e.reason_code()), 0x82);
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
