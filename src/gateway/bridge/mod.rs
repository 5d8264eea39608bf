//! Bridges to other MQTT brokers. Placeholder: the seam only.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{GatewayStatus, Kind, Metric};
use crate::client::Context;
use crate::config::{BridgeConfig, Config};

/// Why a bridge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {}

pub struct Bridge {
    status: Arc<Status>,
}

#[derive(Debug)]
struct Status {
    name: String,
}

impl GatewayStatus for Status {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> String {
        String::new()
    }
    fn state(&self) -> &'static str {
        "connecting"
    }
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

impl Bridge {
    pub fn new(
        cfg: &BridgeConfig,
        _config: &Config,
        _ctx: &Arc<Context>,
    ) -> Result<Self, BridgeError> {
        Ok(Bridge {
            status: Arc::new(Status {
                name: cfg.name.clone(),
            }),
        })
    }

    pub fn status(&self) -> Arc<dyn GatewayStatus> {
        self.status.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }
}
