//! Resource limits: connections per listener, packet size (judged from the fixed header), keep
//! alive, the outbound in-flight window, and the per-client queue that protects the broker from a
//! subscriber that stops reading.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::wire::{connect_311, connect_bytes, packet, string, varint};
use common::{RawClient, TestBroker, WAIT, config, connect_packet, eventually};
use mqttd::config::Config;
use mqttd::protocol::{Packet, ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Sends a CONNECT on a fresh socket. `true`: CONNACK 0; `false`: closed without any answer.
async fn try_connect(broker: &TestBroker, client_id: &str) -> Option<RawClient> {
    let mut c = RawClient::connect(broker.addr).await;
    // The broker may already have closed a refused socket: a failed write is a refusal too.
    let _ = c.stream.write_all(&connect_311(client_id)).await;
    match c.recv_within(WAIT).await {
        Ok(Some(Packet::ConnAck(ack))) => {
            assert_eq!(u8::from(ack.code), 0, "CONNACK code");
            Some(c)
        }
        Ok(None) => None,
        Ok(Some(other)) => panic!("expected CONNACK or a close, got {other:?}"),
        Err(()) => panic!("neither CONNACK nor close"),
    }
}

#[tokio::test]
async fn max_connections_refuses_the_third_until_one_leaves() {
    let mut cfg = config();
    cfg.listeners[0].max_connections = 2;
    let broker = TestBroker::start_with(cfg).await;
    let a = try_connect(&broker, "a").await.expect("first admitted");
    let mut b = try_connect(&broker, "b").await.expect("second admitted");
    assert!(
        try_connect(&broker, "c").await.is_none(),
        "third must be closed without CONNACK"
    );
    assert_eq!(
        broker.router.session_count(),
        2,
        "the refused one never got a session"
    );
    b.pingpong().await;

    let mut a = a;
    a.send(&Packet::Disconnect(Default::default())).await;
    a.expect_eof().await;
    eventually("a's session is detached", || {
        broker
            .router
            .stats
            .clients_connected
            .load(Ordering::Relaxed)
            == 1
    })
    .await;
    // The permit is released just after the session detaches: retry, bounded by WAIT.
    let deadline = Instant::now() + WAIT;
    let mut c = loop {
        if let Some(c) = try_connect(&broker, "c").await {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after a client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.pingpong().await;
    b.pingpong().await;
    assert!(try_connect(&broker, "d").await.is_none(), "full again");
    broker.stop().await;
}

/// Sockets that never send CONNECT hold their slot too, but only until `connect_timeout`.
#[tokio::test]
async fn max_connections_counts_silent_sockets_until_connect_timeout() {
    let mut cfg = config();
    cfg.listeners[0].max_connections = 1;
    cfg.limits.connect_timeout = Duration::from_millis(300);
    let broker = TestBroker::start_with(cfg).await;
    let mut silent = RawClient::connect(broker.addr).await;
    assert!(try_connect(&broker, "blocked").await.is_none());
    silent.expect_eof().await;
    let deadline = Instant::now() + WAIT;
    let mut c = loop {
        if let Some(c) = try_connect(&broker, "after").await {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "slot not freed after connect_timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.pingpong().await;
    broker.stop().await;
}

fn packet_size_config() -> Config {
    let mut cfg = config();
    cfg.limits.max_packet_size = 1024;
    cfg
}

/// A QoS 0 PUBLISH to `topic` whose whole encoding (fixed header included) is `total` bytes.
fn publish_of_size(topic: &str, total: usize) -> Vec<u8> {
    let header = 1 + varint(total).len();
    let body_len = total - header;
    assert_eq!(1 + varint(body_len).len() + body_len, total);
    let topic = string(topic.as_bytes());
    let payload = vec![b'p'; body_len - topic.len()];
    let bytes = packet(0x30, &cat(&[&topic, &payload]));
    assert_eq!(bytes.len(), total);
    bytes
}

/// The limit is on the whole packet: 1024 bytes pass, 1025 close that client only.
#[tokio::test]
async fn max_packet_size_is_exact_and_closes_only_the_offender() {
    let broker = TestBroker::start_with(packet_size_config()).await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    assert_eq!(
        sub.suback_codes(1, &[("size/#", QoS::AtMostOnce)]).await,
        [0]
    );

    let mut ok = RawClient::connected(broker.addr, "fits").await;
    ok.send_bytes(&publish_of_size("size/ok", 1024)).await;
    ok.pingpong().await;
    let p = sub.take_publish().await;
    assert_eq!((&*p.topic, p.payload.len()), ("size/ok", 1024 - 3 - 9));

    for total in [1025, 2000] {
        let mut big = RawClient::connected(broker.addr, "too-big").await;
        big.send_bytes(&publish_of_size("size/big", total)).await;
        big.expect_eof().await;
    }
    ok.send_bytes(&publish_of_size("size/ok", 1024)).await;
    ok.pingpong().await;
    assert_eq!(&*sub.take_publish().await.topic, "size/ok");
    sub.pingpong().await;
    broker.stop().await;
}

/// The declared remaining length alone condemns a packet: a fixed header announcing 200 MB is
/// refused at once, without the broker waiting for (or buffering) a single byte of the body.
#[tokio::test]
async fn oversized_packet_is_refused_from_the_fixed_header() {
    let broker = TestBroker::start_with(packet_size_config()).await;
    let mut bystander = RawClient::connected(broker.addr, "bystander").await;
    let header = cat(&[&[0x30], &varint(200_000_000)]);
    assert_eq!(header.len(), 5);

    let mut c = RawClient::connected(broker.addr, "huge").await;
    c.send_bytes(&header).await;
    c.expect_eof().await;

    // Also as the first packet: a CONNECT header cannot reserve memory either.
    let mut c = RawClient::connect(broker.addr).await;
    c.send_bytes(&cat(&[&[0x10], &varint(200_000_000)])).await;
    c.expect_eof().await;

    bystander.pingpong().await;
    broker.stop().await;
}

/// Keep alive 1 s and nothing sent: closed after 1.5 s (MQTT-3.1.2-24), not before.
#[tokio::test]
async fn keep_alive_closes_a_silent_client_after_one_and_a_half_times() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet("silent");
    connect.keep_alive = 1;
    let mut c = RawClient::connected_with(broker.addr, connect).await;
    let start = Instant::now();
    c.expect_eof().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    eventually("the session is gone", || broker.router.session_count() == 0).await;
    broker.stop().await;
}

/// PINGREQ every 500 ms keeps a keep-alive-1 client connected for 3 s (twice its 1.5 s limit).
#[tokio::test]
async fn keep_alive_is_reset_by_pingreq() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet("pinger");
    connect.keep_alive = 1;
    let mut c = RawClient::connected_with(broker.addr, connect).await;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    ticks.tick().await;
    for _ in 0..6 {
        ticks.tick().await;
        c.pingpong().await;
    }
    assert_eq!(broker.router.session_count(), 1);
    broker.stop().await;
}

/// Keep alive 0 turns the mechanism off: silence is fine.
#[tokio::test]
async fn keep_alive_zero_never_times_out() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet("patient");
    connect.keep_alive = 0;
    let mut c = RawClient::connected_with(broker.addr, connect).await;
    c.expect_silence(Duration::from_millis(2000)).await;
    c.pingpong().await;
    broker.stop().await;
}

/// `max_inflight` = 2: a subscriber that does not PUBACK gets exactly two QoS 1 PUBLISHes; each
/// PUBACK lets exactly one more through, in order.
#[tokio::test]
async fn max_inflight_bounds_unacknowledged_publishes() {
    let mut cfg = config();
    cfg.limits.max_inflight = 2;
    let broker = TestBroker::start_with(cfg).await;
    let mut sub = RawClient::connected(broker.addr, "no-acks").await;
    assert_eq!(
        sub.suback_codes(1, &[("inflight/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let mut publisher = RawClient::connected(broker.addr, "publisher").await;
    for i in 0..5u16 {
        let payload = format!("m{i}");
        publisher
            .publish_raw("inflight/t", payload.as_bytes(), QoS::AtLeastOnce, i + 1)
            .await;
    }
    let quiet = Duration::from_millis(300);
    let first = sub.take_publish().await;
    let second = sub.take_publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"m0"[..], &b"m1"[..])
    );
    assert_eq!(
        (first.qos, second.qos),
        (QoS::AtLeastOnce, QoS::AtLeastOnce)
    );
    assert_ne!(first.packet_id, second.packet_id);
    sub.expect_silence(quiet).await;

    sub.puback(first.packet_id).await;
    let third = sub.take_publish().await;
    assert_eq!(&third.payload[..], b"m2");
    sub.expect_silence(quiet).await;

    sub.puback(second.packet_id).await;
    let fourth = sub.take_publish().await;
    assert_eq!(&fourth.payload[..], b"m3");
    sub.puback(third.packet_id).await;
    let fifth = sub.take_publish().await;
    assert_eq!(&fifth.payload[..], b"m4");
    sub.puback(fourth.packet_id).await;
    sub.puback(fifth.packet_id).await;
    sub.expect_silence(quiet).await;
    sub.pingpong().await;
    broker.stop().await;
}

/// `max_queued_messages` = 5: a QoS 1 subscriber that never reads its socket is disconnected;
/// the publisher and a healthy subscriber are served throughout and the healthy one gets every
/// message, in order.
#[tokio::test]
async fn slow_subscriber_is_disconnected_others_keep_going() {
    const MESSAGES: u16 = 2000;
    let mut cfg = config();
    cfg.limits.max_queued_messages = 5;
    let broker = TestBroker::start_with(cfg).await;

    let mut slow = RawClient::connected(broker.addr, "slow").await;
    assert_eq!(
        slow.suback_codes(1, &[("flood/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    // From here on `slow` never reads its socket.
    let mut healthy = RawClient::connected(broker.addr, "healthy").await;
    assert_eq!(
        healthy
            .suback_codes(1, &[("flood/#", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let mut publisher = RawClient::connected(broker.addr, "publisher").await;

    let start = Instant::now();
    let mut payload = vec![b'.'; 1024];
    for i in 1..=MESSAGES {
        payload[..2].copy_from_slice(&i.to_be_bytes());
        publisher
            .publish_raw("flood/data", &payload, QoS::AtLeastOnce, i)
            .await;
        // In step with the healthy subscriber, so only the slow one can fall behind.
        let p = healthy.take_publish().await;
        assert_eq!(&p.payload[..2], &i.to_be_bytes(), "message {i} in order");
        assert_eq!(p.payload.len(), 1024);
        healthy.puback(p.packet_id).await;
    }
    assert!(start.elapsed() < WAIT, "flood took {:?}", start.elapsed());

    assert!(broker.router.stats.publish_dropped.load(Ordering::Relaxed) > 0);
    eventually(
        "only the publisher and the healthy subscriber remain",
        || {
            broker
                .router
                .stats
                .clients_connected
                .load(Ordering::Relaxed)
                == 2
        },
    )
    .await;
    // What the slow one was sent before the broker gave up, then the close.
    slow.expect_closed().await;
    healthy.pingpong().await;
    publisher.pingpong().await;
    broker.stop().await;
}

/// The same with an in-flight window too large to matter and a subscriber socket with a small
/// receive buffer: now only the full socket holds the messages back, and the broker must still
/// notice (its queue overflows while the write is stuck), drop that client and keep the others
/// going.
#[tokio::test]
async fn subscriber_with_full_socket_is_disconnected_others_keep_going() {
    const MAX_MESSAGES: u16 = 5_000;
    let mut cfg = config();
    cfg.limits.max_queued_messages = 5;
    cfg.limits.max_inflight = 65_535;
    let broker = TestBroker::start_with(cfg).await;

    let mut slow = RawClient::connect_small_rcvbuf(broker.addr, 4096).await;
    slow.send_bytes(&connect_311("slow")).await;
    slow.expect_connack(0).await;
    assert_eq!(
        slow.suback_codes(1, &[("flood/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let mut healthy = RawClient::connected(broker.addr, "healthy").await;
    assert_eq!(
        healthy
            .suback_codes(1, &[("flood/#", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let mut publisher = RawClient::connected(broker.addr, "publisher").await;
    let dropped = || broker.router.stats.publish_dropped.load(Ordering::Relaxed);

    let mut payload = vec![b'.'; 16 * 1024];
    let mut sent = 0u16;
    // Until the socket buffers fill and the slow one's queue overflows, then 100 more.
    let mut after_overflow = 100;
    while after_overflow > 0 {
        sent += 1;
        assert!(
            sent <= MAX_MESSAGES,
            "the slow subscriber's queue never overflowed"
        );
        payload[..2].copy_from_slice(&sent.to_be_bytes());
        publisher
            .publish_raw("flood/data", &payload, QoS::AtLeastOnce, sent)
            .await;
        let p = healthy.take_publish().await;
        assert_eq!(
            &p.payload[..2],
            &sent.to_be_bytes(),
            "message {sent} in order"
        );
        healthy.puback(p.packet_id).await;
        if dropped() > 0 {
            after_overflow -= 1;
        }
    }
    eventually("the slow subscriber is disconnected", || {
        broker
            .router
            .stats
            .clients_connected
            .load(Ordering::Relaxed)
            == 2
    })
    .await;
    assert_eq!(
        broker.router.session_count(),
        2,
        "slow's clean session is gone"
    );
    slow.expect_closed().await;
    healthy.pingpong().await;
    publisher.pingpong().await;
    broker.stop().await;
}

/// Connects with MQTT 5.0 (no properties) and keep alive `keep_alive`.
async fn connected_v5(broker: &TestBroker, client_id: &str, keep_alive: u16) -> RawClient {
    let mut c = RawClient::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    let payload = cat(&[&[0], &string(client_id.as_bytes())]);
    c.send_bytes(&connect_bytes(b"MQTT", 5, 0x02, keep_alive, &payload))
        .await;
    c.expect_connack(0).await;
    c
}

/// MQTT 5.0 names the limit: a packet over `max_packet_size` gets DISCONNECT 0x95 (Packet too
/// large), judged from the fixed header, then the close.
#[tokio::test]
async fn v5_oversized_packet_gets_disconnect_0x95() {
    let broker = TestBroker::start_with(packet_size_config()).await;
    let mut c = connected_v5(&broker, "v5-huge", 60).await;
    c.send_bytes(&cat(&[&[0x30], &varint(200_000_000)])).await;
    c.expect_disconnect_reason(0x95).await;
    c.expect_eof().await;
    broker.stop().await;
}

/// MQTT 5.0: the keep-alive close is announced with DISCONNECT 0x8D (Keep Alive timeout).
#[tokio::test]
async fn v5_keep_alive_timeout_gets_disconnect_0x8d() {
    let broker = TestBroker::start().await;
    let mut c = connected_v5(&broker, "v5-silent", 1).await;
    let start = Instant::now();
    c.expect_disconnect_reason(0x8D).await;
    c.expect_eof().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    broker.stop().await;
}

/// A client that stops reading (so the broker's writes to it block) and then falls silent is
/// still subject to its keep alive: a stuck write must not hold the connection forever. QoS 0
/// echoes never overflow the queue into a disconnect, so only the keep alive can end this.
#[tokio::test]
async fn keep_alive_applies_while_writes_to_the_client_are_stuck() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect_small_rcvbuf(broker.addr, 4096).await;
    let mut connect = connect_packet("stuck");
    connect.keep_alive = 1;
    c.send(&Packet::Connect(Box::new(connect))).await;
    c.expect_connack(0).await;
    assert_eq!(c.suback_codes(1, &[("echo", QoS::AtMostOnce)]).await, [0]);
    // 64 KB echoes until our own writes stall (the broker stopped reading), at most 32 MB.
    let echo = packet(0x30, &cat(&[&string(b"echo"), &vec![b'e'; 64 * 1024]]));
    for _ in 0..512 {
        let write = tokio::time::timeout(Duration::from_millis(200), c.stream.write_all(&echo));
        if write.await.is_err() {
            break;
        }
    }
    let silent_since = Instant::now();
    eventually("the stuck client is disconnected", || {
        broker
            .router
            .stats
            .clients_connected
            .load(Ordering::Relaxed)
            == 0
    })
    .await;
    // 1.5 s keep alive (counted from the last packet the broker read, before our writes
    // stalled), plus at most 1 s for the closing flush to a client that does not read.
    let took = silent_since.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    broker.stop().await;
}
