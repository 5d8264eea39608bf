//! MQTT over WebSocket (RFC 6455; MQTT 5.0 section 6): the upgrade handshake here, the frames in
//! [`frames`].
//!
//! The handshake, under `limits.connect_timeout`:
//! - an HTTP/1.1 `GET` of the listener's `path` (else 404), with `Upgrade: websocket`,
//!   `Connection: Upgrade` (else 426), `Sec-WebSocket-Version: 13` (else 426 naming 13) and a key;
//! - an `Origin`, when the browser sends one and `ws_origins` is set, must be listed (else 403);
//! - `Sec-WebSocket-Protocol` must offer `mqtt` (or `mqttv3.1`, for old clients), and exactly that
//!   one is echoed (else 400: MQTT 5.0 section 6.0.0.3 asks for it);
//! - no extension is accepted (no permessage-deflate: MQTT payloads are often compressed or binary
//!   already, and deflate state costs tens of kilobytes per connection);
//! - `X-Forwarded-For` is believed only from a `proxy_trusted` address: the rightmost address not
//!   itself trusted is the client's.
//!
//! A refused request gets its HTTP status and a one-line reason, then the connection closes.
//! tungstenite (the crate under tokio-tungstenite) gives the accept key and the frame-header
//! codec; the request is read with httparse.

mod frames;
#[cfg(test)]
mod tests;

pub use frames::{WsState, WsStream, close};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Peer;
use crate::config::TrustedNet;

/// The longest upgrade request read (browsers send 0.5 to 2 KB; cookies can add more).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Headers parsed per request; more gets 431.
const MAX_HEADERS: usize = 48;

/// A WebSocket listener's settings.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// The upgrade request's path; any other gets 404.
    pub path: String,
    /// Accepted Origin values; `None`: any.
    pub origins: Option<Vec<String>>,
    /// Whose X-Forwarded-For header to believe (`proxy_trusted`).
    pub trusted: Vec<TrustedNet>,
    /// Largest data frame accepted (`limits.max_packet_size`).
    pub max_frame: usize,
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no WebSocket upgrade within {0:?} (limits.connect_timeout)")]
    Timeout(Duration),
    #[error("closed before the upgrade request was complete")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP {status}: {why}")]
    Refused { status: u16, why: String },
}

/// The parts of an upgrade request that matter, owned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// HTTP/1.1 (or later).
    pub http11: bool,
    /// `Upgrade` names `websocket`.
    pub upgrade: bool,
    /// `Connection` names `upgrade`.
    pub connection_upgrade: bool,
    pub version: Option<String>,
    pub key: Option<String>,
    /// Every `Sec-WebSocket-Protocol` value offered, in order.
    pub protocols: Vec<String>,
    pub origin: Option<String>,
    pub forwarded_for: Option<String>,
}

/// What a refusal answers: status, reason phrase, extra headers, and the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub extra: &'static str,
    pub why: String,
}

/// Parses an upgrade request from the bytes read so far. `Ok(None)`: incomplete; `Ok(Some((request,
/// n)))`: the request is the first `n` bytes.
pub fn parse_request(bytes: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refusal(431, "", format!("more than {MAX_HEADERS} headers")));
        }
        Err(e) => return Err(refusal(400, "", format!("not an HTTP request ({e})"))),
    };
    let target = parsed.path.unwrap_or("");
    let mut request = UpgradeRequest {
        method: parsed.method.unwrap_or("").to_owned(),
        path: target.split('?').next().unwrap_or("").to_owned(),
        http11: parsed.version.is_some_and(|v| v >= 1),
        ..UpgradeRequest::default()
    };
    for header in parsed.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        let has_token = |token: &str| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            request.upgrade |= has_token("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            request.connection_upgrade |= has_token("upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            request.version = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            request.key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let offered = value.split(',').map(str::trim).filter(|p| !p.is_empty());
            request.protocols.extend(offered.map(str::to_owned));
        } else if name.eq_ignore_ascii_case("origin") {
            request.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            // Several headers are one list (RFC 9110 section 5.3).
            let list = request.forwarded_for.get_or_insert_with(String::new);
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(value);
        }
    }
    Ok(Some((request, used)))
}

/// Checks the request against the listener's settings; `Ok`: the subprotocol to echo.
pub fn check(request: &UpgradeRequest, options: &WsOptions) -> Result<&'static str, Refusal> {
    if request.method != "GET" {
        let why = format!("method {} (only GET upgrades)", cut(&request.method));
        return Err(refusal(405, "Allow: GET\r\n", why));
    }
    if request.path != options.path {
        let why = format!("path {} is not {}", cut(&request.path), options.path);
        return Err(refusal(404, "", why));
    }
    if !request.http11 || !request.upgrade || !request.connection_upgrade {
        let why = "not a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)".into();
        return Err(refusal(
            426,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n",
            why,
        ));
    }
    if request.version.as_deref() != Some("13") {
        let why = format!(
            "Sec-WebSocket-Version {} (13 is supported)",
            cut(request.version.as_deref().unwrap_or("missing"))
        );
        return Err(refusal(426, "Sec-WebSocket-Version: 13\r\n", why));
    }
    let key_ok = request.key.as_deref().is_some_and(|key| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
    });
    if !key_ok {
        return Err(refusal(400, "", "no valid Sec-WebSocket-Key".into()));
    }
    if let (Some(allowed), Some(origin)) = (&options.origins, &request.origin)
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    {
        let why = format!("Origin {} is not in ws_origins", cut(origin));
        return Err(refusal(403, "", why));
    }
    let offered = |p: &str| request.protocols.iter().any(|o| o.eq_ignore_ascii_case(p));
    match ["mqtt", "mqttv3.1"].into_iter().find(|p| offered(p)) {
        Some(protocol) => Ok(protocol),
        None => {
            let why = match request.protocols.first() {
                None => "no Sec-WebSocket-Protocol (mqtt is required)".into(),
                Some(p) => format!("Sec-WebSocket-Protocol {} does not offer mqtt", cut(p)),
            };
            Err(refusal(400, "", why))
        }
    }
}

/// The client's address from `X-Forwarded-For`, when `peer` is a trusted proxy: the rightmost
/// entry that is not itself trusted (entries further left could be forged by the client), or the
/// leftmost if all are. `None`: not trusted, no header, or an entry that is not an address.
pub fn forwarded_client(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[TrustedNet],
) -> Option<IpAddr> {
    let trusts = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !trusts(peer) {
        return None;
    }
    let mut client = None;
    for entry in forwarded_for?.rsplit(',') {
        let ip = parse_forwarded_ip(entry.trim())?;
        client = Some(ip);
        if !trusts(ip) {
            break;
        }
    }
    client
}

/// An X-Forwarded-For entry: an address, maybe with a port ("1.2.3.4:5", "[::1]:5").
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn refusal(status: u16, extra: &'static str, why: String) -> Refusal {
    Refusal { status, extra, why }
}

/// Client-supplied text for a log line or reason: at most 64 characters, escaped.
fn cut(text: &str) -> String {
    let short: String = text.chars().take(64).collect();
    let more = if text.chars().count() > 64 { "..." } else { "" };
    format!("\"{}{more}\"", short.escape_debug())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// An upgrade request that passed its checks, not yet answered: the listener decides (per-IP
/// limit for the address X-Forwarded-For named) before [`Upgrade::accept`] or
/// [`Upgrade::refuse`].
#[derive(Debug)]
pub struct Upgrade<S> {
    stream: S,
    protocol: &'static str,
    key: String,
    /// Bytes that came after the request.
    early: Vec<u8>,
    max_frame: usize,
}

/// Reads and checks the upgrade request on `stream` under `timeout` (a refusal is answered with
/// its HTTP status and the connection closed). `peer.addr` becomes the X-Forwarded-For client's when the listener
/// trusts the proxy that sent it.
pub async fn read_upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    options: &WsOptions,
    peer: &mut Peer,
    timeout: Duration,
) -> Result<Upgrade<S>, UpgradeError> {
    let read = tokio::time::timeout(timeout, read_request(&mut stream, options, peer)).await;
    match read {
        Err(_) => Err(UpgradeError::Timeout(timeout)),
        Ok(Ok((protocol, key, early))) => Ok(Upgrade {
            stream,
            protocol,
            key,
            early,
            max_frame: options.max_frame,
        }),
        Ok(Err(e)) => Err(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Upgrade<S> {
    /// Answers 101: from now on the connection speaks MQTT in binary frames.
    pub async fn accept(mut self, timeout: Duration) -> Result<WsStream<S>, UpgradeError> {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
            self.protocol
        );
        let write = async {
            self.stream.write_all(answer.as_bytes()).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Err(_) => Err(UpgradeError::Timeout(timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => {
                let state = Box::new(WsState::new(self.max_frame, self.early));
                Ok(WsStream::new(self.stream, state))
            }
        }
    }

    /// Answers `status` (e.g. 503 when a limit refuses the client) and closes.
    pub async fn refuse(mut self, status: u16, why: &str, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, refuse(&mut self.stream, status, "", why)).await;
    }
}

/// Writes an HTTP error answer with a one-line reason, then shuts the stream down.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, extra: &str, why: &str) {
    let body = format!("{why}\n");
    let answer = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        reason_phrase(status),
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads and checks the request; returns the subprotocol to echo, the key and the bytes that
/// came after the request. A refusal is answered here.
async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    options: &WsOptions,
    peer: &mut Peer,
) -> Result<(&'static str, String, Vec<u8>), UpgradeError> {
    // Grown as the request comes (most fit in the first 512 bytes), never past MAX_REQUEST.
    let mut buf = Vec::new();
    let parsed = loop {
        if buf.len() >= MAX_REQUEST {
            let why = format!("request header over {MAX_REQUEST} bytes");
            break Err(refusal(431, "", why));
        }
        buf.reserve(512.min(MAX_REQUEST - buf.len()));
        let room = (buf.capacity() - buf.len()).min(MAX_REQUEST - buf.len());
        let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(UpgradeError::Closed);
        }
        match parse_request(&buf) {
            Ok(None) => continue,
            Ok(Some(done)) => break Ok(done),
            Err(refused) => break Err(refused),
        }
    };
    let checked = parsed.and_then(|(request, used)| {
        check(&request, options).map(|protocol| (request, used, protocol))
    });
    let (request, used, protocol) = match checked {
        Ok(ok) => ok,
        Err(Refusal { status, extra, why }) => {
            refuse(stream, status, extra, &why).await;
            return Err(UpgradeError::Refused { status, why });
        }
    };
    if let Some(ip) = forwarded_client(
        peer.addr.ip(),
        request.forwarded_for.as_deref(),
        &options.trusted,
    ) {
        tracing::debug!(proxy = %peer.addr, listener = %peer.listener, "X-Forwarded-For: client {ip}");
        peer.addr = SocketAddr::new(ip, 0);
    }
    let key = request.key.unwrap_or_default();
    Ok((protocol, key, buf.split_off(used)))
}
