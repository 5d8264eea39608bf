//! Encoding packets into a write buffer.

use bytes::BytesMut;

use super::{Packet, ProtocolVersion};

/// Appends `packet` encoded for `version` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let _ = (packet, version, out);
}
