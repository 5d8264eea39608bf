//! `mqtt-bench`: a lean MQTT load generator for comparing mqttd with other brokers.
//!
//! ```text
//!  mod.rs        options, timing (warm-up, then a fixed measuring window), reports (table + JSON)
//!  wire.rs       MQTT 3.1.1 through mqttd's codec; zero-allocation frame scanner for the hot path
//!  dial.rs       TCP, then optionally a PROXY v2 header and a TLS handshake or a WebSocket
//!                upgrade: one `Conn` type
//!  tls.rs        the TLS client configuration (--cafile only, resumption off, each chain verified once)
//!  ws.rs         the WebSocket client: upgrade, one masked binary frame per write, unwrapping reads
//!  flow.rs       fan-in, fan-out (QoS 0, windowed) and qos1 (64 in flight, loss/duplicate check)
//!  latency.rs    fixed-rate end-to-end latency on two blocking threads
//!  conns.rs      10k idle connections (broker RSS per connection) and connect-rate (auth)
//!  http.rs       http-publish: POST /api/v1/publish over keep-alive connections
//!  coap.rs       coap-publish: CoAP POST /ps/... (CON or NON) to the CoAP gateway over UDP
//! ```
//!
//! Every scenario connects to 127.0.0.1 only, warms up, measures for `--duration`, stops by
//! itself and is bounded as a whole by [`Opts::deadline`].

pub mod coap;
pub mod conns;
pub mod dial;
pub mod fill;
pub mod flow;
pub mod http;
pub mod latency;
pub mod tls;
pub mod wire;
pub mod ws;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The scenarios, by their command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// N publishers -> 1 subscriber on `#`, QoS 0: delivered msg/s.
    FanIn,
    /// N publishers -> N subscribers (pairwise topics), QoS 1, windowed acks: delivered msg/s, loss.
    Qos1,
    /// 1 publisher -> N subscribers on one topic, QoS 0: deliveries/s.
    FanOut,
    /// Fixed rate, 1 -> 1, QoS 0: p50/p99/max end-to-end latency.
    Latency,
    /// N idle clients: all get CONNACK; broker RSS per connection.
    Connections,
    /// CONNECT -> CONNACK -> DISCONNECT loops (optionally with password and TLS): connects/s.
    ConnectRate,
    /// Leaves offline persistent sessions with queued QoS 1 messages and retained messages in
    /// the broker (for a restart to restore): messages acknowledged.
    Fill,
    /// Single `POST /api/v1/publish` requests over keep-alive HTTP connections (`--http-port`,
    /// `--publishers` connections), one MQTT subscriber: publishes/s.
    HttpPublish,
    /// CoAP `POST /ps/bench/coap/N` to the CoAP gateway (`--coap-port`, `--coap-mode con|non`,
    /// `--publishers` sockets with `--inflight` outstanding each), one MQTT subscriber:
    /// publishes/s over `--duration`, or over the time `--count` publishes took.
    CoapPublish,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::Qos1 => "qos1",
            Scenario::FanOut => "fan-out",
            Scenario::Latency => "latency",
            Scenario::Connections => "connections",
            Scenario::ConnectRate => "connect-rate",
            Scenario::Fill => "fill",
            Scenario::HttpPublish => "http-publish",
            Scenario::CoapPublish => "coap-publish",
        }
    }
}

/// Options shared by all scenarios (each uses the ones it needs; defaults are the issue's).
#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Broker address; loopback only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// qos1: the subscribers connect to this port instead of `--port`: another broker, at the
    /// far end of a bridge from the one the publishers use (the bridge's throughput).
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// http-publish: the broker's HTTP API port.
    #[arg(long, default_value_t = 18083)]
    pub http_port: u16,
    /// coap-publish: the CoAP gateway's UDP port.
    #[arg(long, default_value_t = 5683)]
    pub coap_port: u16,
    /// coap-publish: confirmable requests (QoS 1) or not (QoS 0).
    #[arg(long, value_enum, default_value = "non")]
    pub coap_mode: coap::Mode,
    /// coap-publish: send this many publishes in all, then report (instead of `--duration`).
    #[arg(long)]
    pub count: Option<u64>,
    /// Measuring window, after the warm-up ("5s", "500ms").
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    pub warmup: Duration,
    /// Publishers (fan-in default 8, qos1 default 4, fan-out always 1).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers (fan-out default 100, qos1 = publishers, fan-in always 1).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Payload bytes (at least 16: sequence number and timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// qos1: unacknowledged PUBLISHes per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Messages published but not yet received by the slowest subscriber (fan-in, fan-out: all
    /// publishers together; qos1: per pair). Keeps the broker's queues below its queue limit
    /// (1000 by default in both mqttd and Mosquitto) so the scenario measures forwarding, not
    /// dropping or slow-consumer disconnects.
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// latency: messages per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// connections: idle clients to hold.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// connections / connect-rate: clients connecting at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The broker's process: connections reads its VmRSS before and after; every scenario
    /// reports its CPU use (and the generator's own) over the measuring window.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// connect-rate: username (the password comes from --password or the MQTT_PASSWORD variable).
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// MQTT over TLS, trusting only `--cafile`, with session resumption off (every connection
    /// is a full handshake), for every scenario but latency. Not with `--ws`.
    #[arg(long, requires = "cafile")]
    pub tls: bool,
    /// CA certificate (PEM) that signed the broker's certificate.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// fill: QoS 1 messages queued for each offline session (`--subscribers` of them).
    #[arg(long, default_value_t = 1000)]
    pub queued: u64,
    /// fill: retained messages.
    #[arg(long, default_value_t = 100_000)]
    pub retained: u64,
    /// qos1: the subscribers keep persistent sessions (clean session 0), so a broker with
    /// persistence stores every message it queues for them before acknowledging it.
    #[arg(long)]
    pub persistent: bool,
    /// MQTT over WebSocket (`--ws-path`, subprotocol `mqtt`, one masked binary frame per
    /// write), for every scenario but latency.
    #[arg(long)]
    pub ws: bool,
    /// The WebSocket upgrade's path.
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
    /// Send a PROXY protocol v2 header (the connection's own source and destination, as
    /// HAProxy's `send-proxy-v2` would) before anything else, for every scenario but latency.
    #[arg(long)]
    pub proxy_v2: bool,
    /// Name shown in the report (e.g. "mqttd", "mosquitto").
    #[arg(long, default_value = "broker")]
    pub label: String,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?}: expected e.g. 5s, 500ms, 2m"))
}

/// "5s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && (0.0..=3600.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

impl Opts {
    /// The password for `--username`: `--password`, else the MQTT_PASSWORD variable (looked at
    /// only when a username is given: scripts export it for all runs). None without a username.
    pub fn password(&self) -> Result<Option<String>> {
        match (&self.username, &self.password) {
            (None, _) => Ok(None),
            (Some(_), Some(p)) => Ok(Some(p.clone())),
            (Some(_), None) => match std::env::var("MQTT_PASSWORD") {
                Ok(p) => Ok(Some(p)),
                Err(_) => bail!("--username needs --password or the MQTT_PASSWORD variable"),
            },
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Where qos1's subscribers connect (`--sub-port`, else `--port`).
    pub fn sub_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.sub_port.unwrap_or(self.port))
    }

    /// How clients connect (`--ws`, `--ws-path`, `--proxy-v2`, `--tls`). Reads `--cafile`:
    /// build it once per run and clone it (the clones share one TLS configuration).
    pub fn transport(&self) -> Result<dial::Transport> {
        let tls = match (self.tls, &self.cafile) {
            (false, _) => None,
            (true, Some(ca)) => Some(tls::tls_connector(ca)?),
            (true, None) => bail!("--tls needs --cafile"),
        };
        Ok(dial::Transport {
            ws_path: self.ws.then(|| self.ws_path.clone()),
            proxy_v2: self.proxy_v2,
            tls,
        })
    }

    /// Refuses anything but loopback: this tool floods whatever it is pointed at.
    pub fn check(&self) -> Result<()> {
        if !self.host.is_loopback() {
            bail!("--host {}: mqtt-bench only targets loopback", self.host);
        }
        if self.payload > 64 * 1024 {
            bail!("--payload {} is larger than 64 KiB", self.payload);
        }
        if !(1..=65_000).contains(&self.inflight) {
            bail!("--inflight must be 1..=65000");
        }
        if !(1..=1_000_000).contains(&self.rate) {
            bail!("--rate must be 1..=1000000");
        }
        if self.clients > 100_000 || self.concurrency == 0 || self.concurrency > 4096 {
            bail!("--clients at most 100000, --concurrency 1..=4096");
        }
        if !self.ws_path.starts_with('/') || !self.ws_path.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("--ws-path must start with / and hold no spaces or control characters");
        }
        if self.ws && self.tls {
            bail!("--ws with --tls (wss) is not supported");
        }
        Ok(())
    }

    /// The whole scenario, set-up and drain included, must end within this.
    pub fn deadline(&self) -> Duration {
        self.warmup + self.duration + Duration::from_secs(90)
    }

    /// `fill` publishes 1.1M messages by default: a slow broker takes minutes.
    pub fn fill_deadline(&self) -> Duration {
        Duration::from_secs(900)
    }
}

/// One result line: metric name, value, unit.
pub struct Metric {
    pub key: &'static str,
    pub value: Option<f64>,
    pub unit: &'static str,
}

/// What a scenario measured. The first metric is the headline (the JSON `value`).
pub struct Report {
    pub scenario: Scenario,
    pub label: String,
    /// "tcp", "ws", "tls", "tcp+proxy-v2"...
    pub transport: String,
    pub metrics: Vec<Metric>,
}

impl Report {
    pub fn new(scenario: Scenario, opts: &Opts) -> Self {
        Report {
            scenario,
            label: opts.label.clone(),
            transport: dial::Transport::describe(opts.ws, opts.tls, opts.proxy_v2),
            metrics: Vec::new(),
        }
    }

    pub fn add(&mut self, key: &'static str, value: impl Into<Option<f64>>, unit: &'static str) {
        self.metrics.push(Metric {
            key,
            value: value.into(),
            unit,
        });
    }

    /// A human table, one metric per row.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} ({}, {})\n",
            self.scenario.name(),
            self.label,
            self.transport
        );
        for m in &self.metrics {
            let v = m.value.map_or("n/a".to_owned(), human);
            let _ = writeln!(s, "  {:<24} {:>14} {}", m.key, v, m.unit);
        }
        s
    }

    /// One JSON object on one line:
    /// `{"scenario":..,"broker":..,"transport":..,"metric":..,"value":..,<metrics>}`.
    pub fn json(&self) -> String {
        let num = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("{}", (v * 1000.0).round() / 1000.0),
            _ => "null".to_owned(),
        };
        let head = self.metrics.first();
        let mut s = format!(
            "{{\"scenario\":\"{}\",\"broker\":\"{}\",\"transport\":\"{}\",\"metric\":\"{}\",\"value\":{},\"unit\":\"{}\"",
            self.scenario.name(),
            json_escape(&self.label),
            self.transport,
            head.map_or("", |m| m.key),
            num(head.and_then(|m| m.value)),
            head.map_or("", |m| m.unit),
        );
        for m in &self.metrics {
            let _ = write!(s, ",\"{}\":{}", m.key, num(m.value));
        }
        s.push('}');
        s
    }
}

fn human(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

/// Raises the soft file-descriptor limit to the hard one (10,000 clients need ~10,000 fds).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// VmRSS of `pid` in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmRSS in {path}"))
}

/// CPU seconds (user + system) used so far by `pid` (`None`: this process), from /proc.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// What [`measure`] saw over the measuring window.
pub struct Window<const N: usize> {
    /// Growth of each counter.
    pub counts: [u64; N],
    pub secs: f64,
    /// CPU used by the generator and by the broker (`--broker-pid`), in % of one core.
    pub cpu_self: Option<f64>,
    pub cpu_broker: Option<f64>,
}

impl<const N: usize> Window<N> {
    /// Adds the CPU figures to `report`.
    pub fn add_cpu(&self, report: &mut Report) {
        report.add("cpu_bench_pct", self.cpu_self, "% of a core");
        report.add("cpu_broker_pct", self.cpu_broker, "% of a core");
    }
}

/// Waits out the warm-up, then measures `read()` (cumulative counters) over `--duration`.
/// An MQTT subscriber on `filter` (as `--username`, with `password`) that calls `on_publish` for
/// each PUBLISH it receives until `stop`: how http-publish and coap-publish count what arrived.
/// Connected and subscribed when this returns; the future it gives runs the counting.
pub async fn counting_subscriber(
    opts: &Opts,
    client_id: &str,
    filter: &str,
    password: Option<&str>,
    on_publish: impl Fn() + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) -> Result<impl std::future::Future<Output = Result<()>> + Send + 'static> {
    use bytes::Buf as _;
    use tokio::io::AsyncReadExt as _;
    let creds = opts.username.as_deref().zip(password);
    let mut sub = dial::dial(opts.addr(), &opts.transport()?).await?;
    let mut rbuf = bytes::BytesMut::with_capacity(256 * 1024);
    wire::handshake(
        &mut sub,
        &wire::connect_packet(client_id, 60, creds),
        &mut rbuf,
    )
    .await
    .context("subscriber")?;
    wire::subscribe(
        &mut sub,
        filter,
        mqttd::protocol::QoS::AtMostOnce,
        &mut rbuf,
    )
    .await?;
    Ok(async move {
        loop {
            while let Some(f) = wire::next_frame(&rbuf)? {
                if f.kind() == 3 {
                    on_publish();
                }
                rbuf.advance(f.end);
            }
            tokio::select! {
                r = sub.read_buf(&mut rbuf) => if r? == 0 { bail!("the broker closed the subscriber") },
                _ = stop.cancelled() => return Ok(()),
            }
        }
    })
}

pub async fn measure<const N: usize>(opts: &Opts, read: impl Fn() -> [u64; N]) -> Window<N> {
    tokio::time::sleep(opts.warmup).await;
    let cpu = || {
        (
            cpu_seconds(None),
            opts.broker_pid.and_then(|p| cpu_seconds(Some(p))),
        )
    };
    let (a, cpu_a, t0) = (read(), cpu(), Instant::now());
    tokio::time::sleep(opts.duration).await;
    let (b, cpu_b, secs) = (read(), cpu(), t0.elapsed().as_secs_f64().max(1e-9));
    let mut counts = [0; N];
    for i in 0..N {
        counts[i] = b[i].saturating_sub(a[i]);
    }
    let pct = |x: Option<f64>, y: Option<f64>| Some((y? - x?) * 100.0 / secs);
    Window {
        counts,
        secs,
        cpu_self: pct(cpu_a.0, cpu_b.0),
        cpu_broker: pct(cpu_a.1, cpu_b.1),
    }
}

/// Runs one scenario under its overall deadline.
pub async fn run(scenario: Scenario, opts: &Opts) -> Result<Report> {
    opts.check()?;
    if scenario == Scenario::Latency && (opts.ws || opts.proxy_v2 || opts.tls) {
        // Its blocking sockets bypass the async transports.
        bail!("latency runs over plain TCP only (no --ws, --proxy-v2 or --tls)");
    }
    let fut = async {
        match scenario {
            Scenario::FanIn => flow::fan_in(opts).await,
            Scenario::FanOut => flow::fan_out(opts).await,
            Scenario::Qos1 => flow::qos1(opts).await,
            Scenario::Latency => latency::run(opts).await,
            Scenario::Connections => conns::connections(opts).await,
            Scenario::ConnectRate => conns::connect_rate(opts).await,
            Scenario::Fill => fill::fill(opts).await,
            Scenario::HttpPublish => http::http_publish(opts).await,
            Scenario::CoapPublish => coap::coap_publish(opts).await,
        }
    };
    let deadline = if scenario == Scenario::Fill {
        opts.fill_deadline()
    } else {
        opts.deadline()
    };
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r,
        Err(_) => bail!(
            "{} did not finish within {:?}",
            scenario.name(),
            opts.deadline()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("5h"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
