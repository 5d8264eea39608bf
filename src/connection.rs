//! `Connection<S>`: framed MQTT over any byte stream (TCP, TLS, later WebSocket).
//!
//! The read buffer lives in `self`, so [`Connection::read_packet`] is cancel-safe: when a `select!`
//! drops it half-way, no bytes are lost and the next call resumes. Writes are batched: callers
//! [`Connection::queue`] any number of packets and [`Connection::flush`] once, one syscall for many
//! packets.
//!
//! Everything written goes through the bounded encoder ([`protocol::encode_within`]) with the
//! peer's Maximum Packet Size (MQTT 5.0 section 3.1.2.11.4), set from its CONNECT with
//! [`Connection::set_peer_max_packet_size`]: no packet the peer would have to refuse, and no
//! malformed one, ever reaches the socket.

use std::io;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{self, DecodeError, EncodeError, Packet, ProtocolVersion};
use crate::transport::tls::TlsStream;
use crate::transport::ws::WsStream;
use crate::transport::{Framing, Wss};

/// Initial read buffer; grows on demand up to the largest packet allowed.
/// Reads start small, so an idle connection holds little memory, and double (up to
/// `MAX_READ_CHUNK`) while reads keep filling the buffer, so a busy one makes few syscalls.
const MIN_READ_CHUNK: usize = 512;
const MAX_READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a packet")]
    Truncated,
}

/// A stream a connection can be served over. TCP, TLS, ws and wss sockets can also be parked
/// while idle (see [`crate::park`]); in-process pipes cannot.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Whether [`Stream::into_socket`] can succeed.
    const PARKABLE: bool = false;

    /// The socket, out of tokio's reactor, with what frames its bytes, for parking; `Err`: not
    /// parkable, given back.
    fn into_socket(self) -> Result<io::Result<(std::net::TcpStream, Framing)>, Self> {
        Err(self)
    }

    /// Back from [`Stream::into_socket`].
    fn from_socket(socket: std::net::TcpStream, framing: Framing) -> io::Result<Self> {
        drop((socket, framing));
        Err(io::Error::other("this kind of stream cannot be parked"))
    }
}

impl Stream for tokio::net::TcpStream {
    const PARKABLE: bool = true;

    fn into_socket(self) -> Result<io::Result<(std::net::TcpStream, Framing)>, Self> {
        Ok(self.into_std().map(|socket| (socket, Framing::Raw)))
    }

    fn from_socket(socket: std::net::TcpStream, framing: Framing) -> io::Result<Self> {
        match framing {
            Framing::Raw => tokio::net::TcpStream::from_std(socket),
            other => Err(resumed_as(&other, "plain TCP")),
        }
    }
}

impl Stream for WsStream<tokio::net::TcpStream> {
    const PARKABLE: bool = true;

    fn into_socket(self) -> Result<io::Result<(std::net::TcpStream, Framing)>, Self> {
        let (tcp, state) = self.into_parts();
        Ok(tcp.into_std().map(|socket| (socket, Framing::Ws(state))))
    }

    fn from_socket(socket: std::net::TcpStream, framing: Framing) -> io::Result<Self> {
        match framing {
            Framing::Ws(state) => {
                let tcp = tokio::net::TcpStream::from_std(socket)?;
                Ok(WsStream::new(tcp, state))
            }
            other => Err(resumed_as(&other, "WebSocket")),
        }
    }
}

impl Stream for TlsStream<tokio::net::TcpStream> {
    const PARKABLE: bool = true;

    fn into_socket(self) -> Result<io::Result<(std::net::TcpStream, Framing)>, Self> {
        let (tcp, session) = self.into_parts()?;
        Ok(tcp.into_std().map(|socket| (socket, Framing::Tls(session))))
    }

    fn from_socket(socket: std::net::TcpStream, framing: Framing) -> io::Result<Self> {
        match framing {
            Framing::Tls(session) => {
                let tcp = tokio::net::TcpStream::from_std(socket)?;
                Ok(TlsStream::from_parts(tcp, session))
            }
            other => Err(resumed_as(&other, "TLS")),
        }
    }
}

impl Stream for WsStream<TlsStream<tokio::net::TcpStream>> {
    const PARKABLE: bool = true;

    fn into_socket(self) -> Result<io::Result<(std::net::TcpStream, Framing)>, Self> {
        let (tls, ws) = self.into_parts();
        match tls.into_parts() {
            Ok((tcp, session)) => Ok(tcp
                .into_std()
                .map(|socket| (socket, Framing::Wss(Box::new(Wss { tls: session, ws }))))),
            Err(tls) => Err(WsStream::new(tls, ws)),
        }
    }

    fn from_socket(socket: std::net::TcpStream, framing: Framing) -> io::Result<Self> {
        match framing {
            Framing::Wss(wss) => {
                let Wss { tls, ws } = *wss;
                let tcp = tokio::net::TcpStream::from_std(socket)?;
                Ok(WsStream::new(TlsStream::from_parts(tcp, tls), ws))
            }
            other => Err(resumed_as(&other, "WebSocket over TLS")),
        }
    }
}

/// A parked socket handed back as a kind of stream it was not parked as (a bug, not input).
fn resumed_as(framing: &Framing, kind: &str) -> io::Error {
    let was = match framing {
        Framing::Raw => "plain TCP",
        Framing::Ws(_) => "WebSocket",
        Framing::Tls(_) => "TLS",
        Framing::Wss(_) => "WebSocket over TLS",
    };
    io::Error::other(format!("a {was} connection resumed as {kind}"))
}

/// In-process connections (see [`crate::listener::InMemory`]).
impl Stream for tokio::io::DuplexStream {}

pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    /// How much to reserve before the next read (adaptive, see `MIN_READ_CHUNK`).
    read_chunk: usize,
    wbuf: BytesMut,
    /// Negotiated after CONNECT; decoding and encoding depend on it.
    pub version: ProtocolVersion,
    /// Largest packet accepted from the peer (whole packet, bytes).
    pub max_packet_size: usize,
    /// Largest packet the peer accepts (its CONNECT's Maximum Packet Size; `None`: only the
    /// protocol's limit).
    peer_max_packet_size: Option<NonZeroU32>,
    /// Bytes read and written, for `$SYS`.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl<S> Connection<S> {
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The peer's Maximum Packet Size, from its CONNECT: every packet queued from now on fits it
    /// or is not written. `None` (or 0, which a CONNECT cannot carry): no bound but the
    /// protocol's.
    pub fn set_peer_max_packet_size(&mut self, max: Option<u32>) {
        self.peer_max_packet_size = max.and_then(NonZeroU32::new);
    }

    pub fn peer_max_packet_size(&self) -> Option<u32> {
        self.peer_max_packet_size.map(NonZeroU32::get)
    }

    /// The bound the encoder is given.
    fn write_limit(&self) -> usize {
        self.peer_max_packet_size
            .map_or(protocol::MAX_PACKET_SIZE, |max| max.get() as usize)
    }

    /// Splits the connection into its stream and what else must survive while it is parked:
    /// only its protocol version, the peer's Maximum Packet Size and any half-read packet or
    /// unsent bytes (usually none, so no memory at all). Byte counters restart from 0.
    pub fn park(self) -> (S, Parked) {
        let buffers = (!self.rbuf.is_empty() || !self.wbuf.is_empty())
            .then(|| Box::new((self.rbuf, self.wbuf)));
        let parked = Parked {
            buffers,
            version: self.version,
            peer_max_packet_size: self.peer_max_packet_size,
        };
        (self.stream, parked)
    }

    /// Undoes [`Connection::park`], over `stream`.
    pub fn unpark(stream: S, parked: Parked, max_packet_size: usize) -> Self {
        let (rbuf, wbuf) = parked.buffers.map(|b| *b).unwrap_or_default();
        Connection {
            stream,
            rbuf,
            read_chunk: MIN_READ_CHUNK,
            wbuf,
            version: parked.version,
            max_packet_size,
            peer_max_packet_size: parked.peer_max_packet_size,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// A parked connection's state besides its socket (see [`Connection::park`]).
#[derive(Debug)]
pub struct Parked {
    buffers: Option<Box<(BytesMut, BytesMut)>>,
    version: ProtocolVersion,
    peer_max_packet_size: Option<NonZeroU32>,
}

impl Parked {
    /// Reads what `socket` already holds (one non-blocking read, at most `MIN_READ_CHUNK`
    /// bytes) into the read buffer, so a connection resumed because its socket became readable
    /// handles its first packets at once, without waiting for tokio's reactor to report the
    /// newly registered socket readable. End of stream and errors are left for the connection's
    /// own read to find again. Returns how many bytes it read.
    /// `framing` takes the bytes out of their frames first (WebSocket).
    pub fn read_ahead(&mut self, socket: &std::net::TcpStream, framing: &mut Framing) -> usize {
        use std::io::Read;
        // Still encrypted: the TLS session keeps it for the resumed stream to decrypt.
        if let Some(tls) = framing.tls_mut() {
            return tls.read_ahead(socket);
        }
        let mut chunk = [0u8; MIN_READ_CHUNK];
        let mut socket = socket;
        match socket.read(&mut chunk) {
            Ok(n) if n > 0 => {
                let kept = framing.decode(&mut chunk[..n]);
                if kept > 0 {
                    let buffers = self.buffers.get_or_insert_with(Box::default);
                    buffers.0.extend_from_slice(&chunk[..kept]);
                }
                n
            }
            _ => 0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, max_packet_size: usize) -> Self {
        Connection {
            stream,
            rbuf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            wbuf: BytesMut::new(),
            version: ProtocolVersion::V311,
            max_packet_size,
            peer_max_packet_size: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Decodes the next packet if it is already buffered; never reads from the stream.
    pub fn try_decode(&mut self) -> Result<Option<Packet>, DecodeError> {
        protocol::decode(&mut self.rbuf, self.version, self.max_packet_size)
    }

    /// Reads the next packet. `Ok(None)`: the peer closed the connection cleanly between packets.
    /// Cancel-safe.
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(packet) =
                protocol::decode(&mut self.rbuf, self.version, self.max_packet_size)?
            {
                return Ok(Some(packet));
            }
            if self.rbuf.capacity() - self.rbuf.len() < 64 {
                self.rbuf.reserve(self.read_chunk);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            self.read_chunk = if n == spare {
                (self.read_chunk * 2).min(MAX_READ_CHUNK)
            } else {
                (self.read_chunk / 2).max(MIN_READ_CHUNK)
            };
            if n == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            self.bytes_in += n as u64;
        }
    }

    /// Appends a packet to the write buffer without writing, within the peer's Maximum Packet
    /// Size (its Reason String and User Properties are left out if that makes it fit). `Err`:
    /// it cannot be sent at all, and nothing was queued.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), EncodeError> {
        let limit = self.write_limit();
        protocol::encode_within(packet, self.version, limit, &mut self.wbuf).map(drop)
    }

    /// Appends a PUBLISH to the write buffer without writing. `Err`: it exceeds the peer's
    /// Maximum Packet Size (or cannot be encoded); nothing was queued, and the caller must
    /// behave as if it had been sent (MQTT-3.1.2-25).
    pub fn queue_publish(
        &mut self,
        publish: &protocol::PublishView<'_>,
    ) -> Result<(), EncodeError> {
        let limit = self.write_limit();
        publish
            .encode(self.version, limit, &mut self.wbuf)
            .map(drop)
    }

    /// Bytes waiting in the write buffer.
    pub fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes everything queued, in as few syscalls as the stream allows.
    ///
    /// Cancel-safe: written bytes leave the buffer as they go, so a `select!` that drops this
    /// half-way (kick, shutdown, keep-alive) and a later flush never send a byte twice.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            let n = self.stream.write_buf(&mut self.wbuf).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.bytes_out += n as u64;
        }
        // Keep a small connection small: don't hold on to a burst's buffer forever.
        if self.wbuf.capacity() > 64 * 1024 {
            self.wbuf = BytesMut::new();
        }
        self.stream.flush().await
    }

    /// Queues and flushes one packet. A packet that cannot be sent within the peer's Maximum
    /// Packet Size is an `InvalidInput` error (wrapping the [`EncodeError`]); what was queued
    /// before it is still flushed.
    pub async fn write_packet(&mut self, packet: &Packet) -> io::Result<()> {
        let queued = self.queue(packet);
        self.flush().await?;
        queued.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Flushes, then shuts the write side down (TLS: close_notify).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await
    }

    /// After [`Connection::shutdown`]: reads and discards what the peer still sends, until it
    /// closes, for at most `time` and [`LINGER_BYTES`]. Closing a socket with unread data resets
    /// the connection, and a reset can destroy the DISCONNECT before the peer reads it and fails
    /// the peer's writes in flight (a PUBREL, a PUBACK): a lingering close lets it read why.
    pub async fn linger(&mut self, time: Duration) {
        let deadline = tokio::time::Instant::now() + time;
        self.rbuf.clear();
        let mut total = 0;
        while total < LINGER_BYTES {
            self.rbuf.clear();
            self.rbuf.reserve(MIN_READ_CHUNK);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

/// At most this much is read (and discarded) by [`Connection::linger`].
pub const LINGER_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::protocol::{Properties, PubAckReason, PubResp, PublishView, QoS, SubAckReason};

    fn ack_with_reason(why: &str) -> Packet {
        Packet::PubAck(PubResp {
            packet_id: 1,
            reason: PubAckReason::UnspecifiedError,
            properties: Some(Box::new(Properties {
                reason_string: Some(why.to_owned()),
                ..Properties::default()
            })),
        })
    }

    #[tokio::test]
    async fn writes_fit_the_peer_maximum_packet_size() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut conn = Connection::new(ours, 1024);
        conn.version = ProtocolVersion::V5;
        conn.set_peer_max_packet_size(Some(16));
        assert_eq!(conn.peer_max_packet_size(), Some(16));

        // The Reason String goes; the PUBACK stays.
        conn.write_packet(&ack_with_reason("far too long for sixteen bytes"))
            .await
            .unwrap();
        let mut got = [0; 5];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x40, 3, 0, 1, 0x80]);

        // A PUBLISH is never cut down: it is refused, and nothing is queued.
        let publish = PublishView {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: 0,
            payload: &[0; 12],
            properties: None,
        };
        assert!(matches!(
            conn.queue_publish(&publish),
            Err(EncodeError::TooLarge { max: 16, .. })
        ));
        assert_eq!(conn.pending(), 0);

        // write_packet reports what it could not send, after flushing what was queued.
        conn.queue(&Packet::PingResp).unwrap();
        let subscribe_ack = Packet::SubAck(crate::protocol::SubAck {
            packet_id: 1,
            return_codes: vec![SubAckReason::GrantedQos0; 20],
            properties: None,
        });
        let e = conn.write_packet(&subscribe_ack).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut ping = [0; 2];
        theirs.read_exact(&mut ping).await.unwrap();
        assert_eq!(ping, [0xD0, 0]);
    }

    #[tokio::test]
    async fn parking_keeps_the_peer_maximum() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut conn = Connection::new(ours, 1024);
        conn.set_peer_max_packet_size(Some(100));
        let (stream, parked) = conn.park();
        let mut conn = Connection::unpark(stream, parked, 1024);
        assert_eq!(conn.peer_max_packet_size(), Some(100));
        let big = Bytes::from(vec![0; 200]);
        let publish = PublishView {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: 0,
            payload: &big,
            properties: None,
        };
        assert!(conn.queue_publish(&publish).is_err());
        conn.set_peer_max_packet_size(None);
        assert!(conn.queue_publish(&publish).is_ok());
    }
}
