//! How a benchmark client reaches the broker: a TCP connection, then optionally a PROXY protocol
//! v2 header (as HAProxy's `send-proxy-v2` sends it), then optionally a TLS handshake or a
//! WebSocket upgrade; the scenarios get one [`Conn`] whichever it is and speak MQTT over it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, anyhow};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::wire::SETUP_TIMEOUT;
use super::ws::{self, WsStream};

/// The transport options of a run (`--ws`, `--ws-path`, `--proxy-v2`, `--tls`).
#[derive(Clone, Default)]
pub struct Transport {
    /// MQTT over WebSocket, upgrading on this path.
    pub ws_path: Option<String>,
    /// A PROXY v2 header before anything else (before the TLS handshake too: TLS passthrough).
    pub proxy_v2: bool,
    /// MQTT over TLS with this client configuration (`super::tls::tls_connector`: resumption
    /// off, so every connection is a full handshake). Built once per run and shared, so a
    /// certificate chain is verified once, not once per connection.
    pub tls: Option<TlsConnector>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Transport {
    /// "tcp", "ws", "tls", each with "+proxy-v2" when the header is sent: for the report.
    pub fn name(&self) -> String {
        Self::describe(self.ws_path.is_some(), self.tls.is_some(), self.proxy_v2)
    }

    /// [`Transport::name`] from the options alone (no TLS configuration needs to be built).
    pub fn describe(ws: bool, tls: bool, proxy_v2: bool) -> String {
        let base = match (ws, tls) {
            (true, true) => "wss",
            (true, false) => "ws",
            (false, true) => "tls",
            (false, false) => "tcp",
        };
        if proxy_v2 {
            format!("{base}+proxy-v2")
        } else {
            base.to_owned()
        }
    }
}

/// A client's connection: plain, TLS or WebSocket.
pub enum Conn {
    Tcp(TcpStream),
    /// Boxed: a client connection's TLS state is over a kilobyte, the other variants a few words.
    Tls(Box<TlsStream<TcpStream>>),
    Ws(WsStream<TcpStream>),
}

/// Connects to `addr` (TCP_NODELAY on), sends the PROXY header, then completes the TLS handshake
/// or the WebSocket upgrade as `t` says, all within [`SETUP_TIMEOUT`].
pub async fn dial(addr: SocketAddr, t: &Transport) -> Result<Conn> {
    tokio::time::timeout(SETUP_TIMEOUT, async {
        let mut s = tcp(addr).await?;
        if t.proxy_v2 {
            send_proxy_header(&mut s).await?;
        }
        match (&t.tls, &t.ws_path) {
            (Some(_), Some(_)) => Err(anyhow!("WebSocket over TLS (wss) is not supported")),
            (Some(tls), None) => {
                // The broker's certificate names its address (mqtt-certs puts 127.0.0.1 in it).
                let s = tls
                    .connect(ServerName::from(addr.ip()), s)
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                Ok(Conn::Tls(Box::new(s)))
            }
            (None, None) => Ok(Conn::Tcp(s)),
            (None, Some(path)) => Ok(Conn::Ws(ws::upgrade(s, &addr.to_string(), path).await?)),
        }
    })
    .await
    .map_err(|_| anyhow!("connecting to {addr}: no connection within {SETUP_TIMEOUT:?}"))?
}

/// A TCP connection with TCP_NODELAY (the caller bounds the time).
pub async fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes the PROXY v2 header for this connection: its real source and destination.
pub async fn send_proxy_header(s: &mut TcpStream) -> Result<()> {
    let header = proxy_v2_header(s.local_addr()?, s.peer_addr()?);
    s.write_all(&header)
        .await
        .context("sending the PROXY header")
}

/// The PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2) a proxy sends for a
/// TCP connection from `src` to `dst`: command PROXY, TCP over IPv4 or IPv6 (IPv4 addresses
/// become IPv4-mapped IPv6 when the other one is IPv6), no TLVs.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let mut h = SIGNATURE.to_vec();
    h.push(0x21); // version 2, command PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Conn::Ws(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Conn::Ws(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Conn::Ws(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Conn::Ws(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_is_byte_exact() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.2:1883".parse().unwrap();
        let h = proxy_v2_header(src, dst);
        let mut want = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0,
            12,
        ];
        want.extend([127, 0, 0, 1, 127, 0, 0, 2, 0x9C, 0x40, 0x07, 0x5B]);
        assert_eq!(h, want);

        let v6: SocketAddr = "[::1]:1883".parse().unwrap();
        let h = proxy_v2_header(src, v6);
        assert_eq!((h[13], &h[14..16]), (0x21, &[0u8, 36][..]));
        assert_eq!(
            &h[16..32],
            &"::ffff:127.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(h.len(), 16 + 36);
    }
}
