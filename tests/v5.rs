//! MQTT 5.0 behaviour from the outside, one test per feature: CONNACK properties, session expiry,
//! flow control (receive maximum both ways, maximum packet size), topic aliases both ways, message
//! expiry, property forwarding, will delay, subscription options and identifiers, shared
//! subscriptions, reason codes both ways, and interoperation with 3.1.1 clients, rumqttc v5 and
//! mosquitto-clients.
//!
//! One test binary (`cargo test --test v5`); the features are split over the files in `tests/v5/`.

mod common;

use bytes::Bytes;
use common::RawClient;
use mqttd::protocol::{Packet, Properties, PubAckReason, PubResp, Publish, QoS};

#[path = "v5/connect.rs"]
mod connect;
#[path = "v5/disconnects.rs"]
mod disconnects;
#[path = "v5/flow.rs"]
mod flow;
#[path = "v5/interop.rs"]
mod interop;
#[path = "v5/outbound_aliases.rs"]
mod outbound_aliases;
#[path = "v5/properties.rs"]
mod properties;
#[path = "v5/reasons.rs"]
mod reasons;
#[path = "v5/receive_maximum.rs"]
mod receive_maximum;
#[path = "v5/session.rs"]
mod session;
#[path = "v5/shared.rs"]
mod shared;
#[path = "v5/subscribe.rs"]
mod subscribe;
#[path = "v5/will.rs"]
mod will;

/// A PUBLISH with 5.0 properties (none when `props` is the default).
fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: u16,
    props: Properties,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: Bytes::copy_from_slice(payload),
        properties: (props != Properties::default()).then(|| Box::new(props)),
    })
}

/// Publishes with properties; for QoS 1 returns the PUBACK (reason code and properties).
async fn publish_with<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: u16,
    props: Properties,
) -> Option<PubResp<PubAckReason>> {
    c.send(&publish_packet(topic, payload, qos, packet_id, props))
        .await;
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => match c.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.packet_id, packet_id);
                Some(a)
            }
            other => panic!("expected PUBACK, got {other:?}"),
        },
        QoS::ExactlyOnce => unimplemented!("these tests publish QoS 2 with RawClient::publish"),
    }
}

/// Session Expiry Interval `secs` as CONNECT properties.
fn expiry(secs: u32) -> Properties {
    Properties {
        session_expiry_interval: Some(secs),
        ..Properties::default()
    }
}
