//! What a webhook shows of itself: `$SYS/broker/webhook/<name>/...`, `/metrics` and the
//! dashboard read these atomics through [`GatewayStatus`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::gateway::{GatewayStatus, Kind, Metric};
use crate::router::subscriber::DropCounter;

/// One webhook's counters (shared by its worker and the status readers).
#[derive(Debug)]
pub(super) struct Status {
    pub name: String,
    /// The URL without credentials or query (see [`crate::config::webhook::shown_url`]).
    pub address: String,
    /// Requests answered 2xx.
    pub sent: AtomicU64,
    /// Messages given up on: a final status, or retries exhausted.
    pub failed: AtomicU64,
    /// Oldest messages dropped from the full buffer.
    pub dropped: AtomicU64,
    /// What the router queue in front of the buffer dropped (only if the worker fell behind).
    pub router_dropped: Option<DropCounter>,
    /// Messages whose 5.0 Message Expiry Interval ran out before they could be sent.
    pub expired: AtomicU64,
    /// Attempts after a message's first.
    pub retries: AtomicU64,
    /// Messages in the buffer, not yet being sent.
    pub queued: AtomicU64,
    /// Sum of successful requests' durations, microseconds (shown in milliseconds).
    pub latency_us_sum: AtomicU64,
    /// The last successful request's duration, microseconds.
    pub latency_us_last: AtomicU64,
    /// The last attempt failed (cleared by the next success).
    pub failing: AtomicBool,
}

impl Status {
    pub fn new(name: String, address: String) -> Status {
        Status {
            name,
            address,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            router_dropped: None,
            expired: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            latency_us_last: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.latency_us_last.store(us, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
    }

    pub fn attempt_failed(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }
}

impl GatewayStatus for Status {
    fn kind(&self) -> Kind {
        Kind::Webhook
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    fn state(&self) -> &'static str {
        match self.failing.load(Ordering::Relaxed) {
            true => "failing",
            false => "running",
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let dropped = get(&self.dropped) + self.router_dropped.as_ref().map_or(0, |d| d.get());
        vec![
            Metric::counter("sent", "Messages delivered (answered 2xx)", get(&self.sent)),
            Metric::counter(
                "failed",
                "Messages given up on (final status or retries exhausted)",
                get(&self.failed),
            ),
            Metric::counter("dropped", "Messages dropped from the full buffer", dropped),
            Metric::counter(
                "expired",
                "Messages not sent: their message expiry interval ran out while waiting",
                get(&self.expired),
            ),
            Metric::counter("retries", "Requests retried", get(&self.retries)),
            Metric::gauge(
                "queued",
                "Messages waiting in the buffer",
                get(&self.queued),
            ),
            Metric::counter(
                "latency_ms_sum",
                "Total duration of delivered requests, ms (divide by sent for the mean)",
                get(&self.latency_us_sum) / 1000,
            ),
            Metric::gauge(
                "latency_ms_last",
                "Duration of the last delivered request, ms",
                get(&self.latency_us_last) / 1000,
            ),
        ]
    }
}
