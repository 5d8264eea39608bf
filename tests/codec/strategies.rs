//! proptest strategies for every packet type, 3.1.1 and 5.0.

use std::sync::Arc;

use bytes::Bytes;
use mqttd::protocol::{
    Auth, AuthReason, ConnAck, ConnAckReason, Connect, ConnectReturnCode, Disconnect,
    DisconnectReason, LastWill, Packet, Password, Properties, ProtocolVersion, PubAckReason,
    PubRelReason, PubResp, Publish, QoS, ReasonCode, RetainHandling, SubAck, SubAckReason,
    Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, UnsubAckReason, Unsubscribe,
};
use proptest::prelude::*;

use ProtocolVersion::{V5, V31, V311};

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /_$é😀-]{1,24}"
}

/// Any string the decoder accepts as a filter: wildcard placement is the broker's business.
pub fn raw_filter() -> impl Strategy<Value = String> {
    "[a-z/+#$é]{0,16}"
}

pub fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é😀-]{0,12}"
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

pub fn v311_packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect_v3(),
        // The six 3.1.1 return codes, as the model holds them.
        (any::<bool>(), reason(ConnectReturnCode::ALL)).prop_map(|(session_present, code)| {
            let code = ConnAckReason::from(code);
            Packet::ConnAck(ConnAck {
                // Session Present only with success (MQTT-3.2.2-4).
                session_present: session_present && code == ConnAckReason::Success,
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
            proptest::collection::vec(
                reason(&[
                    SubAckReason::GrantedQos0,
                    SubAckReason::GrantedQos1,
                    SubAckReason::GrantedQos2,
                    SubAckReason::UnspecifiedError
                ]),
                0..5
            )
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

pub fn will(
    props: Option<BoxedStrategy<Option<Box<Properties>>>>,
) -> impl Strategy<Value = LastWill> {
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

pub fn connect_v3() -> impl Strategy<Value = Packet> {
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
pub fn publish(
    props: Option<BoxedStrategy<Option<Box<Properties>>>>,
) -> impl Strategy<Value = Packet> {
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
pub enum Ctx {
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
pub fn allowed(ctx: Ctx) -> &'static [u8] {
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

pub fn set_property(p: &mut Properties, ctx: Ctx, id: u8, n: u32, text: String, data: Bytes) {
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
pub fn props(ctx: Ctx) -> BoxedStrategy<Option<Box<Properties>>> {
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

/// Any code of a family (each family's table is checked against the spec in `reason.rs`).
pub fn reason<R: ReasonCode + 'static>(codes: &'static [R]) -> impl Strategy<Value = R> {
    prop::sample::select(codes)
}

pub fn pub_resp<R: ReasonCode + 'static>(codes: &'static [R]) -> impl Strategy<Value = PubResp<R>> {
    (packet_id(), reason(codes), props(Ctx::Ack)).prop_map(|(packet_id, reason, properties)| {
        PubResp {
            packet_id,
            reason,
            properties,
        }
    })
}

pub fn connect_v5() -> impl Strategy<Value = Packet> {
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

pub fn options_v5() -> impl Strategy<Value = SubscriptionOptions> {
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

pub fn v5_packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect_v5(),
        (
            any::<bool>(),
            reason(ConnAckReason::ALL),
            props(Ctx::ConnAck)
        )
            .prop_map(|(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present: session_present && code == ConnAckReason::Success,
                    code,
                    properties,
                })
            }),
        publish(Some(props(Ctx::Publish))),
        pub_resp(PubAckReason::ALL).prop_map(Packet::PubAck),
        pub_resp(PubAckReason::ALL).prop_map(Packet::PubRec),
        pub_resp(PubRelReason::ALL).prop_map(Packet::PubRel),
        pub_resp(PubRelReason::ALL).prop_map(Packet::PubComp),
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
            proptest::collection::vec(reason(SubAckReason::ALL), 0..5),
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
            proptest::collection::vec(reason(UnsubAckReason::ALL), 0..5),
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
        (reason(DisconnectReason::ALL), props(Ctx::Disconnect)).prop_map(|(reason, properties)| {
            Packet::Disconnect(Disconnect { reason, properties })
        }),
        (reason(AuthReason::ALL), props(Ctx::Auth))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
    ]
}
