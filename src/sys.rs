//! Broker statistics and their `$SYS` topics (Mosquitto's names), published retained every
//! `sys.interval` seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::protocol::QoS;
use crate::router::{Message, Router};

/// A configured limit that was hit; each is counted in `$SYS/broker/limits/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    ConnectionsPerIp,
    ConnectTimeout,
    HandshakeTimeout,
    PacketSize,
    ClientIdLength,
    TopicLength,
    TopicLevels,
    Subscriptions,
    QueuedMessages,
    QueuedBytes,
    PublishRate,
}

impl Limit {
    pub const ALL: [Limit; 12] = [
        Limit::MaxConnections,
        Limit::ConnectionsPerIp,
        Limit::ConnectTimeout,
        Limit::HandshakeTimeout,
        Limit::PacketSize,
        Limit::ClientIdLength,
        Limit::TopicLength,
        Limit::TopicLevels,
        Limit::Subscriptions,
        Limit::QueuedMessages,
        Limit::QueuedBytes,
        Limit::PublishRate,
    ];

    /// The config key's name, also the `$SYS/broker/limits/` topic.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::ConnectionsPerIp => "max_connections_per_ip",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::PacketSize => "max_packet_size",
            Limit::ClientIdLength => "max_client_id_length",
            Limit::TopicLength => "max_topic_length",
            Limit::TopicLevels => "max_topic_levels",
            Limit::Subscriptions => "max_subscriptions_per_client",
            Limit::QueuedMessages => "max_queued_messages",
            Limit::QueuedBytes => "max_queued_bytes",
            Limit::PublishRate => "max_publish_rate",
        }
    }
}

/// Counters updated on the hot path with relaxed atomics (no locks).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub clients_connected: AtomicU64,
    pub clients_maximum: AtomicU64,
    /// Hits per [`Limit`], in `Limit::ALL` order.
    limits: [AtomicU64; 12],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            messages_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            publish_received: AtomicU64::new(0),
            publish_sent: AtomicU64::new(0),
            publish_dropped: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            clients_connected: AtomicU64::new(0),
            clients_maximum: AtomicU64::new(0),
            limits: Default::default(),
        }
    }
}

impl Stats {
    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }
    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn dropped(&self) {
        self.publish_dropped.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a hit of `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        self.limits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// How often `limit` was hit.
    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limits[limit as usize].load(Ordering::Relaxed)
    }
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Exponentially damped moving averages of a rate, as Mosquitto computes its `load/` topics.
#[derive(Debug, Default)]
struct Load {
    last: u64,
    avg: [f64; 3],
}

impl Load {
    /// Folds in the count since the last call, `interval` seconds ago; returns per-minute averages
    /// over 1, 5 and 15 minutes.
    fn update(&mut self, total: u64, interval: f64) -> [f64; 3] {
        let per_min = (total.saturating_sub(self.last)) as f64 * 60.0 / interval;
        self.last = total;
        for (avg, minutes) in self.avg.iter_mut().zip([1.0, 5.0, 15.0]) {
            let k = (-interval / (minutes * 60.0)).exp();
            *avg = per_min + k * (*avg - per_min);
        }
        self.avg
    }
}

/// Publishes `$SYS` topics every `interval` until `shutdown`.
pub async fn run(router: Arc<Router>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    let mut load_recv = Load::default();
    let mut load_sent = Load::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let s = &router.stats;
        let secs = interval.as_secs_f64();
        let recv = load_recv.update(Stats::get(&s.messages_received), secs);
        let sent = load_sent.update(Stats::get(&s.messages_sent), secs);
        let mut topics: Vec<(String, String)> = [
            (
                "version",
                format!("mqttd version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime", format!("{} seconds", s.uptime().as_secs())),
            (
                "clients/connected",
                Stats::get(&s.clients_connected).to_string(),
            ),
            ("clients/total", router.session_count().to_string()),
            (
                "clients/maximum",
                Stats::get(&s.clients_maximum).to_string(),
            ),
            (
                "messages/received",
                Stats::get(&s.messages_received).to_string(),
            ),
            ("messages/sent", Stats::get(&s.messages_sent).to_string()),
            (
                "publish/messages/received",
                Stats::get(&s.publish_received).to_string(),
            ),
            (
                "publish/messages/sent",
                Stats::get(&s.publish_sent).to_string(),
            ),
            (
                "publish/messages/dropped",
                Stats::get(&s.publish_dropped).to_string(),
            ),
            ("bytes/received", Stats::get(&s.bytes_received).to_string()),
            ("bytes/sent", Stats::get(&s.bytes_sent).to_string()),
            (
                "subscriptions/count",
                router.subscription_count().to_string(),
            ),
            (
                "retained messages/count",
                router.retained_count().to_string(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        for limit in Limit::ALL {
            topics.push((
                format!("limits/{}", limit.name()),
                s.limit_hits(limit).to_string(),
            ));
        }
        for (name, v) in [("received", recv), ("sent", sent)] {
            for (window, value) in ["1min", "5min", "15min"].iter().zip(v) {
                topics.push((
                    format!("load/messages/{name}/{window}"),
                    format!("{value:.2}"),
                ));
            }
        }
        for (name, value) in topics {
            let msg = Message::new(
                format!("$SYS/broker/{name}").into(),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
            );
            router.publish(Arc::new(msg));
        }
    }
}
