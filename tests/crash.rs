//! The persistence promise under `kill -9` (the real binary, the default `sync = "normal"`):
//! a publisher sends numbered QoS 1 and QoS 2 messages to two persistent sessions, one online
//! (taking and acknowledging as it goes) and one offline, and the broker is killed at a random
//! moment, [`KILLS`] times. After every restart the broker starts, and at the end:
//! - every message the broker acknowledged (PUBACK, PUBREC) reached both sessions;
//! - no QoS 2 message reached either application twice (the clients keep their side of the
//!   exchange, as real clients with a persistent session do);
//! - every subscription the broker acknowledged (SUBACK) exists;
//! - every topic's retained message is the last one acknowledged, or a later one.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProcess, RawClient};
use mqttd::protocol::{Connect, Packet, PubResp, Publish, QoS};
use parking_lot::Mutex;

/// Kills per run (`CRASH_KILLS` raises it for a longer run; BENCHMARKS.md records one).
const KILLS: usize = 50;

/// What a subscribing application received; it outlives connections and broker restarts.
#[derive(Default)]
struct Inbox {
    /// Payloads delivered to the application, and how often.
    got: HashMap<String, u32>,
    /// QoS 2 packet ids received and not yet released (PUBREC sent, PUBREL not received): a
    /// PUBLISH with one of these is the same message again and is not delivered again.
    unreleased: HashSet<u16>,
    /// SUBACKs received, by packet id.
    subacked: HashSet<u16>,
}

impl Inbox {
    /// Takes what arrives on `c` (acknowledging it) until the connection ends or, with `quiet`,
    /// nothing came for that long.
    async fn drain(inbox: &Mutex<Inbox>, c: &mut RawClient, quiet: Option<Duration>) {
        loop {
            let packet = match quiet {
                Some(q) => match c.recv_within(q).await {
                    Ok(p) => p,
                    Err(()) => return,
                },
                None => match c.recv_within(Duration::from_secs(60)).await {
                    Ok(p) => p,
                    Err(()) => panic!("a killed broker's connection did not end"),
                },
            };
            let reply = match packet {
                None => return,
                Some(Packet::Publish(p)) => inbox.lock().take(p),
                Some(Packet::SubAck(a)) => {
                    inbox.lock().subacked.insert(a.packet_id);
                    None
                }
                Some(Packet::PubRel(r)) => {
                    inbox.lock().unreleased.remove(&r.packet_id);
                    Some(Packet::PubComp(PubResp::new(r.packet_id)))
                }
                Some(other) => panic!("unexpected {other:?}"),
            };
            if let Some(reply) = reply
                && c.stream_write(&reply).await.is_err()
            {
                return;
            }
        }
    }

    fn take(&mut self, p: Publish) -> Option<Packet> {
        let payload = String::from_utf8(p.payload.to_vec()).unwrap();
        match p.qos {
            QoS::AtLeastOnce => {
                *self.got.entry(payload).or_default() += 1;
                Some(Packet::PubAck(PubResp::new(p.packet_id)))
            }
            QoS::ExactlyOnce => {
                if self.unreleased.insert(p.packet_id) {
                    *self.got.entry(payload).or_default() += 1;
                }
                Some(Packet::PubRec(PubResp::new(p.packet_id)))
            }
            QoS::AtMostOnce => panic!("QoS 0 was not published"),
        }
    }
}

/// A 3.1.1 session (persistent unless `clean`); None if the broker is gone.
async fn session(addr: SocketAddr, client_id: &str, clean: bool) -> Option<RawClient> {
    let stream = tokio::time::timeout(common::WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut c = RawClient::from_stream(stream);
    let connect = Connect {
        clean_start: clean,
        ..common::connect_packet(client_id)
    };
    c.stream_write(&Packet::Connect(Box::new(connect)))
        .await
        .ok()?;
    match c.recv_within(common::WAIT).await {
        Ok(Some(Packet::ConnAck(_))) => Some(c),
        _ => None,
    }
}

/// Publishes `c/<n>` (odd n at QoS 1, even at QoS 2) from `next` on, until the connection
/// ends; records each message the broker acknowledged (PUBACK, or PUBREC: from then on it
/// is the broker's).
async fn publish_until_killed(addr: SocketAddr, next: &Mutex<u32>, acked: &Mutex<Vec<String>>) {
    let Some(mut c) = session(addr, "publisher", true).await else {
        return;
    };
    loop {
        let n = {
            let mut next = next.lock();
            *next += 1;
            *next
        };
        let qos = if n % 2 == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let payload = format!("m{n}");
        let id = (n % 60000 + 1) as u16;
        let publish = Packet::Publish(Publish {
            dup: false,
            qos,
            // Every fourth message is retained too: the retained store is under test as well.
            retain: n % 4 == 3,
            topic: format!("c/{}", n % 7).into(),
            packet_id: id,
            payload: Bytes::from(payload.clone()),
            properties: None,
        });
        if c.stream_write(&publish).await.is_err() {
            return;
        }
        match c.recv_within(Duration::from_secs(60)).await {
            Ok(Some(Packet::PubAck(a) | Packet::PubRec(a))) if a.packet_id == id => {
                acked.lock().push(payload);
            }
            Ok(None) => return,
            other => panic!("expected the ack of {id}, got {other:?}"),
        }
        if qos == QoS::ExactlyOnce {
            if c.stream_write(&Packet::PubRel(PubResp::new(id)))
                .await
                .is_err()
            {
                return;
            }
            match c.recv_within(Duration::from_secs(60)).await {
                Ok(Some(Packet::PubComp(_))) => {}
                Ok(None) => return,
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        }
    }
}

/// A small xorshift: the kill moments differ run to run; the seed is printed to replay one.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_and_no_qos2_message_is_delivered_twice_across_kill_9() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed}");
    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILLS)
        .max(KILLS);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // The offline session collects every message of the run.
    let conf = common::config_file(
        dir.path(),
        "[limits]\nmax_queued_messages = 1000000\nmax_queued_bytes_per_client = 1073741824\n",
    );

    let online = Arc::new(Mutex::new(Inbox::default()));
    let offline = Arc::new(Mutex::new(Inbox::default()));
    let next = Arc::new(Mutex::new(0u32));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut subscribed = Vec::new();

    let broker = BrokerProcess::start(&conf).await;
    let mut off = session(broker.addr, "offline", false).await.unwrap();
    off.subscribe("c/#", QoS::ExactlyOnce, 1).await;
    off.disconnect().await;
    let mut on = session(broker.addr, "online", false).await.unwrap();
    on.subscribe("c/#", QoS::ExactlyOnce, 1).await;
    drop(on);
    let mut broker = Some(broker);

    for kill in 0..kills {
        let b = match broker.take() {
            Some(b) => b,
            None => BrokerProcess::start(&conf).await,
        };
        let addr = b.addr;
        let receiver = {
            let online = online.clone();
            tokio::spawn(async move {
                if let Some(mut c) = session(addr, "online", false).await {
                    // Each round, one more subscription, acknowledged or not by the kill.
                    let filter = format!("extra/{kill}");
                    let sub = Packet::Subscribe(mqttd::protocol::Subscribe {
                        packet_id: 100 + kill as u16,
                        filters: vec![mqttd::protocol::SubscribeFilter {
                            filter: filter.clone(),
                            options: mqttd::protocol::SubscriptionOptions::new(QoS::AtLeastOnce),
                        }],
                        properties: None,
                    });
                    let _ = c.stream_write(&sub).await;
                    Inbox::drain(&online, &mut c, None).await;
                }
            })
        };
        let publisher = {
            let (next, acked) = (next.clone(), acked.clone());
            tokio::spawn(async move { publish_until_killed(addr, &next, &acked).await })
        };
        // Some kills land early (during start-up, connects, the first commits), most mid-stream.
        tokio::time::sleep(Duration::from_millis(rng.below(120))).await;
        b.kill().await;
        publisher.await.unwrap();
        receiver.await.unwrap();
        subscribed.push(kill);
    }

    // The last restart: take everything.
    let broker = BrokerProcess::start(&conf).await;
    let mut on = session(broker.addr, "online", false).await.unwrap();
    let mut off = session(broker.addr, "offline", false).await.unwrap();
    let quiet = Some(Duration::from_millis(1500));
    Inbox::drain(&online, &mut on, quiet).await;
    Inbox::drain(&offline, &mut off, quiet).await;

    let acked = acked.lock().clone();
    // Retained: each topic holds its last acknowledged retained message, or a later one (one
    // that was committed but not acknowledged before a kill).
    let mut last_retained: HashMap<String, u32> = HashMap::new();
    for m in &acked {
        let n: u32 = m[1..].parse().unwrap();
        if n % 4 == 3 {
            last_retained.insert(format!("c/{}", n % 7), n);
        }
    }
    let mut reader = RawClient::connected(broker.addr, "retained-reader").await;
    reader.subscribe("c/#", QoS::AtMostOnce, 1).await;
    let mut retained: HashMap<String, u32> = HashMap::new();
    while let Ok(Some(Packet::Publish(p))) = reader.recv_within(Duration::from_millis(500)).await {
        assert!(p.retain);
        let n = std::str::from_utf8(&p.payload).unwrap()[1..]
            .parse()
            .unwrap();
        retained.insert(p.topic.to_string(), n);
    }
    for (topic, n) in &last_retained {
        let kept = retained.get(topic).copied().unwrap_or(0);
        assert!(
            kept >= *n && kept % 4 == 3,
            "{topic}: retained m{kept}, but m{n} was acknowledged (seed {seed})"
        );
    }
    assert!(
        acked.len() > kills,
        "too few messages to tell: {}",
        acked.len()
    );
    for (name, inbox) in [("online", &online), ("offline", &offline)] {
        let inbox = inbox.lock();
        let lost: Vec<_> = acked
            .iter()
            .filter(|m| !inbox.got.contains_key(*m))
            .collect();
        assert!(
            lost.is_empty(),
            "{name}: {} of {} acknowledged messages lost (seed {seed}): {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(20)]
        );
        let twice: Vec<_> = inbox
            .got
            .iter()
            .filter(|(m, n)| {
                **n > 1
                    && m.strip_prefix('m')
                        .is_some_and(|n| n.parse::<u32>().unwrap() % 2 == 0)
            })
            .collect();
        assert!(
            twice.is_empty(),
            "{name}: QoS 2 delivered twice (seed {seed}): {twice:?}"
        );
    }
    // Subscriptions: a probe to each round's filter; every one the online session got a
    // SUBACK for must reach it.
    let mut p = RawClient::connected(broker.addr, "checker").await;
    for kill in &subscribed {
        let probe = format!("probe-{kill}");
        p.publish(
            &format!("extra/{kill}"),
            probe.as_bytes(),
            QoS::AtLeastOnce,
            false,
            1,
        )
        .await;
    }
    Inbox::drain(&online, &mut on, quiet).await;
    let subacked = {
        let inbox = online.lock();
        let subacked: Vec<_> = subscribed
            .iter()
            .filter(|k| inbox.subacked.contains(&(100 + **k as u16)))
            .collect();
        for kill in &subacked {
            assert!(
                inbox.got.contains_key(&format!("probe-{kill}")),
                "the subscription SUBACKed in round {kill} is gone (seed {seed})"
            );
        }
        subacked.len()
    };
    println!(
        "{kills} kills, {} messages acknowledged, {subacked} of {} subscriptions acknowledged, online got {}, offline got {}",
        acked.len(),
        subscribed.len(),
        online.lock().got.len(),
        offline.lock().got.len()
    );
    broker.stop().await;
}
