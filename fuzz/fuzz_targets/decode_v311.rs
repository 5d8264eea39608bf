//! `protocol::decode` over arbitrary bytes as a V311 connection; see `round_trip.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::protocol::ProtocolVersion;

#[path = "round_trip.rs"]
mod round_trip;

fuzz_target!(|data: &[u8]| round_trip::run(data, ProtocolVersion::V311));
