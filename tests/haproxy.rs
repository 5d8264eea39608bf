//! Behind a real HAProxy (Debian's `haproxy`, which `.ci/run` installs): mode tcp on loopback,
//! `send-proxy-v2` to one mqttd listener and `send-proxy` (v1) to another. A real client
//! (`mosquitto_pub`) connects through it from 127.0.0.2, HAProxy reaches mqttd from 127.0.0.1 (the
//! one trusted proxy address), and mqttd's log names 127.0.0.2. Never skipped: without haproxy the
//! test fails and says how to get it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{BrokerProcess, RawClient, WAIT, command, output_within};
use mqttd::protocol::QoS;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::Child;

/// A running `haproxy -db` (foreground); killed when dropped.
struct Haproxy {
    child: Child,
    /// Its frontends: to mqttd with a v2 header, and with a v1 header.
    v2: SocketAddr,
    v1: SocketAddr,
}

/// A loopback port that was free a moment ago (HAProxy may still lose it to someone else: the
/// caller retries).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

impl Haproxy {
    /// Starts HAProxy in front of mqttd's `v2` and `v1` listeners, on fresh ports; retries a few
    /// times if it cannot bind them.
    async fn start(dir: &Path, v2_backend: SocketAddr, v1_backend: SocketAddr) -> Haproxy {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let (v2, v1) = (free_port(), free_port());
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_config(v2, v2_backend, v1, v1_backend)).unwrap();
            let mut cmd = command("haproxy");
            cmd.arg("-f").arg(&cfg).arg("-db");
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot run haproxy: {e}. This test needs Debian's haproxy package: run \
                     .ci/run (it installs it), or apt-get install haproxy"
                )
            });
            let mut proxy = Haproxy {
                child,
                v2: SocketAddr::from(([127, 0, 0, 1], v2)),
                v1: SocketAddr::from(([127, 0, 0, 1], v1)),
            };
            match proxy.ready().await {
                Ok(()) => return proxy,
                Err(stderr) if stderr.contains("bind") => failures.push(stderr),
                Err(stderr) => panic!("haproxy exited: {stderr}"),
            }
        }
        panic!("haproxy could not bind its ports in 5 tries: {failures:?}");
    }

    /// Waits (bounded) until both frontends accept; `Err(stderr)` if HAProxy exited instead.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait haproxy") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                return Err(format!("{status}: {stderr}"));
            }
            if TcpStream::connect(self.v2).await.is_ok()
                && TcpStream::connect(self.v1).await.is_ok()
            {
                return Ok(());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy did not listen in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

fn haproxy_config(v2: u16, v2_backend: SocketAddr, v1: u16, v1_backend: SocketAddr) -> String {
    format!(
        "global\n    maxconn 100\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n\n\
         frontend mqtt_v2\n    bind 127.0.0.1:{v2}\n    default_backend mqttd_v2\n\n\
         backend mqttd_v2\n    server s1 {v2_backend} send-proxy-v2 check inter 100ms\n\n\
         frontend mqtt_v1\n    bind 127.0.0.1:{v1}\n    default_backend mqttd_v1\n\n\
         backend mqttd_v1\n    server s1 {v1_backend} send-proxy\n"
    )
}

/// The address of mqttd's listener `name`, from its "listening on" line.
fn listening_on(broker: &BrokerProcess, name: &str) -> SocketAddr {
    let log = broker.output();
    let line = log
        .lines()
        .find(|l| l.contains("listening on") && l.contains(&format!("listener={name}")))
        .unwrap_or_else(|| panic!("no \"listening on\" line for {name}: {log}"));
    let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().expect("a socket address")
}

/// mqttd's configuration: a plain listener (first), then "v2" and "v1" PROXY listeners that trust
/// 127.0.0.1 only; debug log for mqttd itself, so the health checks show.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mqttd.toml");
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
                [[listener]]\nname = \"v2\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\n\
                proxy_trusted = [\"127.0.0.1\"]\n\n\
                [[listener]]\nname = \"v1\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v1\"\n\
                proxy_trusted = [\"127.0.0.1\"]\n\n\
                [sys]\ninterval = 0\n\n[log]\nlevel = \"info,mqttd=debug\"\n\n\
                [persistence]\nenabled = false\n";
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn clients_through_haproxy_are_seen_with_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&config(dir.path())).await;
    broker.wait_for_line("listener=v1").await;
    let (v2_addr, v1_addr) = (listening_on(&broker, "v2"), listening_on(&broker, "v1"));
    let haproxy = Haproxy::start(dir.path(), v2_addr, v1_addr).await;

    let mut sub = RawClient::connected(broker.addr, "watcher").await;
    assert_eq!(sub.subscribe("via/#", QoS::AtLeastOnce, 1).await, [0x01]);
    for (frontend, id) in [
        (haproxy.v2, "via-haproxy-v2"),
        (haproxy.v1, "via-haproxy-v1"),
    ] {
        let mut publish = command("mosquitto_pub");
        publish.args(["-A", "127.0.0.2", "-h", "127.0.0.1"]).args([
            "-p",
            &frontend.port().to_string(),
            "-i",
            id,
            "-q",
            "1",
            "-t",
            &format!("via/{id}"),
            "-m",
            "hello",
        ]);
        let out = output_within(common::spawn(&mut publish), WAIT).await;
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
        let msg = sub.receive().await;
        assert_eq!(&*msg.topic, format!("via/{id}"));
        assert_eq!(&msg.payload[..], b"hello");

        broker.wait_for_line(&format!("client_id={id}")).await;
        let log = broker.output();
        let connected = log
            .lines()
            .find(|l| l.contains(" connected") && l.contains(&format!("client_id={id}")))
            .unwrap_or_else(|| panic!("no connected line for {id}: {log}"));
        assert!(
            connected.contains("peer=127.0.0.2:"),
            "mqttd names the client's address, not HAProxy's: {connected}"
        );
    }
    // HAProxy's health checks (every 100 ms on the v2 backend) send the header, then reset:
    // accepted, and logged at debug level only.
    broker.wait_for_line("reset before CONNECT").await;
    haproxy.stop().await;
    let log = broker.stop().await;
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .filter(|l| {
            l.contains("PROXY") || l.contains("before CONNECT") || l.contains("bad CONNECT")
        })
        .collect();
    assert!(noisy.is_empty(), "health checks made noise: {noisy:#?}");
}
