//! WebSocket frames as a byte stream, without a buffer of our own.
//!
//! MQTT over WebSocket is a byte stream carried in binary frames (MQTT 5.0 section 6): a packet may
//! be split over several frames, a frame may hold several packets, and a frame may be empty. So the
//! frames are taken apart where the bytes land, in the caller's read buffer (the connection's):
//! headers are cut out, payloads unmasked and moved together, and what is left is the MQTT bytes.
//! The only per-connection state is a few dozen bytes ([`WsState`]): a header split across reads,
//! where in the current frame the reader is, and the control frames (pong, close) waiting to be
//! sent. That state is all a parked WebSocket connection keeps besides its socket.
//!
//! Writes: each `poll_write` becomes one binary frame (a connection flushes many packets in one
//! write, so usually one frame per flush), the header and payload in one vectored write.

use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The longest frame header (RFC 6455 section 5.2): 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;
/// The longest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL: u64 = 125;

/// Close status codes (RFC 6455 section 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
}

/// Why the read side ended.
#[derive(Debug)]
pub(super) enum ReadEnd {
    /// The peer sent a Close frame (answered): end of stream.
    Closed,
    /// The peer broke the protocol (a Close frame with the status is queued): an error.
    Failed(Box<str>),
}

/// What the frame being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Control(Control),
}

/// A WebSocket connection's framing state (everything but the socket). See the module doc.
#[derive(Debug)]
pub struct WsState {
    /// A frame header split across reads.
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes of the current frame still to come (0: between frames).
    remaining: u64,
    mask: [u8; 4],
    /// Where in the mask the next payload byte is.
    mask_pos: u8,
    kind: Kind,
    /// A data message is open: its last frame had FIN clear.
    fragmented: bool,
    /// The payload of the control frame being read (at most 125 bytes; usually empty).
    control: Vec<u8>,
    pub(super) ended: Option<ReadEnd>,
    /// Bytes that arrived right behind the upgrade request, read before the socket.
    early: Vec<u8>,
    /// The largest data frame accepted (`limits.max_packet_size`).
    max_frame: usize,
    /// The header of the frame being written, and how much of it is out.
    out_header: [u8; 10],
    out_header_len: u8,
    out_header_sent: u8,
    /// Payload bytes of the frame being written still to go.
    out_left: usize,
    /// Control frames to send between data frames (pong, close).
    pub(super) control_out: Vec<u8>,
    /// A Close frame is queued or sent: nothing more is written.
    close_queued: bool,
}

impl WsState {
    pub fn new(max_frame: usize, early: Vec<u8>) -> Self {
        WsState {
            header: [0; MAX_HEADER],
            header_len: 0,
            remaining: 0,
            mask: [0; 4],
            mask_pos: 0,
            kind: Kind::Data,
            fragmented: false,
            control: Vec::new(),
            ended: None,
            early,
            max_frame,
            out_header: [0; 10],
            out_header_len: 0,
            out_header_sent: 0,
            out_left: 0,
            control_out: Vec::new(),
            close_queued: false,
        }
    }

    /// Takes the frames apart in place: `data` is raw bytes from the socket; on return its first
    /// `n` bytes are the MQTT bytes they carried. Control frames are acted on (a Ping queues its
    /// Pong, a Close its answer). A protocol error queues a Close frame with its status and ends
    /// the read side: the bytes before it are returned, the error on the next read.
    pub fn decode(&mut self, data: &mut [u8]) -> usize {
        let (mut r, mut w) = (0, 0);
        while r < data.len() && self.ended.is_none() {
            if self.remaining == 0 {
                r += self.read_header(&data[r..]);
                continue;
            }
            let take = (data.len() - r).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let chunk = &mut data[r..r + take];
            unmask(chunk, self.mask, self.mask_pos as usize);
            match self.kind {
                Kind::Data => {
                    data.copy_within(r..r + take, w);
                    w += take;
                }
                Kind::Control(_) => self.control.extend_from_slice(chunk),
            }
            r += take;
            self.remaining -= take as u64;
            self.mask_pos = ((self.mask_pos as usize + take) % 4) as u8;
            if self.remaining == 0 {
                self.finish_frame();
            }
        }
        w
    }

    /// Whether the read side has ended (Close frame, or a protocol error).
    pub fn ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Control frames waiting to be written (Pong, Close).
    pub fn pending_control(&self) -> &[u8] {
        &self.control_out
    }

    /// Whether the read side stopped in the middle of a frame or message.
    pub(super) fn mid_frame(&self) -> bool {
        self.remaining > 0 || self.header_len > 0 || self.fragmented
    }

    /// Consumes header bytes from `data`; returns how many.
    fn read_header(&mut self, data: &[u8]) -> usize {
        let had = self.header_len as usize;
        let take = (MAX_HEADER - had).min(data.len());
        self.header[had..had + take].copy_from_slice(&data[..take]);
        let mut cursor = Cursor::new(&self.header[..had + take]);
        match FrameHeader::parse(&mut cursor) {
            Ok(None) => {
                self.header_len = (had + take) as u8;
                take
            }
            Ok(Some((header, len))) => {
                self.header_len = 0;
                let used = cursor.position() as usize - had;
                self.start_frame(&header, len);
                used
            }
            Err(e) => {
                self.fail(close::PROTOCOL_ERROR, format!("bad frame header: {e}"));
                take
            }
        }
    }

    fn start_frame(&mut self, header: &FrameHeader, len: u64) {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return self.fail(
                close::PROTOCOL_ERROR,
                "a frame with reserved bits set (no extension was negotiated)".into(),
            );
        }
        let Some(mask) = header.mask else {
            return self.fail(
                close::PROTOCOL_ERROR,
                "an unmasked frame from the client".into(),
            );
        };
        self.kind = match header.opcode {
            OpCode::Data(Data::Binary) if self.fragmented => {
                let why = "a new message inside a fragmented one".into();
                return self.fail(close::PROTOCOL_ERROR, why);
            }
            OpCode::Data(Data::Continue) if !self.fragmented => {
                let why = "a continuation frame outside a message".into();
                return self.fail(close::PROTOCOL_ERROR, why);
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                self.fragmented = !header.is_final;
                Kind::Data
            }
            OpCode::Data(Data::Text) => {
                let why = "a text frame (MQTT travels in binary frames)".into();
                return self.fail(close::UNSUPPORTED_DATA, why);
            }
            OpCode::Control(c @ (Control::Close | Control::Ping | Control::Pong)) => {
                if !header.is_final || len > MAX_CONTROL {
                    let why = "a fragmented or oversized control frame".into();
                    return self.fail(close::PROTOCOL_ERROR, why);
                }
                Kind::Control(c)
            }
            OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) => {
                return self.fail(close::PROTOCOL_ERROR, format!("reserved opcode {op}"));
            }
        };
        if self.kind == Kind::Data && len > self.max_frame as u64 {
            let why = format!(
                "a frame of {len} bytes, over limits.max_packet_size ({})",
                self.max_frame
            );
            return self.fail(close::TOO_BIG, why);
        }
        self.mask = mask;
        self.mask_pos = 0;
        self.remaining = len;
        if len == 0 {
            self.finish_frame();
        }
    }

    fn finish_frame(&mut self) {
        let Kind::Control(control) = self.kind else {
            return;
        };
        let payload = std::mem::take(&mut self.control);
        match control {
            Control::Ping => self.queue_control(0x8A, &payload),
            Control::Close if payload.len() == 1 => {
                self.fail(
                    close::PROTOCOL_ERROR,
                    "a Close frame with a 1-byte body".into(),
                );
            }
            Control::Close => {
                if !self.close_queued {
                    // A normal closure whatever the peer's status: echoing it could echo one
                    // that must not be sent (1005, 1006, or no valid code at all).
                    self.queue_control(0x88, &close::NORMAL.to_be_bytes());
                    self.close_queued = true;
                }
                self.ended = Some(ReadEnd::Closed);
            }
            _ => {}
        }
        self.kind = Kind::Data;
    }

    /// Ends the read side with a protocol error, answered with a Close frame carrying `code`.
    fn fail(&mut self, code: u16, why: String) {
        if !self.close_queued {
            self.queue_control(0x88, &code.to_be_bytes());
            self.close_queued = true;
        }
        self.ended = Some(ReadEnd::Failed(why.into()));
    }

    /// Queues a control frame (`first`: FIN + opcode; server frames are not masked).
    fn queue_control(&mut self, first: u8, payload: &[u8]) {
        self.control_out.push(first);
        self.control_out.push(payload.len() as u8);
        self.control_out.extend_from_slice(payload);
    }

    /// Starts an outgoing binary frame of `len` payload bytes.
    fn begin_frame(&mut self, len: usize) {
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Binary),
            mask: None,
            ..FrameHeader::default()
        };
        let mut out = Cursor::new(&mut self.out_header[..]);
        // Infallible: 10 bytes hold any unmasked header.
        let _ = header.format(len as u64, &mut out);
        self.out_header_len = out.position() as u8;
        self.out_header_sent = 0;
        self.out_left = len;
    }

    fn between_frames(&self) -> bool {
        self.out_left == 0 && self.out_header_sent == self.out_header_len
    }
}

/// XORs `buf` with `mask`, starting at mask byte `pos`.
fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) {
    let m = [
        mask[pos % 4],
        mask[(pos + 1) % 4],
        mask[(pos + 2) % 4],
        mask[(pos + 3) % 4],
    ];
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(m) {
            *b ^= k;
        }
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// MQTT bytes over WebSocket frames, over any stream (TCP, TLS).
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
    /// Boxed from the start: parking keeps this same allocation (see `Framing::Ws`).
    state: Box<WsState>,
}

impl<S> WsStream<S> {
    pub fn new(inner: S, state: Box<WsState>) -> Self {
        WsStream { inner, state }
    }

    pub fn into_parts(self) -> (S, Box<WsState>) {
        (self.inner, self.state)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> WsStream<S> {
    /// Sends queued control frames, between data frames only.
    fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.state.control_out.is_empty() && self.state.between_frames() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.state.control_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.state.control_out.drain(..n);
        }
        if self.state.control_out.is_empty() && self.state.control_out.capacity() > 0 {
            self.state.control_out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A Pong or Close answer goes out as soon as it can; a failed write shows up on reads
        // and writes anyway.
        let _ = this.poll_control(cx);
        loop {
            match &this.state.ended {
                Some(ReadEnd::Closed) => return Poll::Ready(Ok(())),
                Some(ReadEnd::Failed(why)) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, why.to_string());
                    return Poll::Ready(Err(e));
                }
                None => {}
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            if this.state.early.is_empty() {
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            } else {
                let n = this.state.early.len().min(buf.remaining());
                buf.put_slice(&this.state.early[..n]);
                this.state.early.drain(..n);
                if this.state.early.is_empty() {
                    this.state.early = Vec::new();
                }
            }
            if buf.filled().len() == start {
                if this.state.mid_frame() {
                    let why = "connection closed in the middle of a WebSocket frame";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
                }
                return Poll::Ready(Ok(()));
            }
            let kept = this.state.decode(&mut buf.filled_mut()[start..]);
            buf.set_filled(start + kept);
            let _ = this.poll_control(cx);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_control(cx))?;
        if this.state.close_queued && this.state.between_frames() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A frame in progress continues with `buf` (writers resubmit what was not written).
        if this.state.between_frames() {
            this.state.begin_frame(buf.len());
        }
        loop {
            let payload = &buf[..buf.len().min(this.state.out_left)];
            let (sent, len) = (
                this.state.out_header_sent as usize,
                this.state.out_header_len as usize,
            );
            if sent == len {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, payload))?;
                this.state.out_left -= n;
                return Poll::Ready(Ok(n));
            }
            let header = &this.state.out_header[sent..len];
            let slices = [IoSlice::new(header), IoSlice::new(payload)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let of_header = n.min(header.len());
            this.state.out_header_sent += of_header as u8;
            let of_payload = n - of_header;
            if of_payload > 0 {
                this.state.out_left -= of_payload;
                return Poll::Ready(Ok(of_payload));
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_control(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// A Close frame (1000, normal closure) unless one went already, then the stream's own
    /// shutdown (TLS: close_notify).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.state.close_queued && this.state.between_frames() {
            this.state.queue_control(0x88, &close::NORMAL.to_be_bytes());
            this.state.close_queued = true;
        }
        ready!(this.poll_control(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
