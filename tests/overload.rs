//! Resource limits and overload: per-IP connections, subscriptions per client, topic length and
//! levels, client id length, publish rate, the queued-bytes budget, and a burst of 5,000 clients.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, connect_packet};
use mqttd::protocol::reason::v3;
use mqttd::protocol::{Packet, QoS};
use mqttd::stats::Limit;

fn hits(broker: &TestBroker, limit: Limit) -> u64 {
    broker.router.stats.limit_hits(limit)
}

#[tokio::test]
async fn connections_per_ip_are_limited_across_listeners() {
    let mut config = common::config();
    config.listeners.push(common::listener("second"));
    config.limits.max_connections_per_ip = Some(2);
    let broker = TestBroker::start_with(config).await;
    let a = RawClient::connected(broker.addr, "a").await;
    let _b = RawClient::connected(broker.addr_of("second"), "b").await;
    // The third from 127.0.0.1 is closed without a CONNACK, on either listener.
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&Packet::Connect(Box::new(connect_packet("c"))))
        .await;
    assert!(
        c.recv_within(common::WAIT)
            .await
            .expect("closed in time")
            .is_none()
    );
    assert_eq!(hits(&broker, Limit::ConnectionsPerIp), 1);
    // Another address is not affected.
    let mut other = common::connect_from(broker.addr, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(other.login(connect_packet("d")).await, 0);
    // A slot comes back when a client leaves: when its task ends, just after its socket closes,
    // so a connection made at once may still be refused (closed without a CONNACK).
    a.disconnect().await;
    let mut accepted = false;
    for _ in 0..50 {
        let mut again = RawClient::connect(broker.addr).await;
        again
            .send(&Packet::Connect(Box::new(connect_packet("e"))))
            .await;
        if let Some(Packet::ConnAck(ack)) = again.recv().await {
            assert_eq!(ack.code, mqttd::protocol::ConnAckReason::Success);
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "the slot never came back");
    broker.stop().await;
}

#[tokio::test]
async fn subscriptions_per_client_are_limited() {
    let mut config = common::config();
    config.limits.max_subscriptions_per_client = 2;
    let broker = TestBroker::start_with(config).await;
    let mut c = RawClient::connected(broker.addr, "subs").await;
    assert_eq!(c.subscribe("a", QoS::AtMostOnce, 1).await, vec![0]);
    assert_eq!(c.subscribe("b", QoS::AtMostOnce, 2).await, vec![0]);
    assert_eq!(
        c.subscribe("c", QoS::AtMostOnce, 3).await,
        vec![v3::SUBACK_FAILURE]
    );
    // Re-subscribing to a held filter is not a new subscription.
    assert_eq!(c.subscribe("a", QoS::AtLeastOnce, 4).await, vec![1]);
    assert_eq!(hits(&broker, Limit::Subscriptions), 1);
    broker.stop().await;
}

#[tokio::test]
async fn topic_length_and_levels_are_limited() {
    let mut config = common::config();
    config.limits.max_topic_length = 16;
    config.limits.max_topic_levels = 3;
    let broker = TestBroker::start_with(config).await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    assert_eq!(sub.subscribe("#", QoS::AtLeastOnce, 1).await, vec![1]);
    assert_eq!(
        sub.subscribe("a/b/c/d", QoS::AtMostOnce, 2).await,
        vec![v3::SUBACK_FAILURE]
    );
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    // Acknowledged (3.1.1 has no way to say no) but not routed.
    pubber
        .publish("this/topic/is/too/long", b"x", QoS::AtLeastOnce, false, 1)
        .await;
    pubber
        .publish("a/b/c/d", b"x", QoS::AtLeastOnce, false, 2)
        .await;
    pubber
        .publish("ok/topic", b"fine", QoS::AtLeastOnce, false, 3)
        .await;
    let p = sub.receive().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("ok/topic", &b"fine"[..]));
    assert_eq!(hits(&broker, Limit::TopicLength), 1);
    assert_eq!(hits(&broker, Limit::TopicLevels), 2);
    broker.stop().await;
}

#[tokio::test]
async fn long_client_ids_are_rejected() {
    let mut config = common::config();
    config.limits.max_client_id_length = 8;
    let broker = TestBroker::start_with(config).await;
    let (mut c, code) = common::try_login(broker.addr, connect_packet("123456789")).await;
    assert_eq!(code, v3::IDENTIFIER_REJECTED);
    c.expect_closed().await;
    let (_ok, code) = common::try_login(broker.addr, connect_packet("12345678")).await;
    assert_eq!(code, 0);
    assert_eq!(hits(&broker, Limit::ClientIdLength), 1);
    broker.stop().await;
}

#[tokio::test]
async fn publish_rate_limit_slows_the_publisher_without_dropping() {
    let mut config = common::config();
    config.limits.max_publish_rate = Some(100);
    let broker = TestBroker::start_with(config).await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("rate", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    let started = Instant::now();
    let mut burst = bytes::BytesMut::new();
    for i in 0..250u16 {
        let p = mqttd::protocol::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "rate".into(),
            packet_id: 0,
            payload: bytes::Bytes::from(i.to_string()),
            properties: None,
        };
        mqttd::protocol::encode(&Packet::Publish(p), pubber.version, &mut burst)
            .expect("encode PUBLISH");
    }
    pubber.send_bytes(&burst).await;
    for i in 0..250u16 {
        assert_eq!(
            sub.receive().await.payload,
            i.to_string().as_bytes(),
            "in order, none dropped"
        );
    }
    // 100 in the first second's burst, then 150 more at 100/s: about 1.5 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "rate not enforced: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(hits(&broker, Limit::PublishRate) > 0);
    assert_eq!(
        broker
            .router
            .stats
            .publish_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    broker.stop().await;
}

#[tokio::test]
async fn queued_bytes_budget_drops_qos0_first_then_slows_publishers() {
    let mut config = common::config();
    config.limits.max_queued_bytes = 32 * 1024;
    config.limits.max_inflight = 1;
    let broker = TestBroker::start_with(config).await;
    // A QoS 1 subscriber that never acknowledges: with one message in flight, the rest queue up.
    let mut stuck = RawClient::connected(broker.addr, "stuck").await;
    stuck.subscribe("big/#", QoS::AtLeastOnce, 1).await;
    let mut qos0 = RawClient::connected(broker.addr, "qos0").await;
    qos0.subscribe("big/#", QoS::AtMostOnce, 1).await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    let payload = vec![b'x'; 1024];
    let started = Instant::now();
    for i in 0..80u16 {
        pubber
            .publish("big/q1", &payload, QoS::AtLeastOnce, false, i + 1)
            .await;
    }
    let took = started.elapsed();
    assert!(broker.router.queued_bytes() >= 32 * 1024, "budget reached");
    // Past the budget each further PUBLISH waited for a read pause.
    assert!(
        took >= Duration::from_millis(400),
        "publisher not slowed: {took:?}"
    );
    assert!(hits(&broker, Limit::QueuedBytes) > 0);
    // QoS 0 is what gets dropped over budget: the QoS 0 subscriber misses some, the stuck QoS 1
    // subscriber loses nothing (it is slow, not over its own max_queued_messages).
    assert!(
        broker
            .router
            .stats
            .publish_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let mut got = 0;
    while let Ok(Some(Packet::Publish(_))) = qos0.recv_within(Duration::from_millis(300)).await {
        got += 1;
    }
    assert!(
        got < 80,
        "QoS 0 subscriber got all {got} messages despite the budget"
    );
    // Once the stuck subscriber catches up, the budget frees and publishing is fast again.
    for _ in 0..80 {
        let p = stuck.expect_publish().await;
        stuck
            .send(&Packet::PubAck(mqttd::protocol::PubResp::new(p.packet_id)))
            .await;
    }
    common::eventually("queue drained", || broker.router.queued_bytes() == 0).await;
    broker.stop().await;
}

/// 5,000 clients connect at once: every one gets a CONNACK or a clear refusal (the connection is
/// closed), none hangs; past `max_connections` the rest are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_at_once() {
    let fds = common::raise_fd_limit(12_000);
    let clients: usize = if fds >= 11_000 {
        5000
    } else {
        (fds as usize - 500) / 2
    };
    if clients < 5000 {
        eprintln!("open-file limit {fds}: testing {clients} clients instead of 5000");
    }
    let accepted_max = clients * 3 / 5;
    let mut config = common::config();
    config.listeners[0].max_connections = accepted_max;
    let broker = TestBroker::start_with(config).await;
    let addr = broker.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        tasks.spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            else {
                return (None, None);
            };
            let mut c = RawClient::from_stream(stream);
            c.send(&Packet::Connect(Box::new(connect_packet(&format!(
                "burst-{i}"
            )))))
            .await;
            match c.recv_within(Duration::from_secs(20)).await {
                Ok(Some(Packet::ConnAck(a))) => (Some(u8::from(a.code)), Some(c)),
                Ok(_) => (None, Some(c)), // closed: refused
                Err(()) => panic!("client {i} got neither CONNACK nor a close"),
            }
        });
    }
    let (mut accepted, mut refused, mut failed) = (0, 0, 0);
    let mut keep = Vec::new();
    while let Some(res) = tasks.join_next().await {
        match res.expect("client task") {
            (Some(0), Some(c)) => {
                accepted += 1;
                keep.push(c);
            }
            (_, Some(_)) => refused += 1,
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "connects that failed outright");
    assert_eq!(accepted + refused, clients);
    assert_eq!(accepted, accepted_max, "exactly max_connections admitted");
    assert_eq!(hits(&broker, Limit::MaxConnections), refused as u64);
    drop(keep);
    common::eventually("all disconnected", || {
        broker
            .router
            .stats
            .clients_connected
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    broker.stop().await;
}
