//! The HTTP API's read endpoints end to end: subscriptions, topics with their rates, retained
//! messages, listeners (a TLS listener's certificate), the message history (ACL and paging),
//! and the metrics that count logins and ACL denials.

mod common;

use std::time::Duration;

use common::api::{
    ALICE, As, assert_error, get, get_until, open_with, post, sample, scrape, secured,
};
use common::{RawClient, WAIT, login_packet, try_login};
use mqttd::config::{HistoryConfig, PersistenceConfig};
use mqttd::protocol::{QoS, RetainHandling, SubscriptionOptions};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn subscriptions_are_listed_with_their_options_and_filtered() {
    let (broker, base) = open_with(|_| {}).await;
    let (mut v5, _) = RawClient::connected_v5(broker.addr, "sub-v5", Default::default()).await;
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    v5.subscribe_with("a/+/c", options, None, 1).await;
    let mut v3 = RawClient::connected(broker.addr, "sub-v3").await;
    v3.subscribe("b/#", QoS::AtMostOnce, 1).await;
    v3.subscribe("a/+/c", QoS::ExactlyOnce, 2).await;

    let url = format!("{base}/api/v1/subscriptions");
    let (status, body) = get(&url, As::Nobody).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["count"], 3, "{body}");
    assert_eq!(
        body["data"][0],
        json!({"clientid": "sub-v3", "topic": "a/+/c", "qos": 2, "nl": 0, "rap": 0, "rh": 0})
    );
    assert_eq!(
        body["data"][2],
        json!({"clientid": "sub-v5", "topic": "a/+/c", "qos": 1, "nl": 1, "rap": 1, "rh": 2})
    );
    let (_, body) = get(&format!("{url}?clientid=sub-v3"), As::Nobody).await;
    assert_eq!(body["meta"]["count"], 2, "{body}");
    let (_, body) = get(
        &format!("{url}?filter=a%2F%2B%2Fc&limit=1&page=2"),
        As::Nobody,
    )
    .await;
    assert_eq!(body["meta"]["count"], 2, "{body}");
    assert_eq!(body["data"][0]["clientid"], "sub-v5", "{body}");
    assert_eq!(body["meta"]["hasnext"], false, "{body}");
    let (status, body) = get(&format!("{url}?limit=0"), As::Nobody).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "BAD_REQUEST");
    broker.stop().await;
}

#[tokio::test]
async fn topics_show_message_rates_once_someone_looks() {
    let (broker, base) = open_with(|_| {}).await;
    let url = format!("{base}/api/v1/topics");
    // The first request starts the tracker: nothing counted before it.
    let (status, body) = get(&url, As::Nobody).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["meta"]["tracking_since"].is_string(), "{body}");
    let mut sub = RawClient::connected(broker.addr, "t-sub").await;
    sub.subscribe("rate/#", QoS::AtMostOnce, 1).await;
    let mut publisher = RawClient::connected(broker.addr, "t-pub").await;
    publisher
        .publish("rate/kept", b"r", QoS::AtLeastOnce, true, 1)
        .await;
    let publishing = tokio::spawn(async move {
        for _ in 0..400 {
            publisher
                .publish("rate/busy", b"x", QoS::AtMostOnce, false, 0)
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        publisher
    });
    let body = get_until(&format!("{url}?like=busy"), As::Nobody, |b| {
        b["data"][0]["messages_per_s"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    let busy = &body["data"][0];
    assert_eq!(busy["topic"], "rate/busy", "{body}");
    assert!(busy["messages"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(busy["subscriptions"], 1, "{body}");
    assert_eq!(busy["retained"], false, "{body}");
    assert_eq!(body["meta"]["count"], 1, "{body}");
    let (_, body) = get(&format!("{url}?like=kept"), As::Nobody).await;
    assert_eq!(body["data"][0]["retained"], true, "{body}");
    assert_eq!(body["data"][0]["messages"], 1, "{body}");
    publishing.abort();
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_are_listed_with_a_preview_and_shown_whole() {
    let (broker, base) = open_with(|_| {}).await;
    let url = format!("{base}/api/v1/publish");
    let long = "x".repeat(100);
    for (topic, payload, encoding) in [
        ("shelf/long", long.as_str(), "plain"),
        ("shelf/bin", "//79", "base64"),
        ("other/t", "o", "plain"),
    ] {
        let (status, body) = post(
            &url,
            As::Nobody,
            json!({"topic": topic, "payload": payload, "payload_encoding": encoding,
                "retain": true, "qos": 1,
                "properties": {"content_type": "text/plain", "user_properties": {"k": "v"}}}),
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
    let (status, body) = get(
        &format!("{base}/api/v1/retained?filter=shelf%2F%23"),
        As::Nobody,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["count"], 2, "{body}");
    let bin = &body["data"][0];
    assert_eq!(bin["topic"], "shelf/bin");
    assert_eq!(bin["payload_size"], 3);
    assert_eq!(bin["payload_encoding"], "base64");
    assert_eq!(bin["payload_preview"], "//79");
    let text = &body["data"][1];
    assert_eq!(text["payload_size"], 100);
    assert_eq!(text["payload_preview"], "x".repeat(64));
    assert_eq!(text["qos"], 1);

    let (status, one) = get(&format!("{base}/api/v1/retained/shelf/bin"), As::Nobody).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["payload"], "//79");
    assert_eq!(one["payload_text"], serde_json::Value::Null);
    assert_eq!(one["properties"]["content_type"], "text/plain", "{one}");
    assert_eq!(
        one["properties"]["user_properties"],
        json!([["k", "v"]]),
        "{one}"
    );
    let (_, one) = get(&format!("{base}/api/v1/retained/shelf%2Flong"), As::Nobody).await;
    assert_eq!(one["payload_text"], long.as_str());
    let (status, body) = get(&format!("{base}/api/v1/retained/shelf/none"), As::Nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "NOT_FOUND");
    let (status, body) = get(&format!("{base}/api/v1/retained/shelf%2F%23"), As::Nobody).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "TOPIC_INVALID");
    // Not UTF-8 once decoded: refused in the API's shape.
    let (status, body) = get(&format!("{base}/api/v1/retained/a%FF"), As::Nobody).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "BAD_REQUEST");
    let (status, _) = get(
        &format!("{base}/api/v1/retained?filter=a%2F%23%2Fb"),
        As::Nobody,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    broker.stop().await;
}

#[tokio::test]
async fn listeners_show_connections_and_the_tls_certificate_expiry() {
    let pki = common::certs::Pki::generate();
    let (broker, base) = open_with(|c| {
        let mut tls = common::listener("secure");
        tls.tls = Some(pki.server_tls(WAIT));
        c.listeners.push(tls);
    })
    .await;
    let _client = RawClient::connected(broker.addr, "l-1").await;
    let url = format!("{base}/api/v1/listeners");
    let body = get_until(&url, As::Nobody, |b| b["data"][0]["connections"] == 1).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{body}");
    let plain = &data[0];
    assert_eq!(plain["name"], "plain");
    assert_eq!(plain["protocol"], "mqtt");
    assert_eq!(plain["bind"], broker.addr.to_string());
    assert!(plain.get("certificate").is_none(), "{body}");
    let secure = &data[1];
    assert_eq!(secure["protocol"], "mqtts");
    assert_eq!(secure["connections"], 0);
    let cert = &secure["certificate"];
    assert!(cert["subject"].as_str().unwrap().contains("CN="), "{cert}");
    // days_left counts from now to not_after.
    let not_after = cert["not_after"].as_str().unwrap();
    let end = humantime::parse_rfc3339(not_after).expect("RFC 3339");
    let left = end.duration_since(std::time::SystemTime::now()).unwrap();
    let days = cert["days_left"].as_i64().unwrap();
    assert!(days > 0, "{cert}");
    assert!(
        (left.as_secs() / 86_400).abs_diff(days as u64) <= 1,
        "{cert}"
    );
    assert!(not_after.ends_with('Z'), "{cert}");
    let http = &data[2];
    assert_eq!(http["name"], "http");
    assert_eq!(http["protocol"], "http");
    assert_eq!(http["bind"], broker.http.unwrap().to_string());
    assert!(
        http["connections"].as_u64().unwrap() >= 1,
        "this request's: {http}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn history_is_queried_as_the_caller_reads_and_paged() {
    let acl = "user alice\ntopic read sensors/#\nuser carol\ntopic readwrite #\n";
    let s = secured(Some(acl), |c, dir| {
        c.persistence = PersistenceConfig {
            path: dir.join("data"),
            ..PersistenceConfig::off()
        };
        c.history = HistoryConfig {
            enabled: true,
            ..HistoryConfig::default()
        };
    })
    .await;
    let (mut carol, code) = try_login(
        s.broker.addr,
        login_packet("h-pub", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    for i in 0..3u16 {
        carol
            .publish(
                "sensors/t",
                format!("{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .await;
    }
    carol
        .publish("secret/s", b"hidden", QoS::AtLeastOnce, false, 9)
        .await;
    let url = format!("{}/api/v1/history", s.base);
    // The recorder writes in batches: wait for the last.
    let all = get_until(&format!("{url}?filter=%23"), ALICE, |b| {
        b["data"].as_array().is_some_and(|d| d.len() == 3)
    })
    .await;
    // secret/s is recorded but alice may not read it.
    let payloads: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["0", "1", "2"], "{all}");
    assert_eq!(all["data"][0]["clientid"], "h-pub");
    assert_eq!(all["data"][0]["payload_encoding"], "plain");
    assert_eq!(all["meta"]["next_cursor"], serde_json::Value::Null);
    // Pages: the newest two, then the one before.
    let (status, page) = get(&format!("{url}?filter=sensors%2F%2B&limit=2"), ALICE).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["payload"], "1");
    assert_eq!(page["data"][1]["payload"], "2");
    let cursor = page["meta"]["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let (_, older) = get(
        &format!("{url}?filter=sensors%2F%2B&limit=2&cursor={cursor}"),
        ALICE,
    )
    .await;
    assert_eq!(older["data"].as_array().unwrap().len(), 1, "{older}");
    assert_eq!(older["data"][0]["payload"], "0");
    assert_eq!(older["meta"]["next_cursor"], serde_json::Value::Null);
    // A filter under which alice may read nothing, a bad filter, a bad time.
    let (status, body) = get(&format!("{url}?filter=secret%2F%23"), ALICE).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = get(&format!("{url}?filter=a%2F%23%2Fb"), ALICE).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&format!("{url}?filter=%23&from=yesterday"), ALICE).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = get(&format!("{url}?filter=%23&from=1h&to=now"), ALICE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The recorder's counters are in /metrics.
    let metrics = scrape(&format!("{}/metrics", s.base), ALICE).await;
    assert_eq!(
        sample(&metrics, "mqttd_history_rows_written_total", None),
        4.0
    );
    assert_eq!(
        sample(&metrics, "mqttd_history_rows_failed_total", None),
        0.0
    );
    s.broker.stop().await;
}

#[tokio::test]
async fn metrics_count_logins_and_acl_denials() {
    let s = secured(Some("user carol\ntopic readwrite mine/#\n"), |_, _| {}).await;
    let url = format!("{}/metrics", s.base);
    let viewer = As::Key(&s.viewer_key);
    let failure = |reason| Some(("reason", reason));
    let before = scrape(&url, viewer).await;
    assert_eq!(
        sample(&before, "mqttd_client_auth_success_total", None),
        0.0
    );
    let (_, code) = try_login(
        s.broker.addr,
        login_packet("m-bad", Some("carol"), Some(b"wrong")),
    )
    .await;
    assert_eq!(code, 4);
    let (_, code) = try_login(s.broker.addr, login_packet("m-anon", None, None)).await;
    assert_eq!(code, 5);
    let (mut carol, code) = try_login(
        s.broker.addr,
        login_packet("m-carol", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        carol.subscribe("theirs/#", QoS::AtMostOnce, 1).await,
        [0x80]
    );
    carol
        .publish("theirs/x", b"no", QoS::AtLeastOnce, false, 2)
        .await;
    carol.ping().await;
    let after = scrape(&url, viewer).await;
    assert_eq!(sample(&after, "mqttd_client_auth_success_total", None), 1.0);
    assert_eq!(
        sample(
            &after,
            "mqttd_client_auth_failure_total",
            failure("bad_username_or_password")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "mqttd_client_auth_failure_total",
            failure("not_authorized")
        ),
        1.0
    );
    for action in ["publish", "subscribe"] {
        assert_eq!(
            sample(
                &after,
                "mqttd_authorization_deny_total",
                Some(("action", action))
            ),
            1.0,
            "{action}"
        );
    }
    assert_eq!(
        sample(
            &after,
            "mqttd_authorization_deny_total",
            Some(("action", "deliver"))
        ),
        0.0
    );
    s.broker.stop().await;
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_the_broker_serves() {
    let data = tempfile::tempdir().unwrap();
    let (broker, base) = open_with(|c| {
        c.persistence = PersistenceConfig {
            path: data.path().to_owned(),
            ..PersistenceConfig::off()
        };
        c.history.enabled = true;
        c.log.messages = true;
    })
    .await;
    // Connections by listener has a sample per listener with connections.
    let _client = RawClient::connected(broker.addr, "g-1").await;
    let url = format!("{base}/metrics");
    let deadline = tokio::time::Instant::now() + WAIT;
    let served = loop {
        let served = scrape(&url, As::Nobody).await;
        if sample(&served, "mqttd_connections", None) == 1.0 {
            break served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client is never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/mqttd.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let mut used = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("mqttd_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                used.push(name);
            }
        }
    }
    assert!(used.len() > 15, "{used:?}");
    for name in &used {
        assert!(
            served.samples.iter().any(|s| s.metric == *name),
            "the dashboard charts {name}, which /metrics does not serve"
        );
    }
    broker.stop().await;
}
