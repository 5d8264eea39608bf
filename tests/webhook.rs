//! `[[webhook]]`: messages matching a hook's filters are sent to a local HTTP(S) receiver that
//! the test runs (axum on 127.0.0.1:0) and scripts: answers, held answers, a receiver that is
//! down. Every wait is bounded; the receiver reports each request as an event.

mod common;

#[path = "webhook/receiver.rs"]
mod receiver;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::{RawClient, TestBroker, WAIT, eventually};
use mqttd::config::WebhookConfig;
use mqttd::gateway::{GatewayStatus, Kind};
use mqttd::protocol::QoS;
use receiver::Receiver;

/// A hook named `name` on `alerts/#` to `url`, quick retries.
fn hook(name: &str, url: &str) -> WebhookConfig {
    WebhookConfig {
        retry_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_millis(50),
        ..WebhookConfig::new(name, url, &["alerts/#"])
    }
}

async fn broker_with(hooks: Vec<WebhookConfig>) -> TestBroker {
    let mut config = common::config();
    config.webhooks = hooks;
    TestBroker::start_with(config).await
}

fn metric(status: &Arc<dyn GatewayStatus>, name: &str) -> u64 {
    status
        .metrics()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
}

async fn publish(client: &mut RawClient, topic: &str, payload: &[u8]) {
    client
        .publish(topic, payload, QoS::AtLeastOnce, false, 1)
        .await;
}

#[tokio::test]
async fn delivers_each_matching_message_as_json_in_order() {
    let mut receiver = Receiver::start().await;
    let broker = broker_with(vec![hook("alerts", &receiver.url())]).await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    assert_eq!(status.address(), receiver.url());
    assert_eq!(status.state(), "running");

    let mut client = RawClient::connected(broker.addr, "sensor-7").await;
    client
        .publish("alerts/door", b"open", QoS::AtLeastOnce, true, 1)
        .await;
    publish(&mut client, "other/topic", b"not for the hook").await;
    client
        .publish("alerts/bin", b"\xff\x00", QoS::AtMostOnce, false, 0)
        .await;

    let first = receiver.next().await;
    assert_eq!(first.method, Method::POST);
    assert_eq!(first.headers["content-type"], "application/json");
    let agent = first.headers["user-agent"].to_str().unwrap();
    assert!(agent.starts_with("mqttd/"), "{agent}");
    let time = first.body["time"].as_str().unwrap().to_owned();
    humantime::parse_rfc3339(&time).expect("time is RFC 3339");
    assert_eq!(
        first.body,
        serde_json::json!({
            "topic": "alerts/door", "payload": "open", "payload_encoding": "utf8", "qos": 1,
            "retain": true, "client_id": "sensor-7", "time": time,
        })
    );
    let second = receiver.next().await;
    assert_eq!(second.body["topic"], "alerts/bin");
    assert_eq!(second.body["payload"], "/wA=");
    assert_eq!(second.body["payload_encoding"], "base64");
    assert_eq!(second.body["qos"], 0);
    receiver.expect_none(Duration::from_millis(200)).await;

    eventually("sent = 2", || metric(&status, "sent") == 2).await;
    for name in ["failed", "dropped", "retries", "queued"] {
        assert_eq!(metric(&status, name), 0, "{name}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_503_is_retried_and_a_400_is_final() {
    let mut receiver = Receiver::start().await;
    receiver
        .behaviour
        .script
        .lock()
        .extend([(503, None), (503, None), (200, None), (400, None)]);
    let broker = broker_with(vec![hook("alerts", &receiver.url())]).await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"retried").await;
    publish(&mut client, "alerts/b", b"refused").await;
    publish(&mut client, "alerts/c", b"after").await;

    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(receiver.next().await.payload().to_owned());
    }
    // Three attempts for the 503s, one for the 400 (final), then the next message.
    assert_eq!(seen, ["retried", "retried", "retried", "refused", "after"]);
    receiver.expect_none(Duration::from_millis(200)).await;
    eventually("sent = 2", || metric(&status, "sent") == 2).await;
    assert_eq!(metric(&status, "retries"), 2);
    assert_eq!(metric(&status, "failed"), 1);
    broker.stop().await;
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.status.store(503, Ordering::SeqCst);
    let broker = broker_with(vec![WebhookConfig {
        max_retries: 2,
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"x").await;
    for _ in 0..3 {
        receiver.next().await;
    }
    eventually("failed = 1", || metric(&status, "failed") == 1).await;
    receiver.expect_none(Duration::from_millis(200)).await;
    assert_eq!(metric(&status, "retries"), 2);
    assert_eq!(status.state(), "failing");
    broker.stop().await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.script.lock().push_back((429, Some("1")));
    let broker = broker_with(vec![WebhookConfig {
        max_retry_delay: Duration::from_secs(5),
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"x").await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    let waited = second.at - first.at;
    // Retry-After: 1 rather than the 20 ms back-off (its cap is tested in the unit tests).
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(second.payload(), "x");
    broker.stop().await;
}

#[tokio::test]
async fn while_the_receiver_is_down_the_buffer_keeps_the_newest() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.status.store(503, Ordering::SeqCst);
    let broker = broker_with(vec![WebhookConfig {
        buffer: 3,
        max_retries: 1000,
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/n", b"0").await;
    // Message 0 is being retried; 1..=9 wait, and only the newest 3 fit.
    assert_eq!(receiver.next().await.payload(), "0");
    for n in 1..=9 {
        publish(&mut client, "alerts/n", n.to_string().as_bytes()).await;
    }
    eventually("6 dropped, 3 queued", || {
        metric(&status, "dropped") == 6 && metric(&status, "queued") == 3
    })
    .await;
    assert_eq!(status.state(), "failing");

    receiver.behaviour.status.store(200, Ordering::SeqCst);
    let mut delivered = Vec::new();
    while delivered.last().map(String::as_str) != Some("9") {
        let p = receiver.next().await.payload().to_owned();
        if delivered.last() != Some(&p) {
            delivered.push(p);
        }
    }
    assert_eq!(delivered, ["0", "7", "8", "9"]);
    eventually("sent = 4", || metric(&status, "sent") == 4).await;
    assert_eq!(metric(&status, "failed"), 0);
    assert_eq!(status.state(), "running");
    broker.stop().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_is_up() {
    // A free port, nobody listening on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let broker = broker_with(vec![WebhookConfig {
        max_retries: 1000,
        ..hook("alerts", &format!("http://{addr}/hook"))
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"late").await;
    eventually("retrying", || {
        metric(&status, "retries") >= 2 && status.state() == "failing"
    })
    .await;
    let mut receiver = Receiver::start_on(addr).await;
    assert_eq!(receiver.next().await.payload(), "late");
    eventually("sent", || metric(&status, "sent") == 1).await;
    assert_eq!(status.state(), "running");
    broker.stop().await;
}

#[tokio::test]
async fn a_slow_receiver_does_not_slow_mqtt_subscribers() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.open.send_replace(false);
    let broker = broker_with(vec![WebhookConfig {
        buffer: 10,
        timeout: Duration::from_secs(60),
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut subscriber = RawClient::connected(broker.addr, "sub").await;
    subscriber.subscribe("alerts/#", QoS::AtLeastOnce, 1).await;
    let mut publisher = RawClient::connected(broker.addr, "pub").await;

    const N: usize = 500;
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            publish(&mut publisher, "alerts/load", n.to_string().as_bytes()).await;
        }
        publisher
    });
    for n in 0..N {
        let p = subscriber.receive().await;
        assert_eq!(&p.payload[..], n.to_string().as_bytes());
    }
    let took = started.elapsed();
    let _publisher = publishing.await.unwrap();
    // The hook took the first message and is stuck on it; the rest went through its buffer.
    assert_eq!(receiver.next().await.payload(), "0");
    eventually("the buffer dropped the oldest", || {
        metric(&status, "dropped") == (N - 1 - 10) as u64 && metric(&status, "queued") == 10
    })
    .await;
    assert!(took < WAIT, "MQTT delivery took {took:?}");
    receiver.expect_none(Duration::from_millis(100)).await;
    broker.stop().await;
}

#[tokio::test]
async fn https_with_a_given_ca_and_refused_with_another() {
    let pki = common::certs::Pki::generate();
    let mut receiver = Receiver::start_tls(&pki).await;
    let url = format!("https://localhost:{}/hook", receiver.addr.port());
    let broker = broker_with(vec![
        WebhookConfig {
            ca: Some(pki.path("ca.pem")),
            ..hook("trusted", &url)
        },
        WebhookConfig {
            ca: Some(pki.path("other-ca.pem")),
            max_retries: 0,
            filters: vec!["alerts/untrusted".into()],
            ..hook("untrusted", &url)
        },
    ])
    .await;
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/tls", b"secret").await;
    assert_eq!(receiver.next().await.payload(), "secret");
    let trusted = broker.gateway(Kind::Webhook, "trusted");
    eventually("sent over TLS", || metric(&trusted, "sent") == 1).await;

    // The untrusted hook (also matched by the trusted one's alerts/#) never gets through.
    publish(&mut client, "alerts/untrusted", b"x").await;
    let untrusted = broker.gateway(Kind::Webhook, "untrusted");
    eventually("refused certificate", || metric(&untrusted, "failed") == 1).await;
    assert_eq!(metric(&untrusted, "sent"), 0);
    assert_eq!(untrusted.state(), "failing");
    assert_eq!(receiver.next().await.payload(), "x"); // from "trusted"
    receiver.expect_none(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn counters_in_sys() {
    let receiver = Receiver::start().await;
    let mut config = common::config();
    config.sys.interval = 1;
    config.webhooks = vec![hook("alerts", &receiver.url())];
    let broker = TestBroker::start_with(config).await;
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"1").await;
    publish(&mut client, "alerts/b", b"2").await;
    let mut watcher = RawClient::connected(broker.addr, "w").await;
    watcher
        .subscribe("$SYS/broker/webhook/alerts/#", QoS::AtMostOnce, 1)
        .await;
    let mut values = std::collections::HashMap::new();
    let deadline = Instant::now() + WAIT;
    while values.get("sent").map(String::as_str) != Some("2")
        || values.get("state").map(String::as_str) != Some("running")
    {
        assert!(Instant::now() < deadline, "$SYS values: {values:?}");
        let p = watcher.expect_publish().await;
        let name = p.topic.rsplit('/').next().unwrap().to_owned();
        values.insert(name, String::from_utf8(p.payload.to_vec()).unwrap());
    }
    for name in ["failed", "dropped", "retries", "queued", "latency_ms_sum"] {
        assert!(values.contains_key(name), "{name} missing: {values:?}");
    }
    broker.stop().await;
}

/// The real binary: a header from the environment is sent and never printed; without the
/// variable the broker refuses to start and names the line.
#[tokio::test]
async fn headers_from_the_environment() {
    let mut receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[persistence]\nenabled = false\n\n[[webhook]]\nname = \"alerts\"\nurl = \"{}\"\n\
         filters = [\"alerts/#\"]\nheaders = {{ \"Authorization\" = \"env:MQTTD_TEST_HOOK_TOKEN\", \"X-Site\" = \"one\" }}\n",
        receiver.url()
    );
    let path = common::config_file(dir.path(), &extra);
    let broker = common::BrokerProcess::start_with(&path, |cmd| {
        cmd.env("MQTTD_TEST_HOOK_TOKEN", "Bearer t0ken-value");
    })
    .await;
    let mut client = RawClient::connected(broker.addr, "c").await;
    publish(&mut client, "alerts/a", b"x").await;
    let seen = receiver.next().await;
    assert_eq!(seen.headers["authorization"], "Bearer t0ken-value");
    assert_eq!(seen.headers["x-site"], "one");
    let output = broker.stop().await;
    assert!(!output.contains("t0ken"), "{output}");

    let text = std::fs::read_to_string(&path).unwrap();
    let line = 1 + text.lines().position(|l| l.starts_with("headers")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqttd"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("MQTTD_TEST_HOOK_TOKEN")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("mqttd.toml:{line}")) && stderr.contains("MQTTD_TEST_HOOK_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test]
async fn concurrency_sends_that_many_at_once() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.open.send_replace(false);
    let broker = broker_with(vec![WebhookConfig {
        concurrency: 4,
        timeout: Duration::from_secs(60),
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let mut client = RawClient::connected(broker.addr, "c").await;
    for n in 0..6 {
        publish(&mut client, "alerts/n", n.to_string().as_bytes()).await;
    }
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        seen.push(receiver.next().await.payload().to_owned());
    }
    // Four held at once; the fifth waits for a free slot.
    receiver.expect_none(Duration::from_millis(200)).await;
    receiver.behaviour.open.send_replace(true);
    for _ in 0..2 {
        seen.push(receiver.next().await.payload().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"]);
    eventually("sent = 6", || metric(&status, "sent") == 6).await;
    broker.stop().await;
}

/// With `username`, the ACL's read rules for that user apply to what the hook sends; the body
/// names the publisher's user.
#[tokio::test]
async fn the_acl_confines_a_hook_with_a_username() {
    let mut receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    common::set_passwords(&passwd, &[("alice", b"alice")], common::FAST_ARGON2);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic write alerts/#\n\nuser hook\ntopic read alerts/#\ntopic deny alerts/private/#\n",
    )
    .unwrap();
    let mut config = common::config();
    config.auth.password_file = Some(passwd);
    config.auth.acl_file = Some(acl);
    config.webhooks = vec![WebhookConfig {
        username: Some("hook".into()),
        ..hook("alerts", &receiver.url())
    }];
    let broker = TestBroker::start_with(config).await;
    let packet = common::login_packet("alice-1", Some("alice"), Some(b"alice"));
    let (mut alice, code) = common::try_login(broker.addr, packet).await;
    assert_eq!(code, 0);
    publish(&mut alice, "alerts/private/1", b"hidden").await;
    publish(&mut alice, "alerts/public/1", b"shown").await;
    let seen = receiver.next().await;
    assert_eq!(seen.payload(), "shown");
    assert_eq!(seen.body["username"], "alice");
    assert_eq!(seen.body["client_id"], "alice-1");
    receiver.expect_none(Duration::from_millis(200)).await;
    broker.stop().await;
}

/// A 5.0 message whose expiry interval runs out while the receiver is down is not sent later.
#[tokio::test]
async fn an_expired_message_is_not_sent() {
    let mut receiver = Receiver::start().await;
    receiver.behaviour.status.store(503, Ordering::SeqCst);
    let broker = broker_with(vec![WebhookConfig {
        max_retries: 1000,
        ..hook("alerts", &receiver.url())
    }])
    .await;
    let status = broker.gateway(Kind::Webhook, "alerts");
    let (mut client, _) = RawClient::connected_v5(broker.addr, "c", Default::default()).await;
    let publish = mqttd::protocol::Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "alerts/short".into(),
        packet_id: 0,
        payload: bytes::Bytes::from_static(b"stale"),
        properties: Some(Box::new(mqttd::protocol::Properties {
            message_expiry_interval: Some(1),
            ..Default::default()
        })),
    };
    client
        .send(&mqttd::protocol::Packet::Publish(publish))
        .await;
    assert_eq!(receiver.next().await.payload(), "stale");
    eventually("expired", || metric(&status, "expired") == 1).await;
    receiver.behaviour.status.store(200, Ordering::SeqCst);
    client
        .publish("alerts/fresh", b"fresh", QoS::AtMostOnce, false, 0)
        .await;
    // The stale message's earlier attempts, then the fresh one; the stale one never again.
    loop {
        match receiver.next().await.payload() {
            "fresh" => break,
            other => assert_eq!(other, "stale"),
        }
    }
    receiver.expect_none(Duration::from_millis(200)).await;
    eventually("sent", || metric(&status, "sent") == 1).await;
    assert_eq!(metric(&status, "failed"), 0);
    broker.stop().await;
}
