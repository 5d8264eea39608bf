//! The clients the soak test runs. Each loops until its deadline and bounds every wait.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use mqttd::protocol::{self, Connect, Packet, ProtocolVersion, QoS};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::client::{Client, Options, Recv};
use crate::ledger::{Inbox, Ledger, payload};

/// The data topics every receiver subscribes to with `soak/data/<tag>/#`.
pub fn data_topic(tag: &str, publisher: u16) -> String {
    format!("soak/data/{tag}/{publisher}")
}

/// A small xorshift generator: jitter only, no need for a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// Publishes `rate` messages a second at `qos` until `end`, completing each QoS handshake before
/// the next message; reconnects (at most every second) after an error.
pub async fn publisher(
    addr: SocketAddr,
    tag: Arc<str>,
    n: u16,
    qos: QoS,
    rate: f64,
    end: Instant,
    ledger: Arc<Ledger>,
) {
    let id = format!("soak-pub-{tag}-{n}");
    let topic = data_topic(&tag, n);
    let mut rng = Rng::new(u64::from(n) + 7);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let mut seq = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        let c = match &mut client {
            Some(c) => c,
            None => match Client::connect(addr, Options::clean(&id)).await {
                Ok((c, _)) => client.insert(c),
                Err(e) => {
                    eprintln!("{id}: {e:#}");
                    ledger.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let msg = (n, qos as u8, seq);
        seq += 1;
        match c
            .publish(&topic, payload(msg, rng.below(1024) as usize), qos, false)
            .await
        {
            Ok(()) => {
                ledger.sent[qos as usize].fetch_add(1, Ordering::Relaxed);
                if qos != QoS::AtMostOnce {
                    ledger.acked.lock().insert(msg);
                }
            }
            Err(e) => {
                eprintln!("{id}: publish {seq}: {e:#}");
                ledger.errors.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
        }
    }
    if let Some(c) = client {
        let _ = c.disconnect().await;
    }
}

/// How a receiver ended.
#[derive(Debug, Default)]
pub struct ReceiverReport {
    pub inbox: Inbox,
    /// The broker closed a connection this receiver did not mean to lose.
    pub dropped_by_broker: u64,
    pub reconnects: u64,
    /// Reconnects of a persistent session where CONNACK said "no session present".
    pub session_lost: u64,
    /// Longest offline period of a persistent session.
    pub longest_offline: Duration,
    pub error: Option<String>,
}

/// Receives until `deadline` (or an error), acknowledging everything; Ok(false) if the broker
/// closed the connection.
async fn receive_until(c: &mut Client, inbox: &mut Inbox, deadline: Instant) -> Result<bool> {
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left.min(Duration::from_secs(1))).await? {
            Recv::Packet(p) => inbox.handle(c, p).await?,
            Recv::Timeout => {}
            Recv::Closed => return Ok(false),
        }
    }
    Ok(true)
}

/// A healthy subscriber: one clean connection, subscribed at QoS 2 from before the first publish
/// until `stop`, reading as fast as it can.
pub async fn subscriber(
    addr: SocketAddr,
    id: String,
    filter: String,
    qos: QoS,
    ready: tokio::sync::mpsc::Sender<()>,
    stop: Instant,
) -> ReceiverReport {
    let mut report = ReceiverReport::default();
    let run = async {
        let (mut c, _) = Client::connect(addr, Options::clean(&id)).await?;
        c.subscribe(&filter, qos).await?;
        let _ = ready.send(()).await;
        if !receive_until(&mut c, &mut report.inbox, stop).await? {
            report.dropped_by_broker += 1;
            anyhow::bail!("{id}: the broker closed the connection");
        }
        c.disconnect().await
    };
    if let Err(e) = run.await {
        report.error = Some(format!("{e:#}"));
    }
    report
}

/// A persistent session (clean session 0): connected for 1-3 s, then gone for 0.5-2 s (half the
/// time with DISCONNECT, half by just dropping the socket), over and over until `publish_end`;
/// then connected until `stop`. Everything queued for it while offline must arrive. The session is
/// removed at the end (a clean connect).
pub async fn persistent(
    addr: SocketAddr,
    id: String,
    seed: u64,
    ready: tokio::sync::mpsc::Sender<()>,
    publish_end: Instant,
    stop: Instant,
) -> ReceiverReport {
    let mut report = ReceiverReport::default();
    let mut rng = Rng::new(seed);
    let run = async {
        // Start from nothing: a clean connect discards any session left by an earlier run.
        Client::connect(addr, Options::clean(&id))
            .await?
            .0
            .disconnect()
            .await?;
        let persistent = || Options {
            clean: false,
            ..Options::clean(&id)
        };
        let (mut c, _) = Client::connect(addr, persistent()).await?;
        c.subscribe(&format!("soak/data/{}/#", tag_of(&id)), QoS::ExactlyOnce)
            .await?;
        let _ = ready.send(()).await;
        loop {
            let online_until = (Instant::now() + rng.millis(1000, 3000)).min(publish_end);
            let end = if online_until >= publish_end {
                stop
            } else {
                online_until
            };
            if !receive_until(&mut c, &mut report.inbox, end).await? {
                report.dropped_by_broker += 1;
            }
            if end == stop {
                break;
            }
            if rng.below(2) == 0 {
                let _ = c.disconnect().await;
            } else {
                drop(c);
            }
            let offline = rng.millis(500, 2000);
            report.longest_offline = report.longest_offline.max(offline);
            tokio::time::sleep(offline).await;
            let (again, present) = Client::connect(addr, persistent()).await?;
            c = again;
            report.reconnects += 1;
            if !present {
                report.session_lost += 1;
            }
        }
        c.disconnect().await?;
        Client::connect(addr, Options::clean(&id))
            .await?
            .0
            .disconnect()
            .await
    };
    if let Err(e) = run.await {
        report.error = Some(format!("{e:#}"));
    }
    report
}

/// Client ids are `soak-<role>-<tag>-<n>`.
fn tag_of(id: &str) -> &str {
    id.split('-').nth(2).unwrap_or_default()
}

/// Wills: what must have been published, and what must not.
#[derive(Debug, Default)]
pub struct WillReport {
    pub expected: Vec<String>,
    pub graceful: Vec<String>,
    pub errors: u64,
}

/// Connects with a will, stays 0.2-1 s, then three times in four drops the socket (the will must
/// be published) and otherwise sends DISCONNECT (it must not).
pub async fn will_client(addr: SocketAddr, tag: Arc<str>, n: usize, end: Instant) -> WillReport {
    let mut report = WillReport::default();
    let mut rng = Rng::new(n as u64 + 99);
    let id = format!("soak-will-{tag}-{n}");
    let mut i = 0u64;
    while Instant::now() < end {
        let topic = format!("soak/will/{tag}/{n}/{i}");
        let opts = Options {
            will: Some((topic.clone(), Bytes::from_static(b"gone"))),
            keep_alive: 10,
            ..Options::clean(&id)
        };
        match Client::connect(addr, opts).await {
            Ok((c, _)) => {
                tokio::time::sleep(rng.millis(200, 1000)).await;
                if i % 4 == 3 {
                    if c.disconnect().await.is_ok() {
                        report.graceful.push(topic);
                    } else {
                        report.errors += 1;
                    }
                } else {
                    drop(c);
                    report.expected.push(topic);
                }
            }
            Err(e) => {
                eprintln!("{id}: {e:#}");
                report.errors += 1;
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report
}

/// Retained messages: the latest acknowledged sequence number per key.
pub type RetainedState = Arc<Mutex<HashMap<u32, u64>>>;

const RETAINED_KEYS: u32 = 8;

/// Publishes retained QoS 1 messages on `soak/retained/<tag>/<key>` every 100 ms, then clears
/// them (empty retained payloads) so the broker holds nothing from this run.
pub async fn retained_publisher(
    addr: SocketAddr,
    tag: Arc<str>,
    end: Instant,
    state: RetainedState,
) -> u64 {
    let id = format!("soak-retainpub-{tag}-0");
    let mut errors = 0;
    let Ok((mut c, _)) = Client::connect(addr, Options::clean(&id)).await else {
        return 1;
    };
    let mut seq = 0u64;
    while Instant::now() < end {
        let key = (seq % u64::from(RETAINED_KEYS)) as u32;
        let topic = format!("soak/retained/{tag}/{key}");
        match c
            .publish(
                &topic,
                Bytes::from(format!("r {key} {seq}")),
                QoS::AtLeastOnce,
                true,
            )
            .await
        {
            Ok(()) => {
                state.lock().insert(key, seq);
            }
            Err(e) => {
                eprintln!("{id}: {e:#}");
                return errors + 1;
            }
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in 0..RETAINED_KEYS {
        let topic = format!("soak/retained/{tag}/{key}");
        if c.publish(&topic, Bytes::new(), QoS::AtLeastOnce, true)
            .await
            .is_err()
        {
            errors += 1;
        }
    }
    let _ = c.disconnect().await;
    errors
}

/// Every 2 s a fresh client subscribes to the retained topics: for every key published before
/// the SUBSCRIBE, a retained message at least that recent must arrive within a second.
/// Returns (checks passed, checks failed).
pub async fn retained_checker(
    addr: SocketAddr,
    tag: Arc<str>,
    end: Instant,
    state: RetainedState,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    let mut n = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(2)).await;
        n += 1;
        let id = format!("soak-retaincheck-{tag}-{n}");
        let snapshot = state.lock().clone();
        let result = async {
            let (mut c, _) = Client::connect(addr, Options::clean(&id)).await?;
            c.subscribe(&format!("soak/retained/{tag}/#"), QoS::AtLeastOnce)
                .await?;
            let mut latest: HashMap<u32, u64> = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Recv::Packet(p) = c
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await?
            {
                if let Packet::Publish(p) = p {
                    if p.qos == QoS::AtLeastOnce {
                        c.send(&Packet::PubAck(protocol::PubResp::new(p.packet_id)))
                            .await?;
                    }
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    let mut words = text.split(' ').skip(1);
                    if let (true, Some(Ok(k)), Some(Ok(s))) = (
                        p.retain,
                        words.next().map(str::parse::<u32>),
                        words.next().map(str::parse::<u64>),
                    ) {
                        let e = latest.entry(k).or_default();
                        *e = (*e).max(s);
                    }
                }
            }
            c.disconnect().await?;
            anyhow::Ok(latest)
        }
        .await;
        match result {
            Ok(latest) => {
                for (k, s) in snapshot {
                    if latest.get(&k).is_some_and(|got| *got >= s) {
                        ok += 1;
                    } else {
                        eprintln!(
                            "{id}: retained key {k}: wanted seq >= {s}, got {:?}",
                            latest.get(&k)
                        );
                        failed += 1;
                    }
                }
            }
            Err(e) => {
                eprintln!("{id}: {e:#}");
                failed += 1;
            }
        }
    }
    (ok, failed)
}

/// Byte strings the broker must answer by closing the connection (after a CONNACK refusal at most).
fn malformed_variants(tag: &str) -> Vec<(&'static str, Vec<u8>)> {
    let connect = |name: &str, level: u8| {
        let c = Connect {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 10,
            client_id: format!("soak-bad-{tag}"),
            will: None,
            username: None,
            password: None,
            properties: None,
        };
        let mut out = BytesMut::new();
        protocol::encode(
            &Packet::Connect(Box::new(c)),
            ProtocolVersion::V311,
            &mut out,
        )
        .expect("a short CONNECT encodes");
        let mut bytes = out.to_vec();
        // Patch the protocol name (same length) and level.
        bytes[4..8].copy_from_slice(name.as_bytes());
        bytes[8] = level;
        bytes
    };
    let valid = connect("MQTT", 4);
    let mut reserved_flag = valid.clone();
    reserved_flag[9] |= 0x01;
    vec![
        ("reserved packet type 0", vec![0x00, 0x00]),
        (
            "five-byte remaining length",
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        ("PINGREQ before CONNECT", vec![0xC0, 0x00]),
        ("CONNECT with the reserved flag", reserved_flag),
        ("unknown protocol name", connect("MQTX", 4)),
        ("unknown protocol level", connect("MQTT", 9)),
        (
            "PUBLISH QoS 3 after CONNECT",
            [&valid[..], &[0x36, 0x00]].concat(),
        ),
        (
            "SUBSCRIBE with flags 0000",
            [&valid[..], &[0x80, 0x03, 0x00, 0x01, 0x00]].concat(),
        ),
        (
            "garbage after CONNECT",
            [&valid[..], b"\x00\xde\xad\xbe\xef GET / HTTP/1.1\r\n"].concat(),
        ),
        ("second CONNECT", [&valid[..], &valid[..]].concat()),
    ]
}

/// Every 300 ms a connection sends one malformed variant; the broker must close it within 5 s.
/// Returns (closed, left open).
pub async fn malformed(addr: SocketAddr, tag: Arc<str>, end: Instant) -> (u64, u64) {
    let variants = malformed_variants(&tag);
    let (mut closed, mut open) = (0, 0);
    let mut i = 0;
    while Instant::now() < end {
        let (name, bytes) = &variants[i % variants.len()];
        i += 1;
        let result = async {
            let mut c = Client::tcp(addr).await?;
            c.send_bytes(bytes).await?;
            anyhow::Ok(c.closed_within(Duration::from_secs(5)).await)
        }
        .await;
        match result {
            Ok(true) => closed += 1,
            Ok(false) => {
                eprintln!("malformed client ({name}): broker left the connection open");
                open += 1;
            }
            // A reset while sending counts as closed.
            Err(_) => closed += 1,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (closed, open)
}

/// A client that subscribes and then never reads.
pub async fn slow_client(addr: SocketAddr, id: String, filter: String) -> Result<Client> {
    let (mut c, _) = Client::connect(addr, Options::clean(&id))
        .await
        .context("slow client")?;
    c.subscribe(&filter, QoS::AtLeastOnce).await?;
    Ok(c)
}
