//! MQTT over WebSocket (work in progress).

use std::time::Duration;

use crate::client::Peer;
use crate::config::TrustedNet;

/// A WebSocket listener's settings.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// The upgrade request's path; any other gets 404.
    pub path: String,
    /// Accepted Origin values; `None`: any.
    pub origins: Option<Vec<String>>,
    /// Whose X-Forwarded-For header to believe (`proxy_trusted`).
    pub trusted: Vec<TrustedNet>,
    /// Largest frame accepted (`limits.max_packet_size`).
    pub max_frame: usize,
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no WebSocket upgrade within {0:?} (limits.connect_timeout)")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// MQTT bytes over WebSocket frames.
pub struct WsStream<S> {
    inner: S,
}

/// Answers the upgrade request on `stream`.
pub async fn accept<S>(
    stream: S,
    options: &WsOptions,
    peer: &mut Peer,
    proxy: Option<&crate::proxy::ProxyGate>,
    timeout: Duration,
) -> Result<WsStream<S>, UpgradeError> {
    let _ = (options, peer, proxy, timeout);
    Ok(WsStream { inner: stream })
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl crate::connection::Stream for WsStream<tokio::net::TcpStream> {}
impl crate::connection::Stream
    for WsStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>
{
}
