//! `$SYS` statistics, under Mosquitto's topic names, published retained every `sys.interval`
//! seconds; and kept away from wildcard subscribers (MQTT-4.7.2-1).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestBroker, eventually, next_publish};
use rumqttc::{Event, Packet, QoS};

/// The topics Mosquitto publishes that monitoring tools read, under `$SYS/broker/`.
const TOPICS: &[&str] = &[
    "version",
    "uptime",
    "clients/connected",
    "clients/total",
    "clients/maximum",
    "messages/received",
    "messages/sent",
    "publish/messages/dropped",
    "bytes/received",
    "bytes/sent",
    "subscriptions/count",
    "retained messages/count",
    "load/messages/received/1min",
    "load/messages/received/5min",
    "load/messages/received/15min",
];

async fn sys_broker() -> TestBroker {
    let mut config = common::config();
    config.sys.interval = 1;
    let broker = TestBroker::start_with(config).await;
    // The first round is published at start-up; wait for it so it is there to be retained.
    let router = broker.router.clone();
    eventually("first $SYS round", || {
        router.retained_count() >= TOPICS.len()
    })
    .await;
    broker
}

/// One received `$SYS` value.
struct Seen {
    retain: bool,
    value: String,
}

fn number(topic: &str, value: &str) -> u64 {
    value
        .parse()
        .unwrap_or_else(|_| panic!("$SYS/broker/{topic} = {value:?} is not a whole number"))
}

#[tokio::test]
async fn every_mosquitto_topic_is_published_retained_with_sensible_content() {
    let broker = sys_broker().await;

    // Two more clients besides the watcher; one leaves a retained message.
    let (idle, _, mut idle_events) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "idle-1")).await;
    let (_idle2, _, _) = common::rumqtt_client(common::mqtt_options(broker.addr, "idle-2")).await;
    idle.publish("sensors/kept", QoS::AtLeastOnce, true, "21.5")
        .await
        .unwrap();
    tokio::time::timeout(common::WAIT, async {
        while let Some(ev) = idle_events.recv().await {
            if let Event::Incoming(Packet::PubAck(_)) = ev {
                return;
            }
        }
    })
    .await
    .expect("PUBACK for the retained message");

    let (watcher, mut rx, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "watcher")).await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    watcher
        .subscribe("sensors/#", QoS::AtMostOnce)
        .await
        .unwrap();

    // Every topic: first the retained copy, then two live rounds (the second surely computed
    // after all three clients connected and subscribed).
    let mut seen: HashMap<String, Vec<Seen>> = HashMap::new();
    let live = |seen: &HashMap<String, Vec<Seen>>, t: &str| {
        seen.get(t)
            .map_or(0, |v| v.iter().filter(|s| !s.retain).count())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !TOPICS.iter().all(|t| live(&seen, t) >= 2) {
        let p = tokio::time::timeout_at(deadline, next_publish(&mut rx))
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = TOPICS.iter().filter(|t| live(&seen, t) < 2).collect();
                panic!("two live rounds not seen in time for {missing:?}")
            });
        let Some(topic) = p.topic.strip_prefix("$SYS/broker/") else {
            assert_eq!(p.topic, "sensors/kept");
            continue;
        };
        let value = String::from_utf8(p.payload.to_vec()).expect("UTF-8 $SYS value");
        seen.entry(topic.to_owned()).or_default().push(Seen {
            retain: p.retain,
            value,
        });
    }

    for t in TOPICS {
        let first = &seen[*t][0];
        assert!(first.retain, "$SYS/broker/{t} was not retained");
    }
    // The values of the second live round.
    let v = |t: &str| -> String {
        let round: Vec<_> = seen[t].iter().filter(|s| !s.retain).collect();
        round[1].value.clone()
    };
    assert_eq!(
        v("version"),
        format!("mqttd version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = v("uptime");
    let secs = uptime
        .strip_suffix(" seconds")
        .unwrap_or_else(|| panic!("uptime {uptime:?}"));
    assert!(number("uptime", secs) <= 30, "uptime {uptime:?}");
    assert_eq!(v("clients/connected"), "3");
    assert_eq!(v("clients/total"), "3");
    assert_eq!(v("clients/maximum"), "3");
    // One PUBLISH and the SUBSCRIBEs in; PUBACK, SUBACKs and the $SYS messages out.
    assert!(number("messages/received", &v("messages/received")) >= 2);
    assert!(number("messages/sent", &v("messages/sent")) >= 3 + TOPICS.len() as u64);
    assert_eq!(v("publish/messages/dropped"), "0");
    assert!(number("bytes/received", &v("bytes/received")) > 0);
    assert!(number("bytes/sent", &v("bytes/sent")) > 0);
    assert_eq!(v("subscriptions/count"), "2");
    // Every $SYS topic is itself retained, plus sensors/kept.
    let retained = number("retained messages/count", &v("retained messages/count"));
    assert_eq!(retained as usize, broker.router.retained_count());
    assert!(retained as usize > TOPICS.len(), "retained {retained}");
    for window in ["1min", "5min", "15min"] {
        let t = format!("load/messages/received/{window}");
        let value = v(&t);
        let load: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{t} = {value:?} is not a number"));
        assert!(load > 0.0, "{t} = {value} after traffic");
        assert_eq!(
            value.split_once('.').map(|(_, d)| d.len()),
            Some(2),
            "{t} = {value}"
        );
    }
    broker.stop().await;
}

/// A filter starting with a wildcard never matches a topic starting with `$` (MQTT-4.7.2-1),
/// neither for retained `$SYS` messages at subscribe time nor for live ones.
#[tokio::test]
async fn wildcard_subscribers_do_not_receive_sys_topics() {
    let broker = sys_broker().await;
    let (all, mut all_rx, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "everything")).await;
    all.subscribe("#", QoS::AtMostOnce).await.unwrap();
    all.subscribe("+/broker/#", QoS::AtMostOnce).await.unwrap();
    let router = broker.router.clone();
    eventually("wildcard subscriptions", || {
        router.subscription_count() == 2
    })
    .await;

    // A live $SYS round after those subscriptions exist...
    let (sys, mut sys_rx, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "sys-watcher")).await;
    sys.subscribe("$SYS/broker/uptime", QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        let p = next_publish(&mut sys_rx).await;
        assert_eq!(p.topic, "$SYS/broker/uptime");
        if !p.retain {
            break;
        }
    }
    // ...then a marker: the wildcard subscriber's first message must be the marker.
    sys.publish("marker/done", QoS::AtMostOnce, false, "end")
        .await
        .unwrap();
    let p = next_publish(&mut all_rx).await;
    assert_eq!(
        p.topic, "marker/done",
        "a wildcard subscriber received a $ topic"
    );
    let topics: HashSet<String> = std::iter::from_fn(|| all_rx.try_recv().ok())
        .map(|p| p.topic)
        .collect();
    assert!(topics.iter().all(|t| !t.starts_with('$')), "{topics:?}");
    broker.stop().await;
}

/// Every limit has a `$SYS/broker/limits/<key>` counter; a hit shows up in the next round.
#[tokio::test]
async fn limit_hits_are_counted_in_sys() {
    use mqttd::protocol::Packet as Raw;
    let mut config = common::config();
    config.sys.interval = 1;
    config.limits.max_client_id_length = 8;
    let broker = TestBroker::start_with(config).await;
    let (_refused, code) =
        common::try_login(broker.addr, common::connect_packet("far-too-long-id")).await;
    assert_eq!(code, mqttd::protocol::reason::v3::IDENTIFIER_REJECTED);
    let mut watcher = common::RawClient::connected(broker.addr, "watcher").await;
    watcher
        .subscribe("$SYS/broker/limits/#", mqttd::protocol::QoS::AtMostOnce, 1)
        .await;
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let complete = |seen: &std::collections::HashMap<String, String>| {
        seen.get("$SYS/broker/limits/max_client_id_length") == Some(&"1".to_string())
            && mqttd::stats::Limit::ALL
                .iter()
                .all(|l| seen.contains_key(&format!("$SYS/broker/limits/{}", l.name())))
    };
    while !complete(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "limits not published: {seen:?}"
        );
        if let Ok(Some(Raw::Publish(p))) = watcher.recv_within(Duration::from_secs(2)).await {
            seen.insert(
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            );
        }
    }
    for limit in mqttd::stats::Limit::ALL {
        let topic = format!("$SYS/broker/limits/{}", limit.name());
        assert!(seen.contains_key(&topic), "{topic} missing: {seen:?}");
    }
    broker.stop().await;
}
