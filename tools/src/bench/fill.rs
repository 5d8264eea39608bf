//! `fill`: leaves the broker holding `--subscribers` offline persistent sessions with `--queued`
//! QoS 1 messages each and `--retained` retained messages, all acknowledged, so that a restart
//! has them to restore (tools/compare's `startup` row times that restart).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use mqttd::protocol::QoS;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::dial::Conn;
use super::flow::{connect, connect_session};
use super::wire::{self, PublishTemplate, next_frame};
use super::{Opts, Report};

/// Unacknowledged PUBLISHes per filling connection.
const IN_FLIGHT: usize = 256;
/// Connections publishing at once.
const PUBLISHERS: usize = 4;

pub async fn fill(opts: &Opts) -> Result<Report> {
    let sessions = opts.subscribers.unwrap_or(1000).max(1);
    let queued = opts.queued;
    let started = Instant::now();
    let transport = opts.transport()?;
    for i in 0..sessions {
        let (mut s, mut rbuf) =
            connect_session(opts.addr(), &transport, &format!("fill-{i}"), false).await?;
        wire::subscribe(&mut s, &format!("fill/{i}"), QoS::AtLeastOnce, &mut rbuf).await?;
        wire::send(&mut s, &wire::disconnect_packet()).await?;
    }
    let mut tasks = JoinSet::new();
    for p in 0..PUBLISHERS {
        let topics: Vec<String> = (p..sessions)
            .step_by(PUBLISHERS)
            .map(|i| format!("fill/{i}"))
            .collect();
        let (s, rbuf) = connect(opts.addr(), &transport, &format!("fill-pub-{p}")).await?;
        let payload = opts.payload;
        tasks.spawn(async move {
            publish_all(
                s,
                rbuf,
                topics.iter().map(|t| (t.clone(), false)),
                queued,
                payload,
            )
            .await
        });
    }
    let retained = opts.retained;
    let (s, rbuf) = connect(opts.addr(), &transport, "fill-retained").await?;
    let payload = opts.payload;
    tasks.spawn(async move {
        let topics = (0..retained).map(|i| (format!("kept/{}/{}", i / 1000, i % 1000), true));
        publish_all(s, rbuf, topics, 1, payload).await
    });
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.context("a filling task panicked")??;
    }
    let mut report = Report::new(super::Scenario::Fill, opts);
    report.add("acknowledged", total as f64, "msg");
    report.add("seconds", started.elapsed().as_secs_f64(), "s");
    Ok(report)
}

/// Publishes `each` QoS 1 messages to every topic (retained where flagged), keeping
/// [`IN_FLIGHT`] unacknowledged; returns how many were acknowledged.
async fn publish_all(
    mut s: Conn,
    mut rbuf: BytesMut,
    topics: impl Iterator<Item = (String, bool)>,
    each: u64,
    payload: usize,
) -> Result<u64> {
    let (mut n_in, mut acked, mut next_id, mut seq) = (0usize, 0u64, 1u16, 0u64);
    let mut wbuf = BytesMut::new();
    let mut work = topics.flat_map(|(t, retain)| (0..each).map(move |_| (t.clone(), retain)));
    let mut done = false;
    loop {
        wbuf.clear();
        while !done && n_in < IN_FLIGHT {
            let Some((topic, retain)) = work.next() else {
                done = true;
                break;
            };
            let t = PublishTemplate::new(&topic, QoS::AtLeastOnce, payload.max(16));
            let start = wbuf.len();
            t.append(&mut wbuf, next_id, seq, 0);
            if retain {
                wbuf[start] |= 0x01;
            }
            n_in += 1;
            seq += 1;
            next_id = next_id.checked_add(1).unwrap_or(1);
        }
        if !wbuf.is_empty() {
            wire::send(&mut s, &wbuf).await.context("publishing")?;
        }
        if done && n_in == 0 {
            return Ok(acked);
        }
        if s.read_buf(&mut rbuf).await.context("reading PUBACKs")? == 0 {
            bail!("the broker closed a filling connection");
        }
        let mut off = 0;
        while let Some(f) = next_frame(&rbuf[off..])? {
            if f.kind() == 4 {
                n_in -= 1;
                acked += 1;
            }
            off += f.end;
        }
        rbuf.advance(off);
    }
}
