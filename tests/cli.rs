//! The real `mqttd` binary: command line, configuration errors, signals, and its log output.
//! Each broker binds 127.0.0.1:0 and the test learns the port from its "listening on" line.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{RawClient, WAIT, command, output_within, spawn};
use mqttd::protocol::{self, Packet, ProtocolVersion, Publish, QoS};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");

/// A config binding a free loopback port, with the log level pinned so an outside `RUST_LOG`
/// cannot hide the "listening on" line (the broker is started without `RUST_LOG`).
const BASE: &str = "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[log]\nlevel = \"info\"\n";

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("mqttd.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// `mqttd ARGS` without `RUST_LOG`, killed if the test ends early. It runs in the directory of
/// its configuration file, so a store at a relative path (persistence is on by default:
/// `./data`) is that test's own.
fn mqttd(args: &[&str]) -> tokio::process::Command {
    let mut cmd = command(MQTTD);
    cmd.args(args).env_remove("RUST_LOG");
    let config = args
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "--check-config")
        .map(|w| Path::new(w[1]));
    if let Some(dir) = config.and_then(Path::parent).filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    cmd
}

/// A running broker process and its standard output, line by line.
struct Broker {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
    addr: SocketAddr,
}

/// The address in a `... listening on 127.0.0.1:PORT listener=...` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once("listening on ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

impl Broker {
    /// Starts `mqttd --config` with `config_text` and waits for its "listening on" line on stdout.
    async fn start(dir: &Path, config_text: &str) -> Broker {
        let config = write_config(dir, config_text);
        let mut child = spawn(&mut mqttd(&["--config", config.to_str().unwrap()]));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut broker = Broker {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let line = broker.wait_for("listening on ").await;
        broker.addr = listening_addr(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
        broker
    }

    /// The next stdout line containing `needle`, within `WAIT`.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "mqttd closed stdout before {needle:?}; saw {:#?}",
                    self.seen
                ),
                Err(_) => panic!("no {needle:?} line within {WAIT:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("mqttd still running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits (at most `limit`) for the process to exit; returns its exit code and the rest of
    /// its stdout.
    async fn exit_within(mut self, limit: Duration) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("mqttd still running after {limit:?}; saw {:#?}", self.seen))
            .expect("wait");
        // The process is gone, so stdout reaches EOF promptly.
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            self.seen.push(line);
        }
        (status.code(), self.seen)
    }
}

#[tokio::test]
async fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), BASE);
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--check-config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{path}: configuration is valid\n")
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[tokio::test]
async fn check_config_rejects_an_unknown_key_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!("{BASE}\n[limits]\nmax_inflight = 4\nmax_inflihgt = 5\n"),
    );
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--check-config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The typo is on line 9, column 1.
    assert!(stderr.starts_with(&format!("{path}:9:1: ")), "{stderr}");
    assert!(stderr.contains("unknown field `max_inflihgt`"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[tokio::test]
async fn check_config_covers_the_http_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!("{BASE}\n[http]\nbind = \"0.0.0.0:0\"\n"),
    );
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--check-config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{path}:8: http.bind 0.0.0.0:0")),
        "{stderr}"
    );
    // The files [http] names are loaded as at start-up: a missing API key file fails the check.
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    let text = format!(
        "{BASE}\n[auth]\npassword_file = {passwd:?}\n\n[http]\napi_keys = {:?}\n",
        dir.path().join("missing_keys")
    );
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--check-config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http.api_keys") && stderr.contains("missing_keys"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_with_a_bad_value_stops_the_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!("{BASE}\n[sys]\ninterval = \"often\"\n"),
    );
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("mqttd: {path}:8:")), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

#[tokio::test]
async fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let path = path.to_str().unwrap();
    let out = output_within(spawn(&mut mqttd(&["--config", path])), WAIT).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("mqttd: {path}: cannot read: ")),
        "{stderr}"
    );
}

/// Running without `--config` binds the real port 1883, so only the help text is checked.
#[tokio::test]
async fn help_explains_local_only_mode() {
    let out = output_within(spawn(&mut mqttd(&["--help"])), WAIT).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--config <FILE>"), "{help}");
    assert!(help.contains("--check-config <FILE>"), "{help}");
    assert!(
        help.contains("Without it: 127.0.0.1:1883 only, anonymous (local-only mode)"),
        "{help}"
    );
}

/// Start, connect a client, send `signal`: the client is disconnected, mqttd exits 0 and says so.
async fn stops_gracefully_on(signal: libc::c_int) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), BASE).await;
    let mut client = RawClient::connected(broker.addr, "stay-connected").await;
    broker.wait_for("connected").await;

    broker.signal(signal);
    client.expect_closed().await;
    let (code, lines) = broker.exit_within(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    assert!(
        has("signal received: shutting down gracefully"),
        "{lines:#?}"
    );
    // (The count in "shutting down: closing N connection(s)" races with the sessions closing.)
    assert!(has("shutting down: closing "), "{lines:#?}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("INFO mqttd stopped")),
        "{lines:#?}"
    );
    // Piped output carries no terminal colour codes.
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:#?}");
}

#[tokio::test]
async fn sigint_stops_gracefully() {
    stops_gracefully_on(libc::SIGINT).await;
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    stops_gracefully_on(libc::SIGTERM).await;
}

/// SIGHUP reloads (password file, ACL, certificates) without dropping anyone.
#[tokio::test]
async fn sighup_reloads_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), BASE).await;
    let mut client = RawClient::connected(broker.addr, "stays").await;
    broker.signal(libc::SIGHUP);
    broker.wait_for("SIGHUP: reloading").await;
    broker.wait_for("reloaded authentication").await;
    client.ping().await;
    broker.signal(libc::SIGINT);
    client.expect_closed().await;
    let (code, lines) = broker.exit_within(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// A broker with a subscriber that stopped reading while megabytes were queued for it: its
/// connection's final flush keeps the drain busy for the broker's one-second close timeout.
/// Returns the broker and that subscriber (keep it open).
async fn broker_with_stuck_subscriber(dir: &Path) -> (Broker, RawClient) {
    const MESSAGES: usize = 200;
    const PAYLOAD: usize = 64 * 1024;
    let broker = Broker::start(dir, BASE).await;

    let mut stuck = RawClient::connected(broker.addr, "never-reads").await;
    assert_eq!(stuck.subscribe("flood/#", QoS::AtMostOnce, 1).await, [0]);

    // 12.5 MiB for a socket whose buffers hold a few MiB at most.
    let mut publisher = RawClient::connected(broker.addr, "flooder").await;
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut bytes = BytesMut::new();
    for _ in 0..MESSAGES {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Arc::from("flood/data"),
            packet_id: 0,
            payload: payload.clone(),
            properties: None,
        };
        protocol::encode(&Packet::Publish(publish), ProtocolVersion::V311, &mut bytes)
            .expect("encode PUBLISH");
    }
    protocol::encode(&Packet::PingReq, ProtocolVersion::V311, &mut bytes).expect("encode PINGREQ");
    tokio::time::timeout(WAIT, publisher.send_bytes(&bytes))
        .await
        .expect("flood sent in time");
    // Packets are handled in order: the PINGRESP means every PUBLISH has been routed.
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    // The first message arriving shows the broker is writing the backlog; now stop reading.
    match stuck.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload.len(), PAYLOAD),
        other => panic!("expected the first flood message, got {other:?}"),
    }
    (broker, stuck)
}

/// One signal: the drain waits for the stuck connection, but only for its close timeout, then
/// the broker exits 0.
#[tokio::test]
async fn drain_with_a_stuck_subscriber_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, stuck) = broker_with_stuck_subscriber(dir.path()).await;
    broker.signal(libc::SIGINT);
    broker.wait_for("shutting down: closing ").await;
    let started = std::time::Instant::now();
    let (code, lines) = broker.exit_within(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the drain did not wait for the stuck subscriber ({:?}), so the second-signal test proves nothing",
        started.elapsed()
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("INFO mqttd stopped")),
        "{lines:#?}"
    );
    drop(stuck);
}

/// A second signal while that drain is busy exits at once, with 130 and without "mqttd stopped".
#[tokio::test]
async fn second_signal_during_drain_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, stuck) = broker_with_stuck_subscriber(dir.path()).await;
    broker.signal(libc::SIGINT);
    broker.wait_for("shutting down: closing ").await;
    broker.signal(libc::SIGINT);
    let (code, lines) = broker.exit_within(Duration::from_secs(5)).await;
    assert_eq!(code, Some(130), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("second signal: exiting at once")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("mqttd stopped")),
        "{lines:#?}"
    );
    drop(stuck);
}

/// With `log.file` everything goes to the file: the "listening on" line, the `[MSG]` lines and
/// the final "mqttd stopped"; standard output stays empty.
#[tokio::test]
async fn message_log_goes_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mqttd.log");
    let config = write_config(
        dir.path(),
        &format!(
            "{BASE}messages = true\nfile = {:?}\n",
            log.to_str().unwrap()
        ),
    );
    let child = spawn(&mut mqttd(&["--config", config.to_str().unwrap()]));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let text = poll_file(&read_log, |t| t.contains("listening on ")).await;
    let addr = text
        .lines()
        .find_map(listening_addr)
        .unwrap_or_else(|| panic!("no address in {text}"));

    let publish = spawn(
        command("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-t", "sensors/temperature", "-m", "24.3°C", "-q", "1"]),
    );
    let out = output_within(publish, WAIT).await;
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
    let expected = "[MSG] Topic: sensors/temperature\nPayload: 24.3°C\n";
    poll_file(&read_log, |t| t.contains(expected)).await;

    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = output_within(child, Duration::from_secs(5)).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "stdout must stay empty"
    );
    let text = read_log();
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.ends_with("INFO mqttd stopped")),
        "{text}"
    );
}

/// Polls the text `read` returns every 20 ms until `done` holds, for at most `WAIT`.
async fn poll_file(read: &impl Fn() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = read();
        if done(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log file never showed what was expected; it holds:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--check-config` runs every check the start runs (issue 10 item 6): combinations, the files a
/// configuration names (certificates, password file, ACL, log file), and the refusal of the
/// not-yet-implemented `[persistence]`. Each case fails both `--check-config` and the start with
/// exit status 1, naming the configuration file and line, then the problem (and its own file and
/// line, where it has one).
#[tokio::test]
async fn check_config_runs_every_check_the_start_runs() {
    let pki = common::certs::Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "# users\nalice:not-a-hash\n").unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\nbogus directive\n").unwrap();
    let cert = pki.arg("server.pem");
    let key = pki.arg("server.key");
    let absent = dir.path().join("absent.pem");
    let absent = absent.to_str().unwrap();
    let tls = |extra: &str| {
        format!(
            "{BASE}\n[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n\
             tls = {{ cert = {cert:?}, key = {key:?}{extra} }}\n"
        )
    };
    let cases: Vec<(String, usize, Vec<String>)> = vec![
        (
            tls(", require_client_cert = true"),
            10,
            vec!["require_client_cert needs tls.client_ca".into()],
        ),
        (
            tls(&format!(", client_ca = {absent:?}")),
            10,
            vec![format!("listener \"tls\": {absent}: cannot read")],
        ),
        (
            format!(
                "{BASE}\n[auth]\npassword_file = {:?}\n",
                passwd.to_str().unwrap()
            ),
            7,
            vec![format!("{}:2:", passwd.display()), "start with '$'".into()],
        ),
        (
            format!("{BASE}\n[auth]\nacl_file = {:?}\n", acl.to_str().unwrap()),
            7,
            vec![format!("{}:2:", acl.display())],
        ),
        (
            format!(
                "{BASE}file = \"{}/no/such/dir/log\"\n",
                dir.path().display()
            ),
            6,
            vec!["log.file".into()],
        ),
        (
            format!("{BASE}\n[persistence]\nsync = \"sometimes\"\n"),
            8,
            vec!["unknown variant `sometimes`".into()],
        ),
    ];
    for (i, (text, line, needles)) in cases.iter().enumerate() {
        let case = tempfile::tempdir().unwrap();
        let path = write_config(case.path(), text);
        let path = path.to_str().unwrap();
        for (args, prefix) in [
            (["--check-config", path], String::new()),
            (["--config", path], "mqttd: ".to_owned()),
        ] {
            let out = output_within(spawn(&mut mqttd(&args)), WAIT).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "case {i} {args:?}: {stderr}");
            let at = format!("{prefix}{path}:{line}:");
            assert!(
                stderr.starts_with(&at),
                "case {i} {args:?}: want {at}: {stderr}"
            );
            for needle in needles {
                assert!(
                    stderr.contains(needle.as_str()),
                    "case {i} {args:?}: {stderr}"
                );
            }
            assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
        }
    }
    // And with every named file in order, both pass.
    let good = tls(&format!(
        ", client_ca = {:?}, require_client_cert = true",
        pki.arg("ca.pem")
    ));
    let path = write_config(dir.path(), &good);
    let out = output_within(
        spawn(&mut mqttd(&["--check-config", path.to_str().unwrap()])),
        WAIT,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
