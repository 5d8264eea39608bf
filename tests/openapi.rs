//! `/api/v1/openapi.json` kept in step with the API (src/http/openapi.json, written by hand):
//!
//! - every route `src/http/mod.rs` and the files it routes from declare is described, with its
//!   methods;
//! - every described operation, called as an admin on a broker with clients, subscriptions,
//!   retained messages and a history, answers with one of its documented statuses and never with
//!   the unknown-endpoint 404 or a 405;
//! - every JSON answer has the documented shape: the required fields, no field the description
//!   does not name, the documented types (a small checker below, enough for the schemas used).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{FAST_ARGON2, TestBroker, config, set_passwords};
use mqttd::config::HttpConfig;
use mqttd::protocol::QoS;
use serde_json::{Value, json};

/// The served description (and the embedded one: the same text).
async fn document(base: &str) -> Value {
    let body = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let text = body.text().await.unwrap();
    assert_eq!(text, mqttd::http::openapi::DOCUMENT);
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// `(path, method)` of every `.route("PATH", get(..).delete(..))` in the HTTP sources, with
/// parameters unnamed (see [`unnamed`]).
fn declared_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut files = vec![std::path::PathBuf::from("src/http/mod.rs")];
    for dir in ["src/http", "src/http/api"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") && !files.contains(&path) {
                files.push(path);
            }
        }
    }
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        for (i, _) in src.match_indices(".route(") {
            let rest = &src[i + ".route(".len()..];
            let Some(rest) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let path = &rest[..rest.find('"').unwrap()];
            if !(path.starts_with("/api/") || path == "/metrics" || path == "/healthz") {
                continue; // the dashboard's pages and assets are not the API
            }
            // The method router: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = j;
                    break;
                }
            }
            let methods = &rest[..end];
            let path = unnamed(path);
            for m in ["get", "post", "put", "patch", "delete"] {
                let called = methods.match_indices(&format!("{m}(")).any(|(k, _)| {
                    k == 0
                        || !methods.as_bytes()[k - 1].is_ascii_alphanumeric()
                            && methods.as_bytes()[k - 1] != b'_'
                });
                if called {
                    routes.insert((path.clone(), m.to_owned()));
                }
            }
        }
    }
    routes
}

/// `/a/{id}/b/{*rest}` -> `/a/{}/b/{}`: parameter names may differ between the two.
fn unnamed(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            c => out.push(c),
        }
    }
    out
}

fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((unnamed(path), method.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_route_is_described_and_every_description_is_a_route() {
    let broker = TestBroker::start_with(secured_config(&tempfile::tempdir().unwrap())).await;
    let base = format!("http://{}", broker.http.unwrap());
    let doc = document(&base).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = declared_routes();
    let ops = described(&doc);
    assert!(routes.len() >= 10, "found the routes: {routes:?}");
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    assert!(
        undocumented.is_empty(),
        "routes not in openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "openapi.json describes what no route serves: {unrouted:?}"
    );
}

/// A broker with a password file (alice: admin), `[http]` on port 0, persistence and the
/// history in `dir`.
fn secured_config(dir: &tempfile::TempDir) -> mqttd::config::Config {
    let passwd = dir.path().join("passwd");
    set_passwords(&passwd, &[("alice", b"alice")], FAST_ARGON2);
    let mut c = config();
    c.auth.password_file = Some(passwd);
    c.persistence = mqttd::config::PersistenceConfig {
        enabled: true,
        path: dir.path().join("data"),
        ..mqttd::config::PersistenceConfig::off()
    };
    c.history.enabled = true;
    c.http = Some(HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        admins: vec!["alice".into()],
        optional: false,
        ..HttpConfig::local()
    });
    // A gateway, so that `GET /api/v1/gateways` has one to describe.
    let gateways = "[[coap]]\nname = \"coap\"\nbind = \"127.0.0.1:0\"\n";
    c.coap = mqttd::config::Config::parse(gateways, std::path::Path::new("gateways.toml"))
        .expect("valid [[coap]]")
        .coap;
    c
}

/// Example values for the path parameters and bodies.
fn path_for(template: &str) -> String {
    template
        .replace("{clientid}", "sub-1")
        .replace("{topic}", "retained%2Fone")
}

fn body_for(path: &str) -> Option<Value> {
    match path {
        "/api/v1/login" => Some(json!({"username": "alice", "password": "alice"})),
        "/api/v1/publish" => Some(json!({"topic": "sensors/1", "payload": "21.5"})),
        "/api/v1/publish/bulk" => Some(json!([{"topic": "sensors/1", "payload": "21.5"}])),
        _ => None,
    }
}

fn query_for(path: &str) -> &'static str {
    match path {
        "/api/v1/history" => "?filter=%23",
        "/api/v1/events" => "?filter=sensors%2F%23",
        _ => "",
    }
}

#[tokio::test]
async fn every_operation_answers_as_described() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured_config(&dir)).await;
    let base = format!("http://{}", broker.http.unwrap());
    let doc = document(&base).await;

    // Something to show: a subscriber, a retained message, history rows.
    let (mut sub, code) = common::try_login(
        broker.addr,
        common::login_packet("sub-1", Some("alice"), Some(b"alice")),
    )
    .await;
    assert_eq!(code, 0);
    sub.subscribe("sensors/#", QoS::AtLeastOnce, 1).await;
    let (mut publisher, code) = common::try_login(
        broker.addr,
        common::login_packet("pub-1", Some("alice"), Some(b"alice")),
    )
    .await;
    assert_eq!(code, 0);
    publisher
        .publish("retained/one", b"kept", QoS::AtMostOnce, true, 0)
        .await;
    publisher
        .publish("sensors/1", b"20.5", QoS::AtMostOnce, false, 0)
        .await;
    sub.expect_publish().await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // GETs first, then POSTs, then DELETEs (which take away what the others show).
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    let rank = |m: &str| {
        ["get", "post", "put", "delete"]
            .iter()
            .position(|x| *x == m)
    };
    ops.sort_by_key(|(p, m, _)| (rank(m), p.clone()));
    let mut differences = Vec::new();
    for (path, method, op) in ops {
        let url = format!("{base}{}{}", path_for(&path), query_for(&path));
        let mut req = http
            .request(method.to_uppercase().parse().unwrap(), &url)
            .basic_auth("alice", Some("alice"));
        if let Some(body) = body_for(&path) {
            req = req.json(&body);
        }
        let mut response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let documented = &op["responses"][status.to_string()];
        let ctype = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if path == "/api/v1/events" {
            // A stream: its first event is enough.
            assert_eq!(status, 200, "{method} {path}");
            assert!(ctype.starts_with("text/event-stream"), "{ctype}");
            let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap();
            assert!(first.is_some());
            continue;
        }
        let body = response.bytes().await.unwrap();
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which openapi.json does not list: {}",
            String::from_utf8_lossy(&body)
        );
        let Some(schema) = documented["content"]
            .as_object()
            .and_then(|c| c.get("application/json"))
            .map(|c| &c["schema"])
        else {
            continue;
        };
        assert!(
            ctype.starts_with("application/json"),
            "{method} {path}: {ctype}"
        );
        let value: Value = serde_json::from_slice(&body).unwrap();
        let mut problems = Vec::new();
        check(&doc, schema, &value, "$", &mut problems);
        if !problems.is_empty() {
            differences.push(format!(
                "{method} {path} ({status}) differs from openapi.json:\n{}\nbody: {value:#}",
                problems.join("\n")
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));
    broker.stop().await;
}

/// Checks `value` against `schema` (type, enum, required, properties, additionalProperties,
/// items, oneOf, $ref), writing each difference into `problems`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(
            doc,
            &doc["components"]["schemas"][name],
            value,
            at,
            problems,
        );
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let fits = alts.iter().any(|alt| {
            let mut p = Vec::new();
            check(doc, alt, value, at, &mut p);
            p.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: fits none of oneOf: {value}"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} not in {allowed:?}"));
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("null") => value.is_null(),
        Some(other) => {
            problems.push(format!("{at}: unknown schema type {other}"));
            true
        }
    };
    if !ok {
        problems.push(format!("{at}: expected {}, got {value}", schema["type"]));
        return;
    }
    if let (Some(obj), Some(props)) = (value.as_object(), schema["properties"].as_object()) {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                problems.push(format!("{at}: missing required field {name:?}"));
            }
        }
        for (name, v) in obj {
            match props.get(name) {
                Some(s) => check(doc, s, v, &format!("{at}.{name}"), problems),
                None => problems.push(format!("{at}: field {name:?} is not described")),
            }
        }
    } else if let (Some(obj), Some(extra)) = (value.as_object(), schema.get("additionalProperties"))
    {
        for (name, v) in obj {
            check(doc, extra, v, &format!("{at}.{name}"), problems);
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(doc, schema, v, &format!("{at}[{i}]"), problems);
        }
    }
}
