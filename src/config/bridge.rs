//! `[[bridge]]`: a bridge to another MQTT broker, see [`crate::gateway::bridge`].

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Its name in logs, `$SYS/broker/bridge/<name>/...`, `/metrics` and the dashboard.
    pub name: String,
}

impl Config {
    pub(super) fn validate_bridges(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
