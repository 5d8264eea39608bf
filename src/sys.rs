//! The `$SYS` topics (Mosquitto's names): broker statistics ([`crate::stats`]) published retained
//! every `sys.interval` seconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::ingress::{Batch, Ingress};
use crate::protocol::QoS;
use crate::router::Message;
use crate::stats::{Limit, Stats};

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
pub async fn run(
    ingress: Arc<Ingress>,
    gateways: crate::gateway::Statuses,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let router = ingress.router().clone();
    let mut broker = ingress.broker();
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
        if let Some(store) = router.store() {
            topics.push(("store/failed".into(), store.failed().to_string()));
        }
        gateway_topics(&gateways, &mut topics);
        for (name, v) in [("received", recv), ("sent", sent)] {
            for (window, value) in ["1min", "5min", "15min"].iter().zip(v) {
                topics.push((
                    format!("load/messages/{name}/{window}"),
                    format!("{value:.2}"),
                ));
            }
        }
        let mut batch = Batch::default();
        for (name, value) in topics {
            let msg = Message::new(
                format!("$SYS/broker/{name}").into(),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
            );
            ingress.publish(&mut broker, msg, &mut batch);
        }
        ingress.flush(&mut batch);
    }
}

/// `$SYS/broker/<kind>/<name>/state` and one topic per metric, for each gateway (`bridge`,
/// `webhook`, `coap`; Mosquitto publishes `$SYS/broker/connection/<name>/state` for its bridges).
fn gateway_topics(gateways: &crate::gateway::Statuses, topics: &mut Vec<(String, String)>) {
    for g in gateways.iter() {
        let at = format!("{}/{}", g.kind().as_str(), g.name());
        topics.push((format!("{at}/state"), g.state().to_owned()));
        for m in g.metrics() {
            topics.push((format!("{at}/{}", m.name), m.value.to_string()));
        }
    }
}
