//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): a proxy in front of the broker
//! tells it who the client really is.
//!
//! Decided by the listener's configuration only (`proxy_protocol`), never by sniffing, and
//! believed only from `proxy_trusted` addresses: anyone else could claim any address.
//!
//! The header is read exactly, never a byte of what follows it (the MQTT CONNECT, a TLS
//! ClientHello, a WebSocket upgrade), so no buffer has to be handed on: [`ProxyGate::parse`] looks
//! at the bytes so far and says how many more it needs at least ([`Step::More`]), and
//! [`ProxyGate::read_header`] reads at most that many. The parsing itself is HAProxy's
//! specification as the `ppp` crate implements it; this file frames it, bounds it, and decides
//! what to believe.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ProxyProtocol, TrustedNet};

/// The longest v1 header, CRLF included (the specification's bound: "PROXY UNKNOWN" with two
/// full IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// The shortest v1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;

/// Most bytes of addresses and TLVs a v2 header may declare (its length field allows 65,535).
/// What real proxies send is far less: IPv6 addresses are 36 bytes; HAProxy's SSL TLV with
/// version, CN, cipher and algorithms, a unique id (at most 128 bytes), ALPN and authority add a
/// few hundred; AWS, Azure and GCP load balancers add one endpoint-id TLV each. 4 KiB is all of
/// that several times over, and a connection that declares more is refused before any of it is
/// read, so a header costs at most this much memory, briefly.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// The v2 header's fixed part: signature, version and command, family and protocol, length.
const V2_FIXED_LEN: usize = 16;

/// The first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// v2 TLV types and the SSL TLV's client flags (HAProxy's `PP2_TYPE_SSL`, `PP2_SUBTYPE_SSL_CN`,
/// `PP2_CLIENT_*`).
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// A listener's PROXY settings: which header, from whom, and whether to believe the proxy's word
/// about client certificates.
#[derive(Debug, Clone)]
pub struct ProxyGate {
    pub version: ProxyProtocol,
    pub trusted: Vec<TrustedNet>,
    /// The listener's `use_identity_as_username`: the CN of a client certificate that the proxy
    /// verified (v2 SSL TLV) becomes the username, as `tls.use_identity_as_username` does when
    /// mqttd terminates TLS itself. Off: the SSL TLV is ignored.
    pub use_identity_as_username: bool,
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

/// Where a header stands after the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The header is complete: exactly the bytes given.
    Done(Proxied),
    /// At least this many more bytes (always 1 or more) are needed, and reading up to this many
    /// never reads past the header's end.
    More(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed after {0} bytes, before the PROXY header ended")]
    Closed(usize),
    #[error(
        "a PROXY {got} header arrived, but this listener expects {expected} \
         (proxy_protocol = \"{expected}\"): configure both ends alike"
    )]
    WrongVersion {
        expected: &'static str,
        got: &'static str,
    },
    #[error("no PROXY {expected} header: the connection starts with {starts}")]
    Missing {
        expected: &'static str,
        starts: &'static str,
    },
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error(
        "the proxy verified a client certificate but sent no usable CN for \
         use_identity_as_username ({0}; HAProxy: send-proxy-v2-ssl-cn)"
    )]
    NoIdentity(&'static str),
}

impl ProxyGate {
    /// Whether `ip` may send a PROXY header (or an X-Forwarded-For header).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Reads exactly the header from `socket` (not a byte of what follows it). A v1 header is
    /// read a few bytes at a time up to its CRLF (about 15 reads for a typical one); a v2 header
    /// in two reads: its 16 fixed bytes, then the length they give.
    pub async fn read_header<S>(&self, socket: &mut S) -> Result<Proxied, ProxyError>
    where
        S: AsyncRead + Unpin,
    {
        let mut buf = Vec::with_capacity(V2_FIXED_LEN);
        loop {
            match self.parse(&buf)? {
                Step::Done(proxied) => return Ok(proxied),
                Step::More(n) => {
                    let len = buf.len();
                    buf.resize(len + n, 0);
                    let got = match socket.read(&mut buf[len..]).await {
                        Ok(got) => got,
                        // A health check's reset, before saying anything: as a close.
                        Err(e) if len == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                        Err(e) => return Err(e.into()),
                    };
                    buf.truncate(len + got);
                    if got == 0 {
                        return Err(ProxyError::Closed(len));
                    }
                }
            }
        }
    }

    /// The header in `bytes`, all that was read so far and nothing after it: complete, or how
    /// many more bytes it needs at least, or what is wrong with it. Pure, for the fuzzer.
    pub fn parse(&self, bytes: &[u8]) -> Result<Step, ProxyError> {
        match self.version {
            ProxyProtocol::V1 => parse_v1(bytes),
            ProxyProtocol::V2 => parse_v2(bytes, self.use_identity_as_username),
            ProxyProtocol::Off => Err(ProxyError::Malformed(
                "this listener expects no PROXY header".into(),
            )),
        }
    }
}

/// v1: `PROXY TCP4|TCP6|UNKNOWN ... \r\n`, printable ASCII, at most [`V1_MAX_LEN`] bytes.
fn parse_v1(bytes: &[u8]) -> Result<Step, ProxyError> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Err(match starts_like_v2(bytes) {
            true => ProxyError::WrongVersion {
                expected: "v1",
                got: "v2",
            },
            false => ProxyError::Missing {
                expected: "v1",
                starts: describe(bytes),
            },
        });
    }
    if bytes.len() < V1_MIN_LEN {
        return Ok(Step::More(V1_MIN_LEN - bytes.len()));
    }
    let cr = bytes.iter().position(|&b| b == b'\r');
    let body = &bytes[..cr.unwrap_or(bytes.len())];
    if let Some(bad) = body.iter().position(|b| !(b' '..=b'~').contains(b)) {
        return Err(ProxyError::Malformed(format!(
            "v1 header holds byte {:#04x} at offset {bad} (printable ASCII only)",
            body[bad]
        )));
    }
    if cr.is_none_or(|i| i + 1 == bytes.len()) {
        // At least the LF after a CR, or CR LF, is still to come.
        let more = if cr.is_some() { 1 } else { 2 };
        if bytes.len() + more > V1_MAX_LEN {
            return Err(ProxyError::Malformed(format!(
                "v1 header has no CRLF within {V1_MAX_LEN} bytes"
            )));
        }
        return Ok(Step::More(more));
    }
    let header =
        ppp::v1::Header::try_from(bytes).map_err(|e| ProxyError::Malformed(format!("v1: {e}")))?;
    if header.header.len() != bytes.len() {
        return Err(ProxyError::Malformed("v1: bytes after the CRLF".into()));
    }
    let source = match header.addresses {
        ppp::v1::Addresses::Unknown => None,
        ppp::v1::Addresses::Tcp4(a) => Some((IpAddr::V4(a.source_address), a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => Some((IpAddr::V6(a.source_address), a.source_port)),
    };
    Ok(Step::Done(Proxied {
        source: source.map(|(ip, port)| SocketAddr::new(ip.to_canonical(), port)),
        verified_cn: None,
    }))
}

/// v2: 16 fixed bytes, then addresses and TLVs (at most [`V2_MAX_PAYLOAD`] bytes).
fn parse_v2(bytes: &[u8], want_identity: bool) -> Result<Step, ProxyError> {
    use ppp::v2::{Addresses, Command, Header, ParseError, Protocol};
    if !starts_like_v2(bytes) {
        return Err(match bytes.starts_with(&b"PROXY"[..bytes.len().min(5)]) {
            true => ProxyError::WrongVersion {
                expected: "v2",
                got: "v1",
            },
            false => ProxyError::Missing {
                expected: "v2",
                starts: describe(bytes),
            },
        });
    }
    if bytes.len() < V2_FIXED_LEN {
        return Ok(Step::More(V2_FIXED_LEN - bytes.len()));
    }
    let header = match Header::try_from(bytes) {
        Ok(header) => header,
        Err(ParseError::Partial(_, declared)) if declared > V2_MAX_PAYLOAD => {
            return Err(ProxyError::Malformed(format!(
                "v2 header declares {declared} bytes of addresses and TLVs, more than the \
                 {V2_MAX_PAYLOAD} accepted"
            )));
        }
        Err(ParseError::Partial(have, declared)) => return Ok(Step::More(declared - have)),
        Err(e) => return Err(ProxyError::Malformed(format!("v2: {e}"))),
    };
    if header.len() != bytes.len() {
        return Err(ProxyError::Malformed("v2: bytes after the header".into()));
    }
    // LOCAL: the proxy's own connection (a health check); it speaks for nobody.
    if header.command == Command::Local {
        return Ok(Step::Done(Proxied::default()));
    }
    let source = match (header.protocol, header.addresses) {
        (Protocol::Stream, Addresses::IPv4(a)) => {
            Some((IpAddr::V4(a.source_address), a.source_port))
        }
        (Protocol::Stream, Addresses::IPv6(a)) => {
            Some((IpAddr::V6(a.source_address), a.source_port))
        }
        _ => None,
    };
    let mut ssl = None;
    for tlv in header.tlvs() {
        let tlv = tlv.map_err(|e| ProxyError::Malformed(format!("v2 TLVs: {e}")))?;
        if tlv.kind == PP2_TYPE_SSL {
            if ssl.is_some() {
                return Err(ProxyError::Malformed("v2: two SSL TLVs".into()));
            }
            ssl = Some(tlv.value);
        }
    }
    let verified_cn = match ssl {
        Some(value) if want_identity => verified_cn(&value)?,
        _ => None,
    };
    Ok(Step::Done(Proxied {
        source: source.map(|(ip, port)| SocketAddr::new(ip.to_canonical(), port)),
        verified_cn,
    }))
}

/// The CN in an SSL TLV (`client` flags byte, `verify` u32, sub-TLVs), if the flags say the client
/// presented a certificate over TLS (in this connection or an earlier one of its TLS session) and
/// `verify` says it was verified; `None` otherwise. A verified certificate without a usable CN is
/// an error rather than an anonymous login, as with TLS at mqttd.
fn verified_cn(value: &[u8]) -> Result<Option<String>, ProxyError> {
    let [client, v0, v1, v2, v3, subs @ ..] = value else {
        return Err(ProxyError::Malformed(format!(
            "v2 SSL TLV of {} bytes (at least 5)",
            value.len()
        )));
    };
    let mut cn = None;
    for sub in ppp::v2::TypeLengthValues::from(subs) {
        let sub = sub.map_err(|e| ProxyError::Malformed(format!("v2 SSL sub-TLVs: {e}")))?;
        if sub.kind == PP2_SUBTYPE_SSL_CN {
            if cn.is_some() {
                return Err(ProxyError::Malformed("v2: two SSL CN sub-TLVs".into()));
            }
            cn = Some(sub.value);
        }
    }
    let verify = u32::from_be_bytes([*v0, *v1, *v2, *v3]);
    let presented =
        client & PP2_CLIENT_SSL != 0 && client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0;
    if !presented || verify != 0 {
        return Ok(None);
    }
    let Some(cn) = cn else {
        return Err(ProxyError::NoIdentity("no CN sub-TLV"));
    };
    match std::str::from_utf8(&cn) {
        Ok("") => Err(ProxyError::NoIdentity("empty CN")),
        Ok(name) if name.chars().any(char::is_control) => {
            Err(ProxyError::NoIdentity("control characters in the CN"))
        }
        Ok(name) => Ok(Some(name.to_owned())),
        Err(_) => Err(ProxyError::NoIdentity("CN is not UTF-8")),
    }
}

/// Whether `bytes` could be the start of a v2 header (no bytes could be the start of anything).
fn starts_like_v2(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V2_SIGNATURE.len());
    bytes[..n] == V2_SIGNATURE[..n]
}

/// What a connection without the expected header starts with, for the log.
fn describe(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(0x10) => "an MQTT CONNECT (a client connecting directly, not through the proxy?)",
        Some(0x16) => "a TLS handshake (a client connecting directly, not through the proxy?)",
        Some(b'G') => "an HTTP request (a client connecting directly, not through the proxy?)",
        _ => "other bytes",
    }
}

#[cfg(test)]
mod tests;
