//! Soak test: mixed load against a running broker for a fixed time, then a verdict.
//!
//! ```text
//! mqtt-soak --host 127.0.0.1 --port 1883 --duration 600 --broker-pid $(pidof mqttd)
//! ```
//!
//! Runs at once: QoS 0/1/2 publishers (sequence numbers in the payloads), healthy subscribers at
//! QoS 2, persistent-session clients (clean session 0) that keep leaving (gracefully or by
//! dropping the socket) and coming back, clients with wills that mostly vanish abruptly, retained
//! messages checked by fresh subscribers, malformed clients that must be closed, and slow clients
//! that subscribe and never read.
//!
//! Passes (exit 0) when: no QoS 1/2 message the broker acknowledged is missing at any healthy or
//! persistent subscriber; duplicates only where allowed (QoS 1 with DUP); every abrupt will
//! arrived and no graceful one did; every retained check passed; every malformed client was
//! closed; broker RSS after warm-up is flat (last-third average within `--rss-tolerance` of the
//! first third) when `--broker-pid` is given; and `$SYS/broker/clients/connected` is back to its
//! starting value (the broker must run with `[sys] interval = 1`).

mod client;
mod ledger;
mod monitor;
mod roles;

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mqttd::protocol::QoS;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use ledger::Ledger;
use roles::ReceiverReport;

#[derive(Parser, Debug)]
#[command(about = "Mixed-load soak test for an MQTT broker; exits 1 if any check fails")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Seconds of load (publishing); receivers then get `--drain` more seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    duration: u64,
    /// Seconds after the last publish for deliveries to arrive.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    drain: u64,
    /// Broker process: its VmRSS is sampled every second and must stay flat after warm-up.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Seconds excluded from the RSS comparison (default: a fifth of the duration).
    #[arg(long)]
    warmup: Option<u64>,
    /// Largest allowed growth of the last-third RSS average over the first third (0.2 = 20%).
    #[arg(long, default_value_t = 0.2)]
    rss_tolerance: f64,
    /// Publishers; publisher n publishes at QoS n % 3.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    publishers: u16,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Healthy subscribers (clean session, QoS 2, always reading).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=100))]
    subscribers: u16,
    /// Persistent-session clients that keep disconnecting and coming back.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=100))]
    persistent: u16,
    /// Clients cycling through connections with wills.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=100))]
    wills: u16,
    /// Clients that subscribe and never read.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=100))]
    slow: u16,
    /// The broker's `limits.max_queued_messages`: the offline periods must stay within it.
    #[arg(long, default_value_t = 1000)]
    max_queue: u64,
}

fn spawn_all<T: Send + 'static>(
    tasks: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<JoinHandle<T>> {
    tasks.into_iter().map(tokio::spawn).collect()
}

/// Joins tasks, giving up on any still running at `deadline`.
async fn join_all<T>(handles: Vec<JoinHandle<T>>, deadline: Instant) -> Vec<Option<T>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(
            tokio::time::timeout_at(deadline, h)
                .await
                .ok()
                .and_then(Result::ok),
        );
    }
    out
}

/// Collects the verdict lines.
#[derive(Default)]
struct Verdict {
    failures: Vec<String>,
}

impl Verdict {
    fn check(&mut self, ok: bool, what: String) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(what);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    let addr: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .context("resolving --host")?
        .next()
        .context("--host resolves to nothing")?;
    let tag: Arc<str> = format!(
        "{:x}",
        std::process::id()
            ^ (std::time::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_millis() as u32)
    )
    .into();
    let verdict = run(&args, addr, tag).await?;
    if verdict.failures.is_empty() {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL: {} check(s) failed", verdict.failures.len());
        std::process::exit(1);
    }
}

async fn run(args: &Args, addr: SocketAddr, tag: Arc<str>) -> Result<Verdict> {
    let duration = Duration::from_secs(args.duration);
    let drain = Duration::from_secs(args.drain);
    println!(
        "mqtt-soak {tag}: {addr}, {}s load + {}s drain",
        args.duration, args.drain
    );
    let baseline =
        monitor::connected_clients(addr, &format!("soak-mon-{tag}-0"), Duration::from_secs(5))
            .await;
    match &baseline {
        Ok(n) => println!("connections before: {n}"),
        Err(e) => println!("connections before: unknown ({e:#})"),
    }
    let fds_before = args.broker_pid.and_then(monitor::socket_fds);

    // Receivers first; the load starts once all of them have subscribed (setup takes well under
    // the 3 s head start on loopback; if not, the load simply starts late).
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    let start = Instant::now() + Duration::from_secs(3);
    let publish_end = start + duration;
    let stop = publish_end + drain;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1024);
    let data_filter = format!("soak/data/{tag}/#");
    let receivers_needed = usize::from(args.subscribers) + usize::from(args.persistent) + 1;
    let mut receivers: Vec<JoinHandle<ReceiverReport>> = Vec::new();
    for n in 0..args.subscribers {
        let id = format!("soak-sub-{tag}-{n}");
        let sub = roles::subscriber(
            addr,
            id,
            data_filter.clone(),
            QoS::ExactlyOnce,
            ready_tx.clone(),
            stop,
        );
        receivers.push(tokio::spawn(sub));
    }
    for n in 0..args.persistent {
        let id = format!("soak-pers-{tag}-{n}");
        let seed = u64::from(n) * 31 + 5;
        let pers = roles::persistent(addr, id, seed, ready_tx.clone(), publish_end, stop);
        receivers.push(tokio::spawn(pers));
    }
    let will_watcher = tokio::spawn(roles::subscriber(
        addr,
        format!("soak-willwatch-{tag}-0"),
        format!("soak/will/{tag}/#"),
        QoS::AtLeastOnce,
        ready_tx.clone(),
        stop,
    ));
    drop(ready_tx);
    let mut ready = 0;
    while ready < receivers_needed {
        match tokio::time::timeout_at(setup_deadline, ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => bail!("only {ready} of {receivers_needed} receivers subscribed within 30s"),
        }
    }
    let mut slow = Vec::new();
    for n in 0..args.slow {
        slow.push(
            roles::slow_client(addr, format!("soak-slow-{tag}-{n}"), data_filter.clone()).await?,
        );
    }
    tokio::time::sleep_until(start).await;
    println!("load running until +{}s", args.duration);

    let ledger = Arc::new(Ledger::default());
    let rss = args
        .broker_pid
        .map(|pid| tokio::spawn(monitor::sample_rss(pid, stop)));
    let publishers = spawn_all((0..args.publishers).map(|n| {
        let qos = QoS::from_u8((n % 3) as u8).unwrap_or(QoS::AtMostOnce);
        roles::publisher(
            addr,
            tag.clone(),
            n,
            qos,
            args.rate,
            publish_end,
            ledger.clone(),
        )
    }));
    let wills = spawn_all(
        (0..usize::from(args.wills)).map(|n| roles::will_client(addr, tag.clone(), n, publish_end)),
    );
    let retained_state = roles::RetainedState::default();
    let retained_pub = tokio::spawn(roles::retained_publisher(
        addr,
        tag.clone(),
        publish_end,
        retained_state.clone(),
    ));
    let retained_check = tokio::spawn(roles::retained_checker(
        addr,
        tag.clone(),
        publish_end,
        retained_state,
    ));
    let malformed = tokio::spawn(roles::malformed(addr, tag.clone(), publish_end));

    // Progress every 10 s.
    while Instant::now() < publish_end {
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(10)).min(publish_end)).await;
        let sent: Vec<u64> = ledger
            .sent
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let rss = args.broker_pid.and_then(monitor::rss_kib);
        println!(
            "+{:>4}s published qos0/1/2 {:?}, publish errors {}, broker RSS {}",
            start.elapsed().as_secs(),
            sent,
            ledger.errors.load(Ordering::Relaxed),
            rss.map_or("-".into(), |k| format!("{} KiB", k))
        );
    }

    let join_deadline = stop + Duration::from_secs(60);
    join_all(publishers, join_deadline).await;
    let will_reports: Vec<_> = join_all(wills, join_deadline)
        .await
        .into_iter()
        .flatten()
        .collect();
    let retained_pub_errors = tokio::time::timeout_at(join_deadline, retained_pub)
        .await
        .ok()
        .and_then(Result::ok);
    let retained = tokio::time::timeout_at(join_deadline, retained_check)
        .await
        .ok()
        .and_then(Result::ok);
    let malformed = tokio::time::timeout_at(join_deadline, malformed)
        .await
        .ok()
        .and_then(Result::ok);
    let receivers = join_all(receivers, join_deadline).await;
    let will_watch = tokio::time::timeout_at(join_deadline, will_watcher)
        .await
        .ok()
        .and_then(Result::ok);
    let rss = match rss {
        Some(h) => tokio::time::timeout_at(join_deadline, h)
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let mut slow_closed = 0;
    let slow_total = slow.len();
    for mut c in slow {
        if c.closed_within(Duration::from_secs(3)).await {
            slow_closed += 1;
        }
    }

    // Verdict.
    let acked: HashSet<_> = ledger.acked.lock().clone();
    let sent: Vec<u64> = ledger
        .sent
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    println!("\n== figures ==");
    println!(
        "published: qos0 {} qos1 {} qos2 {} (QoS 1/2 acknowledged by the broker: {}), publisher errors {}",
        sent[0],
        sent[1],
        sent[2],
        acked.len(),
        ledger.errors.load(Ordering::Relaxed)
    );
    let mut v = Verdict::default();
    let n_sub = usize::from(args.subscribers);
    for (i, r) in receivers.iter().enumerate() {
        let (kind, n) = if i < n_sub {
            ("subscriber", i)
        } else {
            ("persistent", i - n_sub)
        };
        let Some(r) = r else {
            v.check(false, format!("{kind} {n}: task did not finish"));
            continue;
        };
        let missing = r.inbox.missing(&acked);
        let mut line = format!(
            "{kind} {n}: received {}, QoS 1/2 missing {missing}, duplicates allowed {} / illegal {}",
            r.inbox.received, r.inbox.allowed_dups, r.inbox.illegal_dups
        );
        if kind == "persistent" {
            let qos12_publishers = (0..args.publishers).filter(|n| n % 3 != 0).count();
            let qos12_rate = args.rate * qos12_publishers as f64;
            let worst_queue = (qos12_rate * r.longest_offline.as_secs_f64()) as u64;
            line += &format!(
                ", reconnects {}, session lost {}, closed by broker {}, longest offline {:.1}s (~{worst_queue} queued, limit {})",
                r.reconnects,
                r.session_lost,
                r.dropped_by_broker,
                r.longest_offline.as_secs_f64(),
                args.max_queue
            );
        }
        if let Some(e) = &r.error {
            line += &format!(", error: {e}");
        }
        let ok = missing == 0
            && r.inbox.illegal_dups == 0
            && r.error.is_none()
            && r.session_lost == 0
            && r.dropped_by_broker == 0;
        v.check(ok, line);
    }
    match (&will_watch, will_reports.len() == usize::from(args.wills)) {
        (Some(w), true) => {
            let expected: Vec<&String> = will_reports.iter().flat_map(|r| &r.expected).collect();
            let graceful: Vec<&String> = will_reports.iter().flat_map(|r| &r.graceful).collect();
            let missing = expected
                .iter()
                .filter(|t| !w.inbox.other_topics.contains(**t))
                .count();
            let wrong = graceful
                .iter()
                .filter(|t| w.inbox.other_topics.contains(**t))
                .count();
            let errors: u64 = will_reports.iter().map(|r| r.errors).sum();
            v.check(
                missing == 0 && wrong == 0 && w.error.is_none() && !expected.is_empty(),
                format!(
                    "wills: {} abrupt closes, {} wills received, {missing} missing; {} graceful, {wrong} wrongly published; client errors {errors}",
                    expected.len(),
                    w.inbox.other_topics.len(),
                    graceful.len()
                ),
            );
        }
        _ => v.check(false, "wills: a task did not finish".into()),
    }
    match (retained, retained_pub_errors) {
        (Some((ok, failed)), Some(errors)) => v.check(
            failed == 0 && ok > 0 && errors == 0,
            format!("retained: {ok} checks passed, {failed} failed, publisher errors {errors}"),
        ),
        _ => v.check(false, "retained: a task did not finish".into()),
    }
    match malformed {
        Some((closed, open)) => v.check(
            open == 0 && closed > 0,
            format!("malformed clients: {closed} closed by the broker, {open} left open"),
        ),
        None => v.check(false, "malformed clients: task did not finish".into()),
    }
    println!(
        "  [info] slow clients (never read): {slow_closed} of {slow_total} closed by the broker"
    );

    if let Some(pid) = args.broker_pid {
        let warmup = Duration::from_secs(args.warmup.unwrap_or(args.duration / 5));
        match rss.as_deref().and_then(|s| monitor::rss_thirds(s, warmup)) {
            Some((first, last)) => {
                let max = rss
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, k)| *k)
                    .max()
                    .unwrap_or(0);
                let growth = last / first - 1.0;
                v.check(
                    growth <= args.rss_tolerance,
                    format!(
                        "broker RSS after {}s warm-up: first third {:.0} KiB, last third {:.0} KiB ({:+.1}%, limit {:+.0}%), max {max} KiB",
                        warmup.as_secs(),
                        first,
                        last,
                        growth * 100.0,
                        args.rss_tolerance * 100.0
                    ),
                );
            }
            None => v.check(
                false,
                format!("broker RSS: not enough samples of pid {pid}"),
            ),
        }
    }

    // Connections back to where they started (every client above has closed by now).
    let before = baseline.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = None;
    let mut n = 1;
    while Instant::now() < deadline {
        match monitor::connected_clients(
            addr,
            &format!("soak-mon-{tag}-{n}"),
            Duration::from_secs(5),
        )
        .await
        {
            Ok(c) => {
                after = Some(c);
                if c <= before {
                    break;
                }
            }
            Err(e) => println!("  connection count: {e:#}"),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    v.check(
        after.is_some_and(|a| a <= before),
        format!("connections ($SYS/broker/clients/connected, without the monitor): before {before}, after {after:?}"),
    );
    if let (Some(pid), Some(b)) = (args.broker_pid, fds_before) {
        // The last monitor's socket may still be closing on the broker's side.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a = monitor::socket_fds(pid);
        println!("  [info] broker socket fds: before {b}, after {a:?}");
    }
    Ok(v)
}
