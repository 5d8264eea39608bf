//! HTTPS: the `[http] tls` certificate (the broker's shared, reloadable rustls configuration,
//! see [`crate::tls`]), with each handshake in a task of its own under `handshake_timeout`, so a
//! client that never finishes one holds nothing but its own task and a handshake slot.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::transport::tls::TlsStream;

/// Handshakes under way at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;

/// Hands finished handshakes to axum (see [`axum::serve::Listener`]).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `shutdown`; each connection's handshake runs in its own task.
    pub fn start(tcp: TcpListener, tls: crate::tls::Tls, shutdown: CancellationToken) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0; 4], 0)));
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (socket, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("HTTP API: accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                // The configuration in force when it starts (a reload, SIGHUP, swaps
                // certificates), under handshake_timeout.
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tls.accept(socket).await {
                        Ok((stream, _)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => debug!(%peer, "HTTP API: {e}"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // Shut down: nothing more comes; the graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
