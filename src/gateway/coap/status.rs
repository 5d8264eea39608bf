//! What a CoAP gateway shows of itself ([`GatewayStatus`]): counters and gauges as atomics,
//! written by the gateway's one task, read by `$SYS`, `/metrics` and the dashboard.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::gateway::{GatewayStatus, Kind, Metric};

/// Why a request was refused, as counted (`refused_<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 4.00: not a CoAP message we can read, a bad query or topic.
    BadRequest,
    /// 4.01: bad credentials, anonymous where not allowed, an unknown or expired token.
    Unauthorized,
    /// 4.03: the ACL.
    Forbidden,
    /// 4.04 / 4.05 / 4.02 / 5.05: no such resource, method or option.
    NotFound,
    /// 4.13: a body over `limits.max_packet_size`.
    TooLarge,
    /// 5.03: password checks or the store's commits queue full, the message budget used up,
    /// observer or session bounds reached.
    Overloaded,
}

#[derive(Debug)]
pub struct Status {
    pub name: String,
    pub addr: SocketAddr,
    pub running: AtomicBool,
    pub requests: AtomicU64,
    pub published: AtomicU64,
    pub notifications: AtomicU64,
    pub retransmissions: AtomicU64,
    pub observers: AtomicU64,
    pub observers_dropped: AtomicU64,
    pub sessions: AtomicU64,
    pub rate_limited: AtomicU64,
    pub malformed: AtomicU64,
    pub amplification_capped: AtomicU64,
    pub duplicates: AtomicU64,
    pub refused: [AtomicU64; 6],
}

impl Status {
    pub fn new(name: String, addr: SocketAddr) -> Self {
        Status {
            name,
            addr,
            running: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            published: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
            observers: AtomicU64::new(0),
            observers_dropped: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            amplification_capped: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_n(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn refused(&self, reason: Reason) {
        Self::count(&self.refused[reason as usize]);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
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
        if self.running.load(Ordering::Relaxed) {
            "running"
        } else {
            "stopped"
        }
    }
    fn metrics(&self) -> Vec<Metric> {
        let g = Self::get;
        let r = |reason: Reason| g(&self.refused[reason as usize]);
        vec![
            Metric::counter(
                "requests",
                "CoAP requests received (within the rate limit)",
                g(&self.requests),
            ),
            Metric::counter(
                "published",
                "Messages published into the broker through CoAP",
                g(&self.published),
            ),
            Metric::counter(
                "notifications",
                "Observe notifications sent",
                g(&self.notifications),
            ),
            Metric::counter(
                "retransmissions",
                "Confirmable notifications sent again for want of an ACK",
                g(&self.retransmissions),
            ),
            Metric::gauge(
                "observers",
                "Observations (GET with Observe) in force",
                g(&self.observers),
            ),
            Metric::counter(
                "observers_dropped",
                "Observers dropped: no ACK after the retransmissions, a Reset, or a full queue",
                g(&self.observers_dropped),
            ),
            Metric::gauge(
                "sessions",
                "Clients with state here: observers or connection-mode tokens",
                g(&self.sessions),
            ),
            Metric::counter(
                "rate_limited",
                "Requests dropped unanswered: their source was over coap.request_rate",
                g(&self.rate_limited),
            ),
            Metric::counter(
                "malformed",
                "Datagrams that are not CoAP messages",
                g(&self.malformed),
            ),
            Metric::counter(
                "amplification_capped",
                "Responses cut to 3x their request for an unverified address (RFC 9175)",
                g(&self.amplification_capped),
            ),
            Metric::counter(
                "duplicates",
                "Confirmable requests received again (answered from the cache)",
                g(&self.duplicates),
            ),
            Metric::counter(
                "refused_bad_request",
                "Requests answered 4.00 (bad request or topic)",
                r(Reason::BadRequest),
            ),
            Metric::counter(
                "refused_unauthorized",
                "Requests answered 4.01 (credentials)",
                r(Reason::Unauthorized),
            ),
            Metric::counter(
                "refused_forbidden",
                "Requests answered 4.03 (ACL)",
                r(Reason::Forbidden),
            ),
            Metric::counter(
                "refused_not_found",
                "Requests answered 4.04, 4.05, 4.02 or 5.05",
                r(Reason::NotFound),
            ),
            Metric::counter(
                "refused_too_large",
                "Requests answered 4.13 (over limits.max_packet_size)",
                r(Reason::TooLarge),
            ),
            Metric::counter(
                "refused_overloaded",
                "Requests answered 5.03 (overloaded or a bound reached)",
                r(Reason::Overloaded),
            ),
        ]
    }
}
