//! The seams: one ingress for every publisher, and router subscribers that are not MQTT
//! connections. A publisher that is not an MQTT connection (here: an HTTP identity) gets exactly the
//! ACL, limits and statistics an MQTT client gets; a subscriber handle gets the MQTT subscriber's
//! queue, acknowledgements, ACL and slow-consumer rule; the message logger is such a subscriber and
//! never slows a publisher.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{FAST_ARGON2, RawClient, TestBroker, WAIT, config, set_passwords};
use mqttd::ingress::{Outcome, Refusal, Source};
use mqttd::protocol::reason::v5;
use mqttd::protocol::{Packet, Properties, Publish, QoS};
use mqttd::router::Message;
use mqttd::router::subscriber::{SubscribeError, SubscriberOptions};
use mqttd::stats::Limit;

const ACL: &str = "\
topic read #

user alice
topic readwrite sensors/#
";

struct Setup {
    broker: TestBroker,
    _dir: tempfile::TempDir,
}

async fn start(max_topic_length: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(&passwd, &[("alice", b"alice")], FAST_ARGON2);
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let mut c = config();
    c.auth.password_file = Some(passwd);
    c.auth.acl_file = Some(acl);
    c.auth.allow_anonymous = Some(true);
    c.limits.max_topic_length = max_topic_length;
    Setup {
        broker: TestBroker::start_with(c).await,
        _dir: dir,
    }
}

/// A 5.0 client logged in as alice.
async fn alice(addr: SocketAddr) -> RawClient {
    let mut connect = common::connect_v5("alice-mqtt", Properties::default());
    connect.username = Some("alice".into());
    connect.password = Some(mqttd::protocol::Password::new(b"alice".to_vec()));
    let (c, ack) = RawClient::connect_v5_with(addr, connect).await;
    assert_eq!(c.wire_code(&ack), 0, "{ack:?}");
    c
}

/// PUBLISH QoS 1 and return the PUBACK's reason code.
async fn puback_reason(c: &mut RawClient, topic: &str, packet_id: u16) -> u8 {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"x"),
        properties: None,
    };
    c.send(&Packet::Publish(p)).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.reason.into(),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn message(topic: &str) -> Message {
    Message::new(
        topic.into(),
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        false,
    )
}

#[tokio::test]
async fn a_publisher_that_is_not_mqtt_gets_the_same_acl_limits_and_statistics() {
    let s = start(40).await;
    let b = &s.broker;
    let stats = &b.router.stats;
    let mut watcher = RawClient::connected(b.addr, "watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce, 1).await;
    let long = format!("sensors/{}", "x".repeat(60));

    // Through MQTT: allowed, denied by the ACL, over the topic length limit.
    let mut mqtt = alice(b.addr).await;
    let before = stats.publish_received.load(Ordering::Relaxed);
    let mqtt_codes = [
        puback_reason(&mut mqtt, "sensors/1", 1).await,
        puback_reason(&mut mqtt, "secret/1", 2).await,
        puback_reason(&mut mqtt, &long, 3).await,
    ];
    assert_eq!(
        mqtt_codes,
        [v5::SUCCESS, v5::NOT_AUTHORIZED, v5::TOPIC_NAME_INVALID]
    );
    assert_eq!(watcher.receive().await.topic.as_ref(), "sensors/1");
    let mqtt_received = stats.publish_received.load(Ordering::Relaxed) - before;
    let mqtt_limit_hits = stats.limit_hits(Limit::TopicLength);

    // Through the ingress as an HTTP publisher with the same username: the same answers.
    let mut http = b
        .ingress
        .publisher("http-alice".into(), Some("alice".into()), Source::Http);
    let before = stats.publish_received.load(Ordering::Relaxed);
    let outcomes = [
        b.ingress.publish_now(&mut http, message("sensors/2")),
        b.ingress.publish_now(&mut http, message("secret/2")),
        b.ingress.publish_now(&mut http, message(&long)),
    ];
    assert_eq!(
        outcomes[0],
        Outcome::Routed {
            subscribers: 1,
            commit: None,
            durable: false,
        }
    );
    let codes = outcomes.map(|o| match o {
        Outcome::Routed { .. } => v5::SUCCESS,
        Outcome::Refused(r) => r.reason_code().into(),
    });
    assert_eq!(codes, mqtt_codes);
    let got = watcher.receive().await;
    assert_eq!(got.topic.as_ref(), "sensors/2");
    watcher.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        stats.publish_received.load(Ordering::Relaxed) - before,
        mqtt_received
    );
    assert_eq!(stats.limit_hits(Limit::TopicLength), mqtt_limit_hits + 1);

    // What an MQTT codec checks before the ingress, the ingress checks for other front ends.
    assert_eq!(
        b.ingress.publish_now(&mut http, message("sensors/+")),
        Outcome::Refused(Refusal::TopicInvalid(
            "MQTT-3.3.2-2: wildcard in topic name"
        ))
    );
    assert!(matches!(
        b.ingress.publish_now(&mut http, message("")),
        Outcome::Refused(Refusal::TopicInvalid(_))
    ));
    let big = Message::new(
        "sensors/big".into(),
        Bytes::from(vec![0u8; 300 * 1024 * 1024]),
        QoS::AtMostOnce,
        false,
    );
    assert_eq!(
        b.ingress.publish_now(&mut http, big),
        Outcome::Refused(Refusal::TooLarge)
    );
    watcher.expect_silence(Duration::from_millis(100)).await;
    s.broker.stop().await;
}

#[tokio::test]
async fn a_subscriber_handle_gets_acknowledged_deliveries_under_its_acl() {
    let s = start(100).await;
    let b = &s.broker;
    let acl = b.ingress.auth().clone();
    let mut options = SubscriberOptions::observer("bridge-1", 100, 1 << 20);
    options.observer = false;
    options.max_inflight = 2;
    // Anonymous: reads anything (`topic read #`), writes nothing.
    let mut handle = b.router.subscriber(options.clone(), Some(acl.clone()));
    assert_eq!(
        handle
            .subscribe("sensors/#", QoS::AtLeastOnce)
            .map(|r| r.len()),
        Ok(0)
    );
    assert!(matches!(
        handle.subscribe("bad/#/x", QoS::AtLeastOnce),
        Err(SubscribeError::InvalidFilter(_))
    ));
    assert_eq!(b.router.subscription_count(), 1);

    let mut mqtt = alice(b.addr).await;
    for i in 1..=3u16 {
        assert_eq!(
            puback_reason(&mut mqtt, &format!("sensors/{i}"), i).await,
            v5::SUCCESS,
            "a handle counts as a matching subscriber"
        );
    }
    // QoS 1 window of 2: the third waits for an acknowledgement.
    let first = tokio::time::timeout(WAIT, handle.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(WAIT, handle.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.msg.topic.as_ref(), first.qos),
        ("sensors/1", QoS::AtLeastOnce)
    );
    assert_eq!(second.msg.topic.as_ref(), "sensors/2");
    assert!(handle.try_recv().is_none(), "window full");
    handle.ack(first.id);
    let third = tokio::time::timeout(WAIT, handle.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.msg.topic.as_ref(), "sensors/3");

    // A handle with an identity the ACL restricts: alice may not read `other/#`.
    options.name = "bridge-2".into();
    options.username = Some("alice".into());
    let mut restricted = b.router.subscriber(options, Some(acl));
    assert!(matches!(
        restricted.subscribe("other/#", QoS::AtMostOnce),
        Err(SubscribeError::NotAuthorized)
    ));
    drop(handle);
    drop(restricted);
    assert_eq!(
        b.router.subscription_count(),
        0,
        "dropping a handle unsubscribes"
    );
    s.broker.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_qos1_is_closed_and_others_are_not_held_back() {
    let broker = TestBroker::start().await;
    let mut options = SubscriberOptions::observer("stuck", 5, 1 << 20);
    options.observer = false;
    let mut stuck = broker.router.subscriber(options, None);
    stuck.subscribe("t", QoS::AtLeastOnce).unwrap();
    let mut fast = RawClient::connected(broker.addr, "fast").await;
    fast.subscribe("t", QoS::AtLeastOnce, 1).await;
    let mut publisher = broker.ingress.broker();
    for _ in 0..20 {
        broker.ingress.publish_now(&mut publisher, message("t"));
    }
    for _ in 0..20 {
        fast.receive().await;
    }
    assert!(stuck.dropped() > 0);
    assert!(stuck.closed(), "the slow-consumer rule closes the handle");
    // What is still queued can be read, then recv says it is closed.
    let mut n = 0;
    while let Some(r) = tokio::time::timeout(WAIT, stuck.recv()).await.unwrap() {
        stuck.ack(r.id);
        n += 1;
    }
    assert!(n <= 5, "{n}");
    broker.stop().await;
}

/// A sink that never finishes a write until the test ends: the logger is stuck.
struct Stuck(std::sync::mpsc::Receiver<()>);

impl std::io::Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv_timeout(Duration::from_secs(20));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.recv_timeout(Duration::from_secs(20));
        Ok(())
    }
}

#[tokio::test]
async fn a_message_logger_that_falls_behind_drops_and_counts_but_never_slows_a_publisher() {
    let mut c = config();
    c.log.messages = true;
    // A small broker-wide budget: were the logger's queue in it (up to 8,192 messages, 1.7 MB
    // here), publishers would be paused. It is above the subscriber's own congestion bound
    // (256 KiB), which slows the publisher first when that subscriber falls behind.
    c.limits.max_queued_bytes = 1024 * 1024;
    let (release, gate) = std::sync::mpsc::channel();
    let broker =
        TestBroker::start_with_log(c, Box::new(Stuck(gate)), common::Capture::default()).await;
    let drops = broker.msglog_drops.clone().expect("message log on");
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("load/#", QoS::AtMostOnce, 1).await;
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    const N: usize = 20_000;
    let payload = [7u8; 200];
    let start = tokio::time::Instant::now();
    let reader = tokio::spawn(async move {
        for _ in 0..N {
            sub.expect_publish().await;
        }
    });
    for i in 0..N {
        publisher
            .publish(
                &format!("load/{}", i % 10),
                &payload,
                QoS::AtMostOnce,
                false,
                0,
            )
            .await;
    }
    publisher.ping().await;
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the subscriber got every message")
        .unwrap();
    let stats = &broker.router.stats;
    assert_eq!(
        stats.limit_hits(Limit::QueuedBytes),
        0,
        "publishers were never slowed for the logger"
    );
    assert!(drops.get() > 0, "the stuck logger drops");
    assert_eq!(
        stats.publish_dropped.load(Ordering::Relaxed),
        0,
        "logger drops are its own, not the broker's"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(release);
    broker.stop().await;
}
