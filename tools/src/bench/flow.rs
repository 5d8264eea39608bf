//! Message-flow scenarios: fan-in and fan-out (QoS 0) and qos1 (windowed acknowledgements).
//!
//! QoS 0 publishers are *windowed*: all publishers together stay at most `--window` messages ahead
//! of what the subscribers have received. Without that, a publisher flood only measures how fast a
//! broker can drop messages for a full subscriber queue (and the kernel's socket buffers). If the
//! broker drops anyway, a publisher that sees no progress for [`STALL`] writes the outstanding
//! messages off as lost and carries on; the report shows those stalls and the loss.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use mqttd::protocol::QoS;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use super::dial::{Conn, Transport, dial};
use super::wire::{self, PublishTemplate, next_frame};
use super::{Opts, Report, Scenario, measure};

/// Read buffer per connection: big, so one read drains many messages.
const RBUF: usize = 256 * 1024;
/// No delivery progress for this long: the outstanding messages are counted as lost. Long enough
/// that a busy machine's scheduling hiccup is not mistaken for loss.
const STALL: Duration = Duration::from_millis(200);
/// A publisher's write that makes no progress for this long fails the scenario.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Tasks sharing the QoS 0 subscribers between them.
const SINK_TASKS: usize = 4;
/// After publishing stops, how long to wait for the last messages (and acks) to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// Connects over `t` (TCP_NODELAY on) and completes the MQTT handshake (clean session).
pub async fn connect(addr: SocketAddr, t: &Transport, client_id: &str) -> Result<(Conn, BytesMut)> {
    connect_session(addr, t, client_id, true).await
}

/// As [`connect`], with a clean or a persistent session.
pub async fn connect_session(
    addr: SocketAddr,
    t: &Transport,
    client_id: &str,
    clean: bool,
) -> Result<(Conn, BytesMut)> {
    let mut s = dial(addr, t).await?;
    let mut rbuf = BytesMut::with_capacity(RBUF);
    wire::handshake(
        &mut s,
        &wire::connect_session(client_id, 60, None, clean),
        &mut rbuf,
    )
    .await
    .with_context(|| format!("client {client_id}"))?;
    Ok((s, rbuf))
}

/// A counter on its own cache line: subscribers on different threads do not share lines.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// Shared progress of a windowed QoS 0 scenario.
struct Flow {
    published: AtomicU64,
    /// Messages received, per subscriber. The window is measured against the slowest one, so
    /// no subscriber's backlog in the broker can exceed it.
    deliveries: Vec<Padded>,
    /// Messages written off as lost after a stall (cumulative; see [`Flow::write_off`]).
    written_off: AtomicU64,
    stalls: AtomicU64,
    window: u64,
    notify: Notify,
}

impl Flow {
    fn slowest(&self) -> u64 {
        self.deliveries
            .iter()
            .map(|d| d.0.load(Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.deliveries.iter().map(|d| d.0.load(Relaxed)).sum()
    }

    fn outstanding(&self) -> u64 {
        let delivered = self.slowest();
        self.published
            .load(Relaxed)
            .saturating_sub(delivered)
            .saturating_sub(self.written_off.load(Relaxed))
    }

    /// Assumes everything outstanding is lost; idempotent when several publishers stall at once.
    fn write_off(&self) {
        let delivered = self.slowest();
        let lost = self.published.load(Relaxed).saturating_sub(delivered);
        self.written_off.fetch_max(lost, Relaxed);
        self.stalls.fetch_add(1, Relaxed);
    }
}

/// A QoS 0 publisher: writes `batch` messages at a time while the window allows.
async fn flood(
    mut s: Conn,
    topic: String,
    payload: usize,
    batch: u64,
    flow: Arc<Flow>,
    stop: CancellationToken,
) -> Result<()> {
    let t = PublishTemplate::new(&topic, QoS::AtMostOnce, payload);
    let mut buf = BytesMut::with_capacity(t.len() * batch as usize);
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        if flow.outstanding() + batch > flow.window {
            // Registered before the re-check, so a delivery in between is not missed.
            let notified = flow.notify.notified();
            if flow.outstanding() + batch > flow.window {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(STALL) => flow.write_off(),
                    _ = stop.cancelled() => break,
                }
                continue;
            }
        }
        buf.clear();
        for _ in 0..batch {
            t.append(&mut buf, 0, seq, 0);
            seq += 1;
        }
        flow.published.fetch_add(batch, Relaxed);
        // Not cancelled by `stop`: a half-written batch would count as published but lost.
        tokio::time::timeout(WRITE_TIMEOUT, wire::send(&mut s, &buf))
            .await
            .map_err(|_| anyhow::anyhow!("the broker read nothing for {WRITE_TIMEOUT:?}"))?
            .context("publishing")?;
    }
    Ok(())
}

/// One subscriber connection of a [`sink_group`].
struct Sink {
    s: Conn,
    rbuf: BytesMut,
    index: usize,
}

/// Reads available bytes of one sink and counts the PUBLISH frames in them. `Ready(Ok(true))`:
/// there may be more to read; `Pending`: the socket is drained and will wake the task.
fn poll_sink(sink: &mut Sink, flow: &Flow, cx: &mut TaskContext<'_>) -> Poll<Result<bool>> {
    if sink.rbuf.capacity() - sink.rbuf.len() < RBUF / 4 {
        sink.rbuf.reserve(RBUF);
    }
    match ready!(poll_read_buf(Pin::new(&mut sink.s), cx, &mut sink.rbuf)) {
        Ok(0) => Poll::Ready(Err(anyhow::anyhow!(
            "the broker closed a subscriber's connection"
        ))),
        Ok(_) => {
            let (mut n, mut off) = (0u64, 0usize);
            loop {
                match next_frame(&sink.rbuf[off..]) {
                    Ok(Some(f)) => {
                        n += u64::from(f.kind() == 3);
                        off += f.end;
                    }
                    Ok(None) => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            sink.rbuf.advance(off);
            if let Some(c) = flow.deliveries.get(sink.index) {
                c.0.fetch_add(n, Relaxed);
            }
            Poll::Ready(Ok(true))
        }
        Err(e) => Poll::Ready(Err(e).context("reading deliveries")),
    }
}

/// QoS 0 subscribers driven by one task: each wake-up reads whatever is ready on any of them
/// (a bounded number of reads per socket, then it yields), counts PUBLISH frames, and wakes the
/// publishers once for the whole batch.
async fn sink_group(mut sinks: Vec<Sink>, flow: Arc<Flow>, stop: CancellationToken) -> Result<()> {
    let mut stopped = std::pin::pin!(stop.cancelled());
    poll_fn(|cx| {
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut more = false;
        for sink in sinks.iter_mut() {
            for reads in 0.. {
                if reads == 16 {
                    more = true;
                    break;
                }
                match poll_sink(sink, &flow, cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
        }
        flow.notify.notify_waiters();
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// Runs windowed QoS 0 publishers and subscribers; returns the report.
async fn qos0(
    opts: &Opts,
    scenario: Scenario,
    publishers: usize,
    subscribers: usize,
    filter: &str,
    topic_of: impl Fn(usize) -> String,
) -> Result<Report> {
    let transport = opts.transport()?;
    let flow = Arc::new(Flow {
        published: AtomicU64::new(0),
        deliveries: (0..subscribers).map(|_| Padded::default()).collect(),
        written_off: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
        window: opts.window.max(1),
        notify: Notify::new(),
    });
    let (stop_pub, stop_sub) = (CancellationToken::new(), CancellationToken::new());
    let _guard = (stop_pub.clone().drop_guard(), stop_sub.clone().drop_guard());
    let mut tasks = JoinSet::new();
    let mut groups: Vec<Vec<Sink>> = (0..SINK_TASKS.min(subscribers))
        .map(|_| Vec::new())
        .collect();
    for index in 0..subscribers {
        let (mut s, mut rbuf) =
            connect(opts.addr(), &transport, &format!("bench-sub-{index}")).await?;
        wire::subscribe(&mut s, filter, QoS::AtMostOnce, &mut rbuf).await?;
        if !rbuf.is_empty() {
            bail!("subscriber {index} received something before anyone published");
        }
        let group = index % groups.len();
        groups[group].push(Sink { s, rbuf, index });
    }
    for sinks in groups {
        tasks.spawn(sink_group(sinks, flow.clone(), stop_sub.clone()));
    }
    let batch = (opts.window / (2 * publishers as u64)).clamp(1, 64);
    for i in 0..publishers {
        let (s, _) = connect(opts.addr(), &transport, &format!("bench-pub-{i}")).await?;
        tasks.spawn(flood(
            s,
            topic_of(i),
            opts.payload,
            batch,
            flow.clone(),
            stop_pub.clone(),
        ));
    }
    let watch = async { measure(opts, || [flow.total(), flow.published.load(Relaxed)]).await };
    let w = tokio::select! {
        m = watch => m,
        Some(r) = tasks.join_next() => {
            r.context("a client task panicked")??;
            bail!("a client stopped before the end of the run");
        }
    };
    stop_pub.cancel();
    let expected = flow.published.load(Relaxed) * subscribers as u64;
    let until = Instant::now() + DRAIN;
    while flow.total() < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_sub.cancel();
    while let Some(r) = tasks.join_next().await {
        r.context("a client task panicked")??;
    }
    let total_deliveries = flow.total();
    let ([deliveries, published], secs) = (w.counts, w.secs);
    let mut report = Report::new(scenario, opts);
    let per_s = deliveries as f64 / secs;
    match scenario {
        Scenario::FanOut => report.add("deliveries_per_s", per_s, "deliveries/s"),
        _ => report.add("delivered_per_s", per_s, "msg/s"),
    }
    report.add("published_per_s", published as f64 / secs, "msg/s");
    report.add("delivered", total_deliveries as f64, "deliveries");
    report.add("published", flow.published.load(Relaxed) as f64, "msg");
    report.add(
        "lost",
        expected.saturating_sub(total_deliveries) as f64,
        "deliveries",
    );
    report.add("stalls", flow.stalls.load(Relaxed) as f64, "");
    report.add("publishers", publishers as f64, "");
    report.add("subscribers", subscribers as f64, "");
    report.add("seconds", secs, "s");
    w.add_cpu(&mut report);
    Ok(report)
}

/// `fan-in`: N publishers (default 8) on distinct topics -> 1 subscriber on `#`.
pub async fn fan_in(opts: &Opts) -> Result<Report> {
    let publishers = opts.publishers.unwrap_or(8).clamp(1, 1000);
    qos0(opts, Scenario::FanIn, publishers, 1, "#", |i| {
        format!("bench/in/{i}")
    })
    .await
}

/// `fan-out`: 1 publisher -> N subscribers (default 100) on one topic.
pub async fn fan_out(opts: &Opts) -> Result<Report> {
    let subscribers = opts.subscribers.unwrap_or(100).clamp(1, 10_000);
    qos0(opts, Scenario::FanOut, 1, subscribers, "bench/out", |_| {
        "bench/out".to_owned()
    })
    .await
}

/// What QoS 1 publishers and subscribers counted.
struct Q1Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    /// Messages received by each pair's subscriber (the end-to-end window).
    per_pair: Vec<Padded>,
}

/// A QoS 1 publisher keeping `inflight` PUBLISHes unacknowledged, and at most `--window`
/// messages ahead of its subscriber: a broker acknowledges a PUBLISH when it has queued it, so
/// without the second bound a publisher faster than the delivery path only fills (and overflows)
/// the subscriber's queue in the broker. Returns how many were still unacknowledged when the
/// drain ended, and acks for ids that were not in flight.
async fn q1_publisher(
    mut s: Conn,
    mut rbuf: BytesMut,
    topic: String,
    index: usize,
    opts: Opts,
    counts: Arc<Q1Counts>,
    stop: CancellationToken,
) -> Result<(u64, u64)> {
    let Some(delivered) = counts.per_pair.get(index) else {
        bail!("pair {index} has no counter");
    };
    let window = opts.window.max(1);
    let t = PublishTemplate::new(&topic, QoS::AtLeastOnce, opts.payload);
    let mut in_flight = vec![false; 65_536];
    let (mut n_in, mut next_id, mut seq, mut bogus) = (0usize, 1u16, 0u64, 0u64);
    let mut wbuf = BytesMut::with_capacity(t.len() * opts.inflight);
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && stop.is_cancelled() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        let ahead = |seq: u64| seq.saturating_sub(delivered.0.load(Relaxed)) >= window;
        if drain_until.is_none() && n_in < opts.inflight && !ahead(seq) {
            wbuf.clear();
            let first = seq;
            while n_in < opts.inflight && !ahead(seq) {
                if in_flight[usize::from(next_id)] {
                    bail!("packet id {next_id} is still in flight after 65535 others");
                }
                in_flight[usize::from(next_id)] = true;
                t.append(&mut wbuf, next_id, seq, 0);
                n_in += 1;
                seq += 1;
                next_id = next_id.checked_add(1).unwrap_or(1);
            }
            wire::send(&mut s, &wbuf).await.context("publishing")?;
            counts.sent.fetch_add(seq - first, Relaxed);
        }
        let until = match drain_until {
            Some(_) if n_in == 0 => return Ok((0, bogus)),
            Some(u) => u,
            None => Instant::now() + Duration::from_secs(3600),
        };
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        tokio::select! {
            r = s.read_buf(&mut rbuf) => if r.context("reading PUBACKs")? == 0 {
                bail!("the broker closed a publisher's connection");
            },
            _ = tokio::time::sleep_until(until) => return Ok((n_in as u64, bogus)),
            _ = stop.cancelled(), if drain_until.is_none() => continue,
            // Ahead of the subscriber: look again shortly (acks may not come to wake us).
            _ = tokio::time::sleep(Duration::from_millis(1)), if ahead(seq) => continue,
        }
        let mut off = 0;
        let mut acked = 0;
        while let Some(f) = next_frame(&rbuf[off..])? {
            if f.kind() == 4 {
                let id = usize::from(wire::ack_id(&rbuf[off..], &f)?);
                if std::mem::take(&mut in_flight[id]) {
                    n_in -= 1;
                    acked += 1;
                } else {
                    bogus += 1;
                }
            }
            off += f.end;
        }
        rbuf.advance(off);
        counts.acked.fetch_add(acked, Relaxed);
    }
}

/// A QoS 1 subscriber: acknowledges every message and records each sequence number once.
/// Returns (unique messages, duplicates).
async fn q1_subscriber(
    mut s: Conn,
    mut rbuf: BytesMut,
    index: usize,
    counts: Arc<Q1Counts>,
    stop: CancellationToken,
) -> Result<(u64, u64)> {
    let mut seen: Vec<u64> = Vec::new();
    let (mut unique, mut dups) = (0u64, 0u64);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    // PUBACK encoded once by the codec; its last two bytes are the packet id.
    let mut ack = wire::puback_packet(1);
    let id_at = ack.len() - 2;
    loop {
        let (mut off, mut n) = (0, 0);
        wbuf.clear();
        while let Some(f) = next_frame(&rbuf[off..])? {
            let frame = &rbuf[off..];
            if f.kind() == 3 {
                let (id, payload) = wire::publish_parts(frame, &f)?;
                if id != 0 {
                    ack[id_at..].copy_from_slice(&id.to_be_bytes());
                    wbuf.extend_from_slice(&ack);
                }
                let Some((seq, _)) = wire::seq_and_stamp(payload) else {
                    bail!("a delivered payload is shorter than its sequence number");
                };
                let (word, bit) = (usize::try_from(seq / 64)?, seq % 64);
                if word >= 1 << 26 {
                    bail!("sequence number {seq} out of range");
                }
                if word >= seen.len() {
                    seen.resize(word + 1024, 0);
                }
                if seen[word] & (1 << bit) != 0 {
                    dups += 1;
                } else {
                    seen[word] |= 1 << bit;
                    unique += 1;
                }
                n += 1;
            }
            off += f.end;
        }
        rbuf.advance(off);
        if !wbuf.is_empty() {
            wire::send(&mut s, &wbuf).await.context("acknowledging")?;
        }
        counts.received.fetch_add(n, Relaxed);
        if let Some(c) = counts.per_pair.get(index) {
            c.0.fetch_add(n, Relaxed);
        }
        if rbuf.capacity() - rbuf.len() < RBUF / 4 {
            rbuf.reserve(RBUF);
        }
        tokio::select! {
            r = s.read_buf(&mut rbuf) => if r.context("reading deliveries")? == 0 {
                bail!("the broker closed a subscriber's connection");
            },
            _ = stop.cancelled() => return Ok((unique, dups)),
        }
    }
}

/// `qos1`: N pairs (default 4): publisher i -> `bench/q1/i` -> subscriber i, QoS 1 both ways.
pub async fn qos1(opts: &Opts) -> Result<Report> {
    let pairs = opts.publishers.unwrap_or(4).clamp(1, 1000);
    let transport = opts.transport()?;
    let counts = Arc::new(Q1Counts {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        received: AtomicU64::new(0),
        per_pair: (0..pairs).map(|_| Padded::default()).collect(),
    });
    let (stop_pub, stop_sub) = (CancellationToken::new(), CancellationToken::new());
    let _guard = (stop_pub.clone().drop_guard(), stop_sub.clone().drop_guard());
    let (mut subs, mut pubs) = (JoinSet::new(), JoinSet::new());
    for i in 0..pairs {
        let id = format!("bench-q1-sub-{i}");
        let (mut s, mut rbuf) =
            connect_session(opts.sub_addr(), &transport, &id, !opts.persistent).await?;
        wire::subscribe(
            &mut s,
            &format!("bench/q1/{i}"),
            QoS::AtLeastOnce,
            &mut rbuf,
        )
        .await?;
        subs.spawn(q1_subscriber(s, rbuf, i, counts.clone(), stop_sub.clone()));
    }
    for i in 0..pairs {
        let (s, rbuf) = connect(opts.addr(), &transport, &format!("bench-q1-pub-{i}")).await?;
        pubs.spawn(q1_publisher(
            s,
            rbuf,
            format!("bench/q1/{i}"),
            i,
            opts.clone(),
            counts.clone(),
            stop_pub.clone(),
        ));
    }
    let watch = measure(opts, || {
        [counts.received.load(Relaxed), counts.acked.load(Relaxed)]
    });
    let w = tokio::select! {
        m = watch => m,
        Some(r) = pubs.join_next() => {
            r.context("a publisher panicked")??;
            bail!("a publisher stopped before the end of the run");
        }
        Some(r) = subs.join_next() => {
            r.context("a subscriber panicked")??;
            bail!("a subscriber stopped before the end of the run");
        }
    };
    stop_pub.cancel();
    let (mut unacked, mut bogus) = (0, 0);
    while let Some(r) = pubs.join_next().await {
        let (u, b) = r.context("a publisher panicked")??;
        unacked += u;
        bogus += b;
    }
    let sent = counts.sent.load(Relaxed);
    let until = Instant::now() + DRAIN;
    while counts.received.load(Relaxed) < sent && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_sub.cancel();
    let (mut unique, mut dups) = (0, 0);
    while let Some(r) = subs.join_next().await {
        let (u, d) = r.context("a subscriber panicked")??;
        unique += u;
        dups += d;
    }
    let ([received, acked], secs) = (w.counts, w.secs);
    let mut report = Report::new(Scenario::Qos1, opts);
    report.add("delivered_per_s", received as f64 / secs, "msg/s");
    report.add("acked_per_s", acked as f64 / secs, "msg/s");
    report.add("published", sent as f64, "msg");
    report.add("delivered_unique", unique as f64, "msg");
    report.add("lost", sent.saturating_sub(unique) as f64, "msg");
    report.add("duplicates", dups as f64, "msg");
    report.add("unacked_at_end", unacked as f64, "msg");
    report.add("unexpected_acks", bogus as f64, "");
    report.add("pairs", pairs as f64, "");
    report.add("seconds", secs, "s");
    w.add_cpu(&mut report);
    Ok(report)
}
