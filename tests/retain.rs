//! Retained messages: stored per topic, delivered to new subscribers with retain=1, cleared by an
//! empty payload; live forwarding clears the retain flag.

mod common;

use std::time::Duration;

use common::{RawClient, TestBroker};
use mqttd::protocol::QoS;

#[tokio::test]
async fn retained_set_deliver_replace_clear() {
    let broker = TestBroker::start().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("r/a", b"one", QoS::AtLeastOnce, true, 1)
        .await;
    pubber
        .publish("r/a", b"two", QoS::AtLeastOnce, true, 2)
        .await;
    pubber
        .publish("r/b", b"bee", QoS::AtMostOnce, true, 0)
        .await;
    pubber.ping().await;

    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("r/+", QoS::AtLeastOnce, 1).await;
    let mut got = [sub.receive().await, sub.receive().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        (
            &*got[0].topic,
            &got[0].payload[..],
            got[0].retain,
            got[0].qos
        ),
        ("r/a", &b"two"[..], true, QoS::AtLeastOnce)
    );
    assert_eq!(
        (
            &*got[1].topic,
            &got[1].payload[..],
            got[1].retain,
            got[1].qos
        ),
        ("r/b", &b"bee"[..], true, QoS::AtMostOnce)
    );

    // Live forwarding of a retained publish to an existing subscriber clears the flag (3.1.1).
    pubber
        .publish("r/a", b"three", QoS::AtMostOnce, true, 0)
        .await;
    let live = sub.receive().await;
    assert_eq!((&live.payload[..], live.retain), (&b"three"[..], false));

    // An empty retained payload clears the topic; it is forwarded live as usual.
    pubber.publish("r/a", b"", QoS::AtMostOnce, true, 0).await;
    assert!(sub.receive().await.payload.is_empty());
    pubber.ping().await;
    assert_eq!(broker.router.retained_count(), 1);

    let mut late = RawClient::connected(broker.addr, "late").await;
    late.subscribe("r/#", QoS::AtMostOnce, 1).await;
    let p = late.receive().await;
    assert_eq!(
        (&*p.topic, &p.payload[..], p.retain),
        ("r/b", &b"bee"[..], true)
    );
    late.ping().await;
    late.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn retained_qos_is_capped_by_the_subscription() {
    let broker = TestBroker::start().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber.publish("cap", b"x", QoS::ExactlyOnce, true, 1).await;
    let mut sub = RawClient::connected(broker.addr, "sub").await;
    sub.subscribe("cap", QoS::AtLeastOnce, 1).await;
    let p = sub.receive().await;
    assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, true));
    broker.stop().await;
}
