//! Reason codes on acknowledgements, and Request Problem Information.

use mqttd::protocol::reason::v5;
use mqttd::protocol::{
    Packet, Properties, PubAckReason, PubRelReason, PubResp, QoS, SubAckReason, Subscribe,
    SubscribeFilter, SubscriptionOptions, UnsubAckReason, Unsubscribe,
};

use super::publish_with;
use crate::common::{RawClient, TestBroker};

#[tokio::test]
async fn puback_says_when_no_subscriber_matched() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "lonely", Properties::default()).await;
    let ack = publish_with(
        &mut c,
        "nobody/here",
        b"x",
        QoS::AtLeastOnce,
        1,
        Properties::default(),
    )
    .await;
    assert_eq!(
        ack.map(|a| u8::from(a.reason)),
        Some(v5::NO_MATCHING_SUBSCRIBERS)
    );
    c.subscribe("nobody/here", QoS::AtMostOnce, 2).await;
    let ack = publish_with(
        &mut c,
        "nobody/here",
        b"x",
        QoS::AtLeastOnce,
        3,
        Properties::default(),
    )
    .await;
    assert_eq!(ack.map(|a| u8::from(a.reason)), Some(v5::SUCCESS));
    broker.stop().await;
}

#[tokio::test]
async fn suback_rejects_invalid_filters_one_by_one() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "subber", Properties::default()).await;
    let filter = |f: &str| SubscribeFilter {
        filter: f.into(),
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
    };
    let sub = Subscribe {
        packet_id: 7,
        filters: vec![
            filter("ok/+"),
            filter("bad/#/x"),
            filter("bad+"),
            filter("$share/g"),
            filter("ok/#"),
        ],
        properties: None,
    };
    c.send(&Packet::Subscribe(sub)).await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.packet_id, 7);
            assert_eq!(
                ack.return_codes,
                vec![
                    SubAckReason::GrantedQos1,
                    SubAckReason::TopicFilterInvalid,
                    SubAckReason::TopicFilterInvalid,
                    SubAckReason::TopicFilterInvalid,
                    SubAckReason::GrantedQos1
                ]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    c.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn unsuback_says_when_no_subscription_existed() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "unsubber", Properties::default()).await;
    c.subscribe("have/this", QoS::AtMostOnce, 1).await;
    let unsub = Unsubscribe {
        packet_id: 2,
        filters: vec!["never/had".into(), "have/this".into()],
        properties: None,
    };
    c.send(&Packet::Unsubscribe(unsub)).await;
    match c.recv().await {
        Some(Packet::UnsubAck(ack)) => {
            assert_eq!(ack.packet_id, 2);
            assert_eq!(
                ack.reasons,
                vec![
                    UnsubAckReason::NoSubscriptionExisted,
                    UnsubAckReason::Success
                ]
            );
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp_not_found() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::connected_v5(broker.addr, "confused", Properties::default()).await;
    c.send(&Packet::PubRel(PubResp::new(77))).await;
    match c.recv().await {
        Some(Packet::PubComp(comp)) => {
            assert_eq!(comp.packet_id, 77);
            assert_eq!(comp.reason, PubRelReason::PacketIdentifierNotFound);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // Not fatal: the connection carries on.
    c.ping().await;
    broker.stop().await;
}

/// A PUBLISH that fails: its format indicator promises UTF-8, the payload is not.
async fn failing_puback(c: &mut RawClient) -> PubResp<PubAckReason> {
    let props = Properties {
        payload_format_indicator: Some(1),
        ..Properties::default()
    };
    publish_with(c, "pfi/t", b"\xff\xfe", QoS::AtLeastOnce, 1, props)
        .await
        .expect("PUBACK")
}

#[tokio::test]
async fn request_problem_information_zero_drops_the_reason_string() {
    let broker = TestBroker::start().await;
    let (mut told, _) = RawClient::connected_v5(broker.addr, "told", Properties::default()).await;
    let ack = failing_puback(&mut told).await;
    assert_eq!(u8::from(ack.reason), v5::PAYLOAD_FORMAT_INVALID);
    let why = ack.properties.and_then(|p| p.reason_string);
    assert!(
        why.is_some_and(|w| !w.is_empty()),
        "reason string by default"
    );

    let quiet = Properties {
        request_problem_information: Some(0),
        ..Properties::default()
    };
    let (mut quiet, _) = RawClient::connected_v5(broker.addr, "quiet", quiet).await;
    let ack = failing_puback(&mut quiet).await;
    assert_eq!(u8::from(ack.reason), v5::PAYLOAD_FORMAT_INVALID);
    assert_eq!(
        ack.properties, None,
        "no reason string when the client asked for none"
    );
    broker.stop().await;
}
