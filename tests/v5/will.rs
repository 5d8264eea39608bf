//! Will messages in 5.0: Will Delay Interval, DISCONNECT with reason 0x04, will properties.
//! On paused tokio time over in-memory connections: the delays are exact and cost no real time.

use std::time::Duration;

use tokio::io::DuplexStream;

use bytes::Bytes;
use mqttd::protocol::{Connect, Disconnect, DisconnectReason, LastWill, Packet, Properties, QoS};

use super::expiry;
use crate::common::{RawClient, TestBroker, connect_v5};

fn will(topic: &str, properties: Properties) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: (properties != Properties::default()).then(|| Box::new(properties)),
    }
}

fn delay(secs: u32) -> Properties {
    Properties {
        will_delay_interval: Some(secs),
        ..Properties::default()
    }
}

/// Clean Start = 0, Session Expiry 10 s, and a will on `topic`.
fn connect_with_will(id: &str, topic: &str, will_props: Properties) -> Connect {
    Connect {
        clean_start: false,
        will: Some(will(topic, will_props)),
        ..connect_v5(id, expiry(10))
    }
}

async fn watcher(broker: &TestBroker, topic: &str) -> RawClient<DuplexStream> {
    let (mut w, _) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("watcher", Properties::default())).await;
    w.subscribe(topic, QoS::AtLeastOnce, 1).await;
    w
}

#[tokio::test(start_paused = true)]
async fn delayed_will_is_cancelled_by_a_quick_reconnect() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/cancel").await;
    let (c, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will("back", "wd/cancel", delay(2)),
    )
    .await;
    drop(c); // connection lost: the will is due in 2 s
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reconnect = Connect {
        clean_start: false,
        ..connect_v5("back", expiry(10))
    };
    let (mut c, ack) = RawClient::connect_v5_on(broker.pipe(), reconnect).await;
    assert!(ack.session_present);
    // Past the delay: still no will.
    w.expect_silence(Duration::from_millis(2500)).await;
    c.ping().await;
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delayed_will_is_published_after_the_interval() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/fire").await;
    let (c, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will("lost", "wd/fire", delay(2)),
    )
    .await;
    let start = tokio::time::Instant::now();
    drop(c);
    w.expect_silence(Duration::from_secs(1)).await;
    let p = w.receive().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("wd/fire", &b"gone"[..]));
    let after = start.elapsed();
    // Paused time: exact, give or take the in-memory round trips.
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2050)).contains(&after),
        "will after {after:?}, not 2 s"
    );
    broker.stop().await;
}

async fn disconnect_with_reason(
    broker: &TestBroker,
    id: &str,
    topic: &str,
    reason: DisconnectReason,
) {
    let (mut c, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will(id, topic, Properties::default()),
    )
    .await;
    let d = Disconnect {
        reason,
        properties: None,
    };
    c.send(&Packet::Disconnect(d)).await;
    c.expect_closed().await;
}

#[tokio::test(start_paused = true)]
async fn disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/04").await;
    let with_will = DisconnectReason::DisconnectWithWillMessage;
    disconnect_with_reason(&broker, "leaving", "wd/04", with_will).await;
    let p = w.receive().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("wd/04", &b"gone"[..]));
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn normal_disconnect_discards_the_will() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/00").await;
    let normal = DisconnectReason::NormalDisconnection;
    disconnect_with_reason(&broker, "polite", "wd/00", normal).await;
    w.expect_silence(Duration::from_millis(500)).await;
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn will_properties_are_forwarded() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/props").await;
    let props = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("wd/ask".into()),
        correlation_data: Some(Bytes::from_static(b"will-1")),
        user_properties: vec![
            ("why".into(), "crash".into()),
            ("why".into(), "again".into()),
        ],
        ..Properties::default()
    };
    let (c, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will("propped", "wd/props", props),
    )
    .await;
    drop(c);
    let p = w.receive().await;
    assert_eq!(&p.payload[..], b"gone");
    let got = p.properties.expect("will properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert!(
        got.message_expiry_interval
            .is_some_and(|s| (1..=60).contains(&s))
    );
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("wd/ask"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"will-1"[..]));
    assert_eq!(
        got.user_properties,
        vec![
            ("why".into(), "crash".into()),
            ("why".into(), "again".into())
        ]
    );
    assert_eq!(got.will_delay_interval, None);
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delayed_will_is_cancelled_by_a_takeover_that_resumes_the_session() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/takeover").await;
    let (mut old, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will("moved", "wd/takeover", delay(2)),
    )
    .await;
    let resume = Connect {
        clean_start: false,
        ..connect_v5("moved", expiry(10))
    };
    let (mut new, ack) = RawClient::connect_v5_on(broker.pipe(), resume).await;
    assert!(ack.session_present);
    assert_eq!(
        old.expect_disconnect().await.reason,
        DisconnectReason::SessionTakenOver
    );
    // A new connection to the session came before the delay ran out: no will (MQTT-3.1.3-9).
    w.expect_silence(Duration::from_millis(2500)).await;
    new.ping().await;
    broker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delayed_will_is_published_when_a_clean_start_ends_the_session() {
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, "wd/clean").await;
    let (c, _) = RawClient::connect_v5_on(
        broker.pipe(),
        connect_with_will("restart", "wd/clean", delay(5)),
    )
    .await;
    drop(c);
    w.expect_silence(Duration::from_millis(300)).await;
    // Clean Start = 1 ends the old session, and the will is due when its session ends.
    let start = tokio::time::Instant::now();
    let (_c, ack) =
        RawClient::connect_v5_on(broker.pipe(), connect_v5("restart", expiry(10))).await;
    assert!(!ack.session_present);
    let p = w.receive().await;
    assert_eq!(&p.payload[..], b"gone");
    let after = start.elapsed();
    assert!(
        after < Duration::from_secs(1),
        "will after {after:?}, not at session end"
    );
    broker.stop().await;
}
