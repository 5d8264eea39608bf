//! Stream adapters: what a connection's bytes travel in besides TCP and TLS.
//!
//! - [`ws`]: MQTT over WebSocket (RFC 6455), for browsers and MQTT.js.
//!
//! [`Framing`] is what a parked connection's socket carries its MQTT bytes in, so the parker
//! ([`crate::park`]) can hand a socket back as the right kind of stream.

pub mod ws;

/// How a parked socket's bytes are framed (see [`crate::connection::Stream::into_socket`]).
#[derive(Debug)]
pub enum Framing {
    /// MQTT straight over TCP.
    Raw,
    /// MQTT in WebSocket frames, with the framing state (a few dozen bytes).
    Ws(Box<ws::WsState>),
}

impl Framing {
    /// Takes raw socket bytes apart in place; returns how many MQTT bytes lead `data` now.
    pub fn decode(&mut self, data: &mut [u8]) -> usize {
        match self {
            Framing::Raw => data.len(),
            Framing::Ws(state) => state.decode(data),
        }
    }
}
