//! Watching the broker from outside: resident memory from /proc, the connection count from `$SYS`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use mqttd::protocol::{Packet, QoS};
use tokio::time::Instant;

use crate::client::{Client, Options, Recv};

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open sockets of `pid` (listeners included), from /proc/PID/fd.
pub fn socket_fds(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

/// Samples RSS every second until `end`.
pub async fn sample_rss(pid: u32, end: Instant) -> Vec<(Duration, u64)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        ticker.tick().await;
        if let Some(kib) = rss_kib(pid) {
            samples.push((start.elapsed(), kib));
        }
    }
    samples
}

/// First-third and last-third average RSS (KiB) of the samples after `warmup`.
pub fn rss_thirds(samples: &[(Duration, u64)], warmup: Duration) -> Option<(f64, f64)> {
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, k)| *k)
        .collect();
    let third = after.len() / 3;
    if third == 0 {
        return None;
    }
    let avg = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64;
    Some((avg(&after[..third]), avg(&after[after.len() - third..])))
}

/// Connections the broker counts, not counting the asking client: the first *live* value of
/// `$SYS/broker/clients/connected` (the retained one sent on subscribe may be up to one interval
/// old), minus one. Needs `sys.interval` of a few seconds at most.
pub async fn connected_clients(addr: SocketAddr, id: &str, limit: Duration) -> Result<u64> {
    let (mut c, _) = Client::connect(addr, Options::clean(id)).await?;
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await?;
    let deadline = Instant::now() + limit;
    loop {
        match c
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await?
        {
            Recv::Packet(Packet::Publish(p)) if !p.retain => {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                let _ = c.disconnect().await;
                let n: u64 = text.trim().parse()?;
                return Ok(n.saturating_sub(1));
            }
            Recv::Packet(_) => {}
            Recv::Timeout => bail!(
                "no $SYS/broker/clients/connected update within {limit:?} (run the broker with sys.interval = 1)"
            ),
            Recv::Closed => bail!("closed while waiting for $SYS"),
        }
    }
}
