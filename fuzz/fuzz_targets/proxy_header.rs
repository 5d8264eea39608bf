//! `ProxyGate::parse` driven the way `ProxyGate::read_header` drives it, over any byte stream:
//! it never panics, never asks for 0 bytes nor for more than a header can hold (107 bytes for
//! v1, 16 + 4096 for v2), and gives the same answer whether the bytes arrive as asked or one at a
//! time. A certificate CN comes only from a v2 gate that asked for it, and is non-empty, without
//! control characters.
//!
//! Input: one selector byte (bit 0: v2, else v1; bit 1: `use_identity_as_username`), then the
//! bytes the proxy sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::config::ProxyProtocol;
use mqttd::proxy::{Proxied, ProxyGate, Step, V1_MAX_LEN, V2_MAX_PAYLOAD};

/// How a run ended: the header and its length, an error, or the input ran out first.
#[derive(Debug, PartialEq)]
enum End {
    Done(Proxied, usize),
    Refused,
    Starved,
}

/// Feeds `stream` to `gate`: `max_read` bytes at most per step (as a short read would).
fn run(gate: &ProxyGate, stream: &[u8], max_read: usize, limit: usize) -> End {
    let mut have = 0;
    loop {
        match gate.parse(&stream[..have]) {
            Ok(Step::Done(proxied)) => return End::Done(proxied, have),
            Ok(Step::More(n)) => {
                assert!(n >= 1, "asked for 0 bytes at {have}");
                assert!(have + n <= limit, "asked for {n} more at {have}: past {limit}");
                let read = n.min(max_read).min(stream.len() - have);
                if read == 0 {
                    return End::Starved;
                }
                have += read;
            }
            Err(_) => return End::Refused,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let v2 = selector & 1 != 0;
    let gate = ProxyGate {
        version: if v2 { ProxyProtocol::V2 } else { ProxyProtocol::V1 },
        trusted: Vec::new(),
        use_identity_as_username: selector & 2 != 0,
    };
    let limit = if v2 { 16 + V2_MAX_PAYLOAD } else { V1_MAX_LEN };
    let whole = run(&gate, stream, usize::MAX, limit);
    let bytewise = run(&gate, stream, 1, limit);
    assert_eq!(whole, bytewise, "the answer depends on how the bytes arrive");
    if let End::Done(proxied, _) = whole {
        if let Some(cn) = &proxied.verified_cn {
            assert!(v2 && gate.use_identity_as_username, "a CN nobody asked for");
            assert!(!cn.is_empty() && !cn.chars().any(char::is_control), "{cn:?}");
        }
    }
});
