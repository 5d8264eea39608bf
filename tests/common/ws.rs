//! A raw WebSocket client for tests: the upgrade request with any headers, then a stream adapter
//! (`WsClient`) that masks what it writes into binary frames (optionally cut small, with empty
//! frames between) and unwraps the server's frames, so a `RawClient` can speak MQTT over it.
//! `send_frame` writes any frame at all, for the edge cases.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::WAIT;

const MASK: [u8; 4] = [0xa1, 0x02, 0x5c, 0xee];

/// A client frame: `first` (FIN + opcode), masked `payload`.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The server's answer to an upgrade request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The whole header block (and any body that arrived with it), as text.
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.text.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// An upgrade request for `path` offering `protocols`, plus `extra` header lines ("Name: v\r\n").
pub fn upgrade_request(path: &str, protocols: &str, extra: &str) -> String {
    let protocol = if protocols.is_empty() {
        String::new()
    } else {
        format!("Sec-WebSocket-Protocol: {protocols}\r\n")
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {protocol}{extra}\r\n"
    )
}

/// Sends `request` on `stream` and reads the answer's header block. The 101's leftovers (bytes
/// after the blank line) are returned too.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> (Answer, Vec<u8>) {
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("an HTTP status line");
            let rest = buf[end + 4..].to_vec();
            return (Answer { status, text }, rest);
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("upgrade answered in time")
            .expect("read upgrade answer");
        if n == 0 {
            let text = String::from_utf8_lossy(&buf).into_owned();
            return (Answer { status: 0, text }, Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects to `addr`, upgrades at `/mqtt` offering `mqtt`; panics unless 101.
pub async fn connect(addr: SocketAddr) -> WsClient<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let (answer, rest) = handshake(&mut tcp, &upgrade_request("/mqtt", "mqtt", "")).await;
    assert_eq!(answer.status, 101, "upgrade refused: {}", answer.text);
    assert_eq!(
        answer.header("sec-websocket-protocol").as_deref(),
        Some("mqtt")
    );
    assert_eq!(
        answer.header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    WsClient::new(tcp, rest)
}

/// MQTT bytes over WebSocket frames, client side.
pub struct WsClient<S> {
    pub inner: S,
    /// Raw bytes from the server not yet taken apart.
    raw: Vec<u8>,
    /// Payload bytes ready to read.
    ready: VecDeque<u8>,
    /// The status of the server's Close frame, once one came.
    pub close_code: Option<u16>,
    /// Opcodes of the control frames received (0x8A pong, 0x89 ping, 0x88 close).
    pub controls: Vec<u8>,
    /// Cut each write into frames of at most this many bytes (`None`: one frame per write).
    pub split: Option<usize>,
    /// Put an empty binary frame before each frame written.
    pub empty_frames: bool,
    /// A write in progress: the framed bytes left, and the length to report when done.
    pending: Vec<u8>,
    pending_len: usize,
}

impl<S> WsClient<S> {
    pub fn new(inner: S, rest: Vec<u8>) -> Self {
        WsClient {
            inner,
            raw: rest,
            ready: VecDeque::new(),
            close_code: None,
            controls: Vec::new(),
            split: None,
            empty_frames: false,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Takes complete server frames out of `raw`.
    fn take_frames(&mut self) {
        loop {
            if self.raw.len() < 2 {
                return;
            }
            assert_eq!(self.raw[1] & 0x80, 0, "server frames are never masked");
            let (len, at) = match self.raw[1] & 0x7f {
                126 if self.raw.len() >= 4 => {
                    (u16::from_be_bytes([self.raw[2], self.raw[3]]) as usize, 4)
                }
                127 if self.raw.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.raw[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => return,
                n => (n as usize, 2),
            };
            if self.raw.len() < at + len {
                return;
            }
            let first = self.raw[0];
            let payload: Vec<u8> = self.raw[at..at + len].to_vec();
            self.raw.drain(..at + len);
            assert_eq!(first & 0x70, 0, "no reserved bits");
            match first & 0x0f {
                0x0 | 0x2 => self.ready.extend(payload),
                0x1 => panic!("the server sent a text frame"),
                0x8 => {
                    self.controls.push(first);
                    self.close_code = Some(
                        payload
                            .get(..2)
                            .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                    );
                }
                _ => self.controls.push(first),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> WsClient<S> {
    /// Writes one arbitrary client frame (masked), bypassing the adapter.
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        self.send_raw(&client_frame(first, payload)).await;
    }

    /// Writes raw bytes, bypassing the adapter.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.inner.write_all(bytes).await.expect("write frame");
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WsClient<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            this.take_frames();
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                let bytes: Vec<u8> = this.ready.drain(..n).collect();
                buf.put_slice(&bytes);
                return Poll::Ready(Ok(()));
            }
            if this.close_code.is_some() {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 4096];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(chunk_buf.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsClient<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            let step = this.split.unwrap_or(buf.len()).max(1);
            for part in buf.chunks(step) {
                if this.empty_frames {
                    this.pending.extend(client_frame(0x82, &[]));
                }
                this.pending.extend(client_frame(0x82, part));
            }
            this.pending_len = buf.len();
        }
        while !this.pending.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.pending))?;
            this.pending.drain(..n);
        }
        Poll::Ready(Ok(this.pending_len))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
