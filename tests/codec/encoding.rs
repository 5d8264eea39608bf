//! The encoder's exact bytes for the short forms and the 3.1.1 forms, and how it bounds packets:
//! long fields, the peer's Maximum Packet Size, model values no packet can carry.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    Auth, AuthReason, ConnAck, ConnAckReason, Connect, Disconnect, DisconnectReason, EncodeError,
    MAX_PACKET_SIZE, Packet, Properties, ProtocolVersion, PubAckReason, PubRelReason, PubResp,
    Publish, PublishView, QoS, SubAck, SubAckReason, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, UnsubAckReason, decode, encode, encode_within, encoded_len,
};

fn bytes(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = encode(packet, version, &mut out).expect("encodable");
    assert_eq!((n, out.len()), (out.len(), encoded_len(packet, version)));
    out.to_vec()
}

fn props() -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        reason_string: Some("why".into()),
        ..Properties::default()
    }))
}

#[test]
fn v311_drops_what_it_cannot_carry() {
    use ProtocolVersion::V311;
    let ack = PubResp {
        packet_id: 1,
        reason: PubAckReason::NoMatchingSubscribers,
        properties: props(),
    };
    assert_eq!(bytes(&Packet::PubAck(ack.clone()), V311), [0x40, 2, 0, 1]);
    let rel = PubResp {
        packet_id: 1,
        reason: PubRelReason::PacketIdentifierNotFound,
        properties: props(),
    };
    assert_eq!(bytes(&Packet::PubRel(rel), V311), [0x62, 2, 0, 1]);
    let disconnect = Disconnect {
        reason: DisconnectReason::DisconnectWithWillMessage,
        properties: props(),
    };
    assert_eq!(bytes(&Packet::Disconnect(disconnect), V311), [0xE0, 0]);
    let unsuback = UnsubAck {
        packet_id: 7,
        reasons: vec![UnsubAckReason::NoSubscriptionExisted],
        properties: props(),
    };
    assert_eq!(bytes(&Packet::UnsubAck(unsuback), V311), [0xB0, 2, 0, 7]);
    let suback = SubAck {
        packet_id: 7,
        return_codes: vec![
            SubAckReason::GrantedQos0,
            SubAckReason::GrantedQos2,
            SubAckReason::NotAuthorized,
        ],
        properties: props(),
    };
    assert_eq!(
        bytes(&Packet::SubAck(suback), V311),
        [0x90, 5, 0, 7, 0, 2, 0x80]
    );
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.no_local = true;
    let subscribe = Subscribe {
        packet_id: 2,
        filters: vec![SubscribeFilter {
            filter: "a".into(),
            options,
        }],
        properties: props(),
    };
    assert_eq!(
        bytes(&Packet::Subscribe(subscribe), V311),
        [0x82, 6, 0, 2, 0, 1, b'a', 1]
    );
}

#[test]
fn v5_short_forms() {
    use ProtocolVersion::V5;
    let ack = |reason, properties| {
        Packet::PubAck(PubResp {
            packet_id: 1,
            reason,
            properties,
        })
    };
    use PubAckReason::{NoMatchingSubscribers, Success};
    assert_eq!(bytes(&ack(Success, None), V5), [0x40, 2, 0, 1]);
    assert_eq!(
        bytes(&ack(NoMatchingSubscribers, None), V5),
        [0x40, 3, 0, 1, 0x10]
    );
    assert_eq!(
        bytes(&ack(Success, props()), V5),
        [0x40, 10, 0, 1, 0, 6, 0x1F, 0, 3, b'w', b'h', b'y']
    );
    let disconnect = Packet::Disconnect(Disconnect::default());
    assert_eq!(bytes(&disconnect, V5), [0xE0, 0]);
    assert_eq!(bytes(&Packet::Auth(Auth::default()), V5), [0xF0, 0]);
    let connack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ConnAckReason::Success,
        properties: None,
    });
    assert_eq!(bytes(&connack, V5), [0x20, 3, 1, 0, 0]);
}

#[test]
fn publish_header() {
    let mut publish = Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: Arc::from("t"),
        packet_id: 0,
        payload: Bytes::from_static(b"x"),
        properties: None,
    };
    // DUP is never written on QoS 0 (MQTT-3.3.1-2).
    let v311 = ProtocolVersion::V311;
    assert_eq!(
        bytes(&Packet::Publish(publish.clone()), v311),
        [0x31, 4, 0, 1, b't', b'x']
    );
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = 0x0102;
    assert_eq!(
        bytes(&Packet::Publish(publish), v311),
        [0x3D, 6, 0, 1, b't', 1, 2, b'x']
    );
}

#[test]
fn connect_uses_its_own_protocol() {
    let connect = Connect {
        protocol: ProtocolVersion::V31,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    };
    let expected = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 1, b'c',
    ];
    let packet = Packet::Connect(Box::new(connect));
    assert_eq!(bytes(&packet, ProtocolVersion::V5), expected);
}

/// Encodes within `max` after a marker, checks that an `Err` left no byte behind and that an
/// `Ok` wrote what it says; returns the packet's bytes.
fn within(packet: &Packet, version: ProtocolVersion, max: usize) -> Result<BytesMut, EncodeError> {
    let mut out = BytesMut::from(&b"before"[..]);
    match encode_within(packet, version, max, &mut out) {
        Ok(n) => {
            assert_eq!(out.len(), 6 + n, "{packet:?}");
            assert!(n <= max);
            Ok(out.split_off(6))
        }
        Err(e) => {
            assert_eq!(&out[..], b"before", "{e}: bytes written");
            Err(e)
        }
    }
}

fn decoded(mut bytes: BytesMut, version: ProtocolVersion) -> Packet {
    let packet = decode(&mut bytes, version, MAX_PACKET_SIZE);
    assert!(bytes.is_empty(), "{packet:?}: bytes left over");
    match packet {
        Ok(Some(p)) => p,
        other => panic!("did not decode: {other:?}"),
    }
}

fn props_of(packet: &Packet) -> Option<&Properties> {
    match packet {
        Packet::ConnAck(c) => c.properties.as_deref(),
        Packet::PubAck(r) => r.properties.as_deref(),
        Packet::Disconnect(d) => d.properties.as_deref(),
        Packet::Publish(p) => p.properties.as_deref(),
        _ => None,
    }
}

/// Issue 11 item 2: a CONNACK whose Reason String quoted a 30,000-byte Authentication Method,
/// Debug-escaped (150,040 bytes), went out with its length wrapped at 16 bits.
#[test]
fn long_reason_string_is_cut_on_a_char_boundary() {
    let method = "\u{1}".repeat(30_000);
    let why = format!("authentication method {method:?} is not supported");
    assert!(why.len() > 150_000, "{}", why.len());
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ConnAckReason::BadAuthenticationMethod,
        properties: Some(Box::new(Properties {
            reason_string: Some(why.clone()),
            ..Properties::default()
        })),
    });
    let sent = decoded(
        within(&ack, ProtocolVersion::V5, MAX_PACKET_SIZE).unwrap(),
        ProtocolVersion::V5,
    );
    let Some(cut) = props_of(&sent).and_then(|p| p.reason_string.as_deref()) else {
        panic!("no reason string in {sent:?}");
    };
    assert!(cut.len() <= 65_535 && cut.len() > 65_530, "{}", cut.len());
    assert!(why.starts_with(cut));
    // Multi-byte characters are not split.
    let p = Properties {
        user_properties: vec![("k".into(), "é".repeat(40_000))],
        ..Properties::default()
    };
    let disconnect = Packet::Disconnect(Disconnect {
        reason: DisconnectReason::UnspecifiedError,
        properties: Some(Box::new(p)),
    });
    let sent = decoded(
        within(&disconnect, ProtocolVersion::V5, usize::MAX).unwrap(),
        ProtocolVersion::V5,
    );
    let value = props_of(&sent).map(|p| p.user_properties[0].1.len());
    assert_eq!(value, Some(65_534));
}

#[test]
fn optional_properties_make_way_for_the_peer_maximum() {
    use ProtocolVersion::V5;
    let ack = Packet::PubAck(PubResp {
        packet_id: 1,
        reason: PubAckReason::UnspecifiedError,
        properties: Some(Box::new(Properties {
            reason_string: Some("r".repeat(100)),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        })),
    });
    let full = encoded_len(&ack, V5);
    assert_eq!(full, 5 + 1 + (3 + 100) + (1 + 3 + 3));
    assert_eq!(within(&ack, V5, full).map(|b| b.len()), Ok(full));
    // One byte short: the Reason String goes, the User Property stays.
    let sent = decoded(within(&ack, V5, full - 1).unwrap(), V5);
    let p = props_of(&sent).expect("properties");
    assert_eq!(
        (p.reason_string.as_deref(), p.user_properties.len()),
        (None, 1)
    );
    // Short of that: both go, and the property length with them.
    assert_eq!(&within(&ack, V5, 12).unwrap()[..], [0x40, 3, 0, 1, 0x80]);
    assert_eq!(&within(&ack, V5, 5).unwrap()[..], [0x40, 3, 0, 1, 0x80]);
    assert_eq!(
        within(&ack, V5, 4),
        Err(EncodeError::TooLarge {
            packet: "PUBACK",
            size: 5,
            max: 4
        })
    );
}

#[test]
fn publish_over_the_peer_maximum_is_refused_whole() {
    use ProtocolVersion::V5;
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Arc::from("t"),
        packet_id: 7,
        payload: Bytes::from_static(b"payload"),
        properties: Some(Box::new(Properties {
            user_properties: vec![("k".into(), "v".repeat(50))],
            ..Properties::default()
        })),
    };
    let size = encoded_len(&Packet::Publish(publish.clone()), V5);
    let view = PublishView::from(&publish);
    assert_eq!(view.encoded_len(V5), size);
    let mut out = BytesMut::new();
    assert_eq!(
        view.encode(V5, size - 1, &mut out),
        Err(EncodeError::TooLarge {
            packet: "PUBLISH",
            size,
            max: size - 1
        })
    );
    assert!(out.is_empty());
    assert!(within(&Packet::Publish(publish.clone()), V5, size - 1).is_err());
    assert_eq!(view.encode(V5, size, &mut out), Ok(size));
    assert_eq!(decoded(out, V5), Packet::Publish(publish));
}

/// The remaining length is a four-byte Variable Byte Integer: a larger packet is never framed.
/// The payload is allocated zeroed and never touched, so this costs no real memory.
#[test]
fn remaining_length_never_exceeds_the_protocol_limit() {
    let payload = vec![0u8; 268_435_455];
    let view = PublishView {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t",
        packet_id: 0,
        payload: &payload,
        properties: None,
    };
    let mut out = BytesMut::new();
    let refused = view.encode(ProtocolVersion::V311, usize::MAX, &mut out);
    assert!(
        matches!(
            refused,
            Err(EncodeError::TooLarge {
                max: MAX_PACKET_SIZE,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(out.is_empty());
}

#[test]
fn long_identifiers_refuse_the_packet() {
    use ProtocolVersion::{V5, V311};
    let long = "t".repeat(65_536);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Arc::from(long.as_str()),
        packet_id: 0,
        payload: Bytes::new(),
        properties: None,
    });
    let too_long = |packet| Err(EncodeError::FieldTooLong { packet });
    assert_eq!(within(&publish, V311, usize::MAX), too_long("PUBLISH"));
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: long.clone(),
            options: SubscriptionOptions::new(QoS::AtMostOnce),
        }],
        properties: None,
    });
    assert_eq!(within(&subscribe, V5, usize::MAX), too_long("SUBSCRIBE"));
    let auth = Packet::Auth(Auth {
        reason: AuthReason::ContinueAuthentication,
        properties: Some(Box::new(Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from(vec![1; 70_000])),
            ..Properties::default()
        })),
    });
    assert_eq!(within(&auth, V5, usize::MAX), too_long("AUTH"));
    // Exactly 65,535 bytes is fine.
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 0,
        client_id: "c".repeat(65_535),
        will: None,
        username: None,
        password: None,
        properties: None,
    }));
    assert_eq!(
        decoded(within(&connect, V311, usize::MAX).unwrap(), V311),
        connect
    );
}

#[test]
fn values_no_packet_can_carry_are_refused() {
    use ProtocolVersion::{V5, V311};
    let invalid = |r: Result<BytesMut, EncodeError>| matches!(r, Err(EncodeError::Invalid { .. }));
    // (A reason code of another family does not type-check: `PubResp<PubRelReason>` only.)
    assert!(invalid(within(
        &Packet::PubAck(PubResp::new(0)),
        V311,
        usize::MAX
    )));
    assert!(invalid(within(
        &Packet::PubComp(PubResp::new(0)),
        V5,
        usize::MAX
    )));
    assert!(invalid(within(
        &Packet::Auth(Auth::default()),
        V311,
        usize::MAX
    )));
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: Vec::new(),
        properties: None,
    });
    assert!(invalid(within(&subscribe, V5, usize::MAX)));
    let mut publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Arc::from(""),
        packet_id: 1,
        payload: Bytes::new(),
        properties: None,
    };
    assert!(invalid(within(
        &Packet::Publish(publish.clone()),
        V5,
        usize::MAX
    )));
    // An empty topic is how 5.0 uses a Topic Alias.
    publish.properties = Some(Box::new(Properties {
        topic_alias: Some(3),
        ..Properties::default()
    }));
    assert!(within(&Packet::Publish(publish.clone()), V5, usize::MAX).is_ok());
    assert!(invalid(within(
        &Packet::Publish(publish.clone()),
        V311,
        usize::MAX
    )));
    publish.topic = Arc::from("t");
    publish.packet_id = 0;
    assert!(invalid(within(&Packet::Publish(publish), V5, usize::MAX)));
}

#[test]
fn what_the_decoder_would_refuse_is_left_out_or_normalised() {
    use ProtocolVersion::{V5, V311};
    // Topic Alias may not be in a PUBACK, Receive Maximum may not be 0, flags are 0 or 1,
    // a Subscription Identifier is never 0.
    let ack = Packet::PubAck(PubResp {
        packet_id: 1,
        reason: PubAckReason::Success,
        properties: Some(Box::new(Properties {
            topic_alias: Some(1),
            receive_maximum: Some(0),
            ..Properties::default()
        })),
    });
    assert_eq!(&within(&ack, V5, usize::MAX).unwrap()[..], [0x40, 2, 0, 1]);
    let connack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ConnAckReason::NotAuthorized,
        properties: Some(Box::new(Properties {
            retain_available: Some(7),
            receive_maximum: Some(0),
            subscription_identifiers: vec![0, 5],
            ..Properties::default()
        })),
    });
    let Packet::ConnAck(sent) = decoded(within(&connack, V5, usize::MAX).unwrap(), V5) else {
        panic!("CONNACK");
    };
    assert!(!sent.session_present, "Session Present with a refusal");
    let p = sent.properties.expect("properties");
    assert_eq!(
        (
            p.retain_available,
            p.receive_maximum,
            p.subscription_identifiers.len()
        ),
        (Some(1), None, 0)
    );
    // 3.1.1 knows 0x80 as the only SUBACK failure.
    let suback = Packet::SubAck(SubAck {
        packet_id: 2,
        return_codes: vec![
            SubAckReason::GrantedQos1,
            SubAckReason::NotAuthorized,
            SubAckReason::WildcardSubscriptionsNotSupported,
        ],
        properties: None,
    });
    assert_eq!(
        &within(&suback, V311, usize::MAX).unwrap()[..],
        [0x90, 5, 0, 2, 1, 0x80, 0x80]
    );
}
