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
