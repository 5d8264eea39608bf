//! CONNACK properties and CONNECT refusals.

use mqttd::protocol::{ConnAckReason, Connect, Properties};

use crate::common::{self, RawClient, TestBroker, connect_v5};

#[tokio::test]
async fn connack_announces_topic_alias_maximum_and_packet_size() {
    let mut config = common::config();
    config.limits.max_packet_size = 12_345;
    let broker = TestBroker::start_with(config).await;
    let (c, ack) = RawClient::connected_v5(broker.addr, "limits", Properties::default()).await;
    assert!(!ack.session_present);
    let p = ack.properties.expect("5.0 CONNACK has properties");
    assert_eq!(p.topic_alias_maximum, Some(10));
    assert_eq!(p.maximum_packet_size, Some(12_345));
    // Only asked-for or assigned things beyond the limits.
    assert_eq!(p.assigned_client_identifier, None);
    assert_eq!(p.server_keep_alive, None);
    assert_eq!(p.response_information, None);
    assert_eq!(p.reason_string, None);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_gets_an_assigned_identifier() {
    let broker = TestBroker::start().await;
    let (mut a, ack_a) = RawClient::connected_v5(broker.addr, "", Properties::default()).await;
    let (mut b, ack_b) = RawClient::connected_v5(broker.addr, "", Properties::default()).await;
    let id_a = ack_a.properties.and_then(|p| p.assigned_client_identifier);
    let id_b = ack_b.properties.and_then(|p| p.assigned_client_identifier);
    let (id_a, id_b) = (id_a.expect("assigned id"), id_b.expect("assigned id"));
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "each connection gets its own identifier");
    // Both stay connected: the identifiers did not collide into a takeover.
    a.ping().await;
    b.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn server_keep_alive_when_the_client_asks_for_more_than_allowed() {
    let mut config = common::config();
    config.limits.max_keepalive = 30;
    let broker = TestBroker::start_with(config).await;
    let ask = |keep_alive| Connect {
        keep_alive,
        ..connect_v5("ka", Properties::default())
    };
    let (c, ack) = RawClient::connect_v5_with(broker.addr, ask(60)).await;
    assert_eq!(ack.code, ConnAckReason::Success);
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(30));
    c.disconnect().await;
    // 0 ("no keep alive") is longer than any maximum, too.
    let (c, ack) = RawClient::connect_v5_with(broker.addr, ask(0)).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(30));
    c.disconnect().await;
    // Within the maximum: the client's value stands and no Server Keep Alive is sent.
    let (c, ack) = RawClient::connect_v5_with(broker.addr, ask(20)).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), None);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn response_information_only_when_requested() {
    let broker = TestBroker::start().await;
    let (c, ack) = RawClient::connected_v5(broker.addr, "plain", Properties::default()).await;
    assert_eq!(ack.properties.and_then(|p| p.response_information), None);
    c.disconnect().await;
    let no = Properties {
        request_response_information: Some(0),
        ..Properties::default()
    };
    let (c, ack) = RawClient::connected_v5(broker.addr, "declines", no).await;
    assert_eq!(ack.properties.and_then(|p| p.response_information), None);
    c.disconnect().await;
    let yes = Properties {
        request_response_information: Some(1),
        ..Properties::default()
    };
    let (c, ack) = RawClient::connected_v5(broker.addr, "asks", yes).await;
    let info = ack.properties.and_then(|p| p.response_information);
    assert!(
        info.as_deref().is_some_and(|i| !i.is_empty()),
        "response information: {info:?}"
    );
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn authentication_method_is_refused_with_bad_authentication_method() {
    let broker = TestBroker::start().await;
    let props = Properties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(bytes::Bytes::from_static(b"client-first")),
        ..Properties::default()
    };
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect_v5("scram", props)).await;
    assert_eq!(ack.code, ConnAckReason::BadAuthenticationMethod);
    assert!(!ack.session_present);
    c.expect_closed().await;
    // The refused client never got a session.
    common::eventually("no sessions", || broker.router.session_count() == 0).await;
    broker.stop().await;
}
