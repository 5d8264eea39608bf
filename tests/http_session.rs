//! Dashboard sessions, CSRF and the browser-facing checks, rates and Server-Sent Events, end to
//! end: a broker with `[http]` on 127.0.0.1:0, driven by reqwest (cookies and origins set by
//! hand, as a browser would send them) and by real MQTT clients.

mod common;

use std::time::Duration;

use common::{
    FAST_ARGON2, RawClient, TestBroker, WAIT, config, login_packet, set_passwords, try_login,
};
use mqttd::config::{Config, HttpConfig};
use mqttd::protocol::QoS;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn http(admins: &[&str], viewers: &[&str]) -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        admins: admins.iter().map(|s| s.to_string()).collect(),
        viewers: viewers.iter().map(|s| s.to_string()).collect(),
        optional: false,
        ..HttpConfig::local()
    }
}

/// alice: admin, bob: viewer, carol: MQTT only (password = name); `acl` if given.
struct Secured {
    broker: TestBroker,
    base: String,
    passwd: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn secured(acl: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(
        &passwd,
        &[("alice", b"alice"), ("bob", b"bob"), ("carol", b"carol")],
        FAST_ARGON2,
    );
    let mut c = config();
    c.auth.password_file = Some(passwd.clone());
    if let Some(acl) = acl {
        let path = dir.path().join("acl");
        std::fs::write(&path, acl).unwrap();
        c.auth.acl_file = Some(path);
    }
    c.http = Some(http(&["alice"], &["bob"]));
    tweak(&mut c);
    let broker = TestBroker::start_with(c).await;
    let base = format!("http://{}", broker.http.expect("http listener"));
    Secured {
        broker,
        base,
        passwd,
        _dir: dir,
    }
}

async fn open() -> (TestBroker, String) {
    let mut c = config();
    c.http = Some(http(&[], &[]));
    let broker = TestBroker::start_with(c).await;
    let base = format!("http://{}", broker.http.expect("http listener"));
    (broker, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// The answer: status, headers, body (JSON if it parses).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// A request with these extra headers.
fn req(method: Method, url: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut r = client().request(method, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r
}

/// A dashboard logged in: its cookie (`mqttd_session=...`), CSRF token and origin.
struct Dashboard {
    cookie: String,
    csrf: String,
    origin: String,
}

async fn login(base: &str, user: &str, password: &str) -> (Answer, Option<Dashboard>) {
    let a = send(
        client()
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"username": user, "password": password})),
    )
    .await;
    let dash = (a.status == StatusCode::OK).then(|| {
        let set = a.headers["set-cookie"].to_str().unwrap();
        Dashboard {
            cookie: set.split(';').next().unwrap().to_owned(),
            csrf: a.body["csrf_token"].as_str().unwrap().to_owned(),
            origin: base.to_owned(),
        }
    });
    (a, dash)
}

fn assert_code(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_does_not_tell_whether_a_user_exists() {
    let s = secured(None, |_| {}).await;
    let (a, dash) = login(&s.base, "alice", "alice").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["username"], "alice");
    assert_eq!(a.body["role"], "admin");
    assert!(a.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let set = a.headers["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert!(dash.unwrap().cookie.len() > "mqttd_session=".len() + 40);

    let (unknown, _) = login(&s.base, "mallory", "alice").await;
    let (wrong, _) = login(&s.base, "alice", "nope").await;
    for a in [&unknown, &wrong] {
        assert_code(a, StatusCode::UNAUTHORIZED, "BAD_USERNAME_OR_PWD");
        assert!(a.headers.get("set-cookie").is_none());
        assert!(
            a.headers.get("www-authenticate").is_none(),
            "no browser dialog"
        );
    }
    assert_eq!(unknown.body, wrong.body, "the same answer for both");
    let (no_role, _) = login(&s.base, "carol", "carol").await;
    assert_code(&no_role, StatusCode::FORBIDDEN, "FORBIDDEN");
    // A form cannot log anyone in: JSON only.
    let form = send(
        req(Method::POST, &format!("{}/api/v1/login", s.base), &[])
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=alice&password=alice"),
    )
    .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nor a page of another site.
    let cross = send(
        req(
            Method::POST,
            &format!("{}/api/v1/login", s.base),
            &[("origin", "http://evil.example")],
        )
        .json(&json!({"username": "alice", "password": "alice"})),
    )
    .await;
    assert_code(&cross, StatusCode::FORBIDDEN, "BAD_ORIGIN");
    s.broker.stop().await;
}

#[tokio::test]
async fn the_cookie_is_secure_behind_a_trusted_https_proxy() {
    let s = secured(None, |c| {
        c.http.as_mut().unwrap().trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let a = send(
        req(
            Method::POST,
            &format!("{}/api/v1/login", s.base),
            &[("x-forwarded-proto", "https")],
        )
        .json(&json!({"username": "bob", "password": "bob"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    s.broker.stop().await;
}

#[tokio::test]
async fn a_session_reads_and_changes_state_only_with_its_csrf_token_and_origin() {
    let s = secured(None, |_| {}).await;
    let b = &s.base;
    let (_, dash) = login(b, "alice", "alice").await;
    let d = dash.unwrap();
    let cookie = ("cookie", d.cookie.as_str());
    let a = send(req(Method::GET, &format!("{b}/api/v1/stats"), &[cookie])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = send(req(Method::GET, &format!("{b}/api/v1/session"), &[cookie])).await;
    assert_eq!(
        a.body,
        json!({"username": "alice", "role": "admin", "via": "session",
               "csrf_token": d.csrf, "expires_at": a.body["expires_at"]})
    );

    let kick = format!("{b}/api/v1/clients/nobody");
    let token = ("x-csrf-token", d.csrf.as_str());
    let origin = ("origin", d.origin.as_str());
    let a = send(req(Method::DELETE, &kick, &[cookie, origin])).await;
    assert_code(&a, StatusCode::FORBIDDEN, "CSRF");
    let a = send(req(
        Method::DELETE,
        &kick,
        &[cookie, origin, ("x-csrf-token", "x")],
    ))
    .await;
    assert_code(&a, StatusCode::FORBIDDEN, "CSRF");
    let a = send(req(
        Method::DELETE,
        &kick,
        &[cookie, token, ("origin", "http://evil.example")],
    ))
    .await;
    assert_code(&a, StatusCode::FORBIDDEN, "BAD_ORIGIN");
    let a = send(req(Method::DELETE, &kick, &[cookie, token])).await;
    assert_code(&a, StatusCode::FORBIDDEN, "BAD_ORIGIN");
    // Token and origin right: through to the handler.
    let a = send(req(Method::DELETE, &kick, &[cookie, token, origin])).await;
    assert_code(&a, StatusCode::NOT_FOUND, "CLIENTID_NOT_FOUND");
    let a = send(
        req(
            Method::POST,
            &format!("{b}/api/v1/publish"),
            &[cookie, token, origin],
        )
        .json(&json!({"topic": "t", "payload": "p"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    // Basic auth needs no token (curl keeps working).
    let a = send(client().delete(&kick).basic_auth("alice", Some("alice"))).await;
    assert_code(&a, StatusCode::NOT_FOUND, "CLIENTID_NOT_FOUND");

    // A viewer's session reads, and still may not change anything.
    let (_, viewer) = login(b, "bob", "bob").await;
    let v = viewer.unwrap();
    let vh = [
        ("cookie", v.cookie.as_str()),
        ("x-csrf-token", v.csrf.as_str()),
        ("origin", v.origin.as_str()),
    ];
    let a = send(req(Method::DELETE, &kick, &vh)).await;
    assert_code(&a, StatusCode::FORBIDDEN, "FORBIDDEN");

    // Logout needs the token too, then ends the session.
    let logout = format!("{b}/api/v1/logout");
    let a = send(req(Method::POST, &logout, &[cookie, origin])).await;
    assert_code(&a, StatusCode::FORBIDDEN, "CSRF");
    let a = send(req(Method::POST, &logout, &[cookie, token, origin])).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(
        a.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("mqttd_session=; ")
    );
    let a = send(req(
        Method::GET,
        &format!("{b}/api/v1/session"),
        &[cookie, ("sec-fetch-mode", "cors")],
    ))
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers.get("www-authenticate").is_none(), "no dialog");
    let a = send(req(Method::GET, &format!("{b}/api/v1/stats"), &[cookie])).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The viewer's session is another one: still alive.
    let a = send(req(Method::GET, &format!("{b}/api/v1/stats"), &vh[..1])).await;
    assert_eq!(a.status, StatusCode::OK);
    s.broker.stop().await;
}

#[tokio::test]
async fn a_user_removed_by_a_reload_loses_the_session() {
    let s = secured(None, |_| {}).await;
    let (_, alice) = login(&s.base, "alice", "alice").await;
    let (_, bob) = login(&s.base, "bob", "bob").await;
    let stats = format!("{}/api/v1/stats", s.base);
    let get = |d: &Dashboard| req(Method::GET, &stats, &[("cookie", d.cookie.as_str())]);
    let (alice, bob) = (alice.unwrap(), bob.unwrap());
    assert_eq!(send(get(&bob)).await.status, StatusCode::OK);
    let events = format!("{}/api/v1/events", s.base);
    let mut bobs_stream = Events::open(&events, &[("cookie", &bob.cookie)]).await;
    bobs_stream.until("stats", |_| true).await;
    // bob leaves the password file.
    std::fs::remove_file(&s.passwd).unwrap();
    set_passwords(
        &s.passwd,
        &[("alice", b"alice"), ("carol", b"carol")],
        FAST_ARGON2,
    );
    s.broker.reloader.reload().expect("reload");
    assert_eq!(send(get(&bob)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(get(&alice)).await.status, StatusCode::OK);
    // His open event stream ends too (within a second).
    while let Some((name, _)) = bobs_stream.next().await {
        assert_ne!(name, "message");
    }
    s.broker.stop().await;
}

#[tokio::test]
async fn open_mode_refuses_rebinding_hosts_and_browser_requests_without_the_token() {
    let (broker, base) = open().await;
    let port = broker.http.unwrap().port();
    let stats = format!("{base}/api/v1/stats");
    let a = send(req(
        Method::GET,
        &stats,
        &[("host", &format!("evil.example:{port}"))],
    ))
    .await;
    assert_code(&a, StatusCode::FORBIDDEN, "BAD_HOST");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let a = send(req(Method::GET, &stats, &[("host", &host)])).await;
        assert_eq!(a.status, StatusCode::OK, "{host}");
    }
    let a = send(req(Method::GET, &format!("{base}/api/v1/session"), &[])).await;
    assert_eq!(a.body["via"], "open");
    assert_eq!(a.body["role"], "admin");
    assert_eq!(a.body["username"], Value::Null);
    let token = a.body["csrf_token"].as_str().unwrap().to_owned();

    let publish = format!("{base}/api/v1/publish");
    let body = json!({"topic": "t", "payload": "p"});
    // curl or a script: JSON, no Origin, no cookie.
    let a = send(client().post(&publish).json(&body)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    // A browser: Origin (even its own), or a cookie, or a body a form could send.
    let own = base.as_str();
    for headers in [
        vec![("origin", own)],
        vec![("cookie", "other=1")],
        vec![("sec-fetch-site", "same-origin")],
    ] {
        let a = send(req(Method::POST, &publish, &headers).json(&body)).await;
        assert_code(&a, StatusCode::FORBIDDEN, "CSRF");
    }
    let form = send(
        req(Method::POST, &publish, &[])
            .header("content-type", "text/plain")
            .body(body.to_string()),
    )
    .await;
    assert_code(&form, StatusCode::FORBIDDEN, "CSRF");
    let a =
        send(req(Method::POST, &publish, &[("origin", "http://evil.example")]).json(&body)).await;
    assert_code(&a, StatusCode::FORBIDDEN, "BAD_ORIGIN");
    // The dashboard: its own origin and the token.
    let a = send(
        req(
            Method::POST,
            &publish,
            &[("origin", own), ("x-csrf-token", &token)],
        )
        .json(&body),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    broker.stop().await;
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_no_cors() {
    let (broker, base) = open().await;
    for path in ["/healthz", "/api/v1/stats", "/api/v1/nope"] {
        let a = send(req(
            Method::GET,
            &format!("{base}{path}"),
            &[("origin", "http://evil.example")],
        ))
        .await;
        let h = &a.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(
            h.get("cache-control").is_some_and(|v| v == "no-store"),
            path.starts_with("/api/"),
            "{path}"
        );
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
    broker.stop().await;
}

/// An open `text/event-stream`, read event by event.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(url: &str, headers: &[(&str, &str)]) -> Events {
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
    async fn next(&mut self) -> Option<(String, Value)> {
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
    async fn until(&mut self, name: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
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
