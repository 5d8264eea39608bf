//! `GET /api/v1/topics?like=&page=&limit=`: the topics seen in published traffic, with their
//! message rates: `{"data": [{"topic", "messages_per_s", "messages", "retained",
//! "subscriptions"}], "meta": {"page", "limit", "count", "hasnext", "tracking_since",
//! "untracked"}}`, sorted by topic. `like`: topics containing this.
//!
//! Counting costs nothing while nobody looks: the [`Tracker`] is a router *observer* (see
//! [`crate::router::subscriber`]: its queue has a bound of its own, what it cannot keep up with
//! it drops, and it never slows a publisher nor counts as a subscriber) that starts with the
//! first request and stops [`IDLE_STOP`] after the last one, forgetting what it counted. So
//! counts start at `tracking_since`, and the first request sees nothing yet. It follows at most
//! [`MAX_TOPICS`] topics (those idle for a minute make room); messages on others are counted in
//! `untracked`. `$SYS` topics are not followed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::{Extension, Json};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::Meta;
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::protocol::QoS;
use crate::router::Router;
use crate::router::subscriber::{SubscriberHandle, SubscriberOptions};

/// Topics followed at most.
pub const MAX_TOPICS: usize = 10_000;
/// The tracker stops this long after the last request.
pub const IDLE_STOP: Duration = Duration::from_secs(600);
/// Rates are measured over this.
const TICK: Duration = Duration::from_secs(1);
/// A full map forgets topics without a message for this many ticks.
const STALE_TICKS: u64 = 60;
/// The tracker's queue: messages and bytes (it drops beyond, see the module doc).
const QUEUE_MESSAGES: usize = 16 * 1024;
const QUEUE_BYTES: usize = 8 << 20;

/// The traffic tracker behind `GET /api/v1/topics` (idle until asked).
#[derive(Debug, Default)]
pub struct Tracker {
    counts: Arc<Mutex<Option<Counts>>>,
}

/// What a running tracker counted.
#[derive(Debug)]
struct Counts {
    since: SystemTime,
    last_request: Instant,
    tick: u64,
    topics: HashMap<Arc<str>, TopicCount>,
    /// Messages on topics beyond [`MAX_TOPICS`].
    untracked: u64,
}

#[derive(Debug, Default)]
struct TopicCount {
    messages: u64,
    /// `messages` at the last tick.
    at_tick: u64,
    per_s: f64,
    last_seen: u64,
}

impl Counts {
    fn count(&mut self, topic: &Arc<str>) {
        if let Some(c) = self.topics.get_mut(topic) {
            c.messages += 1;
            c.last_seen = self.tick;
            return;
        }
        if self.topics.len() >= MAX_TOPICS {
            self.untracked += 1;
            return;
        }
        let c = TopicCount {
            messages: 1,
            last_seen: self.tick,
            ..TopicCount::default()
        };
        self.topics.insert(topic.clone(), c);
    }

    fn on_tick(&mut self, secs: f64) {
        self.tick += 1;
        for c in self.topics.values_mut() {
            c.per_s = (c.messages - c.at_tick) as f64 / secs;
            c.at_tick = c.messages;
        }
        if self.topics.len() >= MAX_TOPICS {
            let tick = self.tick;
            self.topics
                .retain(|_, c| tick.saturating_sub(c.last_seen) < STALE_TICKS);
        }
    }
}

impl Tracker {
    /// Notes a request, starting the tracker if it is not running.
    fn touch(&self, router: &Arc<Router>, shutdown: &CancellationToken) {
        let mut counts = self.counts.lock();
        if let Some(c) = counts.as_mut() {
            c.last_request = Instant::now();
            return;
        }
        let options = SubscriberOptions::observer("$topics", QUEUE_MESSAGES, QUEUE_BYTES);
        let mut handle = router.subscriber(options, None);
        if let Err(e) = handle.subscribe("#", QoS::AtMostOnce) {
            tracing::warn!("topics tracker not started: {e}");
            return;
        }
        *counts = Some(Counts {
            since: SystemTime::now(),
            last_request: Instant::now(),
            tick: 0,
            topics: HashMap::new(),
            untracked: 0,
        });
        tracing::debug!("topics tracker started");
        tokio::spawn(run(handle, self.counts.clone(), shutdown.clone()));
    }
}

/// Counts until idle for [`IDLE_STOP`] (or the broker stops); dropping the handle unsubscribes.
async fn run(
    mut handle: SubscriberHandle,
    counts: Arc<Mutex<Option<Counts>>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            received = handle.recv() => {
                let Some(first) = received else { break };
                let mut guard = counts.lock();
                let Some(c) = guard.as_mut() else { return };
                c.count(&first.msg.topic);
                // What else is waiting, under the same lock.
                for _ in 0..1024 {
                    let Some(r) = handle.try_recv() else { break };
                    c.count(&r.msg.topic);
                }
            }
            now = ticks.tick() => {
                let mut guard = counts.lock();
                let Some(c) = guard.as_mut() else { return };
                let secs = now.duration_since(last).as_secs_f64().max(0.001);
                last = now;
                c.on_tick(secs);
                if now.duration_since(c.last_request) >= IDLE_STOP {
                    *guard = None;
                    tracing::debug!("topics tracker stopped: no request for {IDLE_STOP:?}");
                    return;
                }
            }
        }
    }
    *counts.lock() = None;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub like: Option<String>,
    pub page: Option<usize>,
    pub limit: Option<usize>,
}

pub type Page = super::Page<Topic, TopicsMeta>;

#[derive(Debug, Serialize)]
pub struct TopicsMeta {
    #[serde(flatten)]
    pub page: Meta,
    /// RFC 3339: when counting started.
    pub tracking_since: String,
    /// Messages on topics beyond the ones followed.
    pub untracked: u64,
}

#[derive(Debug, Serialize)]
pub struct Topic {
    pub topic: String,
    /// Over the last second.
    pub messages_per_s: f64,
    /// Since `tracking_since`.
    pub messages: u64,
    /// A retained message is held for it.
    pub retained: bool,
    /// Subscriptions a message on it matches now.
    pub subscriptions: usize,
}

/// `GET /api/v1/topics`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query?;
    let (page, limit) = super::paging(q.page, q.limit)?;
    let router = &state.ctx.router;
    state.topics.touch(router, &state.ctx.shutdown);
    let (since, untracked, mut all) = {
        let guard = state.topics.counts.lock();
        match guard.as_ref() {
            None => (SystemTime::now(), 0, Vec::new()),
            Some(c) => (
                c.since,
                c.untracked,
                c.topics
                    .iter()
                    .filter(|(t, _)| q.like.as_deref().is_none_or(|l| t.contains(l)))
                    .map(|(t, c)| (t.clone(), c.messages, c.per_s))
                    .collect::<Vec<_>>(),
            ),
        }
    };
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let (data, meta) = super::page_of(all, page, limit);
    let data = data
        .into_iter()
        .map(|(topic, messages, per_s)| Topic {
            retained: router.retained_message(&topic).is_some(),
            subscriptions: router.matching_subscriptions(&topic),
            topic: topic.to_string(),
            messages_per_s: per_s,
            messages,
        })
        .collect();
    Ok(Json(Page {
        data,
        meta: TopicsMeta {
            page: meta,
            tracking_since: super::rfc3339(since),
            untracked,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Message, RouterLimits};

    fn router() -> Arc<Router> {
        Arc::new(Router::new(RouterLimits {
            max_queued_messages: 100,
            max_queued_bytes: 1 << 20,
            max_queued_bytes_per_client: 1 << 20,
            slow_subscriber_timeout: Duration::from_secs(1),
        }))
    }

    fn publish(router: &Router, topic: &str) {
        let msg = Message::new(topic.into(), bytes::Bytes::new(), QoS::AtMostOnce, false);
        router.publish(Arc::new(msg));
    }

    fn messages(tracker: &Tracker, topic: &str) -> Option<u64> {
        let counts = tracker.counts.lock();
        Some(counts.as_ref()?.topics.get(topic).map_or(0, |c| c.messages))
    }

    #[tokio::test(start_paused = true)]
    async fn counts_while_asked_and_stops_ten_minutes_after_the_last_request() {
        let router = router();
        let shutdown = CancellationToken::new();
        let tracker = Tracker::default();
        publish(&router, "before");
        tracker.touch(&router, &shutdown);
        // Past the first tick: the next one, at 1 s, measures these.
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..3 {
            publish(&router, "a/b");
        }
        // Not a subscriber: a publish still finds nobody.
        let msg = Message::new("a/b".into(), bytes::Bytes::new(), QoS::AtMostOnce, false);
        assert_eq!(router.publish(Arc::new(msg)), 0);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(messages(&tracker, "a/b"), Some(4));
        assert_eq!(
            messages(&tracker, "before"),
            Some(0),
            "nothing before it started"
        );
        let per_s = tracker.counts.lock().as_ref().unwrap().topics["a/b"].per_s;
        assert!((per_s - 4.0).abs() < 0.1, "{per_s}");
        // A request keeps it going; ten minutes without one stop it.
        tokio::time::sleep(IDLE_STOP - Duration::from_secs(5)).await;
        tracker.touch(&router, &shutdown);
        tokio::time::sleep(IDLE_STOP - Duration::from_secs(5)).await;
        assert_eq!(messages(&tracker, "a/b"), Some(4));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(messages(&tracker, "a/b"), None, "stopped and forgotten");
        publish(&router, "a/b");
        // Asked again: a fresh start.
        tracker.touch(&router, &shutdown);
        publish(&router, "a/b");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(messages(&tracker, "a/b"), Some(1));
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(messages(&tracker, "a/b"), None, "stopped with the broker");
    }

    #[test]
    fn the_map_is_bounded_and_idle_topics_make_room() {
        let mut c = Counts {
            since: SystemTime::now(),
            last_request: Instant::now(),
            tick: 0,
            topics: HashMap::new(),
            untracked: 0,
        };
        for i in 0..MAX_TOPICS {
            c.count(&Arc::from(format!("t/{i}")));
        }
        c.count(&Arc::from("one/more"));
        assert_eq!((c.topics.len(), c.untracked), (MAX_TOPICS, 1));
        // Half of them stay busy; the others go quiet and are forgotten when full.
        for _ in 0..STALE_TICKS {
            for i in 0..MAX_TOPICS / 2 {
                c.count(&Arc::from(format!("t/{i}")));
            }
            c.on_tick(1.0);
        }
        assert_eq!(c.topics.len(), MAX_TOPICS / 2);
        assert_eq!(c.topics["t/0"].per_s, 1.0);
        c.count(&Arc::from("one/more"));
        assert!(c.topics.contains_key("one/more"));
    }
}
