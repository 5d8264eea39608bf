//! MQTT over TLS: our own stream over rustls' *unbuffered* server connection, so an idle TLS
//! connection can park like a plain one.
//!
//! rustls' usual `ServerConnection` (and tokio-rustls' `TlsStream` over it) keeps buffers of its
//! own for the life of the connection: a 4 KiB record buffer that is never given back, plus
//! plaintext queues. And tokio-rustls cannot rebuild a stream from a socket and a session, so a
//! connection could never leave its task. Here the session ([`TlsSession`]: keys, sequence
//! numbers, the handshake's outcome, and the bytes of a record still arriving) is one box that
//! owns no buffer while idle, and the buffers that do the work live in the stream and are dropped
//! when it parks ([`TlsStream::into_parts`], [`TlsStream::from_parts`]).
//!
//! The stream drives rustls' state machine ([`rustls::unbuffered`]) itself:
//! - records read from the socket collect in the session's `incoming` buffer, whole records are
//!   decrypted, and their plaintext goes straight into the caller's buffer (what does not fit waits
//!   in `plain`);
//! - writes are encrypted into `out` (at most [`MAX_WRITE`] bytes of plaintext at a time) and
//!   written out on flush; what rustls sends of its own accord (session tickets, a TLS 1.3
//!   KeyUpdate answer, alerts) goes into the same queue, so the order on the wire is kept;
//! - a fatal error queues its alert, which is sent if the socket takes it at once;
//! - shutdown sends close_notify.
//!
//! The handshake ([`TlsStream::accept`]) runs on the same machinery before the stream is handed
//! out; it ends when rustls says it is no longer handshaking (for TLS 1.3 that is after the
//! client's Finished, so a client certificate has been verified).
//!
//! End of stream without close_notify reads as a plain end of stream: MQTT frames its own
//! packets, so a truncation is seen by the packet decoder, and most MQTT clients just close the
//! socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::keys::{KeyCache, with_cache};
use buf::Buf;

/// The most plaintext encrypted per `poll_write`, and how much encrypted output may wait before a
/// write first flushes: four full records.
pub const MAX_WRITE: usize = 4 * 16 * 1024;

/// Reads start at this size, grow to hold a whole record (up to [`MAX_RECORD`]), and double (up
/// to [`MAX_READ`]) while they keep filling what was asked, so a busy connection makes few reads.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// A TLS record on the wire at its largest: header, 16 KiB of plaintext and TLS 1.2's allowance of
/// 2 KiB expansion. rustls refuses longer ones.
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Encryption overhead per record, a little over the worst case (TLS 1.2 AES-GCM: header 5,
/// explicit nonce 8, tag 16). A guess that is too small only costs a retry.
const RECORD_OVERHEAD: usize = 32;

/// What a parked TLS connection keeps: the session, and the bytes of a record still arriving.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// The record keys' expanded contexts while active; cleared when parked.
    keys: Arc<KeyCache>,
    /// TLS bytes read and not yet processed (a partial record, or records not yet decrypted).
    incoming: Buf,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("incoming", &self.incoming.len())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// Reads what a parked `socket` already holds (one non-blocking read) into the session, for
    /// the resumed stream to decrypt; returns how many bytes. End of stream and errors are left
    /// for the stream's own read to find again.
    pub fn read_ahead(&mut self, socket: &std::net::TcpStream) -> usize {
        use std::io::Read;
        let mut socket = socket;
        let spare = self.incoming.spare(MIN_READ / 8);
        match socket.read(spare) {
            Ok(n) => {
                self.incoming.commit(n);
                n
            }
            Err(_) => 0,
        }
    }
}

/// A server-side TLS stream over `IO` (a TCP socket, or a pipe in tests).
pub struct TlsStream<IO> {
    io: IO,
    session: Box<TlsSession>,
    /// Encrypted bytes waiting to be written, in order.
    out: Buf,
    /// Decrypted bytes the reader has not taken yet.
    plain: Buf,
    /// close_notify (or end of stream) from the peer: reads return end of stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_sent: bool,
    /// rustls reported a fatal error: it must not be driven again (it would read the same input
    /// again, and panics rather than send a second fatal alert).
    failed: bool,
    /// The next read's size (see [`MIN_READ`]).
    read_size: usize,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("session", &self.session)
            .field("out", &self.out.len())
            .field("plain", &self.plain.len())
            .finish_non_exhaustive()
    }
}

/// What [`TlsStream::advance`] is asked to do once rustls may send application data.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Nothing: process what arrived.
    Read,
    /// Encrypt these bytes.
    Encrypt(&'a [u8]),
    /// Queue close_notify.
    CloseNotify,
}

/// Where [`TlsStream::advance`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Everything that arrived is processed; more input is needed to go on.
    Input,
    /// What was wanted is done (for `Encrypt`: how many bytes were taken).
    Done(usize),
    /// Both sides have sent close_notify.
    Closed,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs the server handshake on `io` with `config` (no timeout here: the caller's).
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream::from_parts(
            io,
            Box::new(TlsSession {
                conn,
                keys: Arc::default(),
                incoming: Buf::default(),
            }),
        );
        loop {
            let next = stream.advance(&mut None, Want::Read);
            // Our flight, or the alert of a failure (best effort then).
            let flushed = std::future::poll_fn(|cx| stream.poll_flush_out(cx)).await;
            let next = next?;
            // Done: a failed write (of session tickets) is the stream's first write's to report,
            // so a client that sent its packets and closed at once is still read.
            if !stream.session.conn.is_handshaking() {
                return Ok(stream);
            }
            flushed?;
            match next {
                Next::Input => {
                    if std::future::poll_fn(|cx| stream.poll_fill(cx)).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed during the TLS handshake",
                        ));
                    }
                }
                Next::Closed | Next::Done(_) => {
                    return Err(io::Error::other("TLS closed during the handshake"));
                }
            }
        }
    }
}

impl<IO> TlsStream<IO> {
    /// A stream again, from [`TlsStream::into_parts`].
    pub fn from_parts(io: IO, session: Box<TlsSession>) -> TlsStream<IO> {
        TlsStream {
            io,
            session,
            out: Buf::default(),
            plain: Buf::default(),
            peer_closed: false,
            close_sent: false,
            failed: false,
            read_size: MIN_READ,
        }
    }

    /// The socket and the session, for parking; the stream's buffers are dropped. `Err`: not now
    /// (output not yet written, plaintext not yet read, or closing), given back.
    pub fn into_parts(self) -> Result<(IO, Box<TlsSession>), Self> {
        if !self.out.is_empty()
            || !self.plain.is_empty()
            || self.peer_closed
            || self.close_sent
            || self.failed
        {
            return Err(self);
        }
        let TlsStream {
            io, mut session, ..
        } = self;
        session.incoming.release();
        session.keys.clear();
        Ok((io, session))
    }

    /// The transport and the TLS session (as tokio-rustls' `get_ref`).
    pub fn get_ref(&self) -> (&IO, &UnbufferedServerConnection) {
        (&self.io, &self.session.conn)
    }

    /// Moves pending plaintext into `buf`; whether any moved.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = self.plain.pending();
        let n = pending.len().min(buf.remaining());
        if n == 0 {
            return false;
        }
        buf.put_slice(&pending[..n]);
        self.plain.consume(n);
        self.plain.trim(MAX_WRITE);
        true
    }

    /// Drives rustls over what has arrived until it needs more input, or has done `want`.
    /// Decrypted data goes into `sink` (the reader's buffer) while it has room, then `plain`.
    /// On a fatal error the alert rustls queued is moved into `out` first.
    fn advance(&mut self, sink: &mut Option<&mut ReadBuf<'_>>, want: Want<'_>) -> io::Result<Next> {
        let keys = Arc::clone(&self.session.keys);
        with_cache(&keys, || self.advance_inner(sink, want))
    }

    fn advance_inner(
        &mut self,
        sink: &mut Option<&mut ReadBuf<'_>>,
        want: Want<'_>,
    ) -> io::Result<Next> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection failed",
            ));
        }
        let TlsStream {
            session,
            out,
            plain,
            peer_closed,
            failed,
            ..
        } = self;
        let TlsSession { conn, incoming, .. } = &mut **session;
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming.pending());
            let mut extra_discard = 0;
            let next = match state {
                Err(e) => {
                    *failed = true;
                    incoming.consume(discard);
                    queue_alert(conn, incoming, out);
                    return Err(tls_error(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(|e| {
                            *failed = true;
                            tls_error(e)
                        })?;
                        extra_discard += record.discard;
                        let mut payload = record.payload;
                        if plain.is_empty()
                            && let Some(buf) = sink
                        {
                            let n = payload.len().min(buf.remaining());
                            buf.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        plain.push(payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    write_out(out, 1024, |room| encode.encode(room))
                        .map_err(|e| fail(failed, e.to_string()))?;
                    None
                }
                // Queued in `out` in order; it leaves with the next flush.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Next::Input),
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Next::Closed),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => Some(match want {
                    Want::Read => Next::Input,
                    Want::Encrypt(data) => {
                        let records = data.len().div_ceil(16 * 1024).max(1);
                        let need = data.len() + records * RECORD_OVERHEAD;
                        write_out(out, need, |room| traffic.encrypt(data, room))
                            .map_err(|e| fail(failed, e.to_string()))?;
                        Next::Done(data.len())
                    }
                    Want::CloseNotify => {
                        write_out(out, 64, |room| traffic.queue_close_notify(room))
                            .map_err(|e| fail(failed, e.to_string()))?;
                        Next::Done(0)
                    }
                }),
                // Early data is never enabled; nothing else is known.
                Ok(_) => return Err(fail(failed, "unexpected TLS state".into())),
            };
            incoming.consume(discard + extra_discard);
            if let Some(next) = next {
                return Ok(next);
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Writes `out` to the socket until it is empty.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.out.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.consume(n);
        }
        self.out.trim(2 * MAX_WRITE);
        Poll::Ready(Ok(()))
    }

    /// Reads more TLS bytes into the session's buffer: room for at least the rest of the record
    /// being read, and more while reads keep filling it; 0: end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let incoming = &mut self.session.incoming;
        let want = incoming
            .record_remaining()
            .min(MAX_RECORD)
            .max(self.read_size);
        let spare = incoming.spare(want);
        let asked = spare.len().min(MAX_READ.max(want));
        let mut buf = ReadBuf::new(&mut spare[..asked]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        incoming.commit(n);
        self.read_size = if n == asked {
            (self.read_size * 2).min(MAX_READ)
        } else {
            MIN_READ
        };
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let next = this.advance(&mut Some(buf), Want::Read);
            // Whatever rustls queued (session tickets, a KeyUpdate answer, an alert) goes out
            // now if the socket takes it; otherwise with the next read or flush.
            let flushed = if this.out.is_empty() {
                Poll::Ready(Ok(()))
            } else {
                this.poll_flush_out(cx)
            };
            let blocked = flushed.is_pending();
            if let Poll::Ready(Err(e)) = flushed
                && next.is_ok()
            {
                return Poll::Ready(Err(e));
            }
            if next? == Next::Closed || buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if !this.plain.is_empty() || this.peer_closed {
                continue;
            }
            // A peer that makes rustls answer (key updates) but does not read its answers is not
            // read either until it does: what waits for it stays bounded.
            if blocked && this.out.len() >= MAX_WRITE {
                return Poll::Pending;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                this.peer_closed = true;
                if !this.session.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in the middle of a TLS record",
                    )));
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() >= MAX_WRITE {
            ready!(this.poll_flush_out(cx))?;
        }
        let chunk = &buf[..buf.len().min(MAX_WRITE)];
        match this.advance(&mut None, Want::Encrypt(chunk))? {
            Next::Done(n) => Poll::Ready(Ok(n)),
            Next::Input => Poll::Ready(Err(io::Error::other("TLS handshake not complete"))),
            Next::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            this.advance(&mut None, Want::CloseNotify)?;
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Moves the alert rustls queued on a fatal error into `out` (rustls hands queued messages out
/// before it reads anything more). `incoming` must be the buffer the failing call was given, less
/// its discard: rustls' handshake reassembly may still point into it.
///
/// Only while rustls has messages queued: a call with none would read the failed input again, and
/// rustls asserts it never sends a second fatal alert.
fn queue_alert(conn: &mut UnbufferedServerConnection, incoming: &mut Buf, out: &mut Buf) {
    for _ in 0..4 {
        if !conn.wants_write() {
            return;
        }
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming.pending());
        let more = match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                write_out(out, 256, |room| encode.encode(room)).is_ok()
            }
            _ => false,
        };
        incoming.consume(discard);
        if !more {
            return;
        }
    }
}

/// rustls' two "write into this buffer" errors: the room it wanted, if that was all.
trait Room {
    fn wanted(&self) -> Option<usize>;
}

impl Room for EncodeError {
    fn wanted(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

impl Room for EncryptError {
    fn wanted(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

/// Appends what `write` puts into the room it is given to `out`: room for `need` bytes first,
/// then as much as rustls says it wants.
fn write_out<E: Room>(
    out: &mut Buf,
    mut need: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), E> {
    loop {
        match write(out.spare(need)) {
            Ok(n) => {
                out.commit(n);
                return Ok(());
            }
            Err(e) => need = e.wanted().ok_or(e)?,
        }
    }
}

/// Marks the stream failed (see `TlsStream::failed`).
fn fail(failed: &mut bool, why: String) -> io::Error {
    *failed = true;
    io::Error::other(why)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

mod buf;
#[cfg(test)]
mod tests;
