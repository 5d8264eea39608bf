//! Subscription options (No Local, Retain As Published, Retain Handling) and Subscription
//! Identifiers.

use std::time::Duration;

use mqttd::protocol::{Packet, Properties, PubResp, QoS, RetainHandling, SubscriptionOptions};

use crate::common::{RawClient, TestBroker};

fn options(f: impl FnOnce(&mut SubscriptionOptions)) -> SubscriptionOptions {
    let mut o = SubscriptionOptions::new(QoS::AtLeastOnce);
    f(&mut o);
    o
}

#[tokio::test]
async fn no_local_keeps_own_messages_away() {
    let broker = TestBroker::start().await;
    let (mut me, _) = RawClient::connected_v5(broker.addr, "me", Properties::default()).await;
    me.subscribe_with("nl/t", options(|o| o.no_local = true), None, 1)
        .await;
    let (mut other, _) = RawClient::connected_v5(broker.addr, "other", Properties::default()).await;
    other.subscribe("nl/t", QoS::AtLeastOnce, 1).await;

    me.publish("nl/t", b"mine", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(&other.receive().await.payload[..], b"mine");
    other
        .publish("nl/t", b"theirs", QoS::AtLeastOnce, false, 2)
        .await;
    // The first thing `me` gets is the other client's message: its own was not sent back.
    assert_eq!(&me.receive().await.payload[..], b"theirs");
    me.ping().await;
    me.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    let broker = TestBroker::start().await;
    let (mut kept, _) = RawClient::connected_v5(broker.addr, "kept", Properties::default()).await;
    kept.subscribe_with("rap/t", options(|o| o.retain_as_published = true), None, 1)
        .await;
    let (mut cleared, _) =
        RawClient::connected_v5(broker.addr, "cleared", Properties::default()).await;
    cleared.subscribe("rap/t", QoS::AtLeastOnce, 1).await;
    let (mut pubber, _) = RawClient::connected_v5(broker.addr, "pub", Properties::default()).await;
    pubber
        .publish("rap/t", b"state", QoS::AtLeastOnce, true, 1)
        .await;
    let p = kept.receive().await;
    assert!(p.retain, "Retain As Published keeps the flag");
    let p = cleared.receive().await;
    assert!(
        !p.retain,
        "without it the flag is cleared on live forwarding"
    );
    broker.stop().await;
}

/// Subscribes with `handling`, returns whether the retained message on `rh/t` came.
async fn subscribe_gets_retained(
    c: &mut RawClient,
    handling: RetainHandling,
    packet_id: u16,
) -> bool {
    c.subscribe_with(
        "rh/t",
        options(|o| o.retain_handling = handling),
        None,
        packet_id,
    )
    .await;
    match c.recv_within(Duration::from_millis(200)).await {
        Err(()) => false,
        Ok(Some(Packet::Publish(p))) => {
            assert!(p.retain && &p.payload[..] == b"retained", "{p:?}");
            c.send(&Packet::PubAck(PubResp::new(p.packet_id))).await;
            true
        }
        Ok(other) => panic!("expected PUBLISH or nothing, got {other:?}"),
    }
}

#[tokio::test]
async fn retain_handling_zero_one_two() {
    let broker = TestBroker::start().await;
    let (mut pubber, _) = RawClient::connected_v5(broker.addr, "pub", Properties::default()).await;
    pubber
        .publish("rh/t", b"retained", QoS::AtLeastOnce, true, 1)
        .await;

    let (mut c, _) = RawClient::connected_v5(broker.addr, "rh0", Properties::default()).await;
    assert!(subscribe_gets_retained(&mut c, RetainHandling::SendOnSubscribe, 1).await);
    assert!(
        subscribe_gets_retained(&mut c, RetainHandling::SendOnSubscribe, 2).await,
        "0: on every subscribe"
    );

    let (mut c, _) = RawClient::connected_v5(broker.addr, "rh1", Properties::default()).await;
    assert!(
        subscribe_gets_retained(&mut c, RetainHandling::SendIfNew, 1).await,
        "1: new subscription"
    );
    assert!(
        !subscribe_gets_retained(&mut c, RetainHandling::SendIfNew, 2).await,
        "1: not when it existed"
    );

    let (mut c, _) = RawClient::connected_v5(broker.addr, "rh2", Properties::default()).await;
    assert!(
        !subscribe_gets_retained(&mut c, RetainHandling::DoNotSend, 1).await,
        "2: never"
    );
    broker.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "ids", Properties::default()).await;
    c.subscribe_with("si/#", options(|_| {}), Some(1), 1).await;
    c.subscribe_with("si/+", options(|_| {}), Some(2), 2).await;
    c.subscribe_with("other/#", options(|_| {}), Some(3), 3)
        .await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("si/x", b"both", QoS::AtLeastOnce, false, 1)
        .await;
    let p = c.receive().await;
    assert_eq!(&p.payload[..], b"both");
    let mut ids = p
        .properties
        .map(|p| p.subscription_identifiers)
        .unwrap_or_default();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    c.ping().await;
    c.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_carry_the_subscription_identifier() {
    let broker = TestBroker::start().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("sir/t", b"kept", QoS::AtLeastOnce, true, 1)
        .await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "ids", Properties::default()).await;
    c.subscribe_with("sir/#", options(|_| {}), Some(42), 1)
        .await;
    let p = c.receive().await;
    assert!(p.retain);
    let ids = p.properties.map(|p| p.subscription_identifiers);
    assert_eq!(ids, Some(vec![42]));
    broker.stop().await;
}
