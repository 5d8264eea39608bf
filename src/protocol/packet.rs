//! The packet model shared by MQTT 3.1, 3.1.1 and 5.0.
//!
//! One struct per control packet. Fields that only MQTT 5.0 carries live in [`Properties`] (boxed and
//! optional, so a 3.1.1 PUBLISH pays nothing for them) or are reason codes that 3.1.1 encodes in a
//! narrower form (CONNACK return code, SUBACK granted QoS / 0x80).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::reason::{
    AuthReason, ConnAckReason, DisconnectReason, PubAckReason, PubRelReason, SubAckReason,
    UnsubAckReason,
};

/// Quality of service of a PUBLISH or granted to a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two wire bits; `None` for the reserved value 3.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The protocol level announced in CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// A password as sent in CONNECT: arbitrary bytes (MQTT allows binary passwords).
///
/// `Debug` never shows the bytes and the buffer is zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(zeroize::Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(zeroize::Zeroizing::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// MQTT 5.0 properties. One struct for every packet type; the decoder enforces which identifiers a
/// packet may carry and that none but User Property repeats. `Debug` shows the length of
/// Authentication Data, not the bytes (a SCRAM proof would allow an offline password guess).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Subscription Identifier: several on a PUBLISH to a client, at most one on SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// User Property pairs, in order, duplicates allowed.
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        f.debug_struct("Properties")
            .field("payload_format_indicator", payload_format_indicator)
            .field("message_expiry_interval", message_expiry_interval)
            .field("content_type", content_type)
            .field("response_topic", response_topic)
            .field("correlation_data", correlation_data)
            .field("subscription_identifiers", subscription_identifiers)
            .field("session_expiry_interval", session_expiry_interval)
            .field("assigned_client_identifier", assigned_client_identifier)
            .field("server_keep_alive", server_keep_alive)
            .field("authentication_method", authentication_method)
            .field(
                "authentication_data",
                &authentication_data
                    .as_ref()
                    .map(|d| format!("<{} bytes redacted>", d.len())),
            )
            .field("request_problem_information", request_problem_information)
            .field("will_delay_interval", will_delay_interval)
            .field("request_response_information", request_response_information)
            .field("response_information", response_information)
            .field("server_reference", server_reference)
            .field("reason_string", reason_string)
            .field("receive_maximum", receive_maximum)
            .field("topic_alias_maximum", topic_alias_maximum)
            .field("topic_alias", topic_alias)
            .field("maximum_qos", maximum_qos)
            .field("retain_available", retain_available)
            .field("user_properties", user_properties)
            .field("maximum_packet_size", maximum_packet_size)
            .field(
                "wildcard_subscription_available",
                wildcard_subscription_available,
            )
            .field(
                "subscription_identifier_available",
                subscription_identifier_available,
            )
            .field(
                "shared_subscription_available",
                shared_subscription_available,
            )
            .finish()
    }
}

/// The will message carried in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill {
    /// Validated topic name (no wildcards, valid UTF-8, no U+0000).
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5.0 only).
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "Clean Session" in 3.1.1, "Clean Start" in 5.0.
    pub clean_start: bool,
    pub keep_alive: u16,
    /// May be empty (the server then assigns one, or refuses).
    pub client_id: String,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Password>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Written as 0 unless `code` is success (MQTT-3.2.2-4, MQTT-3.2.2-6).
    pub session_present: bool,
    /// The 5.0 reason code; 3.1.1 connections get its 3.1.1 return code
    /// ([`ConnAckReason::v3`]), and a 3.1.1 return code decodes to its 5.0 equivalent.
    pub code: ConnAckReason,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Validated topic name. May be empty only in 5.0 when a Topic Alias is present.
    pub topic: Arc<str>,
    /// 0 for QoS 0; non-zero otherwise.
    pub packet_id: u16,
    pub payload: Bytes,
    pub properties: Option<Box<Properties>>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape; `R` is the family's reason code:
/// [`PubAckReason`] for PUBACK and PUBREC, [`PubRelReason`] for PUBREL and PUBCOMP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResp<R> {
    pub packet_id: u16,
    /// 5.0 reason code; not written for 3.1.1, and success when read from 3.1.1.
    pub reason: R,
    pub properties: Option<Box<Properties>>,
}

impl<R: Default> PubResp<R> {
    /// Success, without properties.
    pub fn new(packet_id: u16) -> Self {
        PubResp {
            packet_id,
            reason: R::default(),
            properties: None,
        }
    }
}

impl From<QoS> for SubAckReason {
    /// The SUBACK code granting `qos`.
    fn from(qos: QoS) -> Self {
        match qos {
            QoS::AtMostOnce => SubAckReason::GrantedQos0,
            QoS::AtLeastOnce => SubAckReason::GrantedQos1,
            QoS::ExactlyOnce => SubAckReason::GrantedQos2,
        }
    }
}

/// Retain Handling subscription option (5.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// Never send retained messages for this subscribe.
    DoNotSend = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    pub fn new(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    }

    /// The 5.0 options byte (what the store keeps).
    pub fn to_byte(self) -> u8 {
        self.qos as u8
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }

    /// Reads a 5.0 options byte, checked as the decoder checks a SUBSCRIBE's.
    pub fn from_byte(byte: u8) -> Result<Self, crate::protocol::DecodeError> {
        crate::protocol::decode::subscription_options(byte, true)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The filter exactly as sent (valid UTF-8, no U+0000). Wildcard placement is *not* checked by the
    /// decoder: an invalid filter is answered with 0x80 in the SUBACK, not by closing the connection.
    pub filter: String,
    pub options: SubscriptionOptions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// Never empty (MQTT-3.8.3-3).
    pub filters: Vec<SubscribeFilter>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter: the granted QoS, or why not (3.1.1 carries every refusal as 0x80).
    pub return_codes: Vec<SubAckReason>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// Never empty (MQTT-3.10.3-2).
    pub filters: Vec<String>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// 5.0 only: one reason code per filter. Not written for 3.1.1, and empty when read from it.
    pub reasons: Vec<UnsubAckReason>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code; not written for 3.1.1, and normal when read from 3.1.1.
    pub reason: DisconnectReason,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: AuthReason,
    pub properties: Option<Box<Properties>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp<PubAckReason>),
    PubRec(PubResp<PubAckReason>),
    PubRel(PubResp<PubRelReason>),
    PubComp(PubResp<PubRelReason>),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5.0 only.
    Auth(Auth),
}

impl Packet {
    /// The packet type's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_authentication_data() {
        let p = Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"c=biws,r=nonce,p=secretproof")),
            ..Properties::default()
        };
        let dbg = format!("{p:?}");
        assert!(dbg.contains("SCRAM-SHA-256"), "{dbg}");
        assert!(dbg.contains("<28 bytes redacted>"), "{dbg}");
        assert!(!dbg.contains("secretproof"), "{dbg}");
    }
}
