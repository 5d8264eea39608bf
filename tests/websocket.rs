//! MQTT over WebSocket listeners, driven by a raw WebSocket client (tests/common/ws.rs): the
//! upgrade and its refusals, packets cut across frames and frames holding several packets, the
//! protocol errors (text, oversize), ping, parking, graceful shutdown, X-Forwarded-For, wss and
//! mTLS over wss. MQTT.js interoperability is tests/mqttjs.rs.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::ws::{self, WsClient, handshake, upgrade_request};
use common::{RawClient, TestBroker, WAIT, config, connect_packet, eventually, listener};
use mqttd::config::{ListenerConfig, ListenerProtocol, TrustedNet};
use mqttd::protocol::{self, Packet, ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn ws_listener(name: &str) -> ListenerConfig {
    ListenerConfig {
        protocol: ListenerProtocol::Ws,
        ..listener(name)
    }
}

/// A broker with a plain listener ("plain", first) and a WebSocket one ("ws").
async fn broker_with(
    ws: ListenerConfig,
    tune: impl FnOnce(&mut mqttd::config::Config),
) -> TestBroker {
    let mut config = config();
    config.listeners.push(ws);
    tune(&mut config);
    TestBroker::start_with(config).await
}

async fn broker() -> TestBroker {
    broker_with(ws_listener("ws"), |_| {}).await
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    protocol::encode(packet, version, &mut out).expect("encodes");
    out.to_vec()
}

#[tokio::test]
async fn mqtt_311_and_5_over_websocket_meet_tcp_clients() {
    let broker = broker().await;
    let ws_addr = broker.addr_of("ws");

    // 3.1.1 over ws subscribes; a TCP client publishes.
    let mut sub = RawClient::connected_on(ws::connect(ws_addr).await, "ws-sub").await;
    assert_eq!(sub.subscribe("t/#", QoS::AtLeastOnce, 1).await, [1]);
    let mut tcp = RawClient::connected(broker.addr_of("plain"), "tcp-pub").await;
    tcp.publish("t/1", b"from tcp", QoS::AtLeastOnce, false, 7)
        .await;
    let got = sub.receive().await;
    assert_eq!(&*got.topic, "t/1");
    assert_eq!(&got.payload[..], b"from tcp");

    // 5.0 over ws publishes at QoS 2; the ws subscriber gets it (at its QoS 1).
    let connect = common::connect_v5("ws-pub5", Default::default());
    let (mut pub5, ack) = RawClient::connect_v5_on(ws::connect(ws_addr).await, connect).await;
    assert_eq!(ack.code, protocol::ConnAckReason::Success);
    pub5.publish("t/2", b"from ws 5.0", QoS::ExactlyOnce, false, 3)
        .await;
    let got = sub.receive().await;
    assert_eq!(&got.payload[..], b"from ws 5.0");
    sub.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn packets_cut_into_one_byte_frames_with_empty_frames_between() {
    let broker = broker().await;
    let mut stream = ws::connect(broker.addr_of("ws")).await;
    stream.split = Some(1);
    stream.empty_frames = true;
    let mut c = RawClient::connected_on(stream, "crumbs").await;
    assert_eq!(c.subscribe("crumbs", QoS::AtMostOnce, 1).await, [0]);
    c.publish("crumbs", &[5u8; 300], QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&c.receive().await.payload[..], &[5u8; 300][..]);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn one_frame_may_carry_several_packets() {
    let broker = broker().await;
    let mut stream = ws::connect(broker.addr_of("ws")).await;
    let v = ProtocolVersion::V311;
    let mut batch = encode(&Packet::Connect(Box::new(connect_packet("batch"))), v);
    let subscribe = protocol::Subscribe {
        packet_id: 1,
        filters: vec![protocol::SubscribeFilter {
            filter: "b".into(),
            options: protocol::SubscriptionOptions::new(QoS::AtMostOnce),
        }],
        properties: None,
    };
    batch.extend(encode(&Packet::Subscribe(subscribe), v));
    // The PUBLISH starts in this frame and ends in the next one.
    let publish = protocol::Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "b".into(),
        packet_id: 0,
        payload: bytes::Bytes::from_static(b"both halves"),
        properties: None,
    };
    let publish = encode(&Packet::Publish(publish), v);
    batch.extend_from_slice(&publish[..4]);
    stream.send_frame(0x82, &batch).await;
    stream.send_frame(0x82, &publish[4..]).await;
    let mut c = RawClient::from_stream(stream);
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(&c.expect_publish().await.payload[..], b"both halves");
    broker.stop().await;
}

/// A protocol error closes with its status; the bytes before it still count.
async fn closed_with(broker: &TestBroker, first: u8, payload: &[u8]) -> Option<u16> {
    let stream = ws::connect(broker.addr_of("ws")).await;
    let mut c = RawClient::connected_on(stream, "breaker").await;
    c.stream.send_frame(first, payload).await;
    c.expect_closed().await;
    c.stream.close_code
}

#[tokio::test]
async fn text_and_oversize_frames_close_the_connection() {
    let broker = broker_with(ws_listener("ws"), |c| c.limits.max_packet_size = 1024).await;
    assert_eq!(
        closed_with(&broker, 0x81, b"{\"not\":\"mqtt\"}").await,
        Some(1003)
    );
    assert_eq!(closed_with(&broker, 0x82, &[0u8; 2000]).await, Some(1009));
    // A frame of exactly the limit is fine.
    let stream = ws::connect(broker.addr_of("ws")).await;
    let mut c = RawClient::connected_on(stream, "fits").await;
    assert_eq!(c.subscribe("f", QoS::AtMostOnce, 1).await, [0]);
    c.publish("f", &[1u8; 1000], QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(c.receive().await.payload.len(), 1000);
    broker.stop().await;
}

#[tokio::test]
async fn ping_frames_get_pongs() {
    let broker = broker().await;
    let stream = ws::connect(broker.addr_of("ws")).await;
    let mut c = RawClient::connected_on(stream, "pinger").await;
    c.stream.send_frame(0x89, b"are you there").await;
    c.ping().await; // an MQTT round trip after it: the Pong came first
    assert_eq!(c.stream.controls, [0x8A]);
    c.disconnect().await;
    broker.stop().await;
}

/// Sends `request` on a fresh connection; returns the answer's status and text.
async fn upgrade_status(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let (answer, _) = handshake(&mut tcp, request).await;
    (answer.status, answer.text)
}

#[tokio::test]
async fn bad_upgrades_get_http_errors() {
    let mut ws = ws_listener("ws");
    ws.ws_origins = Some(vec!["https://app.example.com".into()]);
    let broker = broker_with(ws, |_| {}).await;
    let addr = broker.addr_of("ws");
    let cases = [
        (upgrade_request("/other", "mqtt", ""), 404),
        (upgrade_request("/mqtt", "", ""), 400),
        (upgrade_request("/mqtt", "chat, superchat", ""), 400),
        (
            upgrade_request("/mqtt", "mqtt", "Origin: https://evil.example\r\n"),
            403,
        ),
        ("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 426),
        ("POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 405),
    ];
    for (request, status) in cases {
        let (got, text) = upgrade_status(addr, &request).await;
        assert_eq!(got, status, "{request:?} -> {text}");
        assert!(text.contains("Connection: close"), "{text}");
    }
    // The listed Origin, and the old subprotocol name, are accepted.
    let request = upgrade_request("/mqtt", "mqttv3.1", "Origin: https://app.example.com\r\n");
    let (status, text) = upgrade_status(addr, &request).await;
    assert_eq!(status, 101, "{text}");
    assert!(text.contains("Sec-WebSocket-Protocol: mqttv3.1"), "{text}");
    // A client speaking MQTT straight at a WebSocket port gets 400 and a close.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let connect = encode(
        &Packet::Connect(Box::new(connect_packet("lost"))),
        ProtocolVersion::V311,
    );
    tcp.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await
    .expect("closed in time")
    .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    broker.stop().await;
}

#[tokio::test]
async fn the_upgrade_must_come_within_connect_timeout() {
    let broker = broker_with(ws_listener("ws"), |c| {
        c.limits.connect_timeout = Duration::from_millis(300)
    })
    .await;
    let mut tcp = TcpStream::connect(broker.addr_of("ws")).await.unwrap();
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: slow")
        .await
        .unwrap();
    let mut c = RawClient::from_stream(tcp);
    c.expect_closed().await;
    broker.stop().await;
}

#[tokio::test]
async fn idle_websocket_connections_park_and_wake() {
    let broker = broker().await;
    let ws_addr = broker.addr_of("ws");
    let mut sub = RawClient::connected_on(ws::connect(ws_addr).await, "parked-sub").await;
    assert_eq!(sub.subscribe("big", QoS::AtLeastOnce, 1).await, [1]);
    let mut other = RawClient::connected_on(ws::connect(ws_addr).await, "parked-pub").await;
    broker.parked(2).await;

    // Woken by a delivery: a 1 MB message (less the header) crosses in many frames.
    let mut tcp = RawClient::connected(broker.addr_of("plain"), "tcp").await;
    let big = vec![0xabu8; 1_000_000];
    tcp.publish("big", &big, QoS::AtLeastOnce, false, 1).await;
    assert_eq!(sub.receive().await.payload.len(), big.len());

    // Woken by its own socket: the parked client's bytes go through the frame decoder.
    broker.parked(2).await;
    other.stream.send_frame(0x89, b"p").await;
    other
        .publish("big", b"small", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(&sub.receive().await.payload[..], b"small");
    assert!(other.stream.controls.contains(&0x8A));
    sub.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_sends_disconnect_then_a_close_frame() {
    let broker = broker().await;
    let connect = common::connect_v5("leaving", Default::default());
    let (mut c, _) =
        RawClient::connect_v5_on(ws::connect(broker.addr_of("ws")).await, connect).await;
    broker.parked(1).await;
    broker.shutdown.cancel();
    match c.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(u8::from(d.reason), 0x8B, "server shutting down")
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    c.expect_closed().await;
    assert_eq!(c.stream.close_code, Some(1000));
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_from_trusted_proxies() {
    let mut ws = ws_listener("ws");
    ws.proxy_trusted = vec!["127.0.0.1".parse::<TrustedNet>().unwrap()];
    let mut untrusting = ws_listener("ws-direct");
    untrusting.proxy_trusted = vec!["10.0.0.0/8".parse::<TrustedNet>().unwrap()];
    let broker = broker_with(ws, |c| {
        c.listeners.push(untrusting);
        c.limits.max_connections_per_ip = Some(1);
    })
    .await;

    async fn via(
        addr: SocketAddr,
        forwarded: &str,
        id: &str,
    ) -> Option<RawClient<WsClient<TcpStream>>> {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let extra = format!("X-Forwarded-For: {forwarded}\r\n");
        let (answer, rest) = handshake(&mut tcp, &upgrade_request("/mqtt", "mqtt", &extra)).await;
        if answer.status != 101 {
            // Refused before the upgrade, with the reason.
            assert_eq!(answer.status, 503, "{}", answer.text);
            assert!(answer.text.contains("Connection: close"));
            return None;
        }
        let mut c = RawClient::from_stream(WsClient::new(tcp, rest));
        c.send(&Packet::Connect(Box::new(connect_packet(id)))).await;
        match c.recv().await {
            Some(Packet::ConnAck(_)) => Some(c),
            other => panic!("unexpected {other:?}"),
        }
    }
    // One connection per IP: two clients behind the trusted proxy are two addresses...
    let addr = broker.addr_of("ws");
    let _a = via(addr, "203.0.113.7", "a")
        .await
        .expect("first client admitted");
    let _b = via(addr, "198.51.100.1, 203.0.113.8", "b")
        .await
        .expect("second client admitted");
    // ...the same client twice is one, over the limit (503 instead of the upgrade)...
    assert!(via(addr, "203.0.113.7", "a2").await.is_none());
    // ...and where 127.0.0.1 is not trusted the header is ignored: the proxy's own address counts
    // (it has no connection of its own yet; a second one is over the limit).
    let direct = broker.addr_of("ws-direct");
    let _c = via(direct, "192.0.2.1", "c").await.expect("first direct");
    assert!(via(direct, "192.0.2.2", "d").await.is_none());
    broker.stop().await;
}

/// A PROXY v2 header (TCP over IPv4) naming `client` as the source.
fn proxy_v2(client: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&8083u16.to_be_bytes());
    h
}

#[tokio::test]
async fn a_proxy_header_may_precede_the_upgrade() {
    let mut ws = ws_listener("ws");
    ws.proxy_protocol = mqttd::config::ProxyProtocol::V2;
    ws.proxy_trusted = vec!["127.0.0.1".parse::<TrustedNet>().unwrap()];
    let broker = broker_with(ws, |c| c.limits.max_connections_per_ip = Some(1)).await;
    let addr = broker.addr_of("ws");
    let upgrade = |client: [u8; 4]| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&proxy_v2(client)).await.unwrap();
        let (answer, rest) = handshake(&mut tcp, &upgrade_request("/mqtt", "mqtt", "")).await;
        (answer.status, WsClient::new(tcp, rest))
    };
    let (status, stream) = upgrade([203, 0, 113, 9]).await;
    assert_eq!(status, 101);
    let mut c = RawClient::connected_on(stream, "behind-proxy").await;
    // The header's address is the client's: a second client from it is over the limit...
    assert_eq!(upgrade([203, 0, 113, 9]).await.0, 503);
    // ...another address is not.
    let (status, stream) = upgrade([203, 0, 113, 10]).await;
    assert_eq!(status, 101);
    let _d = RawClient::connected_on(stream, "other").await;
    c.ping().await;
    broker.stop().await;
}

// ---- wss ---------------------------------------------------------------------------------------

async fn wss_connect(
    addr: SocketAddr,
    client: tokio_rustls::rustls::ClientConfig,
) -> WsClient<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tls = common::certs::tls_connect(addr, Arc::new(client))
        .await
        .expect("TLS handshake");
    let (answer, rest) = handshake(&mut tls, &upgrade_request("/mqtt", "mqtt", "")).await;
    assert_eq!(answer.status, 101, "{}", answer.text);
    WsClient::new(tls, rest)
}

#[tokio::test]
async fn wss_and_mtls_over_wss() {
    let pki = common::certs::Pki::generate();
    let mut wss = ws_listener("wss");
    wss.tls = Some(pki.server_tls(WAIT));
    let mut mtls = ws_listener("wss-mtls");
    mtls.tls = Some(pki.mtls(true));
    let broker = broker_with(wss, |c| c.listeners.push(mtls)).await;

    let stream = wss_connect(
        broker.addr_of("wss"),
        pki.client(tokio_rustls::rustls::DEFAULT_VERSIONS),
    )
    .await;
    let mut c = RawClient::connected_on(stream, "secure").await;
    assert_eq!(c.subscribe("s", QoS::AtLeastOnce, 1).await, [1]);
    let mut tcp = RawClient::connected(broker.addr_of("plain"), "tcp").await;
    tcp.publish("s", b"over wss", QoS::AtLeastOnce, false, 1)
        .await;
    assert_eq!(&c.receive().await.payload[..], b"over wss");

    // mTLS: the certificate's CN is the session's username.
    let stream = wss_connect(broker.addr_of("wss-mtls"), pki.alice_client()).await;
    let _alice = RawClient::connected_on(stream, "alice-ws").await;
    let router = broker.router.clone();
    eventually("alice's session", || router.session_count() == 3).await;
    let users = parking_lot::Mutex::new(Vec::new());
    broker.router.kick_users(|user| {
        users.lock().push(user.to_owned());
        true
    });
    assert_eq!(users.into_inner(), ["alice"]);

    // SIGHUP's reload: new wss handshakes get the new certificate; open connections go on.
    let next = pki.issue_server_cert();
    std::fs::write(pki.path("server.pem"), &next.cert_pem).unwrap();
    std::fs::write(pki.path("server.key"), &next.key_pem).unwrap();
    broker.reloader.reload().expect("reload");
    let stream = wss_connect(
        broker.addr_of("wss"),
        pki.client(tokio_rustls::rustls::DEFAULT_VERSIONS),
    )
    .await;
    let presented = stream
        .inner
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone();
    assert_eq!(presented.as_ref(), next.der.as_ref());
    let mut after = RawClient::connected_on(stream, "after-reload").await;
    after.ping().await;
    c.ping().await;
    c.disconnect().await;
    broker.stop().await;
}

/// wss parks like ws: the TLS session and the frame state go with the socket. Woken by a 1 MB
/// delivery (many records, many frames) and by the client's own ping frame.
#[tokio::test]
async fn idle_wss_connections_park_and_wake() {
    let pki = common::certs::Pki::generate();
    let mut wss = ws_listener("wss");
    wss.tls = Some(pki.server_tls(WAIT));
    let broker = broker_with(wss, |_| {}).await;
    let client = || pki.client(tokio_rustls::rustls::DEFAULT_VERSIONS);
    let stream = wss_connect(broker.addr_of("wss"), client()).await;
    let mut sub = RawClient::connected_on(stream, "wss-sub").await;
    assert_eq!(sub.subscribe("big", QoS::AtLeastOnce, 1).await, [1]);
    let stream = wss_connect(broker.addr_of("wss"), client()).await;
    let mut other = RawClient::connected_on(stream, "wss-other").await;
    broker.parked(2).await;

    let mut tcp = RawClient::connected(broker.addr_of("plain"), "tcp").await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
    tcp.publish("big", &big, QoS::AtLeastOnce, false, 1).await;
    assert!(sub.receive().await.payload[..] == big[..]);

    broker.parked(3).await;
    other.stream.send_frame(0x89, b"p").await;
    other
        .publish("big", b"small", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(&sub.receive().await.payload[..], b"small");
    assert!(other.stream.controls.contains(&0x8A));
    sub.ping().await;
    broker.stop().await;
}
