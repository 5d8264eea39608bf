//! PUBLISH properties forwarded unchanged, and request/response through them.

use bytes::Bytes;
use mqttd::protocol::reason::v5;
use mqttd::protocol::{Properties, QoS};

use super::publish_with;
use crate::common::{RawClient, TestBroker};

fn application_properties() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json; charset=utf-8".into()),
        response_topic: Some("replies/for/me".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr\xff")),
        user_properties: vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
            ("a".into(), "1".into()),
            ("".into(), "".into()),
        ],
        ..Properties::default()
    }
}

#[tokio::test]
async fn publish_properties_reach_a_v5_subscriber_unchanged() {
    let broker = TestBroker::start().await;
    let (mut sub5, _) = RawClient::connected_v5(broker.addr, "sub5", Properties::default()).await;
    sub5.subscribe("props/t", QoS::AtLeastOnce, 1).await;
    let mut sub3 = RawClient::connected(broker.addr, "sub3").await;
    sub3.subscribe("props/t", QoS::AtLeastOnce, 1).await;
    let (mut pubber, _) = RawClient::connected_v5(broker.addr, "pub", Properties::default()).await;
    let ack = publish_with(
        &mut pubber,
        "props/t",
        br#"{"k":"v"}"#,
        QoS::AtLeastOnce,
        1,
        application_properties(),
    )
    .await;
    assert_eq!(ack.map(|a| u8::from(a.reason)), Some(v5::SUCCESS));

    let p = sub5.receive().await;
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("props/t", &br#"{"k":"v"}"#[..])
    );
    assert_eq!(p.properties.as_deref(), Some(&application_properties()));
    // A 3.1.1 subscriber gets the plain message.
    let p = sub3.receive().await;
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("props/t", &br#"{"k":"v"}"#[..])
    );
    assert_eq!(p.properties, None);
    broker.stop().await;
}

#[tokio::test]
async fn request_response_round_trip() {
    let broker = TestBroker::start().await;
    let (mut service, _) =
        RawClient::connected_v5(broker.addr, "service", Properties::default()).await;
    service.subscribe("svc/time", QoS::AtLeastOnce, 1).await;
    let (mut caller, _) =
        RawClient::connected_v5(broker.addr, "caller", Properties::default()).await;
    caller
        .subscribe("svc/reply/caller", QoS::AtLeastOnce, 1)
        .await;

    let request = Properties {
        response_topic: Some("svc/reply/caller".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        ..Properties::default()
    };
    publish_with(
        &mut caller,
        "svc/time",
        b"what time?",
        QoS::AtLeastOnce,
        1,
        request,
    )
    .await;

    let req = service.receive().await;
    let props = req.properties.expect("request properties");
    let reply_to = props.response_topic.expect("response topic");
    let reply = Properties {
        correlation_data: props.correlation_data,
        ..Properties::default()
    };
    publish_with(&mut service, &reply_to, b"noon", QoS::AtLeastOnce, 1, reply).await;

    let resp = caller.receive().await;
    assert_eq!(
        (&*resp.topic, &resp.payload[..]),
        ("svc/reply/caller", &b"noon"[..])
    );
    let props = resp.properties.expect("response properties");
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-42"[..]));
    broker.stop().await;
}
