//! Shared subscriptions (`$share/GROUP/FILTER`).

use std::collections::BTreeSet;
use std::time::Duration;

use mqttd::protocol::{Packet, Properties, QoS};

use crate::common::{RawClient, TestBroker};

/// Receives (and acknowledges) PUBLISHes until none comes for 300 ms; returns their payloads.
async fn drain(c: &mut RawClient, ack: bool) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match c.recv_within(Duration::from_millis(300)).await {
            Err(()) => return got,
            Ok(Some(Packet::Publish(p))) => {
                if ack {
                    c.send(&Packet::PubAck(mqttd::protocol::PubResp::new(p.packet_id)))
                        .await;
                }
                got.push(String::from_utf8(p.payload.to_vec()).expect("utf-8 payload"));
            }
            Ok(other) => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

async fn publish_numbered(broker: &TestBroker, topic: &str, n: u16) -> BTreeSet<String> {
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    for i in 1..=n {
        pubber
            .publish(
                topic,
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i,
            )
            .await;
    }
    (1..=n).map(|i| format!("m{i}")).collect()
}

/// Asserts `a` and `b` split `sent` between them: each some, none twice.
fn assert_split(a: &[String], b: &[String], sent: &BTreeSet<String>) {
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members get messages: {a:?} / {b:?}"
    );
    let all: Vec<&String> = a.iter().chain(b).collect();
    let unique: BTreeSet<String> = all.iter().map(|s| (*s).clone()).collect();
    assert_eq!(all.len(), unique.len(), "no message twice: {a:?} / {b:?}");
    assert_eq!(&unique, sent);
}

#[tokio::test]
async fn members_share_messages_round_robin() {
    let broker = TestBroker::start().await;
    let (mut a, _) = RawClient::connected_v5(broker.addr, "a", Properties::default()).await;
    let (mut b, _) = RawClient::connected_v5(broker.addr, "b", Properties::default()).await;
    assert_eq!(
        a.subscribe("$share/g/sh/t", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    assert_eq!(
        b.subscribe("$share/g/sh/t", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    let sent = publish_numbered(&broker, "sh/t", 10).await;
    let (got_a, got_b) = (drain(&mut a, true).await, drain(&mut b, true).await);
    assert_split(&got_a, &got_b, &sent);
    assert_eq!((got_a.len(), got_b.len()), (5, 5), "round robin alternates");
    broker.stop().await;
}

#[tokio::test]
async fn a_v311_client_joins_a_shared_group() {
    let broker = TestBroker::start().await;
    let mut old = RawClient::connected(broker.addr, "v311").await;
    let (mut new, _) = RawClient::connected_v5(broker.addr, "v5", Properties::default()).await;
    assert_eq!(
        old.subscribe("$share/mixed/mx/#", QoS::AtLeastOnce, 1)
            .await,
        vec![1]
    );
    assert_eq!(
        new.subscribe("$share/mixed/mx/#", QoS::AtLeastOnce, 1)
            .await,
        vec![1]
    );
    let sent = publish_numbered(&broker, "mx/t", 6).await;
    let (got_old, got_new) = (drain(&mut old, true).await, drain(&mut new, true).await);
    assert_split(&got_old, &got_new, &sent);
    broker.stop().await;
}

#[tokio::test]
async fn shared_subscribe_gets_no_retained_messages() {
    let broker = TestBroker::start().await;
    let mut pubber = RawClient::connected(broker.addr, "pub").await;
    pubber
        .publish("shr/t", b"retained", QoS::AtLeastOnce, true, 1)
        .await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "member", Properties::default()).await;
    assert_eq!(
        c.subscribe("$share/g/shr/t", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    c.expect_silence(Duration::from_millis(300)).await;
    // The subscription itself works.
    pubber
        .publish("shr/t", b"live", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(&c.receive().await.payload[..], b"live");
    broker.stop().await;
}

#[tokio::test]
async fn unacknowledged_messages_go_to_another_member_when_one_leaves() {
    let broker = TestBroker::start().await;
    let (mut quitter, _) =
        RawClient::connected_v5(broker.addr, "quitter", Properties::default()).await;
    let (mut stayer, _) =
        RawClient::connected_v5(broker.addr, "stayer", Properties::default()).await;
    quitter
        .subscribe("$share/g/rd/t", QoS::AtLeastOnce, 1)
        .await;
    stayer.subscribe("$share/g/rd/t", QoS::AtLeastOnce, 1).await;
    let sent = publish_numbered(&broker, "rd/t", 4).await;
    let unacked = drain(&mut quitter, false).await;
    assert!(!unacked.is_empty(), "the quitter got its share");
    let mut got = drain(&mut stayer, true).await;
    drop(quitter); // gone without acknowledging
    let first = stayer.receive().await;
    let mut redelivered = vec![String::from_utf8(first.payload.to_vec()).expect("utf-8 payload")];
    redelivered.extend(drain(&mut stayer, true).await);
    assert_eq!(
        redelivered.iter().collect::<BTreeSet<_>>(),
        unacked.iter().collect::<BTreeSet<_>>(),
        "the quitter's messages go to the other member"
    );
    got.extend(redelivered);
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), sent);
    assert_eq!(got.len(), sent.len());
    broker.stop().await;
}
