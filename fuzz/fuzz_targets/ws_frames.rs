//! WebSocket frames from a client are hostile input. Taking them apart in place
//! (`transport::ws::WsState::decode`) never panics, never yields more bytes than came in, and
//! does not depend on how the bytes were cut into reads: decoding the input in chunks of any
//! size gives the same MQTT bytes, the same end, and the same control frames to send as
//! decoding it whole.
//!
//! Input: one byte choosing the chunk size (1 to 64), one byte choosing the frame limit, then
//! the raw bytes as they would come off the socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::transport::ws::WsState;

fuzz_target!(|data: &[u8]| {
    let [step, limit, wire @ ..] = data else {
        return;
    };
    let step = usize::from(*step % 64) + 1;
    let max_frame = usize::from(*limit) * 16;

    let mut whole = WsState::new(max_frame, Vec::new());
    let mut all = wire.to_vec();
    let n = whole.decode(&mut all);
    assert!(n <= wire.len());
    all.truncate(n);

    let mut chunked = WsState::new(max_frame, Vec::new());
    let mut out = Vec::new();
    for chunk in wire.chunks(step) {
        let mut chunk = chunk.to_vec();
        let kept = chunked.decode(&mut chunk);
        assert!(kept <= chunk.len());
        out.extend_from_slice(&chunk[..kept]);
    }
    assert_eq!(out, all, "chunking changed the bytes");
    assert_eq!(chunked.ended(), whole.ended());
    assert_eq!(chunked.pending_control(), whole.pending_control());
});
