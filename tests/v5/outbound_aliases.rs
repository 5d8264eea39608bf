//! Topic aliases towards the client (MQTT 5.0 section 3.3.2.3.4): used when the client's CONNECT
//! allows them and `limits.outbound_topic_aliases` is on; the first PUBLISH of a topic carries the
//! topic and the alias, later ones only the alias; never above the client's Topic Alias Maximum;
//! per connection.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncWrite};

use mqttd::protocol::{self, Connect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS};

use super::expiry;
use crate::common::{self, RawClient, TestBroker, connect_v5};

/// A 60-byte topic, where aliases pay off.
const LONG: &str = "building-7/floor-12/room-1207/sensor-042/temperature/celsius";

fn allows(max: u16) -> Properties {
    Properties {
        topic_alias_maximum: Some(max),
        ..Properties::default()
    }
}

/// What a client keeps: the broker's aliases on this connection, checked as they come.
#[derive(Default)]
struct Resolver {
    max: u16,
    aliases: HashMap<u16, String>,
}

impl Resolver {
    fn new(max: u16) -> Self {
        Resolver {
            max,
            ..Resolver::default()
        }
    }

    /// The PUBLISH's topic, resolving its alias; asserts the alias is one the client allows.
    fn topic(&mut self, p: &Publish) -> String {
        let alias = p.properties.as_ref().and_then(|p| p.topic_alias);
        match alias {
            None => {
                assert!(!p.topic.is_empty(), "empty topic without an alias");
                p.topic.to_string()
            }
            Some(a) => {
                assert!(
                    (1..=self.max).contains(&a),
                    "alias {a} outside 1..={}",
                    self.max
                );
                if p.topic.is_empty() {
                    self.aliases.get(&a).cloned().expect("a known alias")
                } else {
                    self.aliases.insert(a, p.topic.to_string());
                    p.topic.to_string()
                }
            }
        }
    }
}

/// The PUBLISH's topic and alias as they came over the wire.
fn wire(p: &Publish) -> (&str, Option<u16>) {
    (&p.topic, p.properties.as_ref().and_then(|p| p.topic_alias))
}

async fn v5_client(
    broker: &TestBroker,
    id: &str,
    props: Properties,
) -> RawClient<tokio::io::DuplexStream> {
    let (c, ack) = RawClient::connect_v5_on(broker.pipe(), connect_v5(id, props)).await;
    assert_eq!(ack.code, protocol::ConnAckReason::Success);
    c
}

async fn publish_all<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, topics: &[&str]) {
    for (i, topic) in topics.iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        c.publish(topic, b"payload!", QoS::AtLeastOnce, false, id)
            .await;
    }
}

#[tokio::test]
async fn a_repeated_topic_is_sent_as_its_alias_within_the_client_maximum() {
    let broker = TestBroker::start().await;
    let mut two = v5_client(&broker, "ta-two", allows(2)).await;
    let mut zero = v5_client(&broker, "ta-zero", allows(0)).await;
    let mut none = v5_client(&broker, "ta-none", Properties::default()).await;
    let mut old = RawClient::connected_on(broker.pipe(), "ta-311").await;
    for c in [&mut two, &mut zero, &mut none] {
        c.subscribe("ta/#", QoS::AtMostOnce, 1).await;
    }
    old.subscribe("ta/#", QoS::AtMostOnce, 1).await;
    let topics = [
        "ta/one/long/topic",
        "ta/one/long/topic",
        "ta/two/long/topic",
        "ta/three/long/topic",
        "ta/one/long/topic",
        "ta/three/long/topic",
        "ta/four/long/topic",
        "ta/two/long/topic",
        "ta/two/long/topic",
        "ta",
    ];
    let mut pubber = RawClient::connected_on(broker.pipe(), "ta-pub").await;
    publish_all(&mut pubber, &topics).await;

    let mut resolver = Resolver::new(2);
    let mut got = Vec::new();
    for _ in topics {
        got.push(two.expect_publish().await);
    }
    // The first of a topic carries the topic and an alias, the next one only the alias.
    assert_eq!(wire(&got[0]), ("ta/one/long/topic", Some(1)));
    assert_eq!(wire(&got[1]), ("", Some(1)));
    assert_eq!(wire(&got[2]), ("ta/two/long/topic", Some(2)));
    // Too short for an alias to help.
    assert_eq!(wire(&got[9]), ("ta", None));
    // Whatever the broker did when the two were in use, the client can follow it.
    for (p, topic) in got.iter().zip(topics) {
        assert_eq!(resolver.topic(p), topic);
    }
    assert!(got.iter().filter(|p| p.topic.is_empty()).count() >= 3);

    // Clients that allow none get none.
    for c in [&mut zero, &mut none] {
        for topic in topics {
            assert_eq!(wire(&c.expect_publish().await), (topic, None));
        }
    }
    for topic in topics {
        assert_eq!(&*old.expect_publish().await.topic, topic);
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_new_connection_starts_without_aliases() {
    let broker = TestBroker::start().await;
    let connect = || Connect {
        clean_start: false,
        ..connect_v5(
            "ta-back",
            Properties {
                topic_alias_maximum: Some(5),
                ..expiry(60)
            },
        )
    };
    let (mut c, _) = RawClient::connect_v5_on(broker.pipe(), connect()).await;
    c.subscribe("building-7/#", QoS::AtLeastOnce, 1).await;
    let mut pubber = RawClient::connected_on(broker.pipe(), "tb-pub").await;
    publish_all(&mut pubber, &[LONG, LONG]).await;
    let first = c.expect_publish().await;
    assert_eq!(wire(&first), (LONG, Some(1)));
    c.send(&Packet::PubAck(PubResp::new(first.packet_id))).await;
    // Not acknowledged: re-sent after the reconnect.
    let second = c.expect_publish().await;
    assert_eq!(wire(&second), ("", Some(1)));
    c.disconnect().await;

    let (mut c, ack) = RawClient::connect_v5_on(broker.pipe(), connect()).await;
    assert!(ack.session_present);
    let mut resolver = Resolver::new(5);
    let again = c.expect_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, second.packet_id);
    assert_eq!(&*again.topic, LONG, "the re-sent message carries its topic");
    assert_eq!(resolver.topic(&again), LONG);
    c.send(&Packet::PubAck(PubResp::new(again.packet_id))).await;
    // The re-sent message set the alias up again on this connection.
    publish_all(&mut pubber, &[LONG]).await;
    let p = c.expect_publish().await;
    assert_eq!(wire(&p), ("", Some(1)));
    assert_eq!(resolver.topic(&p), LONG);
    broker.stop().await;
}

#[tokio::test]
async fn outbound_topic_aliases_can_be_turned_off() {
    for enabled in [true, false] {
        let mut config = common::config();
        config.limits.outbound_topic_aliases = enabled;
        let broker = TestBroker::start_with(config).await;
        let mut c = v5_client(&broker, "ta-off", allows(10)).await;
        c.subscribe("building-7/#", QoS::AtMostOnce, 1).await;
        let mut pubber = RawClient::connected_on(broker.pipe(), "ta-pub").await;
        publish_all(&mut pubber, &[LONG, LONG]).await;
        let first = c.expect_publish().await;
        let second = c.expect_publish().await;
        if enabled {
            assert_eq!(wire(&first), (LONG, Some(1)));
            assert_eq!(wire(&second), ("", Some(1)));
        } else {
            assert_eq!(wire(&first), (LONG, None));
            assert_eq!(wire(&second), (LONG, None));
        }
        broker.stop().await;
    }
}

/// The sizes of the next `n` PUBLISHes `c` receives, as encoded on the wire.
async fn sizes<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for _ in 0..n {
        let p = c.expect_publish().await;
        sizes.push(protocol::encoded_len(
            &Packet::Publish(p),
            ProtocolVersion::V5,
        ));
    }
    sizes
}

/// The figure for the README: bytes on the wire per message for a 60-byte topic, with and
/// without aliases (PUBLISHes re-encoded as received: the encoding is deterministic).
#[tokio::test]
async fn aliases_save_the_topic_bytes_of_every_repeated_message() {
    assert_eq!(LONG.len(), 60);
    let broker = TestBroker::start().await;
    let mut with = v5_client(&broker, "ta-with", allows(1)).await;
    let mut without = v5_client(&broker, "ta-without", Properties::default()).await;
    for c in [&mut with, &mut without] {
        c.subscribe("building-7/#", QoS::AtMostOnce, 1).await;
    }
    let mut pubber = RawClient::connected_on(broker.pipe(), "ta-pub").await;
    const N: usize = 10;
    publish_all(&mut pubber, &[LONG; N]).await;
    let with = sizes(&mut with, N).await;
    let without = sizes(&mut without, N).await;
    // QoS 0, 8-byte payload: fixed header 2 + topic 2 + 60 + property length 1 + payload 8.
    assert_eq!(without, vec![73; N]);
    // The first carries the alias too (3 bytes); the others no topic.
    assert_eq!(with[0], 76);
    assert_eq!(with[1..], vec![16; N - 1]);
    eprintln!(
        "60-byte topic, 8-byte payload, QoS 0: {} bytes per message without aliases, {} with \
         (first {}); {} messages: {} vs {} bytes",
        without[1],
        with[1],
        with[0],
        N,
        without.iter().sum::<usize>(),
        with.iter().sum::<usize>()
    );
    broker.stop().await;
}
