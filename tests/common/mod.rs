//! Shared test harness: a broker on 127.0.0.1:0, a raw-byte MQTT client, and rumqttc helpers.
//! Every wait here is bounded.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqttd::config::{Config, ListenerConfig};
use mqttd::protocol::{self, Connect, Packet, ProtocolVersion};
use mqttd::router::Router;
use mqttd::server::Server;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default bound for any single wait in tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// A `Write` that appends into shared memory, for capturing the message log.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

pub struct TestBroker {
    /// Address of the first listener.
    pub addr: SocketAddr,
    pub addrs: Vec<(String, SocketAddr)>,
    pub router: Arc<Router>,
    pub shutdown: CancellationToken,
    pub msglog: Capture,
    pub reloader: mqttd::server::Reloader,
    handle: JoinHandle<()>,
}

/// A config with one plain listener on 127.0.0.1:0, `$SYS` off, everything else default.
pub fn config() -> Config {
    let mut c = Config {
        listeners: vec![listener("plain")],
        ..Config::default()
    };
    c.sys.interval = 0;
    c
}

pub fn listener(name: &str) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        max_connections: 1000,
        tls: None,
        allow_anonymous: None,
    }
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> TestBroker {
        init_tracing();
        let shutdown = CancellationToken::new();
        let msglog = Capture::default();
        let server =
            Server::bind_with_log(config, shutdown.clone(), Some(Box::new(msglog.clone())))
                .await
                .expect("broker binds");
        let addrs = server.local_addrs().to_vec();
        let router = server.router();
        let reloader = server.reloader();
        let handle = tokio::spawn(server.run());
        TestBroker {
            addr: addrs[0].1,
            addrs,
            router,
            shutdown,
            msglog,
            reloader,
            handle,
        }
    }

    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .expect("listener exists")
            .1
    }

    /// Stops the broker and waits (bounded) for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("broker stops in time")
            .expect("broker task did not panic");
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 10 ms until it holds or `WAIT` passes.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client speaking raw bytes, for malformed input and exact protocol checks.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// Connects and completes a 3.1.1 CONNECT/CONNACK; asserts the CONNACK code is 0.
    pub async fn connected(addr: SocketAddr, client_id: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.send(&Packet::Connect(Box::new(connect_packet(client_id))))
            .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, 0, "CONNACK refused"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out);
        self.send_bytes(&out).await;
    }

    /// The next packet, or None if the broker closed the connection. Panics after `WAIT`.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
            .await
            .expect("broker answered in time")
    }

    /// Err(()) on timeout; Ok(None) when the connection closed.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(p) = protocol::decode(&mut self.buf, self.version, 1 << 28)
                .expect("broker sends valid packets")
            {
                return Ok(Some(p));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts the broker closes the connection (reading only EOF, or packets then EOF) within `WAIT`.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv_within(WAIT).await {
                Ok(None) => return,
                Ok(Some(_)) => continue,
                Err(()) => panic!("broker did not close the connection"),
            }
        }
    }

    /// Asserts nothing arrives within `limit`.
    pub async fn expect_silence(&mut self, limit: Duration) {
        if let Ok(p) = self.recv_within(limit).await {
            panic!("expected silence, got {p:?}");
        }
    }
}

pub fn connect_packet(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

/// rumqttc (3.1.1) options for `addr`.
pub fn mqtt_options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Spawns a rumqttc client; returns it with a channel of received PUBLISHes. Waits for CONNACK.
pub async fn rumqtt_client(
    opts: rumqttc::MqttOptions,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Event>,
) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(ev) => {
                    let _ = etx.send(ev);
                }
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("CONNACK in time")
        .expect("connected");
    (client, rx, erx)
}

/// Receives the next publish within `WAIT`.
pub async fn next_publish(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
) -> rumqttc::Publish {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("publish in time")
        .expect("client alive")
}

impl RawClient {
    /// SUBSCRIBE one filter, returns the SUBACK codes.
    pub async fn subscribe(&mut self, filter: &str, qos: protocol::QoS, packet_id: u16) -> Vec<u8> {
        use protocol::{SubscribeFilter, SubscriptionOptions};
        let sub = protocol::Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions::new(qos),
            }],
            properties: None,
        };
        self.send(&Packet::Subscribe(sub)).await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, packet_id);
                ack.return_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH and complete the QoS handshake as a publisher.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: protocol::QoS,
        retain: bool,
        packet_id: u16,
    ) {
        use protocol::{PubResp, Publish, QoS};
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { packet_id };
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id,
            payload: bytes::Bytes::copy_from_slice(payload),
            properties: None,
        };
        self.send(&Packet::Publish(p)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, packet_id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv().await {
                    Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, packet_id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubResp::new(packet_id))).await;
                match self.recv().await {
                    Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Receives the next PUBLISH (panics on anything else) without acknowledging it.
    pub async fn expect_publish(&mut self) -> protocol::Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives the next PUBLISH and completes the subscriber side of its QoS handshake.
    pub async fn receive(&mut self) -> protocol::Publish {
        use protocol::{PubResp, QoS};
        let p = self.expect_publish().await;
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::new(p.packet_id))).await,
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubResp::new(p.packet_id))).await;
                match self.recv().await {
                    Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, p.packet_id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(&Packet::PubComp(PubResp::new(p.packet_id))).await;
            }
        }
        p
    }

    /// Sends PINGREQ and waits for PINGRESP: a barrier proving everything sent before was handled.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default())).await;
        self.expect_closed().await;
    }
}
