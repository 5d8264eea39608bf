//! The HTTP API from a test: a broker with `[http]` on 127.0.0.1:0 (open, or with users, API
//! keys and an ACL), requests as a given caller, Prometheus scrapes. For tests/http_api_*.rs.

use std::path::Path;

use mqttd::auth::apikeys::{ApiKeyFile, Role};
use mqttd::config::{Config, HttpConfig};
use reqwest::StatusCode;
use serde_json::Value;

use super::{FAST_ARGON2, TestBroker, WAIT, config, set_passwords};

/// `[http]` on an ephemeral loopback port, everything else default.
pub fn http(admins: &[&str], viewers: &[&str]) -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        admins: admins.iter().map(|s| s.to_string()).collect(),
        viewers: viewers.iter().map(|s| s.to_string()).collect(),
        optional: false,
        ..HttpConfig::local()
    }
}

/// A broker with a password file (alice: admin, bob: viewer, carol: MQTT only; password =
/// name), API keys `pub-key` (publisher) and `view-key` (viewer), and `acl` if given.
pub struct Secured {
    pub broker: TestBroker,
    pub base: String,
    pub publisher_key: String,
    pub viewer_key: String,
    pub dir: tempfile::TempDir,
}

pub async fn secured(acl: Option<&str>, tweak: impl FnOnce(&mut Config, &Path)) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(
        &passwd,
        &[("alice", b"alice"), ("bob", b"bob"), ("carol", b"carol")],
        FAST_ARGON2,
    );
    let keys = dir.path().join("api_keys");
    let publisher_key = add_key(&keys, "pub-key", Role::Publisher);
    let viewer_key = add_key(&keys, "view-key", Role::Viewer);
    let mut c = config();
    c.auth.password_file = Some(passwd);
    if let Some(acl) = acl {
        let path = dir.path().join("acl");
        std::fs::write(&path, acl).unwrap();
        c.auth.acl_file = Some(path);
    }
    let mut h = http(&["alice"], &["bob"]);
    h.api_keys = Some(keys);
    c.http = Some(h);
    tweak(&mut c, dir.path());
    let broker = TestBroker::start_with(c).await;
    let base = format!("http://{}", broker.http.expect("http listener"));
    Secured {
        broker,
        base,
        publisher_key,
        viewer_key,
        dir,
    }
}

pub fn add_key(path: &Path, name: &str, role: Role) -> String {
    ApiKeyFile::update(path, true, |f| Ok((f.add(name, role)?.key, true)))
        .unwrap()
        .to_string()
}

/// A broker without a password file (the API open to loopback callers), `c` tweaked.
pub async fn open_with(tweak: impl FnOnce(&mut Config)) -> (TestBroker, String) {
    let mut c = config();
    c.http = Some(http(&[], &[]));
    tweak(&mut c);
    let broker = TestBroker::start_with(c).await;
    let base = format!("http://{}", broker.http.expect("http listener"));
    (broker, base)
}

pub fn client() -> reqwest::Client {
    super::crypto_provider();
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// Who calls: nobody, a password-file user, or an API key.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Nobody,
    User(&'a str, &'a str),
    Key(&'a str),
}

pub const ALICE: As = As::User("alice", "alice");
pub const BOB: As = As::User("bob", "bob");

pub async fn call(
    method: reqwest::Method,
    url: &str,
    who: As<'_>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client().request(method, url);
    req = match who {
        As::Nobody => req,
        As::User(u, p) => req.basic_auth(u, Some(p)),
        As::Key(k) => req.bearer_auth(k),
    };
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request answered");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub async fn get(url: &str, who: As<'_>) -> (StatusCode, Value) {
    call(reqwest::Method::GET, url, who, None).await
}

pub async fn post(url: &str, who: As<'_>, body: Value) -> (StatusCode, Value) {
    call(reqwest::Method::POST, url, who, Some(body)).await
}

pub async fn delete(url: &str, who: As<'_>) -> (StatusCode, Value) {
    call(reqwest::Method::DELETE, url, who, None).await
}

/// Errors are JSON `{"code", "message"}`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// The samples of `/metrics`, parsed as Prometheus parses them.
pub async fn scrape(url: &str, who: As<'_>) -> prometheus_parse::Scrape {
    let mut req = client().get(url);
    req = match who {
        As::Nobody => req,
        As::User(u, p) => req.basic_auth(u, Some(p)),
        As::Key(k) => req.bearer_auth(k),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid exposition format")
}

/// The value of `name` (with `label`, if given) in `scrape`; 0 when absent.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
}

/// Asks `url` until `done` holds for the answer (every 20 ms, at most twice [`WAIT`]).
pub async fn get_until(url: &str, who: As<'_>, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    loop {
        let (status, body) = get(url, who).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered as expected; last: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
