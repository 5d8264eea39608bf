//! Our strict MQTT codec: 3.1 (MQIsdp), 3.1.1 and 5.0.
//!
//! - [`decode()`] turns bytes into [`Packet`]s. "Need more bytes" (`Ok(None)`) is distinct from
//!   "malformed" (`Err`); the declared remaining length is checked against the maximum packet size
//!   *before* anything is buffered for it.
//! - [`encode_within()`] writes packets into a `BytesMut`, bounded by the peer's Maximum Packet
//!   Size; no model value makes it write a malformed packet (see [`encode`] for how).
//! - `properties` reads and writes MQTT 5.0 property blocks; `cursor` holds the checked reads and
//!   the primitive writers both directions share.
//! - [`topic`] validates topic names and filters and matches them.
//! - [`reason`] holds the return/reason codes, one enum per packet family.
//! - [`text`] makes client-supplied text fit for a log line or a Reason String.
//!
//! Inside, dependencies run one way: `reason`, `text` and `topic` depend on nothing; `error` and
//! `packet` on `reason` (and `text`); `cursor` (checked reads, and the `Sink` both directions
//! write through) on `error`; `properties` on `cursor`; `decode` and `encode` on `properties`.

mod cursor;
pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
mod properties;
pub mod reason;
pub mod text;
pub mod topic;

pub use decode::decode;
pub use encode::{EncodeError, MAX_PACKET_SIZE, PublishView, encode, encode_within, encoded_len};
pub use error::DecodeError;
pub use packet::*;
pub use properties::{publish_block, read_publish_block};
pub use reason::{
    AuthReason, ConnAckReason, ConnectReturnCode, DisconnectReason, PubAckReason, PubRelReason,
    ReasonCode, SubAckReason, UnknownReason, UnsubAckReason,
};
