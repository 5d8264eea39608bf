//! `coap-publish`: CoAP `POST /ps/bench/coap/{i}` requests to the CoAP gateway (`--coap-port`)
//! from `--publishers` UDP sockets (default 8), each keeping `--inflight` requests outstanding,
//! confirmable (`--coap-mode con`, QoS 1) or not (`non`, QoS 0); one MQTT subscriber on
//! `bench/coap/#` counts what arrives. Headline: publishes answered 2.xx per second, over
//! `--duration` after the warm-up, or over the time `--count` publishes took.
//!
//! Requests are encoded by hand and only the answer's header is read: the generator must cost
//! far less than the gateway it measures. A request unanswered for a second is counted lost and
//! its slot reused (the gateway drops requests over its per-source rate limit unanswered: raise
//! `coap.request_rate` for a benchmark).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Opts, Report, Scenario, measure};

/// Confirmable or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Con,
    Non,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    delivered: AtomicU64,
}

/// One CoAP option, delta-encoded after `*last`.
fn option(out: &mut Vec<u8>, last: &mut u16, number: u16, value: &[u8]) {
    let ext = |x: usize| -> (u8, Vec<u8>) {
        match x {
            0..=12 => (x as u8, vec![]),
            13..=268 => (13, vec![(x - 13) as u8]),
            _ => (14, ((x - 269) as u16).to_be_bytes().to_vec()),
        }
    };
    let (d, dx) = ext(usize::from(number - *last));
    let (l, lx) = ext(value.len());
    out.push((d << 4) | l);
    out.extend_from_slice(&dx);
    out.extend_from_slice(&lx);
    out.extend_from_slice(value);
    *last = number;
}

/// A POST request; bytes 2-3 (message id) and 4-5 (token) are filled in per send.
pub fn request(mode: Mode, path: &[&str], query: &[String], payload: &[u8]) -> Vec<u8> {
    let kind = match mode {
        Mode::Con => 0,
        Mode::Non => 1,
    };
    let mut out = vec![0x40 | (kind << 4) | 2, 0x02, 0, 0, 0, 0];
    let mut last = 0;
    for p in path {
        option(&mut out, &mut last, 11, p.as_bytes());
    }
    for q in query {
        option(&mut out, &mut last, 15, q.as_bytes());
    }
    out.push(0xFF);
    out.extend_from_slice(payload);
    out
}

pub async fn coap_publish(opts: &Opts) -> Result<Report> {
    let sockets = opts.publishers.unwrap_or(8).clamp(1, 512);
    let inflight = opts.inflight.clamp(1, 1024);
    let gateway = SocketAddr::new(opts.host, opts.coap_port);
    let mode = opts.coap_mode;
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let password = opts.password()?;

    let delivered = counts.clone();
    tasks.spawn(
        super::counting_subscriber(
            opts,
            "bench-coap-sub",
            "bench/coap/#",
            password.as_deref(),
            move || {
                delivered.delivered.fetch_add(1, Relaxed);
            },
            stop.clone(),
        )
        .await?,
    );

    let payload = vec![b'x'; opts.payload];
    let per_socket = opts.count.map(|c| c.div_ceil(sockets as u64));
    let started = Instant::now();
    for i in 0..sockets {
        let mut query = vec![format!("c=bench-coap-{i}")];
        if let (Some(u), Some(p)) = (&opts.username, &password) {
            query.push(format!("u={u}"));
            query.push(format!("p={p}"));
        }
        let topic = i.to_string();
        let template = request(mode, &["ps", "bench", "coap", &topic], &query, &payload);
        let sock = UdpSocket::bind(SocketAddr::new(opts.host, 0)).await?;
        sock.connect(gateway).await?;
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.spawn(async move {
            let mut msg = template;
            let mut mid: u16 = rand_mid(i);
            let (mut outstanding, mut sent) = (0usize, 0u64);
            let mut buf = [0u8; 1500];
            while !stop.is_cancelled() {
                let more = per_socket.is_none_or(|n| sent < n);
                while more && outstanding < inflight && per_socket.is_none_or(|n| sent < n) {
                    mid = mid.wrapping_add(1);
                    msg[2..4].copy_from_slice(&mid.to_be_bytes());
                    msg[4..6].copy_from_slice(&mid.to_be_bytes());
                    sock.send(&msg).await?;
                    outstanding += 1;
                    sent += 1;
                }
                if outstanding == 0 {
                    return Ok(());
                }
                match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                    Ok(r) => {
                        let n = r?;
                        if n < 4 || buf[1] == 0 {
                            continue; // an empty ACK or a Reset
                        }
                        outstanding = outstanding.saturating_sub(1);
                        match buf[1] >> 5 {
                            2 => counts.ok.fetch_add(1, Relaxed),
                            4 if buf[1] & 0x1F == 1 || buf[1] & 0x1F == 3 => {
                                bail!("the gateway refused the credentials or the ACL said no")
                            }
                            _ => counts.refused.fetch_add(1, Relaxed),
                        };
                    }
                    Err(_) => {
                        counts.lost.fetch_add(outstanding as u64, Relaxed);
                        outstanding = 0;
                    }
                }
            }
            Ok(())
        });
    }

    let mut report = Report::new(Scenario::CoapPublish, opts);
    report.transport = format!("coap/udp {}", if mode == Mode::Con { "CON" } else { "NON" });
    let (counts_seen, secs, cpu) = match opts.count {
        None => {
            let w = measure(opts, || {
                [
                    counts.ok.load(Relaxed),
                    counts.refused.load(Relaxed),
                    counts.lost.load(Relaxed),
                    counts.delivered.load(Relaxed),
                ]
            })
            .await;
            stop.cancel();
            (w.counts, w.secs, Some(w))
        }
        Some(_) => {
            // Every publisher stops by itself once its share is answered or lost.
            while tasks.len() > 1 {
                match tasks.join_next().await {
                    Some(r) => r.context("a task panicked")??,
                    None => break,
                }
            }
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            tokio::time::sleep(Duration::from_millis(200)).await; // the last deliveries
            stop.cancel();
            let c = [
                counts.ok.load(Relaxed),
                counts.refused.load(Relaxed),
                counts.lost.load(Relaxed),
                counts.delivered.load(Relaxed),
            ];
            (c, secs, None)
        }
    };
    while let Some(r) = tasks.join_next().await {
        r.context("a task panicked")??;
    }
    report.add("published_per_s", counts_seen[0] as f64 / secs, "req/s");
    report.add("refused_per_s", counts_seen[1] as f64 / secs, "req/s");
    report.add("lost", counts_seen[2] as f64, "req");
    report.add("delivered_per_s", counts_seen[3] as f64 / secs, "msg/s");
    report.add("sockets", sockets as f64, "");
    report.add("inflight", inflight as f64, "per socket");
    if let Some(w) = cpu {
        w.add_cpu(&mut report);
    }
    Ok(report)
}

/// A starting message id per socket (distinct, not all zero).
fn rand_mid(i: usize) -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t as u16).wrapping_add((i as u16).wrapping_mul(7919))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_options_in_order() {
        let r = request(
            Mode::Non,
            &["ps", "a"],
            &["c=a-long-client-id".into()],
            b"hi",
        );
        assert_eq!(&r[..2], &[0x52, 0x02]);
        // Uri-Path "ps" (delta 11), "a" (delta 0), Uri-Query (delta 4, length 18 = 13 + 5).
        assert_eq!(&r[6..9], &[0xB2, b'p', b's']);
        assert_eq!(&r[9..11], &[0x01, b'a']);
        assert_eq!(&r[11..13], &[0x4D, 5]);
        assert!(r.ends_with(&[0xFF, b'h', b'i']));
    }
}
