//! One accept loop per `[[listener]]`, and the front door of each connection.
//!
//! Each accepted socket takes a permit from the listener's `max_connections` semaphore; without a
//! permit the socket is closed at once and the refusal logged. Accept errors (e.g. out of file
//! descriptors) back off exponentially instead of spinning.
//!
//! Everything that takes a round trip runs in the spawned connection task, never in this loop:
//! the PROXY header ([`crate::proxy`]), then the TLS handshake ([`crate::tls`]), then the
//! WebSocket upgrade ([`crate::transport::ws`]), each under its timeout. Then the connection is
//! served by [`client::serve`], which never knows which transport it has.
//!
//! The per-IP connection slot is taken for the client's real address: at accept, or, behind a
//! PROXY header, once the header has named it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::client::{self, Context, Guard, IpSlot, Peer};
use crate::connection::Stream;
use crate::proxy::ProxyGate;
use crate::stats::Limit;
use crate::tls::Tls;
use crate::transport::ws::{self, WsOptions};

/// A bound listener ready to run.
pub struct Listener {
    pub name: Arc<str>,
    pub tcp: TcpListener,
    pub tls: Option<Tls>,
    pub max_connections: usize,
    pub allow_anonymous: bool,
    /// `Some`: every connection starts with a PROXY header from a trusted proxy.
    pub proxy: Option<Arc<ProxyGate>>,
    /// `Some`: MQTT over WebSocket; the connection starts with an HTTP upgrade.
    pub ws: Option<Arc<WsOptions>>,
}

/// What a connection goes through before MQTT, shared by a listener's connections.
#[derive(Clone)]
struct FrontDoor {
    tls: Option<Tls>,
    proxy: Option<Arc<ProxyGate>>,
    ws: Option<Arc<WsOptions>>,
}

impl Listener {
    /// Accepts until shutdown, spawning one tracked task per connection.
    pub async fn run(self, ctx: Arc<Context>, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let front = FrontDoor {
            tls: self.tls.clone(),
            proxy: self.proxy.clone(),
            ws: self.ws.clone(),
        };
        let plain = front.tls.is_none() && front.proxy.is_none() && front.ws.is_none();
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
            // Behind a proxy the slot waits for the client's address.
            let ip_slot = match front.defers_address() {
                true => None,
                false => match ip_slot(&ctx, &self.name, addr) {
                    Some(slot) => Some(slot),
                    None => {
                        drop(socket);
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let peer = Peer {
                addr,
                listener: self.name.clone(),
                allow_anonymous: self.allow_anonymous,
                cert_identity: None,
            };
            let ctx = ctx.clone();
            let tracked = tracker.token();
            // A plain connection's task is not sized for the handshakes' state.
            match (plain, ip_slot) {
                (true, Some(ip_slot)) => {
                    let guard = Guard {
                        permit,
                        ip_slot,
                        tracked,
                    };
                    tokio::spawn(client::serve(socket, peer, ctx, guard))
                }
                (_, ip_slot) => {
                    let opening = Opening {
                        peer,
                        ctx,
                        permit,
                        ip_slot,
                        tracked,
                    };
                    tokio::spawn(front.clone().open(socket, opening))
                }
            };
        }
    }
}

/// A connection on its way through the front door.
struct Opening {
    peer: Peer,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
    /// `None` until the client's address is known (behind a PROXY header).
    ip_slot: Option<IpSlot>,
    tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Opening {
    /// Takes the per-IP slot for the client's address, if not taken yet; `false`: the address is
    /// over `limits.max_connections_per_ip` (refused and logged).
    fn take_slot(&mut self) -> bool {
        if self.ip_slot.is_some() {
            return true;
        }
        self.ip_slot = ip_slot(&self.ctx, &self.peer.listener, self.peer.addr);
        self.ip_slot.is_some()
    }

    /// The connection's guard; `None`: its address is over `limits.max_connections_per_ip`
    /// (refused and logged).
    fn guard(mut self) -> Option<(Peer, Arc<Context>, Guard)> {
        if !self.take_slot() {
            return None;
        }
        let Opening {
            peer,
            ctx,
            permit,
            ip_slot,
            tracked,
        } = self;
        let guard = Guard {
            permit,
            ip_slot: ip_slot?,
            tracked,
        };
        Some((peer, ctx, guard))
    }
}

impl FrontDoor {
    /// Whether the client's address is known only after the front door: from a PROXY header,
    /// or from X-Forwarded-For on a WebSocket listener with trusted proxies.
    fn defers_address(&self) -> bool {
        self.proxy.is_some() || self.forwarded()
    }

    /// Whether X-Forwarded-For may name the client (a WebSocket listener with trusted proxies).
    fn forwarded(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| !ws.trusted.is_empty())
    }

    /// PROXY header, TLS, WebSocket, as configured; then the MQTT connection.
    async fn open(self, socket: TcpStream, opening: Opening) {
        let shutdown = opening.ctx.shutdown.clone();
        // Shutdown does not wait out the front door's timeouts, or the drain would stall on
        // silent sockets.
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.walk_through(socket, opening) => {}
        }
    }

    async fn walk_through(&self, mut socket: TcpStream, mut opening: Opening) {
        if let Some(proxy) = &self.proxy
            && read_proxy_header(proxy, &mut socket, &mut opening)
                .await
                .is_none()
        {
            return;
        }
        // Known now, unless X-Forwarded-For may still name it: refused before any handshake.
        if !self.forwarded() && !opening.take_slot() {
            return;
        }
        match &self.tls {
            None => self.upgrade(socket, opening).await,
            // Boxed: rustls' handshake state is kilobytes, and a plain ws connection's task
            // should not be sized for it.
            Some(tls) => {
                Box::pin(async move {
                    let Some(stream) =
                        handshake(socket, &mut opening.peer, tls, &opening.ctx).await
                    else {
                        return;
                    };
                    self.upgrade(stream, opening).await
                })
                .await
            }
        }
    }

    /// The WebSocket upgrade if the listener has one, then MQTT. (Boxed: the connection's future
    /// lives on the heap either way, and the front door's stays small.)
    async fn upgrade<S: Stream + AsyncRead + AsyncWrite>(&self, stream: S, mut opening: Opening)
    where
        ws::WsStream<S>: Stream,
    {
        let Some(options) = &self.ws else {
            let Some((peer, ctx, guard)) = opening.guard() else {
                return;
            };
            return Box::pin(client::serve(stream, peer, ctx, guard)).await;
        };
        let timeout = opening.ctx.limits.connect_timeout;
        let upgrade = match ws::read_upgrade(stream, options, &mut opening.peer, timeout).await {
            Ok(upgrade) => upgrade,
            Err(e) => return upgrade_failed(&opening.peer, &opening.ctx, e),
        };
        // The per-IP slot is taken before the 101, for the address X-Forwarded-For named.
        let Some((peer, ctx, guard)) = opening.guard() else {
            let why = "too many connections from this address (limits.max_connections_per_ip)";
            return upgrade.refuse(503, why, timeout).await;
        };
        match upgrade.accept(timeout).await {
            Ok(stream) => Box::pin(client::serve(stream, peer, ctx, guard)).await,
            Err(e) => upgrade_failed(&peer, &ctx, e),
        }
    }
}

/// Logs a WebSocket upgrade that did not happen (an HTTP refusal, a timeout, a closed socket);
/// a timeout counts as `limits.connect_timeout` hit.
fn upgrade_failed(peer: &Peer, ctx: &Context, e: ws::UpgradeError) {
    if matches!(e, ws::UpgradeError::Timeout(_)) {
        ctx.router.stats.limit_hit(Limit::ConnectTimeout);
    }
    info!(peer = %peer.addr, listener = %peer.listener, "WebSocket upgrade failed: {e}; closing");
}

/// The per-IP slot for `addr`; `None`: over `limits.max_connections_per_ip` (refused, logged).
fn ip_slot(ctx: &Arc<Context>, listener: &str, addr: SocketAddr) -> Option<IpSlot> {
    let slot = ctx.ip_slot(addr.ip());
    if slot.is_none() {
        let max = ctx.limits.max_connections_per_ip.unwrap_or_default();
        refused(ctx, Limit::ConnectionsPerIp, listener, addr, max);
    }
    slot
}

/// Reads and checks the PROXY header; the client's address from it goes into `opening`. `None`:
/// refused (logged).
async fn read_proxy_header(
    proxy: &ProxyGate,
    socket: &mut TcpStream,
    opening: &mut Opening,
) -> Option<()> {
    let (peer, ctx) = (&mut opening.peer, &opening.ctx);
    if !proxy.trusts(peer.addr.ip()) {
        warn!(peer = %peer.addr, listener = %peer.listener,
            "PROXY header from an address outside proxy_trusted; closing");
        return None;
    }
    let timeout = ctx.limits.connect_timeout;
    match tokio::time::timeout(timeout, proxy.read_header(socket)).await {
        Err(_) => {
            ctx.router.stats.limit_hit(Limit::ConnectTimeout);
            info!(peer = %peer.addr, listener = %peer.listener,
                "no PROXY header within {timeout:?} (limits.connect_timeout); closing");
            None
        }
        // Closed (or reset) before a byte: a health check that sends no header; routine.
        Ok(Err(crate::proxy::ProxyError::Closed(0))) => {
            debug!(peer = %peer.addr, listener = %peer.listener, "closed before a PROXY header");
            None
        }
        Ok(Err(e)) => {
            info!(peer = %peer.addr, listener = %peer.listener, "{e}; closing");
            None
        }
        Ok(Ok(proxied)) => {
            if let Some(source) = proxied.source {
                debug!(proxy = %peer.addr, listener = %peer.listener, "PROXY header: client {source}");
                peer.addr = source;
            }
            peer.cert_identity = proxied.verified_cn;
            Some(())
        }
    }
}

/// The TLS handshake, under the listener's `tls.handshake_timeout`. `None`: failed (logged).
async fn handshake(
    socket: TcpStream,
    peer: &mut Peer,
    tls: &Tls,
    ctx: &Context,
) -> Option<crate::transport::tls::TlsStream<TcpStream>> {
    match tls.accept(socket).await {
        Ok((stream, identity)) => {
            if identity.is_some() {
                peer.cert_identity = identity;
            }
            Some(stream)
        }
        Err(e @ crate::tls::TlsError::HandshakeTimeout(_)) => {
            ctx.router.stats.limit_hit(Limit::HandshakeTimeout);
            info!(peer = %peer.addr, listener = %peer.listener, "{e} (handshake_timeout); closing");
            None
        }
        Err(e) => {
            debug!(peer = %peer.addr, listener = %peer.listener, "TLS handshake failed: {e}");
            None
        }
    }
}

/// Counts a refused connection; logs the 1st, 2nd, 4th, 8th, ... so a flood cannot flood the log.
fn refused(ctx: &Context, limit: Limit, listener: &str, peer: SocketAddr, max: usize) {
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
