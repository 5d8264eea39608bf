//! One accept loop per `[[listener]]`.
//!
//! Each accepted socket takes a permit from the listener's `max_connections` semaphore; without a
//! permit the socket is closed at once and the refusal logged. Accept errors (e.g. out of file
//! descriptors) back off exponentially instead of spinning. The TLS handshake, if any, runs in the
//! spawned connection task under its own timeout, never in this loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::client::{self, Context, Guard, Peer};
use crate::stats::Limit;
use crate::tls::Tls;

/// A bound listener ready to run.
pub struct Listener {
    pub name: Arc<str>,
    pub tcp: TcpListener,
    pub tls: Option<Tls>,
    pub max_connections: usize,
    pub allow_anonymous: bool,
}

impl Listener {
    /// Accepts until shutdown, spawning one tracked task per connection.
    pub async fn run(self, ctx: Arc<Context>, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                res = self.tcp.accept() => res,
            };
            let (socket, addr) = match accepted {
                Ok(ok) => {
                    backoff = Duration::from_millis(5);
                    ok
                }
                Err(e) => {
                    error!(listener = %self.name, "accept failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refused(
                    &ctx,
                    Limit::MaxConnections,
                    &self.name,
                    addr,
                    self.max_connections,
                );
                drop(socket);
                continue;
            };
            let Some(ip_slot) = ctx.ip_slot(addr.ip()) else {
                let max = ctx.limits.max_connections_per_ip.unwrap_or_default();
                refused(&ctx, Limit::ConnectionsPerIp, &self.name, addr, max);
                drop(socket);
                continue;
            };
            let _ = socket.set_nodelay(true);
            let peer = Peer {
                addr,
                listener: self.name.clone(),
                allow_anonymous: self.allow_anonymous,
                cert_identity: None,
            };
            let ctx = ctx.clone();
            let guard = Guard {
                permit,
                ip_slot,
                tracked: tracker.token(),
            };
            // Two task types, so a plain connection's task is not sized for rustls' state.
            match self.tls.clone() {
                None => tokio::spawn(client::serve(socket, peer, ctx, guard)),
                Some(tls) => tokio::spawn(serve_tls(socket, peer, tls, ctx, guard)),
            };
        }
    }
}

async fn serve_tls(socket: TcpStream, mut peer: Peer, tls: Tls, ctx: Arc<Context>, guard: Guard) {
    // Shutdown does not wait out the handshake timeout, or the drain would stall on silent sockets.
    let accepted = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        res = tls.accept(socket) => res,
    };
    match accepted {
        Ok((stream, identity)) => {
            peer.cert_identity = identity;
            client::serve(stream, peer, ctx, guard).await;
        }
        Err(e @ crate::tls::TlsError::HandshakeTimeout(_)) => {
            ctx.router.stats.limit_hit(Limit::HandshakeTimeout);
            info!(peer = %peer.addr, listener = %peer.listener, "{e} (handshake_timeout); closing");
        }
        Err(e) => {
            debug!(peer = %peer.addr, listener = %peer.listener, "TLS handshake failed: {e}")
        }
    }
}

/// Counts a refused connection; logs the 1st, 2nd, 4th, 8th, ... so a flood cannot flood the log.
fn refused(ctx: &Context, limit: Limit, listener: &str, peer: std::net::SocketAddr, max: usize) {
    ctx.router.stats.limit_hit(limit);
    let hits = ctx.router.stats.limit_hits(limit);
    if hits.is_power_of_two() {
        warn!(listener = %listener, peer = %peer,
            "limits.{} ({max}) reached; refusing connection ({hits} refused so far)", limit.name());
    }
}

/// A listener without a socket: each [`InMemory::connect`] is a connection over an in-process
/// pipe, served by the same connection code as TCP. For tests on paused tokio time (nothing
/// leaves the runtime, so time only moves when everything waits) and for embedding.
#[derive(Debug, Clone)]
pub struct InMemory {
    ctx: Arc<Context>,
    name: Arc<str>,
    allow_anonymous: bool,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl InMemory {
    pub fn new(ctx: Arc<Context>, allow_anonymous: bool) -> Self {
        InMemory {
            ctx,
            name: "in-memory".into(),
            allow_anonymous,
            permits: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            tracker: TaskTracker::new(),
        }
    }

    /// A new connection: the client's end of the pipe, as from 127.0.0.1. None: refused by
    /// `limits.max_connections_per_ip`.
    pub fn connect(&self) -> Option<tokio::io::DuplexStream> {
        self.connect_task().map(|(client, _)| client)
    }

    /// As [`InMemory::connect`], with the connection's task (it ends when the connection does).
    pub fn connect_task(&self) -> Option<(tokio::io::DuplexStream, tokio::task::JoinHandle<()>)> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let ip_slot = self.ctx.ip_slot(addr.ip())?;
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = Peer {
            addr,
            listener: self.name.clone(),
            allow_anonymous: self.allow_anonymous,
            cert_identity: None,
        };
        let guard = Guard {
            permit,
            ip_slot,
            tracked: self.tracker.token(),
        };
        let task = tokio::spawn(client::serve(server, peer, self.ctx.clone(), guard));
        Some((client, task))
    }
}
