//! Smoke tests for `mqtt-bench`: one-second runs against an in-process mqttd (plain TCP,
//! WebSocket, PROXY v2, TLS) must deliver something, lose nothing and print a JSON line that parses.
//! Tiny settings so they stay cheap in `cargo test --workspace`; the real measurements are
//! `tools/compare`'s job.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::InProcessBroker;

/// Parses a flat JSON object of strings, numbers and nulls (what `Report::json` writes).
fn parse_flat_json(line: &str) -> Option<HashMap<String, String>> {
    let inner = line.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = HashMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let r = rest.strip_prefix('"')?;
        let end = r.find('"')?;
        let key = r[..end].to_owned();
        let r = r[end + 1..].strip_prefix(':')?;
        let (value, next) = if let Some(s) = r.strip_prefix('"') {
            let end = s.find('"')?;
            (s[..end].to_owned(), &s[end + 1..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            let v = &r[..end];
            if v != "null" {
                v.parse::<f64>().ok()?;
            }
            (v.to_owned(), &r[end..])
        };
        out.insert(key, value);
        rest = next.strip_prefix(',').unwrap_or(next);
        if !next.is_empty() && !next.starts_with(',') {
            return None;
        }
    }
    Some(out)
}

/// Runs mqtt-bench with `args` (at most 20 s) and returns its JSON line, parsed.
fn run_bench(args: &[&str]) -> HashMap<String, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .args(args)
        .args(["--threads", "1", "--label", "smoke"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqtt-bench");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mqtt-bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mqtt-bench {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child
        .stdout
        .take()
        .map(|mut s| s.read_to_string(&mut stdout));
    let _ = child
        .stderr
        .take()
        .map(|mut s| s.read_to_string(&mut stderr));
    assert!(
        status.success(),
        "mqtt-bench {args:?} failed: {stderr}\n{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    parse_flat_json(line).unwrap_or_else(|| panic!("JSON does not parse: {line}"))
}

/// A one-second fan-in with two publishers on `port` (plus `extra` options) that delivered
/// something and lost nothing; returns the JSON.
fn small_fan_in(port: u16, extra: &[&str]) -> HashMap<String, String> {
    let port = port.to_string();
    let mut args = vec![
        "fan-in",
        "--port",
        &port,
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ];
    args.extend(["--publishers", "2"]);
    args.extend(extra);
    let json = run_bench(&args);
    assert_eq!(json.get("scenario").map(String::as_str), Some("fan-in"));
    assert_eq!(json.get("broker").map(String::as_str), Some("smoke"));
    let delivered: f64 = json["delivered"].parse().expect("delivered is a number");
    let rate: f64 = json["value"].parse().expect("value is a number");
    assert!(delivered > 0.0 && rate > 0.0, "nothing delivered: {json:?}");
    assert_eq!(json["lost"], "0", "{json:?}");
    json
}

#[test]
fn fan_in_against_an_in_process_broker() {
    let broker = InProcessBroker::start(1);
    let json = small_fan_in(broker.addr.port(), &[]);
    broker.stop();
    assert_eq!(json["transport"], "tcp");
}

/// `--ws` against mqttd's WebSocket listener: fan-in, a few idle connections, connect rate.
#[test]
fn websocket_scenarios_against_an_in_process_broker() {
    let broker = InProcessBroker::with_listeners(
        1,
        "[[listener]]\nname = \"ws\"\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/bench\"\n",
    );
    let port = broker.addr.port();
    let json = small_fan_in(port, &["--ws", "--ws-path", "/bench"]);
    assert_eq!(json["transport"], "ws");
    let p = port.to_string();
    let quick = [
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--ws",
        "--ws-path",
        "/bench",
    ];
    let conns = run_bench(
        &[
            &["connections", "--port", &p, "--clients", "50"],
            &quick[..],
        ]
        .concat(),
    );
    assert_eq!(
        (conns["connected"].as_str(), conns["failed"].as_str()),
        ("50", "0")
    );
    let rate = run_bench(
        &[
            &["connect-rate", "--port", &p, "--concurrency", "2"],
            &quick[..],
        ]
        .concat(),
    );
    assert!(rate["value"].parse::<f64>().unwrap() > 0.0, "{rate:?}");
    // A wrong path is refused by the broker, and mqtt-bench says so.
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .args([
            "fan-in",
            "--port",
            &p,
            "--ws",
            "--ws-path",
            "/nope",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run mqtt-bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("404"), "{err}");
    broker.stop();
}

/// `--proxy-v2` against a listener expecting PROXY v2 headers from loopback.
#[test]
fn proxy_v2_fan_in_against_an_in_process_broker() {
    let broker = InProcessBroker::with_listeners(
        1,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\n\
         proxy_trusted = [\"127.0.0.1/32\"]\n",
    );
    let json = small_fan_in(broker.addr.port(), &["--proxy-v2"]);
    assert_eq!(json["transport"], "tcp+proxy-v2");
    broker.stop();
}

/// `--tls` against mqttd's TLS listener (certificates from `mqtt-certs init`): fan-in, a few
/// idle connections, qos1 with no loss, and a wrong CA refused by the handshake.
#[test]
fn tls_scenarios_against_an_in_process_broker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-certs"))
        .args(["init", "--dir"])
        .arg(&certs)
        .output()
        .expect("run mqtt-certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broker = InProcessBroker::with_listeners(
        1,
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.join("server.pem").display(),
            certs.join("server.key").display()
        ),
    );
    let p = broker.addr.port().to_string();
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 temp path");
    let json = small_fan_in(broker.addr.port(), &["--tls", "--cafile", ca]);
    assert_eq!(json["transport"], "tls");
    let quick = [
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--tls",
        "--cafile",
        ca,
    ];
    let conns = run_bench(
        &[
            &["connections", "--port", &p, "--clients", "50"],
            &quick[..],
        ]
        .concat(),
    );
    assert_eq!(
        (conns["connected"].as_str(), conns["failed"].as_str()),
        ("50", "0")
    );
    assert_eq!(conns["transport"], "tls");
    let q1 = run_bench(&[&["qos1", "--port", &p, "--publishers", "2"], &quick[..]].concat());
    assert!(q1["value"].parse::<f64>().unwrap() > 0.0, "{q1:?}");
    assert_eq!(
        (q1["lost"].as_str(), q1["duplicates"].as_str()),
        ("0", "0"),
        "{q1:?}"
    );
    // A CA that did not sign the broker's certificate: the handshake fails and says so.
    let other = dir.path().join("other");
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-certs"))
        .args(["init", "--dir"])
        .arg(&other)
        .output()
        .expect("run mqtt-certs");
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .args([
            "fan-in",
            "--port",
            &p,
            "--duration",
            "1s",
            "--tls",
            "--cafile",
        ])
        .arg(other.join("ca.pem"))
        .output()
        .expect("run mqtt-bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TLS handshake"),
        "{err}"
    );
    broker.stop();
}

#[test]
fn flat_json_parser_rejects_garbage() {
    assert!(parse_flat_json("{\"a\":1,\"b\":\"x\",\"c\":null}").is_some());
    assert!(parse_flat_json("{\"a\":1x}").is_none());
    assert!(parse_flat_json("[1]").is_none());
}
