//! `http-publish`: single `POST /api/v1/publish` requests over keep-alive HTTP/1.1 connections
//! (`--publishers` of them, default 16, one request in flight on each), with one MQTT subscriber
//! on `bench/http/#` counting what arrives. Headline: publishes answered 200/202 per second.
//!
//! The requests are written by hand and the answers read with httparse: the generator must cost
//! the machine far less than the broker's HTTP stack it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Opts, Report, Scenario, measure};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
}

pub async fn http_publish(opts: &Opts) -> Result<Report> {
    let connections = opts.publishers.unwrap_or(16).clamp(1, 512);
    let http = SocketAddr::new(opts.host, opts.http_port);
    let password = opts.password()?;
    let auth = match (&opts.username, &password) {
        (Some(u), Some(p)) => Some(format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )),
        _ => None,
    };
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();

    // The subscriber, over MQTT (with the same credentials).
    let delivered = counts.clone();
    tasks.spawn(
        super::counting_subscriber(
            opts,
            "bench-http-sub",
            "bench/http/#",
            password.as_deref(),
            move || {
                delivered.delivered.fetch_add(1, Relaxed);
            },
            stop.clone(),
        )
        .await?,
    );

    let payload = "x".repeat(opts.payload);
    for i in 0..connections {
        let body = format!("{{\"topic\":\"bench/http/{i}\",\"payload\":\"{payload}\"}}");
        let request = format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: {http}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            auth.as_deref().unwrap_or(""),
            body.len()
        );
        let counts = counts.clone();
        let stop = stop.clone();
        let mut s = TcpStream::connect(http)
            .await
            .with_context(|| format!("connecting to the HTTP API at {http}"))?;
        s.set_nodelay(true)?;
        tasks.spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            while !stop.is_cancelled() {
                s.write_all(request.as_bytes()).await?;
                let status = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut r = httparse::Response::new(&mut headers);
                    if let httparse::Status::Complete(head) = r.parse(&buf)? {
                        let len = r
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                            .unwrap_or(0usize);
                        if buf.len() >= head + len {
                            let status = r.code.unwrap_or(0);
                            buf.advance(head + len);
                            break status;
                        }
                    }
                    if s.read_buf(&mut buf).await? == 0 {
                        bail!("the HTTP API closed the connection");
                    }
                };
                match status {
                    200 | 202 => counts.ok.fetch_add(1, Relaxed),
                    401 | 403 => bail!("the HTTP API refused the credentials ({status})"),
                    _ => counts.refused.fetch_add(1, Relaxed),
                };
            }
            Ok(())
        });
    }

    let w = measure(opts, || {
        [
            counts.ok.load(Relaxed),
            counts.refused.load(Relaxed),
            counts.delivered.load(Relaxed),
        ]
    })
    .await;
    stop.cancel();
    while let Some(r) = tasks.join_next().await {
        r.context("a task panicked")??;
    }
    let mut report = Report::new(Scenario::HttpPublish, opts);
    report.transport = "http/1.1 keep-alive".into();
    report.add("published_per_s", w.counts[0] as f64 / w.secs, "req/s");
    report.add("refused_per_s", w.counts[1] as f64 / w.secs, "req/s");
    report.add("delivered_per_s", w.counts[2] as f64 / w.secs, "msg/s");
    report.add("connections", connections as f64, "");
    w.add_cpu(&mut report);
    Ok(report)
}
