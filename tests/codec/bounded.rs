//! The bounded encoder driven with arbitrary model values: fields longer than 65,535 bytes, many
//! User Properties, property values and identifiers no packet may carry, packet identifiers of
//! 0, Session Present on refusals, AUTH for 3.1.1, and small peer Maximum Packet Sizes. Whatever it writes must decode with our strict decoder
//! and fit the bound; whatever it refuses, it must leave no byte of, and only for a reason.
//!
//! String *content* stays within the model's invariant (no U+0000, no wildcards in topic names):
//! the encoder documents that it does not look for those.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    Auth, AuthReason, ConnAck, ConnAckReason, Connect, Disconnect, DisconnectReason, EncodeError,
    LastWill, MAX_PACKET_SIZE, Packet, Password, Properties, ProtocolVersion, PubAckReason,
    PubRelReason, PubResp, Publish, PublishView, ReasonCode, SubAck, SubAckReason, Subscribe,
    SubscribeFilter, UnsubAck, UnsubAckReason, Unsubscribe, decode, encode_within, encoded_len,
};
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{options_v5, qos};

use ProtocolVersion::{V5, V31, V311};

/// Short text, or text just over (or at) the 65,535-byte limit in one-, two-, three- or
/// four-byte characters. No U+0000, `+` or `#`, so that it is also a valid topic name.
fn text() -> BoxedStrategy<String> {
    let long = (
        prop::sample::select(vec!["a", "é", "€", "😀"]),
        prop::sample::select(vec![65_535usize, 65_536, 70_001]),
    )
        .prop_map(|(c, n)| c.repeat(n.div_ceil(c.len())));
    prop_oneof![8 => "[a-zA-Z0-9 /é😀-]{0,10}", 1 => long].boxed()
}

fn data() -> BoxedStrategy<Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..16).prop_map(Bytes::from),
        1 => prop::sample::select(vec![65_535usize, 65_536]).prop_map(|n| Bytes::from(vec![7; n])),
    ]
    .boxed()
}

/// Any property in any packet, with raw values (flags over 1, zeros where the spec forbids them).
fn properties() -> BoxedStrategy<Option<Box<Properties>>> {
    let entry = (0u8..=0x2A, any::<u32>(), text(), data());
    let few_long = vec((text(), text()), 0..3);
    let many_short = (0usize..400).prop_map(|n| {
        (0..n)
            .map(|i| (format!("key-{i}"), "v".repeat(i % 7)))
            .collect::<Vec<_>>()
    });
    let users = prop_oneof![few_long, many_short];
    (
        vec(entry, 0..6),
        users,
        proptest::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(entries, users, reason_string, none)| {
            if none {
                return None;
            }
            let mut p = Properties {
                user_properties: users,
                reason_string,
                ..Properties::default()
            };
            for (id, n, text, data) in entries {
                set_raw(&mut p, id, n, text, data);
            }
            Some(Box::new(p))
        })
        .boxed()
}

fn set_raw(p: &mut Properties, id: u8, n: u32, text: String, data: Bytes) {
    let byte = Some((n % 4) as u8);
    let small = (n % 3) as u16;
    match id {
        0x01 => p.payload_format_indicator = byte,
        0x02 => p.message_expiry_interval = Some(n),
        0x03 => p.content_type = Some(text),
        0x08 => p.response_topic = Some(format!("r/{text}")),
        0x09 => p.correlation_data = Some(data),
        0x0B => p
            .subscription_identifiers
            .push(if n.is_multiple_of(3) { 0 } else { n }),
        0x11 => p.session_expiry_interval = Some(n),
        0x12 => p.assigned_client_identifier = Some(text),
        0x13 => p.server_keep_alive = Some(n as u16),
        0x15 => p.authentication_method = Some(text),
        0x16 => p.authentication_data = Some(data),
        0x17 => p.request_problem_information = byte,
        0x18 => p.will_delay_interval = Some(n),
        0x19 => p.request_response_information = byte,
        0x1A => p.response_information = Some(text),
        0x1C => p.server_reference = Some(text),
        0x21 => p.receive_maximum = Some(small),
        0x22 => p.topic_alias_maximum = Some(small),
        0x23 => p.topic_alias = Some(small),
        0x24 => p.maximum_qos = byte,
        0x25 => p.retain_available = byte,
        0x26 => p.user_properties.push((text, n.to_string())),
        0x27 => p.maximum_packet_size = Some(u32::from(small)),
        0x28 => p.wildcard_subscription_available = byte,
        0x29 => p.subscription_identifier_available = byte,
        0x2A => p.shared_subscription_available = byte,
        // The Reason String for every other number: the property most often too long.
        _ => p.reason_string = Some(text),
    }
}

/// Packet identifiers, 0 (never valid) included.
fn packet_id() -> BoxedStrategy<u16> {
    prop_oneof![1 => Just(0u16), 9 => any::<u16>()].boxed()
}

/// Any reason code of a family (the model cannot hold another family's).
fn code<R: ReasonCode + 'static>(family: &'static [R]) -> impl Strategy<Value = R> {
    prop::sample::select(family)
}

fn pub_resp<R: ReasonCode + 'static>(family: &'static [R]) -> impl Strategy<Value = PubResp<R>> {
    (packet_id(), code(family), properties()).prop_map(|(packet_id, reason, properties)| PubResp {
        packet_id,
        reason,
        properties,
    })
}

fn connect() -> impl Strategy<Value = Packet> {
    let will = (text(), data(), qos(), any::<bool>(), properties()).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties,
        },
    );
    (
        prop::sample::select(vec![V31, V311, V5]),
        (any::<bool>(), any::<u16>(), text()),
        proptest::option::of(will),
        proptest::option::of(text()),
        proptest::option::of(data()),
        properties(),
    )
        .prop_map(
            |(
                protocol,
                (clean_start, keep_alive, client_id),
                will,
                username,
                password,
                properties,
            )| {
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password: password.map(|p| Password::new(p.to_vec())),
                    properties,
                }))
            },
        )
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        (qos(), any::<bool>(), any::<bool>()),
        text(),
        packet_id(),
        data(),
        properties(),
    )
        .prop_map(
            |((qos, dup, retain), topic, packet_id, payload, properties)| Publish {
                dup,
                qos,
                retain,
                topic: Arc::from(topic),
                packet_id,
                payload,
                properties,
            },
        )
}

fn packet() -> impl Strategy<Value = Packet> {
    let filter = prop_oneof![text(), text().prop_map(|t| format!("$share/g/{t}"))];
    prop_oneof![
        connect(),
        (any::<bool>(), code(ConnAckReason::ALL), properties()).prop_map(
            |(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                    properties,
                })
            }
        ),
        publish().prop_map(Packet::Publish),
        pub_resp(PubAckReason::ALL).prop_map(Packet::PubAck),
        pub_resp(PubAckReason::ALL).prop_map(Packet::PubRec),
        pub_resp(PubRelReason::ALL).prop_map(Packet::PubRel),
        pub_resp(PubRelReason::ALL).prop_map(Packet::PubComp),
        (packet_id(), vec((filter, options_v5()), 0..3), properties()).prop_map(
            |(packet_id, filters, properties)| {
                let filters = filters
                    .into_iter()
                    .map(|(filter, options)| SubscribeFilter { filter, options })
                    .collect();
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            }
        ),
        (
            packet_id(),
            vec(code(SubAckReason::ALL), 0..4),
            properties()
        )
            .prop_map(|(packet_id, return_codes, properties)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    return_codes,
                    properties,
                })
            }),
        (packet_id(), vec(text(), 0..3), properties()).prop_map(
            |(packet_id, filters, properties)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters,
                    properties,
                })
            }
        ),
        (
            packet_id(),
            vec(code(UnsubAckReason::ALL), 0..4),
            properties()
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
        (code(DisconnectReason::ALL), properties())
            .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties })),
        (code(AuthReason::ALL), properties())
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
    ]
}

/// The peer's Maximum Packet Size: tiny, small, around the 65,535 boundary, or none.
fn max() -> BoxedStrategy<usize> {
    prop_oneof![
        3 => 2usize..32,
        3 => 32usize..600,
        1 => 60_000usize..140_000,
        1 => Just(MAX_PACKET_SIZE),
        1 => Just(usize::MAX),
    ]
    .boxed()
}

/// The properties the encoder may leave out, for checking that a refusal was due.
fn without_optional(packet: &Packet) -> Packet {
    let mut packet = packet.clone();
    let props = match &mut packet {
        Packet::ConnAck(c) => &mut c.properties,
        Packet::PubAck(r) | Packet::PubRec(r) => &mut r.properties,
        Packet::PubRel(r) | Packet::PubComp(r) => &mut r.properties,
        Packet::SubAck(s) => &mut s.properties,
        Packet::UnsubAck(u) => &mut u.properties,
        Packet::Disconnect(d) => &mut d.properties,
        Packet::Auth(a) => &mut a.properties,
        _ => return packet,
    };
    if let Some(p) = props {
        p.reason_string = None;
        p.user_properties.clear();
    }
    packet
}

fn check(packet: &Packet, version: ProtocolVersion, max: usize) -> Result<(), TestCaseError> {
    let mut out = BytesMut::from(&b"queued"[..]);
    let written = encode_within(packet, version, max, &mut out);
    if let Packet::Publish(p) = packet {
        // The hot path's own entry point agrees byte for byte.
        let mut again = BytesMut::from(&b"queued"[..]);
        let view = PublishView::from(p).encode(version, max, &mut again);
        prop_assert_eq!(&view, &written);
        prop_assert_eq!(&again, &out);
    }
    match written {
        Ok(n) => {
            prop_assert_eq!(out.len(), 6 + n);
            prop_assert!(n <= max, "{} bytes for a maximum of {}", n, max);
            // Nothing left out needlessly.
            if encoded_len(packet, version) <= max {
                prop_assert_eq!(n, encoded_len(packet, version));
            }
            let mut frame = out.split_off(6);
            // Decoded as the peer would: our strict decoder, the peer's maximum.
            let decoded = decode(&mut frame, version, max.min(MAX_PACKET_SIZE));
            match decoded {
                Ok(Some(p)) => prop_assert_eq!(p.name(), packet.name()),
                other => prop_assert!(false, "{} decoded as {:?}", packet.name(), other),
            }
            prop_assert!(frame.is_empty(), "{} bytes left over", frame.len());
        }
        Err(e) => {
            prop_assert_eq!(&out[..], b"queued", "{}: bytes written", e);
            if let EncodeError::TooLarge { size, .. } = e {
                prop_assert!(size > max.min(MAX_PACKET_SIZE));
                let least = encoded_len(&without_optional(packet), version);
                prop_assert!(
                    least > max,
                    "{} fits in {} without its optional properties",
                    least,
                    max
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn bounded_encoder_writes_only_what_decodes_and_fits(
        packet in packet(),
        version in prop::sample::select(vec![V311, V5]),
        max in max(),
    ) {
        check(&packet, version, max)?;
    }
}
