//! Stream adapters: what a connection's bytes travel in besides plain TCP.
//!
//! - [`tls`]: TLS over rustls' unbuffered connection, with no buffers of its own while idle.
//! - [`ws`]: MQTT over WebSocket (RFC 6455), for browsers and MQTT.js; over TLS too (wss).
//!
//! [`Framing`] is what a parked connection's socket carries its MQTT bytes in, so the parker
//! ([`crate::park`]) can hand a socket back as the right kind of stream.

pub mod tls;
pub mod ws;

/// How a parked socket's bytes are framed (see [`crate::connection::Stream::into_socket`]).
#[derive(Debug)]
pub enum Framing {
    /// MQTT straight over TCP.
    Raw,
    /// MQTT in WebSocket frames, with the framing state (a few dozen bytes).
    Ws(Box<ws::WsState>),
    /// MQTT over TLS, with the TLS session (keys, sequence numbers, a partial record).
    Tls(Box<tls::TlsSession>),
    /// MQTT in WebSocket frames over TLS (one box, so plain connections' `Framing` stays two
    /// words).
    Wss(Box<Wss>),
}

/// What a parked wss connection keeps.
#[derive(Debug)]
pub struct Wss {
    pub tls: Box<tls::TlsSession>,
    pub ws: Box<ws::WsState>,
}

impl Framing {
    /// The TLS session, if the bytes are encrypted: a parked connection's read-ahead goes to it
    /// still encrypted, for the resumed stream to decrypt.
    pub fn tls_mut(&mut self) -> Option<&mut tls::TlsSession> {
        match self {
            Framing::Tls(session) => Some(session),
            Framing::Wss(wss) => Some(&mut wss.tls),
            Framing::Raw | Framing::Ws(_) => None,
        }
    }

    /// Takes raw socket bytes apart in place; returns how many MQTT bytes lead `data` now.
    /// (Not for TLS: see [`Framing::tls_mut`].)
    pub fn decode(&mut self, data: &mut [u8]) -> usize {
        match self {
            Framing::Raw => data.len(),
            Framing::Ws(state) => state.decode(data),
            Framing::Tls(_) | Framing::Wss(_) => 0,
        }
    }
}
