//! The CoAP gateway (RFC 7252 over UDP) for constrained devices, with EMQX's URIs so existing
//! devices and tools work unchanged.
//!
//! ```text
//!  socket.rs    the task: UDP socket (the DTLS seam), engine, wake-ups
//!      v
//!  engine.rs    datagram -> parse, rate limit, duplicates, Block1, then:
//!  identity.rs  credentials (c/u/p, the broker's Auth) or a connection-mode token
//!  routes.rs    /ps/{topic} publish / observe / retained GET, /mqtt/connection,
//!      |        /.well-known/core; Block2 and the amplification cap on responses
//!      v
//!  ingress      publishes (as the client's identity: ACL, limits, stats, logger apply)
//!  router       observers: one subscriber handle per observing client (observe.rs)
//! ```
//!
//! - `request.rs`: a request read (route, query, options); `reply.rs`: responses encoded;
//!   `block.rs`: RFC 7959; `limits.rs`: rate limit, RFC 9175 Echo, duplicate detection;
//!   `status.rs`: the metrics ([`GatewayStatus`]).
//! - Never panics on a datagram: what cannot be read is answered 4.00 (or a Reset, or nothing
//!   when it cannot be answered), counted, and logged sparsely with its peer and cut text.
//! - No DTLS (rustls has none): use it on trusted networks or behind a DTLS-terminating proxy;
//!   the seam is [`socket::Datagrams`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::GatewayStatus;
use crate::client::Context;
use crate::config::{CoapConfig, Config};

pub mod block;
pub mod engine;
mod identity;
pub mod limits;
pub mod observe;
pub mod reply;
pub mod request;
mod routes;
pub mod socket;
pub mod status;

pub use engine::{Engine, Event};
use status::Status;

/// Why a CoAP gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    #[error("cannot bind {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

pub struct CoapGateway {
    socket: std::net::UdpSocket,
    status: Arc<Status>,
    engine: Engine,
    events: mpsc::UnboundedReceiver<Event>,
}

impl CoapGateway {
    /// Binds the socket and sets the gateway up (runs inside the runtime; nothing awaits).
    pub fn bind(cfg: &CoapConfig, config: &Config, ctx: &Arc<Context>) -> Result<Self, CoapError> {
        let bind_error = |error| CoapError::Bind {
            addr: cfg.bind,
            error,
        };
        let socket = std::net::UdpSocket::bind(cfg.bind).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let addr = socket.local_addr().map_err(bind_error)?;
        let status = Arc::new(Status::new(cfg.name.clone(), addr));
        let (tx, events) = mpsc::unbounded_channel();
        let engine = Engine::new(ctx.clone(), cfg, config, status.clone(), tx);
        Ok(CoapGateway {
            socket,
            status,
            engine,
            events,
        })
    }

    pub fn name(&self) -> &str {
        &self.status.name
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.status.addr
    }

    pub fn status(&self) -> Arc<dyn GatewayStatus> {
        self.status.clone()
    }

    /// Serves until `shutdown` fires; observers' subscriptions go with the engine.
    pub async fn run(self, shutdown: CancellationToken) {
        let socket = match tokio::net::UdpSocket::from_std(self.socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(gateway = %self.status.name, "CoAP socket unusable: {e}");
                return;
            }
        };
        tracing::info!(gateway = %self.status.name, addr = %self.status.addr, "CoAP gateway running");
        self.status.running.store(true, Ordering::Relaxed);
        socket::serve(
            socket::Datagrams::new(socket),
            self.engine,
            self.events,
            shutdown,
        )
        .await;
        self.status.running.store(false, Ordering::Relaxed);
    }
}
