//! Smoke test for `mqtt-bench`: a one-second fan-in against an in-process mqttd must deliver
//! something and print a JSON line that parses. Tiny settings so it stays cheap in
//! `cargo test --workspace`; the real measurements are `tools/compare`'s job.

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

#[test]
fn fan_in_against_an_in_process_broker() {
    let broker = InProcessBroker::start(1);
    let port = broker.addr.port();

    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .args(["fan-in", "--port", &port.to_string()])
        .args(["--duration", "1s", "--warmup", "200ms", "--publishers", "2"])
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
            panic!("mqtt-bench did not finish within 20 s");
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
    broker.stop();
    assert!(status.success(), "mqtt-bench failed: {stderr}\n{stdout}");

    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    let json = parse_flat_json(line).unwrap_or_else(|| panic!("JSON does not parse: {line}"));
    assert_eq!(json.get("scenario").map(String::as_str), Some("fan-in"));
    assert_eq!(json.get("broker").map(String::as_str), Some("smoke"));
    let delivered: f64 = json["delivered"].parse().expect("delivered is a number");
    let rate: f64 = json["value"].parse().expect("value is a number");
    assert!(delivered > 0.0 && rate > 0.0, "nothing delivered: {line}");
}

#[test]
fn flat_json_parser_rejects_garbage() {
    assert!(parse_flat_json("{\"a\":1,\"b\":\"x\",\"c\":null}").is_some());
    assert!(parse_flat_json("{\"a\":1x}").is_none());
    assert!(parse_flat_json("[1]").is_none());
}
