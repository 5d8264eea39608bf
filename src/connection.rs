//! `Connection<S>`: framed MQTT over any byte stream (TCP, TLS, later WebSocket).
//!
//! The read buffer lives in `self`, so [`Connection::read_packet`] is cancel-safe: when a `select!`
//! drops it half-way, no bytes are lost and the next call resumes. Writes are batched: callers
//! [`Connection::queue`] any number of packets and [`Connection::flush`] once, one syscall for many
//! packets.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{self, DecodeError, Packet, ProtocolVersion};

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

/// A stream a connection can be served over. Plain TCP can also be parked while idle (see
/// [`crate::park`]); others cannot.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Whether [`Stream::into_socket`] can succeed.
    const PARKABLE: bool = false;

    /// The socket, out of tokio's reactor, for parking; `Err`: not parkable, given back.
    fn into_socket(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Err(self)
    }

    /// Back from [`Stream::into_socket`].
    fn from_socket(socket: std::net::TcpStream) -> io::Result<Self> {
        drop(socket);
        Err(io::Error::other("this kind of stream cannot be parked"))
    }
}

impl Stream for tokio::net::TcpStream {
    const PARKABLE: bool = true;

    fn into_socket(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }

    fn from_socket(socket: std::net::TcpStream) -> io::Result<Self> {
        tokio::net::TcpStream::from_std(socket)
    }
}

impl Stream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

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
    /// Bytes read and written, for `$SYS`.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl<S> Connection<S> {
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Splits the connection into its stream and what else must survive while it is parked:
    /// only its protocol version and any half-read packet or unsent bytes (usually none, so
    /// no memory at all). Byte counters restart from 0.
    pub fn park(self) -> (S, Parked) {
        let buffers = (!self.rbuf.is_empty() || !self.wbuf.is_empty())
            .then(|| Box::new((self.rbuf, self.wbuf)));
        let parked = Parked {
            buffers,
            version: self.version,
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

    /// Appends a packet to the write buffer without writing.
    pub fn queue(&mut self, packet: &Packet) {
        protocol::encode(packet, self.version, &mut self.wbuf);
    }

    /// Appends a PUBLISH to the write buffer without writing.
    pub fn queue_publish(&mut self, publish: &protocol::PublishView<'_>) {
        publish.encode(self.version, &mut self.wbuf);
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

    /// Queues and flushes one packet.
    pub async fn write_packet(&mut self, packet: &Packet) -> io::Result<()> {
        self.queue(packet);
        self.flush().await
    }

    /// Flushes, then shuts the write side down (TLS: close_notify).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await
    }
}
