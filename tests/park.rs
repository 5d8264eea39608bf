//! Parked connections (src/park.rs): an idle connection gives up its task and waits in the
//! parker's epoll set, and everything the protocol promises still happens: packets are read,
//! messages delivered, keep alive enforced, takeover, wills and shutdown. Every case runs over
//! plain TCP (`tcp::`) and over TLS (`tls::`), where the TLS session parks with the socket.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::certs::Pki;
use common::{RawClient, TestBroker, WAIT, connect_packet, connect_v5, listener};
use mqttd::protocol::reason::v5;
use mqttd::protocol::{self, ConnAck, ConnAckReason, Connect, LastWill, Packet, Properties, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Each case, as a test over TCP and one over TLS.
macro_rules! over_tcp_and_tls {
    ($($name:ident)*) => {
        mod tcp {
            $(
                #[tokio::test]
                async fn $name() {
                    let (broker, dial) = super::plain().await;
                    super::$name(broker, dial).await;
                }
            )*
        }
        mod tls {
            $(
                #[tokio::test]
                async fn $name() {
                    let (broker, dial, _pki) = super::tls().await;
                    super::$name(broker, dial).await;
                }
            )*
        }
    };
}

over_tcp_and_tls! {
    idle_client_parks_right_after_connack_and_still_answers
    parked_subscriber_gets_its_messages
    parked_client_silent_past_its_keep_alive_is_closed_and_its_will_published
    parked_connection_is_taken_over
    peer_closing_a_parked_connection_publishes_its_will
    half_read_packet_survives_parking
    shutdown_closes_parked_connections_with_0x8b
    messages_queued_while_offline_reach_a_client_that_parks_at_once
    a_fleet_of_parked_subscribers_all_get_the_command
    parked_subscriber_woken_by_a_megabyte
}

/// A client's stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Link = Box<dyn Io>;

/// How a case reaches the broker: its plain listener, or its TLS listener.
struct Dial {
    addr: SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Dial {
    async fn stream(&self) -> Link {
        let Some(client) = &self.tls else {
            let tcp = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
                .await
                .expect("connect in time")
                .expect("connect");
            return Box::new(tcp);
        };
        let tls = common::certs::tls_connect(self.addr, Arc::clone(client))
            .await
            .expect("TLS handshake");
        Box::new(tls)
    }

    async fn connect(&self) -> RawClient<Link> {
        RawClient::from_stream(self.stream().await)
    }

    async fn connected(&self, client_id: &str) -> RawClient<Link> {
        RawClient::connected_on(self.stream().await, client_id).await
    }

    async fn connect_v5_with(&self, connect: Connect) -> (RawClient<Link>, ConnAck) {
        RawClient::connect_v5_on(self.stream().await, connect).await
    }

    async fn connected_v5(&self, client_id: &str, props: Properties) -> (RawClient<Link>, ConnAck) {
        let (c, ack) = self.connect_v5_with(connect_v5(client_id, props)).await;
        assert_eq!(ack.code, ConnAckReason::Success, "CONNACK refused: {ack:?}");
        (c, ack)
    }
}

/// Room for the 1,000-client fleet (and both ends of it in this process).
fn config() -> mqttd::config::Config {
    common::raise_fd_limit(4096);
    let mut config = common::config();
    config.listeners[0].max_connections = 2000;
    config
}

async fn plain() -> (TestBroker, Dial) {
    let broker = TestBroker::start_with(config()).await;
    let dial = Dial {
        addr: broker.addr,
        tls: None,
    };
    (broker, dial)
}

async fn tls() -> (TestBroker, Dial, Pki) {
    let pki = Pki::generate();
    let mut config = config();
    let mut tls = listener("tls");
    tls.max_connections = 2000;
    tls.tls = Some(pki.server_tls(WAIT));
    config.listeners = vec![tls];
    let broker = TestBroker::start_with(config).await;
    let client = pki.client(tokio_rustls::rustls::DEFAULT_VERSIONS);
    let dial = Dial {
        addr: broker.addr_of("tls"),
        tls: Some(Arc::new(client)),
    };
    (broker, dial, pki)
}

async fn idle_client_parks_right_after_connack_and_still_answers(broker: TestBroker, dial: Dial) {
    let mut c = dial.connected("sleepy").await;
    broker.parked(1).await;
    // A packet resumes it as a task; quiet again, it parks again.
    c.ping().await;
    c.ping().await;
    broker.parked(1).await;
    c.ping().await;
    broker.stop().await;
}

async fn parked_subscriber_gets_its_messages(broker: TestBroker, dial: Dial) {
    let mut sub = dial.connected("sub").await;
    assert_eq!(
        sub.subscribe("sensors/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    let mut publisher = dial.connected("pub").await;
    broker.parked(2).await;
    // The outbox wakes the parked subscriber; the PUBACK reaches it parked again, later.
    publisher
        .publish("sensors/temperature", b"21.5", QoS::AtLeastOnce, false, 7)
        .await;
    let p = sub.receive().await;
    assert_eq!(&*p.topic, "sensors/temperature");
    assert_eq!(p.payload, Bytes::from_static(b"21.5"));
    broker.parked(2).await;
    publisher
        .publish("sensors/humidity", b"40", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&*sub.receive().await.topic, "sensors/humidity");
    broker.stop().await;
}

async fn parked_client_silent_past_its_keep_alive_is_closed_and_its_will_published(
    broker: TestBroker,
    dial: Dial,
) {
    let mut watcher = dial.connected("watcher").await;
    watcher.subscribe("status/#", QoS::AtMostOnce, 1).await;
    let mut connect = connect_packet("silent");
    connect.keep_alive = 1;
    connect.will = Some(LastWill {
        topic: "status/silent".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    });
    let started = Instant::now();
    let mut silent = dial.connect().await;
    silent.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(silent.recv().await, Some(Packet::ConnAck(_))));
    broker.parked(2).await;
    // 1.5 x keep alive, found by the parker's sweep (every 0.5 s).
    silent.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(5000),
        "closed after {waited:?}"
    );
    let will = watcher.receive().await;
    assert_eq!(will.payload, Bytes::from_static(b"offline"));
    broker.stop().await;
}

async fn parked_connection_is_taken_over(broker: TestBroker, dial: Dial) {
    let (mut old, _) = dial.connected_v5("device-7", Properties::default()).await;
    broker.parked(1).await;
    let (mut new, _) = dial.connected_v5("device-7", Properties::default()).await;
    let d = old.expect_disconnect().await;
    assert_eq!(u8::from(d.reason), v5::SESSION_TAKEN_OVER);
    new.ping().await;
    broker.stop().await;
}

async fn peer_closing_a_parked_connection_publishes_its_will(broker: TestBroker, dial: Dial) {
    let mut watcher = dial.connected("watcher").await;
    watcher.subscribe("status/#", QoS::AtLeastOnce, 1).await;
    let mut connect = connect_packet("doomed");
    connect.will = Some(LastWill {
        topic: "status/doomed".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    });
    let mut doomed = dial.connect().await;
    doomed.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(doomed.recv().await, Some(Packet::ConnAck(_))));
    broker.parked(2).await;
    drop(doomed);
    let will = watcher.receive().await;
    assert_eq!(&*will.topic, "status/doomed");
    broker.stop().await;
}

async fn half_read_packet_survives_parking(broker: TestBroker, dial: Dial) {
    let mut c = dial.connected("halting").await;
    let mut sub = BytesMut::new();
    let packet = Packet::Subscribe(protocol::Subscribe {
        packet_id: 9,
        filters: vec![protocol::SubscribeFilter {
            filter: "a/b".into(),
            options: protocol::SubscriptionOptions::new(QoS::AtMostOnce),
        }],
        properties: None,
    });
    protocol::encode(&packet, c.version, &mut sub).expect("encode SUBSCRIBE");
    let (head, tail) = sub.split_at(4);
    c.send_bytes(head).await;
    // Read, kept in the parked connection's buffer; then quiet long enough to park.
    broker.parked(0).await;
    broker.parked(1).await;
    c.send_bytes(tail).await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    broker.stop().await;
}

async fn shutdown_closes_parked_connections_with_0x8b(broker: TestBroker, dial: Dial) {
    let (mut c, _) = dial.connected_v5("parked-v5", Properties::default()).await;
    let mut c3 = dial.connected("parked-311").await;
    broker.parked(2).await;
    let parker = broker.parker.clone();
    let started = Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < WAIT,
        "the drain waited for parked connections"
    );
    assert_eq!(
        u8::from(c.expect_disconnect().await.reason),
        v5::SERVER_SHUTTING_DOWN
    );
    c3.expect_closed().await;
    assert_eq!(parker.parked(), 0);
}

async fn messages_queued_while_offline_reach_a_client_that_parks_at_once(
    broker: TestBroker,
    dial: Dial,
) {
    let props = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let mut connect = connect_v5("returning", props);
    connect.clean_start = false;
    let (mut c, _) = dial.connect_v5_with(connect.clone()).await;
    c.subscribe("q/#", QoS::AtLeastOnce, 1).await;
    c.send(&Packet::Disconnect(protocol::Disconnect {
        reason: protocol::DisconnectReason::NormalDisconnection,
        properties: None,
    }))
    .await;
    c.expect_closed().await;
    let mut publisher = dial.connected("pub").await;
    for i in 0..3u16 {
        publisher
            .publish(
                "q/x",
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .await;
    }
    let (mut c, ack) = dial.connect_v5_with(connect).await;
    assert!(ack.session_present);
    for i in 0..3 {
        assert_eq!(c.receive().await.payload, format!("m{i}").into_bytes());
    }
    broker.parked(2).await;
    broker.stop().await;
}

async fn a_fleet_of_parked_subscribers_all_get_the_command(broker: TestBroker, dial: Dial) {
    const FLEET: usize = 1000;
    let mut fleet = Vec::new();
    for i in 0..FLEET {
        let mut c = dial.connected(&format!("device-{i}")).await;
        assert_eq!(c.subscribe("fleet/cmd", QoS::AtLeastOnce, 1).await, vec![1]);
        fleet.push(c);
    }
    let mut operator = dial.connected("operator").await;
    broker.parked(FLEET + 1).await;
    operator
        .publish("fleet/cmd", b"reboot", QoS::AtLeastOnce, false, 1)
        .await;
    for c in &mut fleet {
        assert_eq!(c.receive().await.payload, Bytes::from_static(b"reboot"));
    }
    // All acknowledged, quiet again: every one of them parks again.
    broker.parked(FLEET + 1).await;
    broker.stop().await;
}

async fn parked_subscriber_woken_by_a_megabyte(broker: TestBroker, dial: Dial) {
    let mut sub = dial.connected("big-sub").await;
    assert_eq!(sub.subscribe("big", QoS::AtLeastOnce, 1).await, vec![1]);
    let mut publisher = dial.connected("big-pub").await;
    broker.parked(2).await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    publisher
        .publish("big", &big, QoS::AtLeastOnce, false, 1)
        .await;
    let got = sub.receive().await;
    assert!(got.payload[..] == big[..], "the megabyte arrived changed");
    // And parks again, with no buffer of that size kept.
    broker.parked(2).await;
    sub.ping().await;
    broker.stop().await;
}
