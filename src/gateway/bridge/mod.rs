//! Bridges to other MQTT brokers (`[[bridge]]`), with Mosquitto's topic semantics.
//!
//! - `remote.rs`: TCP or TLS (rustls, aws-lc-rs), CONNECT (3.1.1 with Mosquitto's bridge
//!   marker), CONNACK; the password from a file or the environment, redacted in `Debug`.
//! - `topics.rs`: `topic pattern direction qos local_prefix remote_prefix`, both ways.
//! - `outbound.rs`: the local session's deliveries -> remote PUBLISH; the remote's acks.
//! - `inbound.rs`: remote PUBLISH -> the ingress as the bridge, then the ack.
//! - `link.rs`: one connected link (SUBSCRIBE, the read/write/keep-alive loop).
//! - `status.rs`: the state word and metrics (`$SYS`, `/metrics`, the dashboard).
//! - this file: setup, and the reconnect loop with exponential back-off and jitter.
//!
//! **The local side is a persistent session in the router** ([`SessionLink`], client id
//! `$bridge/<name>`), not a [`crate::router::subscriber::SubscriberHandle`]: the outbound
//! queue then is the one every persistent MQTT session has. It is attached while the remote
//! is connected and detached while it is not, exactly like a client coming and going, so:
//! QoS 1/2 messages queue while the remote is down (bounded by `queue` / `queue_bytes`, the
//! oldest dropped and counted), QoS 0 ones are dropped as for any offline client; with
//! persistence on the store keeps the queue and the subscriptions across a restart; a message
//! leaves the queue only when the remote acknowledged it (its packet identifier is the
//! session's), and a reconnection resends what was in flight, in order, before the rest. A
//! subscriber handle would have needed all of that again, and would have lost the queue at a
//! restart.
//!
//! **Loops are impossible.** Out: the local subscriptions have No Local, and what comes in is
//! published with the local session's id as origin, so it never goes back out. In: with 5.0
//! the remote subscriptions have No Local and Retain As Published; with 3.1.1 the CONNECT is
//! marked as a bridge's (protocol level | 0x80, Mosquitto's `try_private`) so a Mosquitto
//! remote does the same.
//!
//! **Identity.** Inbound messages enter through the ingress with [`Source::Bridge`], client id
//! `$bridge/<name>` and the configured `local_username` (None: anonymous for the ACL); the
//! local subscriptions are checked for `Subscribe` and each outbound message for `Read` under
//! the same identity. So an ACL can confine a bridge like any client.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::GatewayStatus;
use crate::auth::Access;
use crate::client::Context;
use crate::config::{BridgeConfig, Config};
use crate::ingress::Source;
use crate::protocol::{RetainHandling, SubscriptionOptions};
use crate::router::attached::SessionLink;

mod inbound;
mod link;
mod outbound;
mod remote;
mod status;
mod topics;

pub use remote::LinkError;
pub use status::State;
pub use topics::Topics;

use status::Status;

/// Why a bridge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("address {0:?} is not host:port")]
    Address(String),
    #[error("remote password from {from}: {why}")]
    Password { from: String, why: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// A configured bridge, set up (files read, local session made) and not yet running.
pub struct Bridge {
    name: String,
    status: Arc<Status>,
    remote: remote::Remote,
    topics: Topics,
    session: SessionLink,
    ctx: Arc<Context>,
    local_username: Option<String>,
    keepalive: u16,
    max_inflight: u16,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Bridge {
    pub fn new(
        cfg: &BridgeConfig,
        config: &Config,
        ctx: &Arc<Context>,
    ) -> Result<Self, BridgeError> {
        let remote = remote::Remote::new(cfg, config.limits.max_packet_size)?;
        let topics = Topics::new(&cfg.topics);
        let local_id = cfg.local_client_id();
        let mut session = ctx.router.session_link(
            &local_id,
            cfg.local_username.clone(),
            cfg.queue,
            cfg.queue_bytes,
        );
        subscribe_local(&mut session, &topics, ctx, cfg);
        Ok(Bridge {
            name: cfg.name.clone(),
            status: Arc::new(Status::new(cfg.name.clone(), cfg.address.clone())),
            remote,
            topics,
            session,
            ctx: ctx.clone(),
            local_username: cfg.local_username.clone(),
            keepalive: u16::try_from(cfg.keepalive.as_secs()).unwrap_or(u16::MAX),
            max_inflight: cfg.max_inflight,
            backoff_min: cfg.backoff_min,
            backoff_max: cfg.backoff_max,
        })
    }

    /// What [`Bridge::new`] reads from files and the environment (the password, the TLS
    /// certificates), without touching the router: for `mqttd --check-config`.
    pub fn check(cfg: &BridgeConfig, config: &Config) -> Result<(), BridgeError> {
        remote::Remote::new(cfg, config.limits.max_packet_size).map(drop)
    }

    pub fn status(&self) -> Arc<dyn GatewayStatus> {
        self.status.clone()
    }

    /// Connects, bridges until the link fails, backs off, and again, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut inbound = inbound::Inbound::default();
        let mut failures: u32 = 0;
        let mut connected_once = false;
        let mut snapshot = self.ctx.auth.snapshot();
        let client_id: Arc<str> = self.session.client_id().clone();
        loop {
            self.status.set(State::Connecting);
            let opened = tokio::select! {
                _ = shutdown.cancelled() => break,
                opened = self.remote.open() => opened,
            };
            match opened {
                Ok((mut conn, connack, peer)) => {
                    if connected_once {
                        Status::count(&self.status.reconnects);
                    }
                    connected_once = true;
                    failures = 0;
                    info!(bridge = %self.name, remote = %peer, session_present = connack.session_present,
                        "bridge connected");
                    self.session.attach();
                    self.status.set(State::Connected);
                    let mut publisher = self
                        .ctx
                        .ingress
                        .publisher(
                            client_id.clone(),
                            self.local_username.clone(),
                            Source::Bridge,
                        )
                        .with_origin(format!("bridge:{}", self.name).into(), peer);
                    publisher.session_id = self.session.session_id();
                    let mut parts = link::LinkParts {
                        ctx: &self.ctx,
                        session: &mut self.session,
                        topics: &self.topics,
                        status: &self.status,
                        inbound: &mut inbound,
                        publisher: &mut publisher,
                        reader: outbound::Reader {
                            auth: &self.ctx.auth,
                            snapshot: &mut snapshot,
                            username: self.local_username.as_deref(),
                            client_id: &client_id,
                        },
                        max_inflight: self.max_inflight,
                        keepalive: self.keepalive,
                    };
                    let ended = link::run(&mut conn, &connack, &mut parts, &shutdown).await;
                    link::update_gauges(&parts);
                    self.session.detach();
                    match ended {
                        Ok(link::Ended::Shutdown) => break,
                        Err(e) => warn!(bridge = %self.name, "bridge link lost: {e}"),
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    match &e {
                        LinkError::Refused(reason) => error!(bridge = %self.name,
                            address = %self.status.address,
                            "the remote broker refused the bridge's CONNECT: {reason}"),
                        _ => warn!(bridge = %self.name, address = %self.status.address,
                            "bridge cannot connect: {e}"),
                    }
                }
            }
            let wait = backoff(self.backoff_min, self.backoff_max, failures);
            self.status.set(State::Backoff);
            info!(bridge = %self.name, "reconnecting in {wait:?}");
            let mut gauges = tokio::time::interval(Duration::from_secs(1));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.status.set(State::Stopped);
                        return;
                    }
                    _ = &mut sleep => break,
                    _ = gauges.tick() => self.update_gauges(),
                }
            }
        }
        self.status.set(State::Stopped);
    }

    fn update_gauges(&self) {
        use std::sync::atomic::Ordering;
        self.status
            .queued
            .store(self.session.queued() as u64, Ordering::Relaxed);
        self.status
            .queue_dropped
            .store(self.session.dropped(), Ordering::Relaxed);
    }
}

/// The wait before attempt `failures + 1`: `min * 2^(failures-1)` up to `max`, then a random
/// part of it between a half and all of it, so that bridges cut off together do not come back
/// together. At least `min` after a link that was up (`failures` 0).
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = min.saturating_mul(1 << exp).min(max);
    let jitter = rand::random_range(0.5..=1.0);
    full.mul_f64(jitter).max(min.min(full))
}

/// Makes the local session's subscriptions those of the `out` lines (No Local, Retain As
/// Published), dropping what an earlier configuration left in a resumed session. Filters the
/// ACL does not let the bridge subscribe to are left out (and logged).
fn subscribe_local(
    session: &mut SessionLink,
    topics: &Topics,
    ctx: &Arc<Context>,
    cfg: &BridgeConfig,
) {
    let wanted = topics.local_filters();
    for old in session.filters() {
        if !wanted.iter().any(|(f, _)| *f == old) {
            session.unsubscribe(&old);
        }
    }
    let mut snapshot = ctx.auth.snapshot();
    let client_id = cfg.local_client_id();
    for (filter, qos) in wanted {
        let allowed = ctx.auth.allowed(
            &mut snapshot,
            cfg.local_username.as_deref(),
            &client_id,
            &filter,
            Access::Subscribe,
        );
        if !allowed {
            warn!(bridge = %cfg.name, filter = %filter,
                "the ACL does not let this bridge subscribe to an `out` topic; not bridged");
            session.unsubscribe(&filter);
            continue;
        }
        let options = SubscriptionOptions {
            qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        if let Err(e) = session.subscribe(&filter, options) {
            warn!(bridge = %cfg.name, filter = %filter, "local subscription refused: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            let first = backoff(min, max, 1);
            assert!(first >= Duration::from_millis(1000) && first <= min);
            let fourth = backoff(min, max, 4);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8));
            let late = backoff(min, max, 1000);
            assert!(late >= Duration::from_secs(30) && late <= max);
        }
        assert_eq!(backoff(min, max, 0), min);
    }
}
