//! Bounds on what an HTTP client can hold without sending anything useful: at most
//! [`MAX_CONNECTIONS`] connections at once (the next waits in the kernel's accept queue), and a
//! connection on which nothing moves for [`IDLE_TIMEOUT`] is closed. Without these a client
//! could open sockets and trickle a request header forever (slowloris): axum's `serve` sets no
//! header timeout of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Open HTTP connections at once.
pub const MAX_CONNECTIONS: usize = 512;

/// A connection with no byte read or written for this long is closed (a keep-alive connection
/// left idle too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener whose connections are counted and time out when idle.
pub struct Guarded<L> {
    inner: L,
    slots: Arc<Semaphore>,
}

impl<L> Guarded<L> {
    /// `slots`: from [`slots`], shared (so others can count open connections).
    pub fn new(inner: L, slots: Arc<Semaphore>) -> Self {
        Guarded { inner, slots }
    }
}

/// The connection slots of a listener: [`MAX_CONNECTIONS`].
pub fn slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_CONNECTIONS))
}

/// HTTP connections open now on a listener with these `slots`.
pub fn open_connections(slots: &Semaphore) -> usize {
    MAX_CONNECTIONS.saturating_sub(slots.available_permits())
}

impl<L> axum::serve::Listener for Guarded<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = Idle<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // Never closed; should it be, accept nothing more.
            Err(_) => std::future::pending().await,
        };
        let (io, addr) = self.inner.accept().await;
        (Idle::new(io, permit), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A stream that fails once nothing has moved on it for [`IDLE_TIMEOUT`], holding its
/// connection slot until dropped.
pub struct Idle<S> {
    io: S,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Idle<S> {
    fn new(io: S, slot: OwnedSemaphorePermit) -> Self {
        Idle {
            io,
            deadline: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _slot: slot,
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
    }

    /// Pending I/O: an error once the deadline has passed.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP connection idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.expired(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_and_an_active_one_does_not() {
        let slots = Arc::new(Semaphore::new(1));
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut idle = Idle::new(ours, slots.clone().try_acquire_owned().unwrap());
        assert!(
            slots.clone().try_acquire_owned().is_err(),
            "the slot is held"
        );
        let mut buf = [0u8; 4];
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        theirs.write_all(b"ab").await.unwrap();
        assert_eq!(idle.read(&mut buf).await.unwrap(), 2);
        // The byte reset the clock: half the timeout later it still waits.
        let started = Instant::now();
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE_TIMEOUT);
        drop(idle);
        assert!(slots.try_acquire_owned().is_ok(), "the slot is back");
    }
}
