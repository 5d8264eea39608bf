//! Shared test harness: a broker on 127.0.0.1:0, a raw-byte MQTT client, and rumqttc helpers.
//! Every wait here is bounded.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod api;
pub mod certs;
pub mod wire;
pub mod ws;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqttd::config::{Config, ListenerConfig};
use mqttd::protocol::{
    self, ConnAck, ConnAckReason, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    SubAckReason,
};
use mqttd::router::Router;
use mqttd::server::Server;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    pub parker: Arc<mqttd::park::Parker<mqttd::client::Idle>>,
    pub ingress: Arc<mqttd::ingress::Ingress>,
    /// Connections without sockets, for tests on paused time (anonymous allowed).
    pub memory: mqttd::listener::InMemory,
    /// What the message logger dropped (None: the message log is off).
    pub msglog_drops: Option<mqttd::router::subscriber::DropCounter>,
    /// The HTTP API's address (None: no `[http]`).
    pub http: Option<SocketAddr>,
    /// Each `[[coap]]` gateway's bound UDP address, by name.
    pub coap: Vec<(String, SocketAddr)>,
    /// Every gateway's status (CoAP, bridges, webhooks), as `$SYS` and `/metrics` read them.
    pub gateways: mqttd::gateway::Statuses,
    handle: JoinHandle<()>,
}

/// A config with one plain listener on 127.0.0.1:0, `$SYS` off, persistence off (tests of the
/// store give it a directory of their own), everything else default.
pub fn config() -> Config {
    Config {
        listeners: vec![listener("plain")],
        sys: mqttd::config::SysConfig { interval: 0 },
        persistence: mqttd::config::PersistenceConfig::off(),
        // The built-in 127.0.0.1:18083 would be shared by every test broker; tests/http_api.rs
        // sets an [http] on port 0.
        http: None,
        ..Config::default()
    }
}

pub fn listener(name: &str) -> ListenerConfig {
    ListenerConfig {
        max_connections: 1000,
        ..ListenerConfig::mqtt(name, "127.0.0.1:0".parse().unwrap())
    }
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> TestBroker {
        let msglog = Capture::default();
        TestBroker::start_with_log(config, Box::new(msglog.clone()), msglog).await
    }

    /// A broker whose message log (if on) goes to `sink`; `msglog`: what `broker.msglog` shows.
    pub async fn start_with_log(
        config: Config,
        sink: Box<dyn Write + Send>,
        msglog: Capture,
    ) -> TestBroker {
        init_tracing();
        let shutdown = CancellationToken::new();
        let server = Server::bind_with_log(config, shutdown.clone(), Some(sink))
            .await
            .expect("broker binds");
        let addrs = server.local_addrs().to_vec();
        let router = server.router();
        let reloader = server.reloader();
        let parker = server.parker().expect("the parker is set up");
        let ingress = server.ingress();
        let memory = server.in_memory(true);
        let msglog_drops = server.message_log_drops();
        let http = server.http_addr();
        let coap = server.coap_addrs().to_vec();
        let gateways = server.gateways();
        let handle = tokio::spawn(server.run());
        TestBroker {
            addr: addrs[0].1,
            addrs,
            router,
            shutdown,
            msglog,
            reloader,
            parker,
            ingress,
            memory,
            msglog_drops,
            http,
            coap,
            gateways,
            handle,
        }
    }

    /// A new in-memory connection (see [`mqttd::listener::InMemory`]).
    pub fn pipe(&self) -> tokio::io::DuplexStream {
        self.memory.connect().expect("in-memory connection")
    }

    /// Waits until exactly `n` connections are parked.
    pub async fn parked(&self, n: usize) {
        eventually(&format!("{n} connection(s) parked"), || {
            self.parker.parked() == n
        })
        .await;
    }

    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .expect("listener exists")
            .1
    }

    /// The bound address of the CoAP gateway called `name`.
    pub fn coap_addr(&self, name: &str) -> SocketAddr {
        self.coap
            .iter()
            .find(|(n, _)| n == name)
            .expect("coap gateway exists")
            .1
    }

    /// The status of the gateway of `kind` called `name`.
    pub fn gateway(
        &self,
        kind: mqttd::gateway::Kind,
        name: &str,
    ) -> Arc<dyn mqttd::gateway::GatewayStatus> {
        self.gateways
            .iter()
            .find(|g| g.kind() == kind && g.name() == name)
            .expect("gateway exists")
            .clone()
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
    crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// reqwest is built with rustls (the webhooks' client) but without a crypto provider of its own:
/// the webhooks pass theirs, while the tests' plain-HTTP clients (`reqwest::Client::new()`) take
/// the process default, which this sets (aws-lc-rs, as everywhere else). Called by every broker
/// start; harmless when already set.
pub fn crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

/// SUBACK codes as bytes, as they went over the wire (3.1.1 can only have carried 0, 1, 2, 0x80).
pub fn wire_codes(codes: &[SubAckReason]) -> Vec<u8> {
    codes.iter().map(|&c| u8::from(c)).collect()
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// The CONNACK code as it went over the wire on this client's connection: the 5.0 reason
    /// code, or for 3.1 / 3.1.1 the return code (which the decoder maps into the 5.0 model).
    pub fn wire_code(&self, ack: &ConnAck) -> u8 {
        if self.version.is_v5() {
            ack.code.into()
        } else {
            ack.code.v3().into()
        }
    }

    /// Wraps an already connected stream (3.1.1 framing).
    pub fn from_stream(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// Completes a 3.1.1 CONNECT/CONNACK on `stream`; asserts the CONNACK code is 0.
    pub async fn connected_on(stream: S, client_id: &str) -> RawClient<S> {
        let mut c = RawClient::from_stream(stream);
        c.send(&Packet::Connect(Box::new(connect_packet(client_id))))
            .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnAckReason::Success, "CONNACK refused")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// Sends a 5.0 `connect` on `stream`; returns the client (speaking 5.0) with the CONNACK.
    pub async fn connect_v5_on(stream: S, connect: Connect) -> (RawClient<S>, ConnAck) {
        let mut c = RawClient::from_stream(stream);
        c.version = ProtocolVersion::V5;
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes `packet`; an error (the broker is gone) is returned, not a panic.
    pub async fn stream_write(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        if let Err(e) = protocol::encode(packet, self.version, &mut out) {
            panic!("the encoder refuses {packet:?}: {e}");
        }
        self.stream.write_all(&out).await
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        if let Err(e) = protocol::encode(packet, self.version, &mut out) {
            panic!("the encoder refuses {packet:?}: {e}");
        }
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

impl RawClient<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawClient::from_stream(stream)
    }

    /// Connects and completes a 3.1.1 CONNECT/CONNACK; asserts the CONNACK code is 0.
    pub async fn connected(addr: SocketAddr, client_id: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.send(&Packet::Connect(Box::new(connect_packet(client_id))))
            .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnAckReason::Success, "CONNACK refused")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
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

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
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
                wire_codes(&ack.return_codes)
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

/// Cheap argon2id cost for tests that are not about hashing cost (the broker re-hashes such
/// entries to its defaults on a user's first successful login).
pub const FAST_ARGON2: mqttd::auth::credentials::Argon2Params =
    mqttd::auth::credentials::Argon2Params {
        m_cost: 1024,
        t_cost: 1,
        p_cost: 1,
    };

/// Adds (or changes) `users` in the password file at `path`, creating it if needed, through the
/// same locked atomic rewrite `mqtt-passwd` uses.
pub fn set_passwords(
    path: &std::path::Path,
    users: &[(&str, &[u8])],
    params: mqttd::auth::credentials::Argon2Params,
) {
    use mqttd::auth::credentials::hash_argon2id;
    use mqttd::auth::passwd::{PasswdError, PasswordFile};
    PasswordFile::update::<_, PasswdError>(path, true, |file| {
        for (user, password) in users {
            file.set(user, hash_argon2id(password, params)?)?;
        }
        Ok(((), true))
    })
    .expect("password file written");
}

/// A 3.1.1 CONNECT carrying these credentials.
pub fn login_packet(client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Connect {
    Connect {
        username: username.map(Into::into),
        password: password.map(|p| protocol::Password::new(p.to_vec())),
        ..connect_packet(client_id)
    }
}

/// A 5.0 CONNECT (clean start, keep alive 60) carrying `props` (no property block when default).
pub fn connect_v5(client_id: &str, props: Properties) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        properties: (props != Properties::default()).then(|| Box::new(props)),
        ..connect_packet(client_id)
    }
}

/// Connects from `source` (any 127.0.0.0/8 address works on Linux), so a test can act as a
/// second client IP address.
pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> RawClient {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    let stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    RawClient::from_stream(stream)
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Sends `connect` (switching this client to its protocol version) and returns the CONNACK
    /// code; panics if anything but a CONNACK comes back.
    pub async fn login(&mut self, connect: Connect) -> u8 {
        self.version = connect.protocol;
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => self.wire_code(&ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

/// Opens a connection to `addr`, sends `connect`, and returns the client with the CONNACK code.
pub async fn try_login(addr: SocketAddr, connect: Connect) -> (RawClient, u8) {
    let mut c = RawClient::connect(addr).await;
    let code = c.login(connect).await;
    (c, code)
}

/// Kills and reaps the child process when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration file for [`BrokerProcess`] in `dir` (one listener on an ephemeral port, no
/// `$SYS`, info log), with `extra` appended; the store is `dir/data` (persistence is on by
/// default), so each test has its own.
pub fn config_file(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("mqttd.toml");
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[sys]\ninterval = 0\n\n[log]\nlevel = \"info\"\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The real `mqttd` binary, started with `--config`; its standard output and error are collected
/// line by line.
pub struct BrokerProcess {
    pub child: ChildGuard,
    /// The first listener's address, read from the "listening on" log line.
    pub addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl BrokerProcess {
    /// Starts `mqttd --config <config>` and waits (bounded) for its "listening on" line.
    pub async fn start(config: &std::path::Path) -> BrokerProcess {
        BrokerProcess::start_with(config, |_| {}).await
    }

    /// As [`BrokerProcess::start`], with `customize` applied to the command first.
    pub async fn start_with(
        config: &std::path::Path,
        customize: impl FnOnce(&mut std::process::Command),
    ) -> BrokerProcess {
        use std::process::{Command, Stdio};
        // In the configuration's directory, so that a store at a relative path (persistence is
        // on by default: `./data`) is this test's own.
        let dir = config
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut command = Command::new(env!("CARGO_BIN_EXE_mqttd"));
        command
            .current_dir(dir)
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        customize(&mut command);
        let mut child = command.spawn().expect("spawn mqttd");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    output.lock().push(strip_ansi(&line));
                }
            }));
        }
        let mut child = ChildGuard(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        let addr = loop {
            let found = output.lock().iter().find_map(|l| {
                let rest = &l[l.find("listening on ")? + "listening on ".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                rest[..end].parse::<SocketAddr>().ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("mqttd exited with {status}: {:?}", output.lock());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mqttd did not log \"listening on\" in time: {:?}",
                output.lock()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        BrokerProcess {
            child,
            addr,
            output,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Everything the broker printed so far.
    pub fn output(&self) -> String {
        self.output.lock().join("\n")
    }

    /// Waits (bounded) until a printed line contains `needle`.
    pub async fn wait_for_line(&self, needle: &str) {
        let output = self.output.clone();
        eventually(&format!("mqttd to print {needle:?}"), || {
            output.lock().iter().any(|l| l.contains(needle))
        })
        .await;
    }

    /// Sends `signal` to the broker.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// SIGKILL (no chance to save anything), then waits (bounded) until it is gone; returns
    /// everything it printed.
    pub async fn kill(mut self) -> String {
        self.signal(libc::SIGKILL);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.child.0.try_wait().expect("try_wait").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "mqttd did not die");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        self.output()
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns everything it printed.
    pub async fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                assert!(status.success(), "mqttd exited with {status}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "mqttd did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The process is gone, so its pipes are at EOF and the readers finish.
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        self.output()
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a command-line tool with `stdin` as its input, bounded by `WAIT`; returns its output.
pub async fn run_tool(program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::process::Command;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        // The tool may exit before reading: a broken pipe is fine.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    drop(pipe);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in time"))
        .expect("wait for the tool")
}

/// A child process that is killed (SIGKILL) and reaped if the test ends early, e.g. on a failed
/// assertion: `tokio::process::Command::kill_on_drop` is the Drop guard.
pub fn command(program: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Spawns `cmd`, failing loudly (never skipping) when the program is missing: the Mosquitto
/// clients come from Debian's `mosquitto-clients`, which CI installs.
pub fn spawn(cmd: &mut tokio::process::Command) -> tokio::process::Child {
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?}: {e} (mosquitto_pub/mosquitto_sub come from the mosquitto-clients package)",
            cmd.as_std().get_program()
        )
    })
}

/// Waits (at most `limit`) for `child` to exit and returns its output; on timeout the child is
/// killed and the test fails.
pub async fn output_within(child: tokio::process::Child, limit: Duration) -> std::process::Output {
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("process finished in time (it has been killed)")
        .expect("process output readable")
}

impl RawClient<TcpStream> {
    /// Sends a 5.0 `connect` and returns the client (speaking 5.0) with the CONNACK, whatever its
    /// code.
    pub async fn connect_v5_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut c = RawClient::connect(addr).await;
        c.version = ProtocolVersion::V5;
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a 5.0 CONNECT carrying `props`; asserts success and returns the CONNACK.
    pub async fn connected_v5(
        addr: SocketAddr,
        client_id: &str,
        props: Properties,
    ) -> (RawClient, ConnAck) {
        let (c, ack) = RawClient::connect_v5_with(addr, connect_v5(client_id, props)).await;
        assert_eq!(ack.code, ConnAckReason::Success, "CONNACK refused: {ack:?}");
        (c, ack)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Asserts the next packet is a DISCONNECT from the broker, followed by the close; returns it.
    pub async fn expect_disconnect(&mut self) -> Disconnect {
        match self.recv().await {
            Some(Packet::Disconnect(d)) => {
                self.expect_closed().await;
                d
            }
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }

    /// SUBSCRIBE one filter with full options and an optional Subscription Identifier (5.0);
    /// returns the SUBACK codes.
    pub async fn subscribe_with(
        &mut self,
        filter: &str,
        options: protocol::SubscriptionOptions,
        sub_id: Option<u32>,
        packet_id: u16,
    ) -> Vec<u8> {
        let properties = sub_id.map(|id| {
            Box::new(Properties {
                subscription_identifiers: vec![id],
                ..Properties::default()
            })
        });
        let sub = protocol::Subscribe {
            packet_id,
            filters: vec![protocol::SubscribeFilter {
                filter: filter.into(),
                options,
            }],
            properties,
        };
        self.send(&Packet::Subscribe(sub)).await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, packet_id);
                wire_codes(&ack.return_codes)
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Raises the open-file limit so one process can hold both ends of `n` connections.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(wanted);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}
