//! `[[coap]]`: a CoAP gateway (RFC 7252 over UDP), see [`crate::gateway::coap`].

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapConfig {
    /// Its name in logs, `$SYS`, `/metrics` and the dashboard; unique among gateways of its kind.
    pub name: String,
    /// The UDP address to bind.
    pub bind: SocketAddr,
}

impl Config {
    pub(super) fn validate_coap(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
