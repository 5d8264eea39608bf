//! Our strict MQTT codec: 3.1 (MQIsdp), 3.1.1 and 5.0.
//!
//! - [`decode()`] turns bytes into [`Packet`]s. "Need more bytes" (`Ok(None)`) is distinct from
//!   "malformed" (`Err`); the declared remaining length is checked against the maximum packet size
//!   *before* anything is buffered for it.
//! - [`encode()`] writes packets into a `BytesMut`.
//! - `properties` reads and writes MQTT 5.0 property blocks; `cursor` holds the checked reads.
//! - [`topic`] validates topic names and filters and matches them.
//! - [`reason`] holds the return/reason codes.

mod cursor;
pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
mod properties;
pub mod reason;
pub mod topic;

pub use decode::decode;
pub use encode::{PublishView, encode, encoded_len};
pub use error::DecodeError;
pub use packet::*;
