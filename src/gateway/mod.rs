//! Gateways: the broker's other doors, each an [`crate::ingress`] user (what comes in is published
//! as the gateway's client, so the ACL, limits, statistics, the message logger and the history
//! apply) and a [`crate::router::subscriber`] user (what goes out is a subscriber's queue, so the
//! router never waits for it).
//!
//! - [`coap`]: CoAP (RFC 7252) over UDP for constrained devices, with EMQX's URIs.
//! - [`bridge`]: a link to another MQTT broker, topics in and out (Mosquitto's semantics).
//! - [`webhook`]: messages matching filters POSTed to an HTTP(S) endpoint.
//!
//! Each shows itself through one [`GatewayStatus`]: `$SYS/broker/<kind>/<name>/...` (`sys.rs`),
//! `mqttd_<kind>_...{name="..."}` on `/metrics`, `/api/v1/listeners` and the dashboard's
//! listeners page, all from the same numbers.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Context;
use crate::config::Config;
use crate::server::StartError;

pub mod bridge;
pub mod coap;
pub mod webhook;

/// What kind of gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Coap,
    Bridge,
    Webhook,
}

impl Kind {
    /// As in `$SYS/broker/<kind>/...`, metric names and the API: `coap`, `bridge`, `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Coap => "coap",
            Kind::Bridge => "bridge",
            Kind::Webhook => "webhook",
        }
    }
}

/// One number a gateway reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// snake_case, unique within the kind: `$SYS/broker/<kind>/<name>/<metric>` and
    /// `mqttd_<kind>_<metric>` (a counter's metric name gets `_total` on `/metrics`).
    pub name: &'static str,
    /// One line for `/metrics`' `# HELP`.
    pub help: &'static str,
    /// A counter only grows; a gauge goes up and down (queued messages, observers).
    pub counter: bool,
    pub value: u64,
}

impl Metric {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Metric {
            name,
            help,
            counter: true,
            value,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Metric {
            name,
            help,
            counter: false,
            value,
        }
    }
}

/// What a running gateway shows of itself. Cheap to call (atomics), called once a second by
/// `$SYS` and the dashboard and on every `/metrics` scrape.
pub trait GatewayStatus: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> Kind;
    fn name(&self) -> &str;
    /// Where it is: the bound UDP address, the remote broker's address, the URL (without
    /// credentials).
    fn address(&self) -> String;
    /// One word: `running` (CoAP, webhooks), `connected` / `connecting` / `backoff` (bridges),
    /// `failing` (a webhook whose last attempts failed), ...
    fn state(&self) -> &'static str;
    /// The same metrics, in the same order, on every call.
    fn metrics(&self) -> Vec<Metric>;
}

/// Every configured gateway's status, in configuration order (CoAP, bridges, webhooks).
pub type Statuses = Arc<[Arc<dyn GatewayStatus>]>;

/// The configured gateways, set up and not yet running.
pub struct Gateways {
    coap: Vec<coap::CoapGateway>,
    bridges: Vec<bridge::Bridge>,
    webhooks: Vec<webhook::Webhook>,
    statuses: Statuses,
}

impl Gateways {
    /// Binds each CoAP gateway's socket and sets up each bridge and webhook (files, secrets
    /// and certificates are read here, so a bad one stops the start with its location).
    pub fn start(config: &Config, ctx: &Arc<Context>) -> Result<Gateways, StartError> {
        let mut statuses: Vec<Arc<dyn GatewayStatus>> = Vec::new();
        let mut coap = Vec::new();
        for (i, c) in config.coap.iter().enumerate() {
            let gateway = coap::CoapGateway::bind(c, config, ctx)
                .map_err(|e| failed(config, format!("coap.{i}"), Kind::Coap, &c.name, e.into()))?;
            statuses.push(gateway.status());
            coap.push(gateway);
        }
        let mut bridges = Vec::new();
        for (i, b) in config.bridges.iter().enumerate() {
            let bridge = bridge::Bridge::new(b, config, ctx).map_err(|e| {
                failed(
                    config,
                    format!("bridge.{i}"),
                    Kind::Bridge,
                    &b.name,
                    e.into(),
                )
            })?;
            statuses.push(bridge.status());
            bridges.push(bridge);
        }
        let mut webhooks = Vec::new();
        for (i, w) in config.webhooks.iter().enumerate() {
            let hook = webhook::Webhook::new(w, config, ctx).map_err(|e| {
                failed(
                    config,
                    format!("webhook.{i}"),
                    Kind::Webhook,
                    &w.name,
                    e.into(),
                )
            })?;
            statuses.push(hook.status());
            webhooks.push(hook);
        }
        Ok(Gateways {
            coap,
            bridges,
            webhooks,
            statuses: statuses.into(),
        })
    }

    /// Reads what the bridges and webhooks need from files and the environment (passwords,
    /// certificates, header values), binding nothing: `mqttd --check-config` runs it, as the
    /// start does through [`Gateways::start`].
    pub fn check(config: &Config) -> Result<(), StartError> {
        for (i, b) in config.bridges.iter().enumerate() {
            bridge::Bridge::check(b, config).map_err(|e| {
                failed(
                    config,
                    format!("bridge.{i}"),
                    Kind::Bridge,
                    &b.name,
                    e.into(),
                )
            })?;
        }
        for (i, w) in config.webhooks.iter().enumerate() {
            webhook::Webhook::check(w, config).map_err(|e| {
                failed(
                    config,
                    format!("webhook.{i}"),
                    Kind::Webhook,
                    &w.name,
                    e.into(),
                )
            })?;
        }
        Ok(())
    }

    /// Their statuses, for `$SYS`, `/metrics` and the API.
    pub fn statuses(&self) -> Statuses {
        self.statuses.clone()
    }

    /// Each CoAP gateway's bound address, by name.
    pub fn coap_addrs(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.coap
            .iter()
            .map(|c| (c.name().to_owned(), c.local_addr()))
            .collect()
    }

    /// Runs every gateway on `tracker` until `shutdown` fires.
    pub fn run(self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for c in self.coap {
            tracker.spawn(c.run(shutdown.clone()));
        }
        for b in self.bridges {
            tracker.spawn(b.run(shutdown.clone()));
        }
        for w in self.webhooks {
            tracker.spawn(w.run(shutdown.clone()));
        }
    }
}

/// A gateway that cannot start: the error names the configuration line of its table.
fn failed(
    config: &Config,
    key: String,
    kind: Kind,
    name: &str,
    error: Box<dyn std::error::Error + Send + Sync>,
) -> StartError {
    StartError::Gateway {
        at: config.locate(&key),
        kind: kind.as_str(),
        name: name.to_owned(),
        error,
    }
}
