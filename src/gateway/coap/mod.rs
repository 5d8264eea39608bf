//! The CoAP gateway (RFC 7252 over UDP). Placeholder: the seam only.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{GatewayStatus, Kind, Metric};
use crate::client::Context;
use crate::config::{CoapConfig, Config};

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
}

#[derive(Debug)]
struct Status {
    name: String,
    addr: SocketAddr,
}

impl GatewayStatus for Status {
    fn kind(&self) -> Kind {
        Kind::Coap
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> String {
        self.addr.to_string()
    }
    fn state(&self) -> &'static str {
        "running"
    }
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

impl CoapGateway {
    pub fn bind(
        cfg: &CoapConfig,
        _config: &Config,
        _ctx: &Arc<Context>,
    ) -> Result<Self, CoapError> {
        let bind_error = |error| CoapError::Bind {
            addr: cfg.bind,
            error,
        };
        let socket = std::net::UdpSocket::bind(cfg.bind).map_err(bind_error)?;
        let addr = socket.local_addr().map_err(bind_error)?;
        Ok(CoapGateway {
            socket,
            status: Arc::new(Status {
                name: cfg.name.clone(),
                addr,
            }),
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

    pub async fn run(self, shutdown: CancellationToken) {
        let _socket = self.socket;
        shutdown.cancelled().await;
    }
}
