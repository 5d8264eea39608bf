//! HTTP webhooks (`[[webhook]]`): every message matching a hook's filters is sent to its URL as
//! one JSON request (the "HTTP bridge" out; the way in is `POST /api/v1/publish`).
//!
//! ```text
//!  router --(observer queue)--> drain --> buffer (bounded, oldest dropped) --> sender --> HTTP(S)
//! ```
//!
//! - **Never slows routing.** The hook is a router *observer* (see [`crate::router::subscriber`]):
//!   it does not count as a matching subscriber, its queue never uses the broker's budget, and
//!   its worker moves what arrives into the hook's own buffer at once. A receiver that is down or
//!   slow fills that buffer; when it is full the oldest message is dropped and counted.
//! - **Delivery** (`deliver.rs`): in routing order, one request at a time (`concurrency = 1`,
//!   the default; more gives up the order). Each request has `timeout`; connection errors,
//!   timeouts, 429 and 5xx are retried up to `max_retries` times after `retry_delay`, doubling up
//!   to `max_retry_delay` (429's `Retry-After` in seconds is honoured within that cap); any other
//!   status is final. A message whose 5.0 Message Expiry Interval ran out while it waited is not
//!   sent (counted as `expired`). Delivery is at least once for a receiver that answers: a request that timed
//!   out may have arrived, and is sent again. Messages still buffered when the broker stops are
//!   lost, and retained messages are not sent when the hook starts: it forwards live traffic.
//! - **The request** (`request.rs`): the JSON body, the configured headers (`env:NAME` values read
//!   once at start; every value marked sensitive, never logged), `Content-Type:
//!   application/json`.
//! - **The client** (`client.rs`): reqwest over rustls with aws-lc-rs; the system's roots or the
//!   `ca` file; redirects are not followed.
//! - **Status** (`status.rs`): `running` / `failing` (the last attempt failed), and the counters
//!   `sent`, `failed`, `dropped`, `expired`, `retries`, `queued`, `latency_ms_sum`, `latency_ms_last`.

mod client;
mod deliver;
mod request;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::GatewayStatus;
use crate::client::Context;
use crate::config::webhook::Method;
use crate::config::{Config, WebhookConfig};
use crate::protocol::QoS;
use crate::router::subscriber::{SubscriberHandle, SubscriberOptions};
use deliver::{Buffer, FailureLog, Retry, Sender};
use status::Status;

/// The most messages waiting in the router's queue in front of the buffer: it is drained at
/// once, so this only matters if the runtime is starved.
const ROUTER_QUEUE: usize = 4096;

/// Why a webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{at}: header {header}: environment variable {var} is not set")]
    MissingEnv {
        at: String,
        header: String,
        var: String,
    },
    /// The value is not shown: it may be a secret.
    #[error("{at}: header {header}: not a valid header (name or value)")]
    Header { at: String, header: String },
    #[error("url: {0}")]
    Url(String),
    #[error("ca: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("ca: {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("no root certificates found on this system for https: set `ca` to a PEM file")]
    NoRoots,
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("filter {filter:?}: {error}")]
    Subscribe {
        filter: String,
        error: crate::router::subscriber::SubscribeError,
    },
}

/// A configured webhook, subscribed and ready to run.
pub struct Webhook {
    status: Arc<Status>,
    sender: Arc<Sender>,
    handle: SubscriberHandle,
    buffer: Arc<Buffer>,
    /// For the start's log line.
    filters: Vec<String>,
}

impl Webhook {
    /// Resolves the headers (a missing environment variable is an error naming its line), reads
    /// the roots, builds the client and subscribes to the filters (nothing is sent before
    /// [`Webhook::run`]).
    pub fn new(
        cfg: &WebhookConfig,
        config: &Config,
        ctx: &Arc<Context>,
    ) -> Result<Self, WebhookError> {
        let (url, client) = Self::client(cfg, config)?;

        let options = SubscriberOptions {
            username: cfg.username.clone(),
            ..SubscriberOptions::observer(
                &format!("$webhook/{}", cfg.name),
                cfg.buffer.min(ROUTER_QUEUE),
                cfg.buffer_bytes,
            )
        };
        let acl = cfg.username.is_some().then(|| ctx.auth.clone());
        let mut handle = ctx.router.subscriber(options, acl);
        for filter in &cfg.filters {
            // QoS 0: an observer's queue then drops rather than closes when full (it is drained
            // at once anyway); the body carries the QoS the message was published with.
            handle
                .subscribe(filter, QoS::AtMostOnce)
                .map_err(|error| WebhookError::Subscribe {
                    filter: filter.clone(),
                    error,
                })?;
        }
        let mut status = Status::new(cfg.name.clone(), crate::config::webhook::shown_url(&url));
        status.router_dropped = Some(handle.drop_counter());
        let status = Arc::new(status);
        let sender = Arc::new(Sender {
            client,
            url,
            method: match cfg.method {
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
            },
            retry: Retry {
                max_retries: cfg.max_retries,
                first: cfg.retry_delay,
                max: cfg.max_retry_delay,
            },
            concurrency: cfg.concurrency.max(1),
            status: status.clone(),
            log: FailureLog::default(),
        });
        Ok(Webhook {
            status,
            sender,
            handle,
            buffer: Arc::new(Buffer::new(cfg.buffer, cfg.buffer_bytes)),
            filters: cfg.filters.clone(),
        })
    }

    /// What [`Webhook::new`] reads from the environment and files (the headers, the roots or the
    /// `ca` file), without subscribing: for `mqttd --check-config`.
    pub fn check(cfg: &WebhookConfig, config: &Config) -> Result<(), WebhookError> {
        Self::client(cfg, config).map(drop)
    }

    /// The URL and the client with the hook's headers (a missing environment variable is an
    /// error naming its line).
    fn client(
        cfg: &WebhookConfig,
        config: &Config,
    ) -> Result<(reqwest::Url, reqwest::Client), WebhookError> {
        let index = config
            .webhooks
            .iter()
            .position(|w| std::ptr::eq(w, cfg))
            .unwrap_or(0);
        let headers = request::headers(
            &cfg.headers,
            |var| std::env::var(var).ok(),
            |header| config.locate(&format!("webhook.{index}.headers.{header}")),
        )?;
        let url =
            reqwest::Url::parse(cfg.url.as_str()).map_err(|e| WebhookError::Url(e.to_string()))?;
        let client = client::build(cfg, &url, headers)?;
        Ok((url, client))
    }

    pub fn status(&self) -> Arc<dyn GatewayStatus> {
        self.status.clone()
    }

    /// Sends until `shutdown` fires, then unsubscribes.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            webhook = %self.status.name,
            "sending {} to {}",
            self.filters.join(", "),
            self.status.address
        );
        deliver::run(self.sender, self.handle, self.buffer, shutdown).await;
    }
}
