//! HTTP webhooks. Placeholder: the seam only.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{GatewayStatus, Kind, Metric};
use crate::client::Context;
use crate::config::{Config, WebhookConfig};

/// Why a webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {}

pub struct Webhook {
    status: Arc<Status>,
}

#[derive(Debug)]
struct Status {
    name: String,
}

impl GatewayStatus for Status {
    fn kind(&self) -> Kind {
        Kind::Webhook
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> String {
        String::new()
    }
    fn state(&self) -> &'static str {
        "running"
    }
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

impl Webhook {
    pub fn new(
        cfg: &WebhookConfig,
        _config: &Config,
        _ctx: &Arc<Context>,
    ) -> Result<Self, WebhookError> {
        Ok(Webhook {
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
