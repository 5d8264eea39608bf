//! The HTTP API's endpoints that change things, end to end: bulk publish reaching MQTT
//! subscribers, discarding a session (store included), clearing a retained message (seen by a
//! new subscriber, and after a restart), reload with a good and a broken ACL, and which role may
//! do what.

mod common;

use std::time::Duration;

use common::api::{ALICE, As, BOB, assert_error, delete, get, open_with, post, secured};
use common::{RawClient, TestBroker, login_packet, try_login};
use mqttd::config::PersistenceConfig;
use mqttd::protocol::{Properties, QoS};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn bulk_publish_reaches_subscribers_and_answers_per_item() {
    let (broker, base) = open_with(|_| {}).await;
    let mut sub = RawClient::connected(broker.addr, "bulk-sub").await;
    sub.subscribe("bulk/#", QoS::AtMostOnce, 1).await;
    let url = format!("{base}/api/v1/publish/bulk");
    let (status, body) = post(
        &url,
        As::Nobody,
        json!([
            {"topic": "bulk/a", "payload": "one"},
            {"topic": "bulk/b", "payload": "x", "qos": 7},
            {"topic": "bulk/#", "payload": "bad topic"},
            {"topic": "bulk/c", "payload": "dHdv", "payload_encoding": "base64"},
            {"no_topic": true}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body.as_array().expect("an array");
    assert_eq!(items.len(), 5, "{body}");
    assert!(items[0]["id"].is_string(), "{body}");
    assert_error(&items[1], "BAD_REQUEST");
    assert_error(&items[2], "TOPIC_INVALID");
    assert!(items[3]["id"].is_string(), "{body}");
    assert_error(&items[4], "BAD_REQUEST");
    let first = sub.expect_publish().await;
    assert_eq!((&*first.topic, &first.payload[..]), ("bulk/a", &b"one"[..]));
    let second = sub.expect_publish().await;
    assert_eq!(
        (&*second.topic, &second.payload[..]),
        ("bulk/c", &b"two"[..])
    );
    sub.expect_silence(Duration::from_millis(100)).await;

    // Not an array, or too many: the whole request is refused.
    let (status, body) = post(&url, As::Nobody, json!({"topic": "bulk/a"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let many: Vec<Value> = (0..1001).map(|_| json!({"topic": "bulk/x"})).collect();
    let (status, body) = post(&url, As::Nobody, Value::Array(many)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "BAD_REQUEST");
    broker.stop().await;
}

#[tokio::test]
async fn roles_decide_who_may_change_and_who_may_read() {
    let s = secured(None, |_, _| {}).await;
    let base = &s.base;
    let viewer = As::Key(&s.viewer_key);
    let publisher = As::Key(&s.publisher_key);
    // Viewers read, and change nothing.
    for path in ["subscriptions", "topics", "retained", "listeners"] {
        let (status, body) = get(&format!("{base}/api/v1/{path}"), BOB).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let (status, body) = get(&format!("{base}/api/v1/{path}"), viewer).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // Publishers only publish.
        let (status, body) = get(&format!("{base}/api/v1/{path}"), publisher).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_error(&body, "FORBIDDEN");
    }
    let (status, _) = get(&format!("{base}/api/v1/history?filter=%23"), publisher).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for who in [BOB, viewer, publisher] {
        let (status, body) = delete(&format!("{base}/api/v1/sessions/x"), who).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = delete(&format!("{base}/api/v1/retained/x"), who).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = post(&format!("{base}/api/v1/reload"), who, json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    for who in [BOB, viewer] {
        let (status, body) = post(
            &format!("{base}/api/v1/publish/bulk"),
            who,
            json!([{"topic": "a"}]),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = post(
        &format!("{base}/api/v1/publish/bulk"),
        publisher,
        json!([{"topic": "a"}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body[0]["id"].is_string(), "{body}");
    // No credentials: 401, as everywhere.
    let (status, _) = get(&format!("{base}/api/v1/listeners"), As::Nobody).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Admins may; unknown ones are 404.
    let (status, body) = delete(&format!("{base}/api/v1/sessions/nobody"), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "CLIENTID_NOT_FOUND");
    let (status, body) = delete(&format!("{base}/api/v1/retained/none/here"), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "NOT_FOUND");
    s.broker.stop().await;
}

/// `[persistence]` in `dir`.
fn persistence(dir: &std::path::Path) -> PersistenceConfig {
    PersistenceConfig {
        enabled: true,
        path: dir.to_owned(),
        ..PersistenceConfig::off()
    }
}

#[tokio::test]
async fn a_cleared_retained_message_is_gone_for_new_subscribers_and_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let store = persistence(data.path());
    let (broker, base) = open_with(|c| c.persistence = store.clone()).await;
    let mut publisher = RawClient::connected(broker.addr, "ret-pub").await;
    publisher
        .publish("lab/door", b"open", QoS::AtLeastOnce, true, 1)
        .await;
    publisher
        .publish("lab/temp", b"21", QoS::AtLeastOnce, true, 2)
        .await;
    // Encoded, or with its '/' as they are.
    let (status, body) = delete(&format!("{base}/api/v1/retained/lab%2Fdoor"), As::Nobody).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = delete(&format!("{base}/api/v1/retained/lab/door"), As::Nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A new subscriber gets what is left, and nothing was delivered for the clearing.
    let mut sub = RawClient::connected(broker.addr, "ret-sub").await;
    sub.subscribe("lab/#", QoS::AtMostOnce, 1).await;
    let p = sub.expect_publish().await;
    assert_eq!(&*p.topic, "lab/temp");
    sub.expect_silence(Duration::from_millis(100)).await;
    broker.stop().await;

    let (broker, base) = open_with(|c| c.persistence = store.clone()).await;
    let (status, body) = get(&format!("{base}/api/v1/retained"), As::Nobody).await;
    assert_eq!(status, StatusCode::OK);
    let topics: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["lab/temp"], "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn deleting_a_session_disconnects_it_and_forgets_it_in_the_store() {
    let data = tempfile::tempdir().unwrap();
    let store = persistence(data.path());
    let (broker, base) = open_with(|c| c.persistence = store.clone()).await;
    let props = Properties {
        session_expiry_interval: Some(3600),
        ..Properties::default()
    };
    // Two persistent sessions: one connected, one offline.
    let (mut online, _) = RawClient::connected_v5(broker.addr, "keep-on", props.clone()).await;
    online.subscribe("s/#", QoS::AtLeastOnce, 1).await;
    let (mut offline, _) = RawClient::connected_v5(broker.addr, "keep-off", props.clone()).await;
    offline.subscribe("s/#", QoS::AtLeastOnce, 1).await;
    offline.disconnect().await;

    let url = |id: &str| format!("{base}/api/v1/sessions/{id}");
    let (status, body) = delete(&url("keep-on"), As::Nobody).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let d = online.expect_disconnect().await;
    assert_eq!(u8::from(d.reason), 0x98, "administrative action: {d:?}");
    let (status, _) = delete(&url("keep-off"), As::Nobody).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(&url("keep-off"), As::Nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(broker.router.client("keep-on").is_none());
    assert_eq!(broker.router.subscription_count(), 0);
    broker.stop().await;

    // After a restart neither comes back.
    let (broker, base) = open_with(|c| c.persistence = store.clone()).await;
    let (status, body) = get(&format!("{base}/api/v1/clients"), As::Nobody).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["meta"]["count"], 0, "{body}");
    let (back, ack) = RawClient::connect_v5_with(
        broker.addr,
        mqttd::protocol::Connect {
            clean_start: false,
            ..common::connect_v5("keep-off", props)
        },
    )
    .await;
    assert!(!ack.session_present, "{ack:?}");
    back.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn reload_answers_with_its_result_and_a_broken_acl_keeps_the_old_one() {
    let s = secured(Some("user carol\ntopic readwrite ok/#\n"), |_, _| {}).await;
    let url = format!("{}/api/v1/reload", s.base);
    let (status, body) = post(&url, ALICE, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "ok");

    let acl = s.dir.path().join("acl");
    // Would open other/# to carol, but line 4 is broken.
    std::fs::write(
        &acl,
        "user carol\ntopic readwrite ok/#\ntopic readwrite other/#\nbogus directive\n",
    )
    .unwrap();
    let (status, body) = post(&url, ALICE, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_error(&body, "RELOAD_FAILED");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}:4", acl.display())),
        "names file:line: {message}"
    );
    // The old ACL is still in force: carol may publish on ok/, not elsewhere.
    let (mut carol, code) = try_login(
        s.broker.addr,
        login_packet("carol-1", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(carol.subscribe("ok/#", QoS::AtMostOnce, 1).await, [0]);
    assert_eq!(carol.subscribe("other/#", QoS::AtMostOnce, 2).await, [0x80]);
    s.broker.stop().await;
}

#[tokio::test]
async fn a_broker_without_history_says_so() {
    let (broker, base): (TestBroker, String) = open_with(|_| {}).await;
    let (status, body) = get(&format!("{base}/api/v1/history?filter=%23"), As::Nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "NOT_ENABLED");
    broker.stop().await;
}
