//! Why a packet could not be decoded. Each variant maps to the reason the connection is closed with
//! (5.0: the DISCONNECT reason code; 3.1.1: the connection is simply closed).

use thiserror::Error;

use super::reason::{ConnAckReason, DisconnectReason};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes break a rule of the spec; the string names the rule (e.g. "MQTT-3.3.2-2: wildcard in
    /// topic name").
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed bytes that the protocol forbids in this place.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The declared size exceeds the broker's maximum; detected from the fixed header, before buffering.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    /// CONNECT with an unknown protocol name or level: answered with CONNACK 0x01 / 0x84.
    #[error("unsupported protocol \"{}\" level {level}", super::text::cut(name))]
    UnsupportedProtocol { name: String, level: u8 },
}

impl DecodeError {
    /// The MQTT 5.0 DISCONNECT reason code for this error.
    ///
    /// `UnsupportedProtocol` reaches a DISCONNECT only as a second CONNECT on a connected
    /// session, which is a Protocol Error (MQTT-3.1.0-2); 0x84 (Unsupported Protocol Version) is
    /// a CONNACK code, not valid in DISCONNECT.
    pub fn reason_code(&self) -> DisconnectReason {
        match self {
            DecodeError::Malformed(_) => DisconnectReason::MalformedPacket,
            DecodeError::Protocol(_) | DecodeError::UnsupportedProtocol { .. } => {
                DisconnectReason::ProtocolError
            }
            DecodeError::TooLarge { .. } => DisconnectReason::PacketTooLarge,
        }
    }

    /// The CONNACK reason code for this error, when it happens before the CONNACK (during an
    /// enhanced authentication exchange): the same three codes as [`DecodeError::reason_code`].
    pub fn connack_reason(&self) -> ConnAckReason {
        match self {
            DecodeError::Malformed(_) => ConnAckReason::MalformedPacket,
            DecodeError::Protocol(_) | DecodeError::UnsupportedProtocol { .. } => {
                ConnAckReason::ProtocolError
            }
            DecodeError::TooLarge { .. } => ConnAckReason::PacketTooLarge,
        }
    }
}
