//! Subscribers that cannot keep up (issue 11, items 6 and 7): one that keeps reading slows its
//! publishers instead of losing QoS 0; one that stops reading is a slow consumer (QoS 0 dropped for
//! it, after `slow_subscriber_timeout`), pins no more than its bound, and holds nobody back longer.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{BrokerProcess, RawClient, TestBroker, config};
use mqttd::protocol::QoS;
use tokio::time::Instant;

/// Reads `n` PUBLISHes (any QoS 0) as fast as it can; returns how many arrived before `limit`,
/// and the client.
async fn drain(mut c: RawClient, n: usize, limit: Duration) -> (usize, RawClient) {
    let deadline = Instant::now() + limit;
    let mut got = 0;
    while got < n {
        match c
            .recv_within(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(Some(mqttd::protocol::Packet::Publish(_))) => got += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => break,
        }
    }
    (got, c)
}

/// Fan-in, 8 publishers -> 1 subscriber on `#`, QoS 0, with a queue bound small enough that the
/// publishers outrun the subscriber's writer: before, a full queue dropped QoS 0 even though the
/// subscriber was reading as fast as it could; now the publishers are slowed and nothing is lost.
#[tokio::test]
async fn qos0_fan_in_to_a_subscriber_that_keeps_reading_loses_nothing() {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 3_000;
    let mut cfg = config();
    cfg.limits.max_queued_messages = 50;
    let broker = TestBroker::start_with(cfg).await;
    let mut sub = RawClient::connected(broker.addr, "sink").await;
    sub.subscribe("fan/#", QoS::AtMostOnce, 1).await;
    let reader = tokio::spawn(drain(sub, PUBLISHERS * EACH, Duration::from_secs(60)));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let addr = broker.addr;
        publishers.push(tokio::spawn(async move {
            let mut c = RawClient::connected(addr, &format!("pub{p}")).await;
            let payload = [p as u8; 64];
            for chunk in 0..EACH / 100 {
                // 100 PUBLISHes per write, as a client flooding its socket does.
                let mut bytes = bytes::BytesMut::new();
                for _ in 0..100 {
                    let publish = mqttd::protocol::Packet::Publish(mqttd::protocol::Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: false,
                        topic: format!("fan/{p}").into(),
                        packet_id: 0,
                        payload: bytes::Bytes::copy_from_slice(&payload),
                        properties: None,
                    });
                    mqttd::protocol::encode(&publish, c.version, &mut bytes)
                        .expect("encode PUBLISH");
                }
                c.send_bytes(&bytes).await;
                let _ = chunk;
            }
            c.ping().await;
            c
        }));
    }
    let mut clients = Vec::new();
    for p in publishers {
        clients.push(p.await.unwrap());
    }
    let (got, _) = reader.await.unwrap();
    let dropped = broker.router.stats.publish_dropped.load(Ordering::Relaxed);
    assert_eq!(
        (got, dropped),
        (PUBLISHERS * EACH, 0),
        "delivered and dropped of {} published",
        PUBLISHERS * EACH
    );
    broker.stop().await;
}

/// A QoS 0 subscriber that stops reading slows its publisher for at most
/// `slow_subscriber_timeout`; after that it is a slow consumer, QoS 0 is dropped for it, and a
/// healthy subscriber of the same topic gets every message.
#[tokio::test]
async fn a_stuck_subscriber_holds_publishers_back_at_most_the_timeout() {
    const MESSAGES: usize = 4_000;
    let mut cfg = config();
    cfg.limits.max_queued_messages = 50;
    cfg.limits.slow_subscriber_timeout = Duration::from_millis(300);
    let broker = TestBroker::start_with(cfg).await;
    let mut stuck = RawClient::connected(broker.addr, "stuck").await;
    stuck.subscribe("s/#", QoS::AtMostOnce, 1).await;
    // From here on `stuck` never reads.
    let mut healthy = RawClient::connected(broker.addr, "healthy").await;
    healthy.subscribe("s/#", QoS::AtMostOnce, 1).await;
    let reader = tokio::spawn(drain(healthy, MESSAGES, Duration::from_secs(60)));
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    let start = Instant::now();
    let payload = vec![7u8; 2048];
    for _ in 0..MESSAGES {
        publisher
            .publish("s/x", &payload, QoS::AtMostOnce, false, 0)
            .await;
    }
    publisher.ping().await;
    assert_eq!(
        reader.await.unwrap().0,
        MESSAGES,
        "the healthy subscriber gets all"
    );
    let took = start.elapsed();
    assert!(
        broker.router.stats.publish_dropped.load(Ordering::Relaxed) > 0,
        "QoS 0 is dropped for the stuck one"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    drop(stuck);
    broker.stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 50 MB of QoS 0 (6,400 x 8 KiB) to a subscriber that never reads and to one that does: what
/// the stuck one makes the broker hold stays small (it was 20 MB: its queue of 1,000 messages plus
/// a copy of them in its write buffer), and the reading subscriber gets all 6,400. Measured on the
/// real binary, as its resident set: once from a fresh start (the figure, which includes
/// what any 50 MB flow leaves allocated: 4.9 MB without a stuck subscriber here), and once after a
/// first 50 MB to the reading subscriber alone, which leaves only what the stuck one pins.
#[tokio::test]
async fn a_stuck_subscriber_of_large_messages_pins_little_memory() {
    const MESSAGES: usize = 6_400;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mqttd.toml");
    std::fs::write(
        &conf,
        "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n[sys]\ninterval = 0\n",
    )
    .unwrap();
    let payload = vec![0x5a; 8 * 1024];
    let mut growth = Vec::new();
    for warm in [false, true] {
        let broker = BrokerProcess::start(&conf).await;
        let mut stuck = RawClient::connected(broker.addr, "stuck").await;
        stuck.subscribe("big/#", QoS::AtMostOnce, 1).await;
        let mut fast = RawClient::connected(broker.addr, "fast").await;
        fast.subscribe("big/#", QoS::AtMostOnce, 1).await;
        fast.subscribe("warm/#", QoS::AtMostOnce, 2).await;
        let mut publisher = RawClient::connected(broker.addr, "pub").await;
        let rounds: &[&str] = if warm {
            &["warm/x", "big/x"]
        } else {
            &["big/x"]
        };
        let mut before = 0;
        for topic in rounds {
            if *topic == "big/x" {
                publisher.ping().await;
                before = rss_kib(broker.pid());
            }
            let reader = tokio::spawn(drain(fast, MESSAGES, Duration::from_secs(120)));
            for _ in 0..MESSAGES {
                publisher
                    .publish(topic, &payload, QoS::AtMostOnce, false, 0)
                    .await;
            }
            publisher.ping().await;
            let (got, back) = reader.await.unwrap();
            assert_eq!(got, MESSAGES, "the reading subscriber gets all");
            fast = back;
        }
        growth.push(rss_kib(broker.pid()).saturating_sub(before));
        drop(stuck);
        broker.stop().await;
    }
    let (cold, warm) = (growth[0], growth[1]);
    eprintln!("broker RSS grew by {cold} KiB from a fresh start, {warm} KiB when warm");
    assert!(warm <= 6 * 1024, "a stuck subscriber pinned {warm} KiB");
    assert!(
        cold <= 10 * 1024,
        "broker RSS grew by {cold} KiB from a fresh start"
    );
}
