//! `GET /api/v1/stats`: the broker's counts and counters (what `$SYS` publishes), and the
//! message rates of the last second (`http/rates.rs`), for a viewer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::http::rates::{RatesBody, Sample};
use crate::stats::{Limit, Stats};

#[derive(Debug, Serialize)]
pub struct StatsBody {
    pub uptime_seconds: u64,
    /// Open MQTT connections, and the most there have been at once.
    pub connections: u64,
    pub connections_max: u64,
    /// Sessions, connected or not.
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    /// PUBLISH packets: received from clients (and other front ends), sent to subscribers,
    /// dropped (queues full, slow consumers, over the memory budget).
    pub messages: InOut,
    /// All MQTT packets.
    pub packets: InOutTotal,
    pub bytes: InOutTotal,
    /// Bytes waiting in session queues now.
    pub queued_bytes: usize,
    /// Hits of each configured limit, by its config key.
    pub limits: BTreeMap<&'static str, u64>,
    /// Resident memory of the broker process (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Per second, over the last second sampled (zeros before the first sample).
    pub rates: RatesBody,
}

/// `event: stats` of `GET /api/v1/events`: the stats body plus the newest sample.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub stats: StatsBody,
    pub sample: Option<Sample>,
}

#[derive(Debug, Serialize)]
pub struct InOut {
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct InOutTotal {
    pub received: u64,
    pub sent: u64,
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<StatsBody>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(body(&state)))
}

/// The body of `GET /api/v1/stats`.
pub fn body(state: &AppState) -> StatsBody {
    let router = &state.ctx.router;
    let s = &router.stats;
    StatsBody {
        uptime_seconds: s.uptime().as_secs(),
        connections: Stats::get(&s.clients_connected),
        connections_max: Stats::get(&s.clients_maximum),
        sessions: router.session_count(),
        subscriptions: router.subscription_count(),
        retained: router.retained_count(),
        messages: InOut {
            received: Stats::get(&s.publish_received),
            sent: Stats::get(&s.publish_sent),
            dropped: Stats::get(&s.publish_dropped),
        },
        packets: InOutTotal {
            received: Stats::get(&s.messages_received),
            sent: Stats::get(&s.messages_sent),
        },
        bytes: InOutTotal {
            received: Stats::get(&s.bytes_received),
            sent: Stats::get(&s.bytes_sent),
        },
        queued_bytes: router.queued_bytes(),
        limits: Limit::ALL
            .iter()
            .map(|&l| (l.name(), s.limit_hits(l)))
            .collect(),
        memory_bytes: crate::http::metrics::process().map(|p| p.resident_bytes),
        rates: state
            .web
            .rates
            .latest()
            .as_ref()
            .map(RatesBody::from)
            .unwrap_or_default(),
    }
}
