//! Rates and Server-Sent Events: stats every second with rates that move, clients coming and
//! going, live messages (filters, ACL, cut payloads, the rate limit), the bound on streams and
//! the end of streams at shutdown.

use std::time::Duration;

use mqttd::protocol::QoS;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{RawClient, WAIT, login_packet, try_login};
use crate::{assert_code, client, login, open, req, secured, send};

/// An open `text/event-stream`, read event by event.
pub struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Events {
        let mut r = reqwest::Client::new().get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = tokio::time::timeout(WAIT, r.send())
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next event's name (`:` for a comment) and data; None when the stream ended.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if block.starts_with(':') {
                    return Some((":".into(), Value::String(block.trim().into())));
                }
                let mut name = String::from("message");
                let mut data = Value::Null;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.into();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).expect("JSON data");
                    }
                }
                return Some((name, data));
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an event in time")
                .expect("stream readable")?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Skips events until one named `name` whose data `pred` accepts.
    pub async fn until(&mut self, name: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let (n, data) = self.next().await.expect("stream open");
            if n == name && pred(&data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn stats_arrive_every_second_with_rates_that_move_with_traffic() {
    let (broker, base) = open().await;
    let mut events = Events::open(&format!("{base}/api/v1/events"), &[]).await;
    let first = events.until("stats", |_| true).await;
    assert!(
        first["uptime_seconds"].is_u64() && first["rates"].is_object(),
        "{first}"
    );
    let started = std::time::Instant::now();
    events.until("stats", |_| true).await;
    let gap = started.elapsed();
    // One a second (with room for a busy test machine).
    assert!(gap < Duration::from_millis(2500), "{gap:?}");
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                publisher
                    .publish("load/x", b"12345", QoS::AtMostOnce, false, 0)
                    .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            publisher.disconnect().await;
        })
    };
    let busy = events
        .until("stats", |s| {
            s["rates"]["received_per_s"].as_f64() > Some(0.0)
        })
        .await;
    assert!(
        busy["sample"]["received_per_s"].as_f64() > Some(0.0),
        "{busy}"
    );
    assert!(
        busy["sample"]["bytes_in_per_s"].as_f64() > Some(0.0),
        "{busy}"
    );
    assert_eq!(busy["sample"]["connections"], 1, "{busy}");
    stop.cancel();
    flood.await.unwrap();
    let series = send(req(
        Method::GET,
        &format!("{base}/api/v1/stats/series"),
        &[],
    ))
    .await;
    assert_eq!(series.body["interval_seconds"], 1);
    let samples = series.body["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{}", series.body);
    assert!(
        samples
            .iter()
            .any(|s| s["received_per_s"].as_f64() > Some(0.0))
    );
    let t: Vec<u64> = samples.iter().map(|s| s["t"].as_u64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "oldest first: {t:?}");
    let stats = send(req(Method::GET, &format!("{base}/api/v1/stats"), &[])).await;
    assert!(
        stats.body["rates"]["sent_per_s"].is_number(),
        "{}",
        stats.body
    );
    broker.stop().await;
}

#[tokio::test]
async fn clients_coming_and_going_are_events() {
    let (broker, base) = open().await;
    let mut events = Events::open(&format!("{base}/api/v1/events"), &[]).await;
    let client = RawClient::connected(broker.addr, "watched").await;
    let came = events.until("client", |e| e["clientid"] == "watched").await;
    assert_eq!(came["event"], "connected", "{came}");
    assert_eq!(came["ip_address"], "127.0.0.1");
    assert_eq!(came["listener"], "plain");
    assert_eq!(came["proto_ver"], 4);
    assert!(came.get("reason").is_none());
    client.disconnect().await;
    let went = events.until("client", |e| e["clientid"] == "watched").await;
    assert_eq!(went["event"], "disconnected", "{went}");
    assert_eq!(went["reason"], "disconnected");
    broker.stop().await;
}

#[tokio::test]
async fn live_messages_match_the_filter_and_long_payloads_are_cut() {
    let (broker, base) = open().await;
    let url = format!("{base}/api/v1/events?filter=sensors/%23&filter=bin");
    let mut events = Events::open(&url, &[]).await;
    let mut publisher = RawClient::connected(broker.addr, "pub").await;
    publisher
        .publish("other/x", b"not for us", QoS::AtMostOnce, false, 0)
        .await;
    let long = "z".repeat(2000);
    publisher
        .publish("sensors/a", long.as_bytes(), QoS::AtLeastOnce, true, 1)
        .await;
    publisher
        .publish("bin", &[0xff, 0x00], QoS::AtMostOnce, false, 0)
        .await;
    let m = events.until("message", |_| true).await;
    assert_eq!(m["topic"], "sensors/a", "the first is ours: {m}");
    assert_eq!(m["size"], 2000);
    assert_eq!(m["truncated"], true);
    assert_eq!(m["payload"].as_str().unwrap().len(), 1024);
    assert_eq!(m["payload_encoding"], "plain");
    assert_eq!(m["qos"], 0);
    assert!(m["retain"].is_boolean());
    let m = events.until("message", |_| true).await;
    assert_eq!(
        (
            m["topic"].clone(),
            m["payload"].clone(),
            m["payload_encoding"].clone()
        ),
        (json!("bin"), json!("/wA="), json!("base64"))
    );
    // Over 100 a second: the rest are counted, not sent.
    for i in 0..300u32 {
        publisher
            .publish("sensors/flood", &i.to_be_bytes(), QoS::AtMostOnce, false, 0)
            .await;
    }
    publisher.ping().await;
    let (mut sent, mut dropped) = (0u64, 0u64);
    while sent + dropped < 300 {
        match events.next().await.expect("open") {
            (n, _) if n == "message" => sent += 1,
            (n, d) if n == "dropped" => dropped += d["count"].as_u64().unwrap(),
            _ => {}
        }
    }
    assert_eq!(sent + dropped, 300);
    assert!(
        dropped >= 100 && sent <= 200,
        "sent {sent}, dropped {dropped}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_acl_decides_which_filters_a_caller_may_watch() {
    let acl = "user alice\ntopic read alice/#\nuser carol\ntopic write #\n";
    let s = secured(Some(acl), |_| {}).await;
    let url = |f: &str| format!("{}/api/v1/events?filter={f}", s.base);
    let a = send(
        client()
            .get(url("secret/%23"))
            .basic_auth("alice", Some("alice")),
    )
    .await;
    assert_code(&a, StatusCode::FORBIDDEN, "FORBIDDEN");
    for bad in ["bad/%23/x", "%24share/g/alice/%23"] {
        let a = send(client().get(url(bad)).basic_auth("alice", Some("alice"))).await;
        assert_code(&a, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // `#` overlaps what alice may read: allowed, and only that arrives.
    let (_, dash) = login(&s.base, "alice", "alice").await;
    let cookie = dash.unwrap().cookie;
    let mut events = Events::open(&url("%23"), &[("cookie", &cookie)]).await;
    let (mut publisher, code) = try_login(
        s.broker.addr,
        login_packet("pub", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    publisher
        .publish("secret/x", b"no", QoS::AtMostOnce, false, 0)
        .await;
    publisher
        .publish("alice/x", b"yes", QoS::AtMostOnce, false, 0)
        .await;
    let m = events.until("message", |_| true).await;
    assert_eq!(m["topic"], "alice/x", "{m}");
    s.broker.stop().await;
}

#[tokio::test]
async fn streams_are_bounded_and_end_at_shutdown() {
    let (broker, base) = open().await;
    let url = format!("{base}/api/v1/events");
    let mut open_streams = Vec::new();
    for _ in 0..64 {
        open_streams.push(Events::open(&url, &[]).await);
    }
    let a = send(req(Method::GET, &url, &[])).await;
    assert_code(&a, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE");
    open_streams.truncate(1);
    let mut stream = open_streams.pop().unwrap();
    stream.until("stats", |_| true).await;
    let started = std::time::Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    while let Some((name, _)) = stream.next().await {
        assert_ne!(name, "message");
    }
}
