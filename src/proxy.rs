//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): a proxy in front of the broker
//! tells it who the client really is.
//!
//! Decided by the listener's configuration only (`proxy_protocol`), never by sniffing, and
//! believed only from `proxy_trusted` addresses: anyone else could claim any address.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::config::{ProxyProtocol, TrustedNet};

/// A listener's PROXY settings: which header, and from whom.
#[derive(Debug, Clone)]
pub struct ProxyGate {
    pub version: ProxyProtocol,
    pub trusted: Vec<TrustedNet>,
}

/// What a header said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address; `None`: the header carried none (v1 `UNKNOWN`, v2 `LOCAL`, or a
    /// family other than TCP over IPv4/IPv6): the connection keeps the proxy's address.
    pub source: Option<SocketAddr>,
    /// The CN of a client certificate the proxy verified (v2 SSL TLV, only when its flags say
    /// the certificate was presented and verified).
    pub verified_cn: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

impl ProxyGate {
    /// Whether `ip` may send a PROXY header (or an X-Forwarded-For header).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Reads exactly the header from `socket` (not a byte of what follows it).
    pub async fn read_header(&self, socket: &mut TcpStream) -> Result<Proxied, ProxyError> {
        let _ = socket;
        Err(ProxyError::Malformed("not implemented yet".into()))
    }
}
