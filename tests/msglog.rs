//! The `[MSG]` message log (`log.messages = true`): its exact format, payload cutting, and silence
//! when it is off. The broker's log is captured in `broker.msglog`.

mod common;

use common::{TestBroker, eventually, next_publish};
use rumqttc::QoS;

/// A broker with the message log on or off.
async fn broker(messages: bool) -> TestBroker {
    let mut config = common::config();
    config.log.messages = messages;
    TestBroker::start_with(config).await
}

/// Publishes `payload` on `topic` at QoS 1 and waits until a subscriber to `topic` receives it, so
/// the broker has certainly accepted it.
async fn publish_and_see(broker: &TestBroker, topic: &str, payload: Vec<u8>) {
    let (sub, mut rx, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "watcher")).await;
    sub.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let router = broker.router.clone();
    eventually("subscribed", || router.subscription_count() == 1).await;
    let (publisher, _, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "publisher")).await;
    publisher
        .publish(topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    let got = next_publish(&mut rx).await;
    assert_eq!(got.topic, topic);
    assert_eq!(&got.payload[..], &payload[..]);
}

/// Waits until the captured log holds exactly `expected`.
async fn log_becomes(broker: &TestBroker, expected: &str) {
    let log = broker.msglog.clone();
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while tokio::time::Instant::now() < deadline {
        last = log.text();
        if last == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(last, expected, "message log");
}

#[tokio::test]
async fn short_payload_is_logged_as_two_exact_lines() {
    let broker = broker(true).await;
    publish_and_see(&broker, "sensors/temperature", "24.3°C".into()).await;
    log_becomes(
        &broker,
        "[MSG] Topic: sensors/temperature\nPayload: 24.3°C\n",
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn long_payload_is_cut_with_its_length() {
    let broker = broker(true).await;
    let payload: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    publish_and_see(&broker, "sensors/blob", payload.clone()).await;
    let shown = std::str::from_utf8(&payload[..512]).unwrap();
    log_becomes(
        &broker,
        &format!("[MSG] Topic: sensors/blob\nPayload: {shown}... (5000 bytes)\n"),
    )
    .await;
    broker.stop().await;
}

/// A client must not be able to forge log lines: control characters in the payload are escaped.
#[tokio::test]
async fn newline_in_payload_cannot_forge_a_log_line() {
    let broker = broker(true).await;
    publish_and_see(&broker, "sensors/x", b"1\n[MSG] Topic: forged".to_vec()).await;
    log_becomes(
        &broker,
        "[MSG] Topic: sensors/x\nPayload: 1\\n[MSG] Topic: forged\n",
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn nothing_is_logged_when_off() {
    let broker = broker(false).await;
    publish_and_see(&broker, "sensors/temperature", "24.3°C".into()).await;
    let log = broker.msglog.clone();
    // Stopping joins every task (and would flush a logger), so the capture is final.
    broker.stop().await;
    assert_eq!(log.text(), "");
}
