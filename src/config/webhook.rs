//! `[[webhook]]`: messages matching filters are POSTed to an HTTP(S) endpoint, see
//! [`crate::gateway::webhook`].

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name in logs, `$SYS/broker/webhook/<name>/...`, `/metrics` and the dashboard.
    pub name: String,
}

impl Config {
    pub(super) fn validate_webhooks(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
