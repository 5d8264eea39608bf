//! Message and byte rates: one sampler task per HTTP listener reads the broker's counters every
//! second and keeps the last hour ([`KEPT`] samples) for the dashboard's charts
//! (`GET /api/v1/stats/series`); the newest sample gives `GET /api/v1/stats` its `rates`.
//!
//! The same tick makes the stats body the Server-Sent Events streams send (`events.rs`), once
//! for all of them, and only while at least one is open: ten open dashboards cost one stats
//! body a second, none cost nothing but the sample.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::{Extension, Json};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::auth::{Caller, Need};
use super::error::ApiError;
use crate::stats::Stats;

/// Samples kept: an hour of seconds.
pub const KEPT: usize = 3600;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One second of the broker's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Unix seconds at the end of the second.
    pub t: u64,
    /// PUBLISH packets received, sent, dropped per second.
    pub received_per_s: f64,
    pub sent_per_s: f64,
    pub dropped_per_s: f64,
    /// MQTT bytes in and out per second.
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    /// Open MQTT connections at the end of the second.
    pub connections: u64,
    /// Bytes waiting in session queues at the end of the second.
    pub queued_bytes: usize,
}

/// The `rates` of `GET /api/v1/stats`: the newest sample's (zeros before the first).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RatesBody {
    pub received_per_s: f64,
    pub sent_per_s: f64,
    pub dropped_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
}

impl From<&Sample> for RatesBody {
    fn from(s: &Sample) -> Self {
        RatesBody {
            received_per_s: s.received_per_s,
            sent_per_s: s.sent_per_s,
            dropped_per_s: s.dropped_per_s,
            bytes_in_per_s: s.bytes_in_per_s,
            bytes_out_per_s: s.bytes_out_per_s,
        }
    }
}

/// The samples, and the stats body of the last tick for the event streams.
#[derive(Debug)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
    /// The `event: stats` data of the last tick (None before the first, or while nobody
    /// listened at the last tick).
    stats: watch::Sender<Option<Arc<str>>>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            samples: Mutex::new(VecDeque::with_capacity(KEPT)),
            stats: watch::channel(None).0,
        }
    }
}

impl Rates {
    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.lock().back().copied()
    }

    /// Every sample kept, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        self.samples.lock().iter().copied().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The stats data of each tick, for an event stream.
    pub fn watch_stats(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.stats.subscribe()
    }
}

/// The counters a sample is the difference of.
#[derive(Clone, Copy)]
struct Counters {
    received: u64,
    sent: u64,
    dropped: u64,
    bytes_in: u64,
    bytes_out: u64,
}

fn counters(s: &Stats) -> Counters {
    Counters {
        received: Stats::get(&s.publish_received),
        sent: Stats::get(&s.publish_sent),
        dropped: Stats::get(&s.publish_dropped),
        bytes_in: Stats::get(&s.bytes_received),
        bytes_out: Stats::get(&s.bytes_sent),
    }
}

/// Samples every [`INTERVAL`] until `shutdown`.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let router = &state.ctx.router;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(Counters, Instant)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let c = counters(&router.stats);
        if let Some((prev, at)) = last {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| round(a.saturating_sub(b) as f64 / secs);
            state.web.rates.push(Sample {
                t: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                received_per_s: rate(c.received, prev.received),
                sent_per_s: rate(c.sent, prev.sent),
                dropped_per_s: rate(c.dropped, prev.dropped),
                bytes_in_per_s: rate(c.bytes_in, prev.bytes_in),
                bytes_out_per_s: rate(c.bytes_out, prev.bytes_out),
                connections: Stats::get(&router.stats.clients_connected),
                queued_bytes: router.queued_bytes(),
            });
        }
        last = Some((c, now));
        let stats = &state.web.rates.stats;
        if stats.receiver_count() > 0 {
            let event = super::api::stats::Event {
                stats: super::api::stats::body(&state),
                sample: state.web.rates.latest(),
            };
            if let Ok(json) = serde_json::to_string(&event) {
                stats.send_replace(Some(json.into()));
            }
        }
    }
}

/// Two decimals: the charts need no more, and the JSON stays short.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub interval_seconds: u64,
    pub samples: Vec<Sample>,
}

/// `GET /api/v1/stats/series`: the last hour, oldest first.
pub async fn series(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Series>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(Series {
        interval_seconds: INTERVAL.as_secs(),
        samples: state.web.rates.all(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_kept_oldest_first() {
        let rates = Rates::default();
        assert!(rates.latest().is_none());
        for t in 0..KEPT as u64 + 10 {
            rates.push(Sample {
                t,
                ..Sample::default()
            });
        }
        let all = rates.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].t, 10);
        assert_eq!(rates.latest().unwrap().t, KEPT as u64 + 9);
        assert_eq!(round(1.0 / 3.0), 0.33);
    }
}
