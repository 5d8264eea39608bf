//! `latency`: one publisher at a fixed rate -> one subscriber, QoS 0, end-to-end latency.
//!
//! Both ends are plain blocking sockets on their own threads: a thread blocked in `read` wakes as
//! soon as the bytes arrive, without an async scheduler's hop in between, and `thread::sleep`
//! paces the publisher more finely than tokio's millisecond timer. The payload carries the send
//! time (nanoseconds since a clock shared by both threads), taken just before the `write`; the
//! subscriber takes its time right after the `read` returns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use mqttd::protocol::{self, ConnAckReason, Packet, QoS};

use super::wire::{self, PublishTemplate, next_frame};
use super::{Opts, Report, Scenario, cpu_seconds};

const TOPIC: &str = "bench/latency";
/// A publisher this far behind schedule (machine overloaded) skips ahead instead of bursting.
const MAX_LAG: Duration = Duration::from_millis(50);

/// Blocking connect + CONNACK (+ SUBACK when `filter` is given), through the broker's codec.
fn connect_blocking(addr: SocketAddr, client_id: &str, filter: Option<&str>) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, wire::SETUP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(wire::SETUP_TIMEOUT))?;
    s.write_all(&wire::connect_packet(client_id, 60, None))?;
    let mut rbuf = BytesMut::with_capacity(4096);
    match read_one(&mut s, &mut rbuf)? {
        Packet::ConnAck(a) if a.code == ConnAckReason::Success => {}
        other => bail!("{client_id}: expected a successful CONNACK, got {other:?}"),
    }
    if let Some(filter) = filter {
        s.write_all(&wire::encode(&Packet::Subscribe(
            mqttd::protocol::Subscribe {
                packet_id: 1,
                filters: vec![mqttd::protocol::SubscribeFilter {
                    filter: filter.to_owned(),
                    options: mqttd::protocol::SubscriptionOptions::new(QoS::AtMostOnce),
                }],
                properties: None,
            },
        )))?;
        match read_one(&mut s, &mut rbuf)? {
            Packet::SubAck(a) if a.return_codes.first().is_some_and(|c| !c.is_error()) => {}
            other => bail!("{client_id}: expected a successful SUBACK, got {other:?}"),
        }
    }
    Ok(s)
}

fn read_one(s: &mut TcpStream, rbuf: &mut BytesMut) -> Result<Packet> {
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        if let Some(p) = protocol::decode(rbuf, wire::VERSION, wire::MAX_FRAME)? {
            return Ok(p);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("the broker closed the connection during set-up");
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
    bail!("no complete packet after 1000 reads")
}

struct Shared {
    clock: Instant,
    sent: AtomicU64,
    publisher_done: AtomicBool,
}

fn publisher(mut s: TcpStream, opts: Opts, shared: Arc<Shared>) -> Result<u64> {
    let t = PublishTemplate::new(TOPIC, QoS::AtMostOnce, opts.payload);
    let interval = Duration::from_secs_f64(1.0 / opts.rate as f64);
    let mut buf = BytesMut::with_capacity(t.len());
    let start = Instant::now();
    let end = start + opts.warmup + opts.duration;
    let (mut next, mut seq, mut skipped) = (start, 0u64, 0u64);
    while Instant::now() < end {
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > MAX_LAG {
            skipped += 1;
            next = now;
        }
        buf.clear();
        let stamp = shared.clock.elapsed().as_nanos() as u64;
        t.append(&mut buf, 0, seq, stamp);
        s.write_all(&buf).context("publishing")?;
        seq += 1;
        shared.sent.store(seq, Relaxed);
    }
    shared.publisher_done.store(true, Relaxed);
    Ok(skipped)
}

/// Returns latencies (ns) of messages sent after the warm-up, and how many were received in all.
fn subscriber(mut s: TcpStream, opts: Opts, shared: Arc<Shared>) -> Result<(Vec<u64>, u64)> {
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let first_measured = (opts.rate as f64 * opts.warmup.as_secs_f64()) as u64;
    let hard_end = Instant::now() + opts.warmup + opts.duration + Duration::from_secs(3);
    let mut samples = Vec::with_capacity((opts.rate as f64 * opts.duration.as_secs_f64()) as usize);
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    while Instant::now() < hard_end {
        if shared.publisher_done.load(Relaxed) && received >= shared.sent.load(Relaxed) {
            break;
        }
        let n = match s.read(&mut chunk) {
            Ok(0) => bail!("the broker closed the subscriber's connection"),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("reading deliveries"),
        };
        let now = shared.clock.elapsed().as_nanos() as u64;
        rbuf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        while let Some(f) = next_frame(&rbuf[off..])? {
            if f.kind() == 3 {
                let (_, payload) = wire::publish_parts(&rbuf[off..], &f)?;
                let (seq, stamp) = wire::seq_and_stamp(payload)
                    .ok_or_else(|| anyhow!("a delivered payload lacks its timestamp"))?;
                received += 1;
                if seq >= first_measured {
                    samples.push(now.saturating_sub(stamp));
                }
            }
            off += f.end;
        }
        rbuf.advance(off);
    }
    Ok((samples, received))
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let i = ((last as f64) * p).round() as usize;
    sorted.get(i.min(last)).map(|ns| *ns as f64 / 1000.0)
}

pub async fn run(opts: &Opts) -> Result<Report> {
    let addr = opts.addr();
    let shared = Arc::new(Shared {
        clock: Instant::now(),
        sent: AtomicU64::new(0),
        publisher_done: AtomicBool::new(false),
    });
    let sub = connect_blocking(addr, "bench-lat-sub", Some(TOPIC))?;
    let cpu = || {
        (
            cpu_seconds(None),
            opts.broker_pid.and_then(|p| cpu_seconds(Some(p))),
        )
    };
    let (cpu_a, t0) = (cpu(), Instant::now());
    let publ = connect_blocking(addr, "bench-lat-pub", None)?;
    let (o1, s1) = (opts.clone(), shared.clone());
    let sub = tokio::task::spawn_blocking(move || subscriber(sub, o1, s1));
    let (o2, s2) = (opts.clone(), shared.clone());
    let publ = tokio::task::spawn_blocking(move || publisher(publ, o2, s2));
    let skipped = publ.await.context("the publisher thread panicked")??;
    let (cpu_b, secs) = (cpu(), t0.elapsed().as_secs_f64().max(1e-9));
    let pct = |x: Option<f64>, y: Option<f64>| Some((y? - x?) * 100.0 / secs);
    let (mut samples, received) = sub.await.context("the subscriber thread panicked")??;
    samples.sort_unstable();
    let sent = shared.sent.load(Relaxed);
    let mut report = Report::new(Scenario::Latency, opts);
    report.add("p99_us", percentile(&samples, 0.99), "us");
    report.add("p50_us", percentile(&samples, 0.50), "us");
    report.add("p90_us", percentile(&samples, 0.90), "us");
    report.add("p999_us", percentile(&samples, 0.999), "us");
    report.add("max_us", samples.last().map(|ns| *ns as f64 / 1000.0), "us");
    report.add("rate", opts.rate as f64, "msg/s");
    report.add("samples", samples.len() as f64, "msg");
    report.add("lost", sent.saturating_sub(received) as f64, "msg");
    report.add("schedule_skips", skipped as f64, "");
    // Over warm-up and measuring window together.
    report.add("cpu_bench_pct", pct(cpu_a.0, cpu_b.0), "% of a core");
    report.add("cpu_broker_pct", pct(cpu_a.1, cpu_b.1), "% of a core");
    Ok(report)
}
