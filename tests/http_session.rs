//! Dashboard sessions, CSRF and the browser-facing checks, rates and Server-Sent Events, end to
//! end: a broker with `[http]` on 127.0.0.1:0, driven by reqwest (cookies and origins set by
//! hand, as a browser would send them) and by real MQTT clients.
//!
//! One test binary (`cargo test --test http_session`): logins, cookies, CSRF, Origin, Host and
//! headers here; rates and Server-Sent Events in `tests/http_session/events.rs`.

mod common;

use common::api::http;

use common::{FAST_ARGON2, TestBroker, WAIT, config, set_passwords};
use mqttd::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "http_session/events.rs"]
mod events;
use events::Events;

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
    for path in [
        "/healthz",
        "/api/v1/stats",
        "/api/v1/nope",
        "/",
        "/assets/app.js",
    ] {
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
