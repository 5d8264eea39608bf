//! Shared by `decode_v311` and `decode_v5`: decode a byte stream packet by packet; every packet
//! that decodes must encode to exactly `encoded_len` bytes and decode back to itself.

use bytes::BytesMut;
use mqttd::protocol::{DecodeError, ProtocolVersion, decode, encode, encoded_len};

/// Largest remaining length plus the longest fixed header: "no limit" for the re-decode.
const UNLIMITED: usize = 268_435_455 + 5;

/// The first byte picks the maximum packet size, so `TooLarge` (checked from the fixed header,
/// before buffering) is reached as well as the parsers; the rest is the stream.
pub fn run(data: &[u8], version: ProtocolVersion) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let max = match selector % 4 {
        0 => 16,
        1 => 256,
        2 => 1 << 20,
        _ => UNLIMITED,
    };
    let mut buf = BytesMut::from(stream);
    // Each decoded packet consumes at least its two-byte fixed header: bounded by the input.
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                assert!(buf.len() + 2 <= before, "a packet consumed under 2 bytes");
                let mut out = BytesMut::new();
                // Whatever the decoder accepts, the encoder writes back (nothing it checks can
                // fail for a decoded packet within the protocol's limits).
                let n = encode(&packet, version, &mut out)
                    .unwrap_or_else(|e| panic!("decoded {packet:?} but cannot encode it: {e}"));
                assert_eq!(n, out.len());
                assert_eq!(out.len(), encoded_len(&packet, version), "{packet:?}");
                let mut again = out.clone();
                match decode(&mut again, version, UNLIMITED) {
                    Ok(Some(decoded)) => assert_eq!(decoded, packet, "bytes {:02x?}", &out[..]),
                    other => panic!("re-encoded {packet:?} as {:02x?}: {other:?}", &out[..]),
                }
                assert!(again.is_empty(), "re-decode left {} bytes", again.len());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return;
            }
            Err(DecodeError::TooLarge { size, max: limit }) => {
                assert!(size > limit, "TooLarge {size} <= {limit}");
                return;
            }
            Err(_) => return,
        }
    }
}
