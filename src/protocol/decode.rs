//! Decoding: fixed header framing first, then one parser per packet type.

use bytes::BytesMut;

use super::{DecodeError, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// `Ok(None)`: not enough bytes yet (nothing consumed). `max_packet_size` bounds the whole packet
/// (fixed header included) and is checked from the fixed header before the body is buffered.
/// `version` is the connection's negotiated version; a CONNECT is decoded from its own header.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    Err(DecodeError::Malformed("decoder not written yet"))
}
