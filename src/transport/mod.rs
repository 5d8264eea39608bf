//! Stream adapters: what a connection's bytes travel in besides TCP and TLS.
//!
//! - [`ws`]: MQTT over WebSocket (RFC 6455), for browsers and MQTT.js.

pub mod ws;
