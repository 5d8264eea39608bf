//! Connection scenarios: many idle clients (memory per connection) and the connect rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dial::{self, Conn, Transport};
use super::wire;
use super::{Opts, Report, Scenario, measure, rss_bytes};

/// How long the connections scenario may spend opening its clients.
const CONNECT_PHASE: Duration = Duration::from_secs(60);
/// Per step of one connect-rate cycle (TCP connect, TLS, CONNACK, close).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The first error seen, kept for the final message.
#[derive(Default)]
struct FirstError(Mutex<Option<String>>);

impl FirstError {
    fn set(&self, e: &anyhow::Error) {
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// `connections`: opens `--clients` idle connections (keep-alive 10 minutes, longer than any
/// run) over the run's transport (plain, WebSocket or TLS: a full handshake each) and reads the
/// broker's VmRSS before and after.
pub async fn connections(opts: &Opts) -> Result<Report> {
    let n = opts.clients;
    let transport = opts.transport()?;
    let rss_before = opts.broker_pid.map(rss_bytes).transpose()?;
    let start = Instant::now();
    let deadline = start + CONNECT_PHASE;
    let workers = opts.concurrency.min(n.max(1));
    let errors = Arc::new(FirstError::default());
    let mut set = JoinSet::new();
    for w in 0..workers {
        let (addr, errors, transport) = (opts.addr(), errors.clone(), transport.clone());
        set.spawn(async move {
            let mut held = Vec::with_capacity(n / workers + 1);
            let mut failed = 0usize;
            for i in (w..n).step_by(workers) {
                if Instant::now() > deadline {
                    failed += 1;
                    continue;
                }
                match idle_client(addr, &transport, i).await {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        errors.set(&e);
                        failed += 1;
                    }
                }
            }
            (held, failed)
        });
    }
    let (mut held, mut failed) = (Vec::with_capacity(n), 0);
    while let Some(r) = set.join_next().await {
        let (h, f) = r.context("a connecting task panicked")?;
        held.extend(h);
        failed += f;
    }
    let connect_secs = start.elapsed().as_secs_f64();
    // Let the broker finish whatever it does after CONNACK before reading its memory.
    tokio::time::sleep(opts.warmup).await;
    let rss_after = opts.broker_pid.map(rss_bytes).transpose()?;
    let connected = held.len();
    drop(held);
    if connected == 0 {
        bail!(
            "no client got a CONNACK: {}",
            errors.get().unwrap_or_default()
        );
    }
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / connected as f64),
        _ => None,
    };
    let mut report = Report::new(Scenario::Connections, opts);
    report.add("rss_per_conn_bytes", per_conn, "B");
    report.add("connected", connected as f64, "clients");
    report.add("failed", failed as f64, "clients");
    report.add("connect_seconds", connect_secs, "s");
    report.add(
        "rss_before_kb",
        rss_before.map(|b| b as f64 / 1024.0),
        "KiB",
    );
    report.add("rss_after_kb", rss_after.map(|b| b as f64 / 1024.0), "KiB");
    if let Some(e) = errors.get() {
        eprintln!("connections: first failure: {e}");
    }
    Ok(report)
}

async fn idle_client(addr: SocketAddr, t: &Transport, i: usize) -> Result<Conn> {
    let mut s = dial::dial(addr, t).await?;
    let mut rbuf = BytesMut::with_capacity(64);
    let connect = wire::connect_packet(&format!("bench-idle-{i}"), 600, None);
    wire::handshake(&mut s, &connect, &mut rbuf).await?;
    Ok(s)
}

/// CONNECT -> CONNACK -> DISCONNECT, then wait for the broker to close first (so the TIME_WAIT
/// state stays on the broker's side and the client does not run out of ephemeral ports).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    connect: &[u8],
    disconnect: &[u8],
) -> Result<()> {
    let mut rbuf = BytesMut::with_capacity(256);
    wire::handshake(s, connect, &mut rbuf).await?;
    wire::send(s, disconnect)
        .await
        .context("sending DISCONNECT")?;
    let mut sink = [0u8; 256];
    // EOF, an error (a TLS peer closing without close_notify) or the timeout all end the wait.
    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
        for _ in 0..100 {
            if !matches!(s.read(&mut sink).await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

async fn one_cycle(
    addr: SocketAddr,
    transport: &Transport,
    connect: &[u8],
    disconnect: &[u8],
) -> Result<()> {
    // dial bounds the TCP connect, PROXY header, TLS handshake or upgrade by its own timeout.
    let mut s = dial::dial(addr, transport).await?;
    session(&mut s, connect, disconnect).await
}

/// `connect-rate`: `--concurrency` clients, each with its own fixed client id (returning clients
/// with repeat credentials), loop connect -> CONNACK -> DISCONNECT (with `--tls`, a full
/// handshake every time).
pub async fn connect_rate(opts: &Opts) -> Result<Report> {
    let transport = opts.transport()?;
    // MQTT_PASSWORD is only looked at when a username is given (scripts export it for all runs).
    if opts.username.is_none() && opts.password.is_some() {
        bail!("--password needs --username");
    }
    let password = opts.password()?;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(FirstError::default());
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut set = JoinSet::new();
    for w in 0..opts.concurrency {
        let creds = opts.username.clone().zip(password.clone());
        let connect = wire::connect_packet(
            &format!("bench-cr-{w}"),
            60,
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        );
        let disconnect = wire::disconnect_packet();
        let (addr, transport, stop) = (opts.addr(), transport.clone(), stop.clone());
        let (ok, failed, errors) = (ok.clone(), failed.clone(), errors.clone());
        set.spawn(async move {
            while !stop.is_cancelled() {
                let cycle = one_cycle(addr, &transport, &connect, &disconnect);
                let r = tokio::select! {
                    r = cycle => r,
                    _ = stop.cancelled() => break,
                };
                match r {
                    Ok(()) => {
                        ok.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        errors.set(&e);
                        failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let w = measure(opts, || [ok.load(Relaxed), failed.load(Relaxed)]).await;
    let ([connects, failures], secs) = (w.counts, w.secs);
    stop.cancel();
    while let Some(r) = set.join_next().await {
        r.context("a connecting task panicked")?;
    }
    if ok.load(Relaxed) == 0 {
        bail!(
            "no connection succeeded: {}",
            errors.get().unwrap_or_default()
        );
    }
    if let Some(e) = errors.get() {
        eprintln!("connect-rate: first failure: {e}");
    }
    let mut report = Report::new(Scenario::ConnectRate, opts);
    report.add("connects_per_s", connects as f64 / secs, "connects/s");
    report.add("failures", failures as f64, "");
    report.add("concurrency", opts.concurrency as f64, "clients");
    report.add("tls", f64::from(u8::from(transport.tls.is_some())), "");
    report.add("password", f64::from(u8::from(opts.username.is_some())), "");
    report.add("ws", f64::from(u8::from(opts.ws)), "");
    report.add("proxy_v2", f64::from(u8::from(opts.proxy_v2)), "");
    report.add("seconds", secs, "s");
    w.add_cpu(&mut report);
    Ok(report)
}
