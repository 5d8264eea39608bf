//! MQTT over WebSocket for the load generator (RFC 6455, client side), as browsers and MQTT.js
//! speak it.
//!
//! - The upgrade: `GET <path>` with `Sec-WebSocket-Protocol: mqtt`; the answer must be `101` with
//!   the right `Sec-WebSocket-Accept` and `mqtt` echoed ([`upgrade`]).
//! - Writes: every `poll_write` becomes exactly one masked binary frame, so a publisher's batch
//!   of PUBLISHes is one frame, as a client library that frames each flush sends it. A frame that
//!   does not fit in the socket at once waits in the stream and goes out before the next one (or
//!   on `flush`, which the scenarios call after every write).
//! - Reads: binary and continuation frames are unwrapped into the byte stream the MQTT code
//!   reads, whatever their sizes (an MQTT packet may span frames, a frame may hold many packets);
//!   a ping is answered with a pong, a close frame reads as the end of the stream, a text frame
//!   is an error.
//!
//! The frame codec is ours rather than a WebSocket library's: the hot path must stay a `memcpy`
//! plus a mask, because at a million messages a second the generator, not the broker, would
//! otherwise be what is measured. The accept key comes from `tungstenite` (the broker's own
//! WebSocket dependency).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Largest frame accepted from the broker (mqttd writes batches; Mosquitto one packet a frame).
const MAX_FRAME: u64 = 16 * 1024 * 1024;
/// Largest frame written: a bigger write is split over several `poll_write` calls.
const MAX_WRITE: usize = 1024 * 1024;
/// Largest upgrade response accepted.
const MAX_RESPONSE: usize = 8 * 1024;
/// First read buffer: small, so 10,000 idle connections cost little; it grows (doubling, up to
/// [`MAX_CHUNK`]) on connections whose reads fill it.
const FIRST_CHUNK: usize = 4 * 1024;
const MAX_CHUNK: usize = 256 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The upgrade request for `path` on `host` (the `Host` header's value) with `key`.
fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// Checks a complete upgrade response (`head`, up to and including the blank line).
fn check_response(head: &[u8], key: &str) -> Result<()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head).context("parsing the upgrade response")? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => bail!("incomplete upgrade response"),
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if resp.code != Some(101) {
        bail!(
            "the broker answered the WebSocket upgrade with {} {}",
            resp.code.unwrap_or(0),
            resp.reason.unwrap_or("")
        );
    }
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        bail!("101 without `Upgrade: websocket`");
    }
    let want = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept").as_deref() != Some(want.as_str()) {
        bail!("wrong Sec-WebSocket-Accept (expected {want})");
    }
    match header("sec-websocket-protocol") {
        Some(p) if p.eq_ignore_ascii_case("mqtt") => Ok(()),
        Some(p) => bail!("the broker chose subprotocol {p:?}, not mqtt"),
        None => bail!("the broker did not echo the mqtt subprotocol"),
    }
}

/// Upgrades `inner` (a connected socket) to a WebSocket carrying MQTT. `host` is the `Host`
/// header's value. The caller bounds the time it takes.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut inner: S,
    host: &str,
    path: &str,
) -> Result<WsStream<S>> {
    let key = tungstenite::handshake::client::generate_key();
    inner
        .write_all(request(host, path, &key).as_bytes())
        .await
        .context("sending the WebSocket upgrade")?;
    let mut raw = BytesMut::with_capacity(FIRST_CHUNK);
    // Where the search for the blank line goes on from (each read is searched once).
    let mut from = 0;
    let end = loop {
        if let Some(i) = raw[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + i + 4;
        }
        from = raw.len().saturating_sub(3);
        if raw.len() > MAX_RESPONSE {
            bail!("the upgrade response is longer than {MAX_RESPONSE} bytes");
        }
        if inner
            .read_buf(&mut raw)
            .await
            .context("reading the upgrade response")?
            == 0
        {
            bail!(
                "the broker closed the connection during the WebSocket upgrade{}",
                status_line(&raw)
            );
        }
    };
    check_response(&raw[..end], &key)?;
    raw.advance(end);
    Ok(WsStream::new(inner, raw))
}

/// ` (it said "HTTP/1.1 404 Not Found")` for an error message, when something came back.
fn status_line(raw: &[u8]) -> String {
    let line = raw.split(|&b| b == b'\r').next().unwrap_or_default();
    if line.is_empty() {
        String::new()
    } else {
        format!(" (it said {:?})", String::from_utf8_lossy(line))
    }
}

/// A frame header read from the broker.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    /// Header bytes (2, 4 or 10; a broker's frames are never masked).
    size: usize,
}

/// Parses the frame header at the front of `buf`: `Ok(None)` while it is incomplete.
fn parse_header(buf: &[u8]) -> io::Result<Option<Header>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(invalid(
            "a frame with RSV bits set (no extension was negotiated)",
        ));
    }
    if b1 & 0x80 != 0 {
        return Err(invalid("a masked frame from the server (RFC 6455 5.1)"));
    }
    let (len, size) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(invalid("a frame larger than 16 MiB"));
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        len,
        size,
    }))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

/// Appends one final, masked frame of `opcode` carrying `payload` to `out`.
fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8], key: [u8; 4]) {
    let len = payload.len();
    out.reserve(14 + len);
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(0x80 | 126);
        out.put_u16(len);
    } else {
        out.put_u8(0x80 | 127);
        out.put_u64(len as u64);
    }
    out.put_slice(&key);
    let start = out.len();
    out.put_slice(payload);
    mask(&mut out[start..], key);
}

/// XORs `data` with the repeating `key` (RFC 6455 5.3), eight bytes at a time.
fn mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Seeds for the masking keys: distinct per stream within a run.
static SEEDS: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// MQTT bytes over WebSocket frames, on top of a connected, upgraded `S`.
pub struct WsStream<S> {
    inner: S,
    /// Bytes read from the socket and not yet unwrapped.
    raw: BytesMut,
    /// Payload bytes of the current data frame still to hand to the reader.
    payload_left: u64,
    /// Frames (data, pongs) not yet on the socket.
    out: BytesMut,
    /// How much `raw` grows by when it is full.
    chunk: usize,
    /// xorshift state for the masking keys. RFC 6455 wants unpredictable keys so that a browser
    /// script cannot choose the bytes on the wire (proxy cache poisoning); a load generator only
    /// needs them to vary, as a real client's would.
    rng: u64,
    /// A close frame arrived: reads return the end of the stream.
    closed: bool,
}

impl<S> WsStream<S> {
    /// A stream on an already upgraded `inner`; `raw`: bytes already read past the upgrade
    /// response (the first frames).
    pub fn new(inner: S, raw: BytesMut) -> Self {
        let seed = SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        WsStream {
            inner,
            raw,
            payload_left: 0,
            out: BytesMut::new(),
            chunk: FIRST_CHUNK,
            rng: seed | 1,
            closed: false,
        }
    }

    fn next_key(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_ne_bytes()
    }

    /// Handles the control frame (or the start of a data frame) at the front of `raw`.
    /// `Ok(false)`: more bytes are needed first.
    fn take_header(&mut self) -> io::Result<bool> {
        let Some(h) = parse_header(&self.raw)? else {
            return Ok(false);
        };
        match h.opcode {
            OP_CONTINUATION | OP_BINARY => {
                // A binary message may span frames (FIN clear): MQTT is a byte stream anyway.
                self.raw.advance(h.size);
                self.payload_left = h.len;
                Ok(true)
            }
            OP_TEXT => Err(invalid("a text frame (MQTT travels in binary frames)")),
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin || h.len > 125 {
                    return Err(invalid("a fragmented or long control frame"));
                }
                let whole = h.size + h.len as usize;
                if self.raw.len() < whole {
                    return Ok(false);
                }
                if h.opcode == OP_PING {
                    let key = self.next_key();
                    let payload = self.raw[h.size..whole].to_vec();
                    put_frame(&mut self.out, OP_PONG, &payload, key);
                } else if h.opcode == OP_CLOSE {
                    self.closed = true;
                }
                self.raw.advance(whole);
                Ok(true)
            }
            _ => Err(invalid("a frame with a reserved opcode")),
        }
    }
}

impl<S: AsyncWrite + Unpin> WsStream<S> {
    /// Writes the pending frames out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        self.out.clear();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // One read hands over as many frames' payloads as are here and fit: a broker that sends
        // a frame per MQTT packet (Mosquitto) must not cost the generator a read per message.
        let start = buf.filled().len();
        loop {
            if this.payload_left > 0 && !this.raw.is_empty() {
                let n = (this.raw.len() as u64)
                    .min(this.payload_left)
                    .min(buf.remaining() as u64) as usize;
                buf.put_slice(&this.raw[..n]);
                this.raw.advance(n);
                this.payload_left -= n as u64;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let header = if this.payload_left == 0 && !this.closed {
                match this.take_header() {
                    // An error waits for the next call when bytes before it are being handed
                    // over (the bad header stays in `raw`), so no byte is lost to it.
                    Err(_) if buf.filled().len() > start => return Poll::Ready(Ok(())),
                    r => r?,
                }
            } else {
                false
            };
            if header {
                if !this.out.is_empty() {
                    // A pong to send; if the socket is full it goes with the next write.
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                continue;
            }
            if this.closed || buf.filled().len() > start {
                // The end, or what was here: the socket is read on the next call.
                return Poll::Ready(Ok(()));
            }
            if this.raw.capacity() - this.raw.len() < this.chunk / 4 {
                this.raw.reserve(this.chunk);
            }
            let room = this.raw.capacity() - this.raw.len();
            let n = ready!(poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.raw))?;
            if n == 0 {
                if this.payload_left > 0 || !this.raw.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "WebSocket: the connection ended inside a frame",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            if n == room && this.chunk < MAX_CHUNK {
                this.chunk *= 2;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_WRITE);
        let key = this.next_key();
        put_frame(&mut this.out, OP_BINARY, &buf[..n], key);
        // The frame is accepted; what the socket does not take now goes out on the next write
        // or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Reads one whole frame a client wrote (tests, and anyone checking what the generator sends):
/// (opcode, unmasked payload, bytes used).
pub fn decode_client_frame(buf: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 == 0 {
        bail!("an unmasked client frame");
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (
                usize::try_from(u64::from_be_bytes(b.try_into()?))
                    .map_err(|_| anyhow!("frame too long"))?,
                10,
            ),
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    let Some(key) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let key: [u8; 4] = key.try_into()?;
    at += 4;
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    mask(&mut payload, key);
    Ok(Some((b0 & 0x0F, payload, at + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// A server-side (unmasked) frame.
    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 0xFFFF => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn client_frames_round_trip_at_every_length_class() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 65_535, 65_536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = BytesMut::new();
            put_frame(&mut out, OP_BINARY, &payload, [0xA1, 0x02, 0xF3, 0x44]);
            assert_ne!(out[0] & 0x80, 0, "FIN set");
            for cut in [0, 1, out.len() / 2, out.len() - 1] {
                assert!(
                    decode_client_frame(&out[..cut]).unwrap().is_none(),
                    "cut {cut}"
                );
            }
            let (op, back, used) = decode_client_frame(&out).unwrap().unwrap();
            assert_eq!(
                (op, used, back == payload),
                (OP_BINARY, out.len(), true),
                "len {len}"
            );
        }
    }

    #[test]
    fn headers_parse_and_reject_what_a_server_must_not_send() {
        let f = server_frame(OP_BINARY, true, &[1; 300]);
        assert!(parse_header(&f[..3]).unwrap().is_none());
        let h = parse_header(&f).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                fin: true,
                opcode: OP_BINARY,
                len: 300,
                size: 4
            }
        );
        assert!(
            parse_header(&[0x82, 0x81, 0, 0, 0, 0, 9]).is_err(),
            "masked"
        );
        assert!(
            parse_header(&[0xC2, 0x00]).is_err(),
            "RSV1 (permessage-deflate)"
        );
        let huge = [0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 1];
        assert!(parse_header(&huge).is_err(), "over 16 MiB");
    }

    #[tokio::test]
    async fn reads_a_byte_stream_across_frames_split_anywhere_and_answers_pings() {
        let (client, mut server) = duplex(1 << 20);
        let mut ws = WsStream::new(client, BytesMut::new());
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        wire.extend(server_frame(OP_BINARY, false, &data[..10]));
        wire.extend(server_frame(OP_PING, true, b"hi"));
        wire.extend(server_frame(OP_CONTINUATION, true, &data[10..200]));
        wire.extend(server_frame(OP_BINARY, true, &[]));
        wire.extend(server_frame(OP_BINARY, true, &data[200..66_000]));
        wire.extend(server_frame(OP_PONG, true, b""));
        wire.extend(server_frame(OP_BINARY, true, &data[66_000..]));
        wire.extend(server_frame(OP_CLOSE, true, &[0x03, 0xE8]));
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(997) {
                for tiny in piece.chunks(if piece[0] % 2 == 0 { 1 } else { 997 }) {
                    server.write_all(tiny).await.unwrap();
                }
            }
            let mut pong = vec![0; 64];
            let n = server.read(&mut pong).await.unwrap();
            decode_client_frame(&pong[..n]).unwrap().unwrap()
        });
        let mut got = Vec::new();
        ws.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes come out in order");
        let (op, payload, _) = writer.await.unwrap();
        assert_eq!((op, payload.as_slice()), (OP_PONG, &b"hi"[..]));
    }

    #[tokio::test]
    async fn one_read_takes_many_small_frames_and_an_error_comes_after_them() {
        let (client, mut server) = duplex(1 << 16);
        let mut ws = WsStream::new(client, BytesMut::new());
        let mut wire = Vec::new();
        for i in 0..100u8 {
            wire.extend(server_frame(OP_BINARY, true, &[i; 7]));
        }
        wire.extend(server_frame(OP_TEXT, true, b"x"));
        server.write_all(&wire).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = ws.read(&mut buf).await.unwrap();
        assert_eq!(n, 700, "all hundred frames in one read");
        assert!(
            buf[..n]
                .chunks(7)
                .enumerate()
                .all(|(i, c)| c == [i as u8; 7])
        );
        assert!(ws.read(&mut buf).await.is_err(), "then the text frame");
    }

    #[tokio::test]
    async fn text_frames_and_truncated_frames_are_errors() {
        let (client, mut server) = duplex(1024);
        let mut ws = WsStream::new(client, BytesMut::new());
        server
            .write_all(&server_frame(OP_TEXT, true, b"{}"))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        assert!(ws.read(&mut buf).await.is_err());

        let (client, mut server) = duplex(1024);
        let mut ws = WsStream::new(client, BytesMut::new());
        server.write_all(&[0x82, 10, 1, 2]).await.unwrap();
        drop(server);
        let mut all = Vec::new();
        assert!(ws.read_to_end(&mut all).await.is_err());
    }

    #[tokio::test]
    async fn each_write_is_one_masked_binary_frame() {
        let (client, mut server) = duplex(1 << 20);
        let mut ws = WsStream::new(client, BytesMut::new());
        ws.write_all(b"first").await.unwrap();
        ws.write_all(&[7u8; 300]).await.unwrap();
        ws.flush().await.unwrap();
        drop(ws);
        let mut wire = Vec::new();
        server.read_to_end(&mut wire).await.unwrap();
        let (op, a, used) = decode_client_frame(&wire).unwrap().unwrap();
        let (op2, b, used2) = decode_client_frame(&wire[used..]).unwrap().unwrap();
        assert_eq!((op, a.as_slice()), (OP_BINARY, &b"first"[..]));
        assert_eq!(
            (op2, b, used + used2),
            (OP_BINARY, vec![7u8; 300], wire.len())
        );
    }

    #[tokio::test]
    async fn upgrade_checks_the_answer() {
        for (answer, ok) in [
            (None, true),
            (
                Some("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                false,
            ),
            (
                Some(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                ),
                false,
            ),
        ] {
            let (client, mut server) = duplex(4096);
            let srv = tokio::spawn(async move {
                let mut req = vec![0u8; 4096];
                let n = server.read(&mut req).await.unwrap();
                let text = String::from_utf8(req[..n].to_vec()).unwrap();
                assert!(text.starts_with("GET /mqtt HTTP/1.1\r\n"), "{text}");
                assert!(
                    text.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"),
                    "{text}"
                );
                let key = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap()
                    .to_owned();
                let reply = answer.map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
                         Sec-WebSocket-Protocol: mqtt\r\n\r\n",
                        tungstenite::handshake::derive_accept_key(key.as_bytes())
                    )
                });
                let mut bytes = reply.into_bytes();
                bytes.extend(server_frame(OP_BINARY, true, &[0x20, 2, 0, 0]));
                server.write_all(&bytes).await.unwrap();
                server
            });
            let r = upgrade(client, "127.0.0.1:1", "/mqtt").await;
            let _server = srv.await.unwrap();
            assert_eq!(r.is_ok(), ok, "{answer:?}: {:?}", r.as_ref().err());
            if let Ok(mut ws) = r {
                let mut connack = [0u8; 4];
                ws.read_exact(&mut connack).await.unwrap();
                assert_eq!(connack, [0x20, 2, 0, 0], "bytes after the 101 are not lost");
            }
        }
    }
}
