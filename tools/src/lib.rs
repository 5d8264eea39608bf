//! Library half of the mqttd helper programs: the `mqtt-bench` load generator lives in [`bench`]
//! so its scenarios can be split into modules and exercised from tests.

pub mod bench;
