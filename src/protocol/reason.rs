//! Return and reason codes (MQTT 3.1.1 section 3.2.2.3, MQTT 5.0 section 2.4), one enum per
//! packet family, so that a packet can only carry a code its family allows: the decoder turns an
//! unknown code into a Malformed Packet through `TryFrom<u8>`, and the encoder cannot write one.
//!
//! Every enum has `From<Enum> for u8`, `TryFrom<u8>`, `is_error()`, `name()` (the spec's wording,
//! for logs) and a `Display` of name and code. This module depends on nothing else in `protocol`.

use std::fmt;

/// What every reason code enum offers, for code generic over the family (one ack builder for
/// PUBACK and PUBCOMP, one decoder for all four acknowledgements).
pub trait ReasonCode:
    Copy + Into<u8> + TryFrom<u8, Error = UnknownReason> + fmt::Display + fmt::Debug
{
    /// Whether the code reports a failure.
    fn is_error(self) -> bool;
    /// The spec's name of the code, for logs.
    fn name(self) -> &'static str;
}

/// A code that the packet family does not define (MQTT 5.0 section 2.4: a Malformed Packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reason code {code:#04x} is not valid in {packet}")]
pub struct UnknownReason {
    pub code: u8,
    /// The packet family, e.g. "PUBACK/PUBREC".
    pub packet: &'static str,
}

macro_rules! reason_enum {
    (
        $(#[$doc:meta])*
        $name:ident in $packet:literal, errors from $first_error:literal {
            $($(#[$vdoc:meta])* $variant:ident = $value:literal => $text:literal,)+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)+
        }

        impl $name {
            /// Every code of the family, in the spec's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spec's name of the code, for logs.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Whether the code reports a failure.
            pub fn is_error(self) -> bool {
                self as u8 >= $first_error
            }
        }

        impl ReasonCode for $name {
            fn is_error(self) -> bool {
                $name::is_error(self)
            }
            fn name(self) -> &'static str {
                $name::name(self)
            }
        }

        impl From<$name> for u8 {
            fn from(code: $name) -> u8 {
                code as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = UnknownReason;

            fn try_from(code: u8) -> Result<Self, UnknownReason> {
                match code {
                    $($value => Ok($name::$variant),)+
                    _ => Err(UnknownReason { code, packet: $packet }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} ({:#04x})", self.name(), *self as u8)
            }
        }
    };
}

reason_enum! {
    /// CONNACK return code of MQTT 3.1 / 3.1.1 (section 3.2.2.3). The packet model holds the 5.0
    /// [`ConnAckReason`]; the encoder writes this narrower form for 3.1.1 connections.
    ConnectReturnCode in "CONNACK (3.1.1)", errors from 0x01 {
        Accepted = 0x00 => "Connection Accepted",
        UnacceptableProtocolVersion = 0x01 => "Unacceptable protocol version",
        IdentifierRejected = 0x02 => "Identifier rejected",
        ServerUnavailable = 0x03 => "Server unavailable",
        BadUsernameOrPassword = 0x04 => "Bad user name or password",
        NotAuthorized = 0x05 => "Not authorized",
    }
}

reason_enum! {
    /// CONNACK reason code of MQTT 5.0 (section 3.2.2.2).
    ConnAckReason in "CONNACK", errors from 0x80 {
        Success = 0x00 => "Success",
        UnspecifiedError = 0x80 => "Unspecified error",
        MalformedPacket = 0x81 => "Malformed Packet",
        ProtocolError = 0x82 => "Protocol Error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        UnsupportedProtocolVersion = 0x84 => "Unsupported Protocol Version",
        ClientIdentifierNotValid = 0x85 => "Client Identifier not valid",
        BadUsernameOrPassword = 0x86 => "Bad User Name or Password",
        NotAuthorized = 0x87 => "Not authorized",
        ServerUnavailable = 0x88 => "Server unavailable",
        ServerBusy = 0x89 => "Server busy",
        Banned = 0x8A => "Banned",
        BadAuthenticationMethod = 0x8C => "Bad authentication method",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        PacketTooLarge = 0x95 => "Packet too large",
        QuotaExceeded = 0x97 => "Quota exceeded",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
        RetainNotSupported = 0x9A => "Retain not supported",
        QosNotSupported = 0x9B => "QoS not supported",
        UseAnotherServer = 0x9C => "Use another server",
        ServerMoved = 0x9D => "Server moved",
        ConnectionRateExceeded = 0x9F => "Connection rate exceeded",
    }
}

impl ConnAckReason {
    /// The 3.1.1 return code for this reason: the six codes 3.1.1 has map one to one (so a 3.1.1
    /// CONNACK decodes and re-encodes to the same byte); refusals 3.1.1 cannot name become
    /// "Not authorized" when they are about who the client is, else "Server unavailable".
    pub fn v3(self) -> ConnectReturnCode {
        use ConnAckReason as R;
        use ConnectReturnCode as C;
        match self {
            R::Success => C::Accepted,
            R::UnsupportedProtocolVersion => C::UnacceptableProtocolVersion,
            R::ClientIdentifierNotValid => C::IdentifierRejected,
            R::BadUsernameOrPassword => C::BadUsernameOrPassword,
            R::NotAuthorized | R::Banned | R::BadAuthenticationMethod => C::NotAuthorized,
            R::UnspecifiedError
            | R::MalformedPacket
            | R::ProtocolError
            | R::ImplementationSpecificError
            | R::ServerUnavailable
            | R::ServerBusy
            | R::TopicNameInvalid
            | R::PacketTooLarge
            | R::QuotaExceeded
            | R::PayloadFormatInvalid
            | R::RetainNotSupported
            | R::QosNotSupported
            | R::UseAnotherServer
            | R::ServerMoved
            | R::ConnectionRateExceeded => C::ServerUnavailable,
        }
    }
}

impl From<ConnectReturnCode> for ConnAckReason {
    fn from(code: ConnectReturnCode) -> Self {
        use ConnAckReason as R;
        use ConnectReturnCode as C;
        match code {
            C::Accepted => R::Success,
            C::UnacceptableProtocolVersion => R::UnsupportedProtocolVersion,
            C::IdentifierRejected => R::ClientIdentifierNotValid,
            C::ServerUnavailable => R::ServerUnavailable,
            C::BadUsernameOrPassword => R::BadUsernameOrPassword,
            C::NotAuthorized => R::NotAuthorized,
        }
    }
}

reason_enum! {
    /// PUBACK and PUBREC reason code (sections 3.4.2.1, 3.5.2.1).
    PubAckReason in "PUBACK/PUBREC", errors from 0x80 {
        Success = 0x00 => "Success",
        NoMatchingSubscribers = 0x10 => "No matching subscribers",
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
        QuotaExceeded = 0x97 => "Quota exceeded",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
    }
}

reason_enum! {
    /// PUBREL and PUBCOMP reason code (sections 3.6.2.1, 3.7.2.1).
    PubRelReason in "PUBREL/PUBCOMP", errors from 0x80 {
        Success = 0x00 => "Success",
        PacketIdentifierNotFound = 0x92 => "Packet Identifier not found",
    }
}

reason_enum! {
    /// SUBACK reason code (5.0 section 3.9.3): the granted QoS, or why the filter was refused.
    /// 3.1.1 knows only 0, 1, 2 and 0x80 (Failure); the encoder writes every refusal as 0x80 there.
    SubAckReason in "SUBACK", errors from 0x80 {
        GrantedQos0 = 0x00 => "Granted QoS 0",
        GrantedQos1 = 0x01 => "Granted QoS 1",
        GrantedQos2 = 0x02 => "Granted QoS 2",
        /// Also the 3.1.1 "Failure" code.
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
        QuotaExceeded = 0x97 => "Quota exceeded",
        SharedSubscriptionsNotSupported = 0x9E => "Shared Subscriptions not supported",
        SubscriptionIdentifiersNotSupported = 0xA1 => "Subscription Identifiers not supported",
        WildcardSubscriptionsNotSupported = 0xA2 => "Wildcard Subscriptions not supported",
    }
}

impl SubAckReason {
    /// The byte 3.1.1 carries: the granted QoS, or 0x80 for any refusal.
    pub fn v3(self) -> u8 {
        if self.is_error() {
            SubAckReason::UnspecifiedError as u8
        } else {
            self as u8
        }
    }
}

reason_enum! {
    /// UNSUBACK reason code (5.0 section 3.11.3; 3.1.1's UNSUBACK carries none).
    UnsubAckReason in "UNSUBACK", errors from 0x80 {
        Success = 0x00 => "Success",
        NoSubscriptionExisted = 0x11 => "No subscription existed",
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
    }
}

reason_enum! {
    /// DISCONNECT reason code (5.0 section 3.14.2.1; 3.1.1's DISCONNECT carries none).
    DisconnectReason in "DISCONNECT", errors from 0x80 {
        NormalDisconnection = 0x00 => "Normal disconnection",
        DisconnectWithWillMessage = 0x04 => "Disconnect with Will Message",
        UnspecifiedError = 0x80 => "Unspecified error",
        MalformedPacket = 0x81 => "Malformed Packet",
        ProtocolError = 0x82 => "Protocol Error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        ServerBusy = 0x89 => "Server busy",
        ServerShuttingDown = 0x8B => "Server shutting down",
        KeepAliveTimeout = 0x8D => "Keep Alive timeout",
        SessionTakenOver = 0x8E => "Session taken over",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        ReceiveMaximumExceeded = 0x93 => "Receive Maximum exceeded",
        TopicAliasInvalid = 0x94 => "Topic Alias invalid",
        PacketTooLarge = 0x95 => "Packet too large",
        MessageRateTooHigh = 0x96 => "Message rate too high",
        QuotaExceeded = 0x97 => "Quota exceeded",
        AdministrativeAction = 0x98 => "Administrative action",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
        RetainNotSupported = 0x9A => "Retain not supported",
        QosNotSupported = 0x9B => "QoS not supported",
        UseAnotherServer = 0x9C => "Use another server",
        ServerMoved = 0x9D => "Server moved",
        SharedSubscriptionsNotSupported = 0x9E => "Shared Subscriptions not supported",
        ConnectionRateExceeded = 0x9F => "Connection rate exceeded",
        MaximumConnectTime = 0xA0 => "Maximum connect time",
        SubscriptionIdentifiersNotSupported = 0xA1 => "Subscription Identifiers not supported",
        WildcardSubscriptionsNotSupported = 0xA2 => "Wildcard Subscriptions not supported",
    }
}

reason_enum! {
    /// AUTH reason code (5.0 section 3.15.2.1).
    AuthReason in "AUTH", errors from 0x80 {
        Success = 0x00 => "Success",
        ContinueAuthentication = 0x18 => "Continue authentication",
        ReAuthenticate = 0x19 => "Re-authenticate",
    }
}

macro_rules! default_is {
    ($($name:ident::$variant:ident),+) => {
        $(impl Default for $name {
            fn default() -> Self {
                $name::$variant
            }
        })+
    };
}

default_is!(
    ConnectReturnCode::Accepted,
    ConnAckReason::Success,
    PubAckReason::Success,
    PubRelReason::Success,
    UnsubAckReason::Success,
    DisconnectReason::NormalDisconnection,
    AuthReason::Success
);

/// CONNACK return codes of MQTT 3.1 / 3.1.1 as wire bytes, for byte-level tests and tools that
/// check what went over the wire; the broker itself uses [`ConnectReturnCode`] / [`ConnAckReason`].
pub mod v3 {
    pub const ACCEPTED: u8 = 0x00;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    pub const NOT_AUTHORIZED: u8 = 0x05;
    /// SUBACK failure.
    pub const SUBACK_FAILURE: u8 = 0x80;
}

/// MQTT 5.0 reason codes as wire bytes, for byte-level tests and tools; the broker itself uses the
/// enums above, so that no packet can carry another family's code.
pub mod v5 {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const REAUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family against the spec's table, written out independently of the enums.
    #[test]
    fn families_hold_exactly_the_spec_codes() {
        fn codes<T: Copy + Into<u8>>(all: &[T]) -> Vec<u8> {
            all.iter().map(|&c| c.into()).collect()
        }
        assert_eq!(codes(ConnectReturnCode::ALL), [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            codes(ConnAckReason::ALL),
            [
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F
            ]
        );
        assert_eq!(
            codes(PubAckReason::ALL),
            [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
        );
        assert_eq!(codes(PubRelReason::ALL), [0x00, 0x92]);
        assert_eq!(
            codes(SubAckReason::ALL),
            [
                0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2
            ]
        );
        assert_eq!(
            codes(UnsubAckReason::ALL),
            [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]
        );
        assert_eq!(
            codes(DisconnectReason::ALL),
            [
                0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
                0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                0xA2
            ]
        );
        assert_eq!(codes(AuthReason::ALL), [0x00, 0x18, 0x19]);
    }

    #[test]
    fn try_from_round_trips_and_refuses_the_rest() {
        for byte in 0..=u8::MAX {
            match DisconnectReason::try_from(byte) {
                Ok(code) => assert_eq!(u8::from(code), byte),
                Err(e) => {
                    assert!(!DisconnectReason::ALL.iter().any(|&c| c as u8 == byte));
                    assert_eq!(
                        e,
                        UnknownReason {
                            code: byte,
                            packet: "DISCONNECT"
                        }
                    );
                }
            }
        }
        assert_eq!(PubRelReason::try_from(0x10).map_err(|e| e.code), Err(0x10));
        assert_eq!(
            UnknownReason {
                code: 0x10,
                packet: "PUBREL/PUBCOMP"
            }
            .to_string(),
            "reason code 0x10 is not valid in PUBREL/PUBCOMP"
        );
    }

    #[test]
    fn errors_names_and_display() {
        assert!(!PubAckReason::NoMatchingSubscribers.is_error());
        assert!(PubAckReason::UnspecifiedError.is_error());
        assert!(!SubAckReason::GrantedQos2.is_error());
        assert!(ConnectReturnCode::UnacceptableProtocolVersion.is_error());
        assert!(!ConnectReturnCode::Accepted.is_error());
        assert_eq!(
            ConnAckReason::BadAuthenticationMethod.to_string(),
            "Bad authentication method (0x8c)"
        );
        assert_eq!(DisconnectReason::default().name(), "Normal disconnection");
    }

    #[test]
    fn connack_v3_mapping() {
        // The six 3.1.1 codes survive the trip through the 5.0 model.
        for &code in ConnectReturnCode::ALL {
            assert_eq!(ConnAckReason::from(code).v3(), code);
        }
        assert_eq!(ConnAckReason::Banned.v3(), ConnectReturnCode::NotAuthorized);
        assert_eq!(
            ConnAckReason::ServerBusy.v3(),
            ConnectReturnCode::ServerUnavailable
        );
        assert_eq!(SubAckReason::QuotaExceeded.v3(), 0x80);
        assert_eq!(SubAckReason::GrantedQos1.v3(), 1);
    }
}
