//! TLS end to end: a broker with a plain and a TLS listener feeding one router, exercised with the
//! Debian `mosquitto-clients` (OpenSSL) and with tokio-rustls clients. Covers untrusted CAs, plain
//! MQTT on the TLS port, mTLS and `use_identity_as_username`, TLS 1.2 and 1.3, the handshake
//! timeout and certificate reload.

mod common;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::certs::Pki;
use common::{RawClient, TestBroker, WAIT, connect_packet, eventually, listener};
use mqttd::config::TlsConfig;
use mqttd::protocol::{self, Packet, ProtocolVersion, QoS};
use mqttd::server::Server;
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_util::sync::CancellationToken;

/// A broker with listeners "plain" and "tls" on 127.0.0.1:0; anonymous access (loopback default).
async fn broker(tls: TlsConfig) -> TestBroker {
    TestBroker::start_with(config(tls)).await
}

fn config(tls: TlsConfig) -> mqttd::config::Config {
    let mut config = common::config();
    let mut tls_listener = listener("tls");
    tls_listener.tls = Some(tls);
    config.listeners.push(tls_listener);
    config
}

// ---- mosquitto-clients -------------------------------------------------------------------------

/// Starts a mosquitto client. The child is killed when dropped (`kill_on_drop`), so a test that
/// fails or times out never leaves one behind.
fn spawn_mosquitto(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}; these tests need the Debian package mosquitto-clients"
            )
        })
}

/// Waits (bounded by `WAIT`) for a mosquitto client to exit and collects its output.
async fn finish(program: &str, child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not exit within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("collecting {program} output: {e}"))
}

async fn run_mosquitto(program: &str, args: &[String]) -> Output {
    finish(program, spawn_mosquitto(program, args)).await
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Connection arguments for `addr` over TLS trusting `cafile`, then the words of `rest`.
fn mosquitto_args(addr: SocketAddr, cafile: &str, rest: &str) -> Vec<String> {
    let port = addr.port().to_string();
    let mut a = args(&["-h", "127.0.0.1", "-p", &port, "--cafile", cafile]);
    a.extend(rest.split_whitespace().map(String::from));
    a
}

/// `mosquitto_pub` over TLS to `addr`, trusting `cafile`, with `extra` arguments.
async fn mosquitto_pub(
    addr: SocketAddr,
    cafile: &str,
    topic: &str,
    msg: &str,
    extra: &[String],
) -> Output {
    let mut a = mosquitto_args(addr, cafile, "-i pub");
    a.extend(args(&["-t", topic, "-m", msg]));
    a.extend_from_slice(extra);
    run_mosquitto("mosquitto_pub", &a).await
}

/// `mosquitto_sub -C 1 -W 10 -v` on `tls/#` over TLS to `addr`, trusting `cafile`.
fn mosquitto_sub(addr: SocketAddr, cafile: &str) -> Child {
    let a = mosquitto_args(addr, cafile, "-i sub -t tls/# -C 1 -W 10 -v");
    spawn_mosquitto("mosquitto_sub", &a)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the router holds exactly `n` subscriptions.
async fn subscriptions(broker: &TestBroker, n: usize) {
    let router = broker.router.clone();
    eventually(&format!("{n} subscription(s)"), move || {
        router.subscription_count() == n
    })
    .await;
}

/// A plain-TCP subscriber to `filter` on the "plain" listener.
async fn plain_subscriber(broker: &TestBroker, id: &str, filter: &str) -> RawClient {
    let mut c = RawClient::connected(broker.addr_of("plain"), id).await;
    assert_eq!(c.subscribe(filter, QoS::AtMostOnce, 1).await, [0]);
    c
}

// ---- tokio-rustls MQTT client ------------------------------------------------------------------

/// Handshakes with the broker at `addr` (bounded by `WAIT`), verifying its certificate for the IP.
async fn tls_handshake(
    addr: SocketAddr,
    client: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    common::certs::tls_connect(addr, Arc::new(client)).await
}

/// MQTT 3.1.1 over a tokio-rustls stream.
struct TlsMqtt {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl TlsMqtt {
    /// Handshakes, sends CONNECT (with `username`, no password) and asserts CONNACK 0.
    async fn connected(
        addr: SocketAddr,
        client: ClientConfig,
        id: &str,
        username: Option<&str>,
    ) -> TlsMqtt {
        let stream = tls_handshake(addr, client).await.expect("TLS handshake");
        let mut c = TlsMqtt {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = connect_packet(id);
        connect.username = username.map(Into::into);
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(u8::from(ack.code), 0, "CONNACK refused"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// Handshakes and logs in as `user` (password: the same), asserting CONNACK 0.
    async fn login(addr: SocketAddr, client: ClientConfig, user: &str) -> TlsMqtt {
        let stream = tls_handshake(addr, client).await.expect("TLS handshake");
        let mut c = TlsMqtt {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = connect_packet(user);
        connect.username = Some(user.into());
        connect.password = Some(protocol::Password::new(user.as_bytes().to_vec()));
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(u8::from(ack.code), 0, "CONNACK refused"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, ProtocolVersion::V311, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("TLS write");
        self.stream.flush().await.expect("TLS flush");
    }

    /// The next packet, or None when the broker closed the connection; panics after `WAIT`.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = protocol::decode(&mut self.buf, ProtocolVersion::V311, 1 << 20)
                    .expect("broker sends valid packets")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("broker answered in time")
    }

    async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    fn server_cert(&self) -> CertificateDer<'static> {
        server_cert(&self.stream)
    }
}

fn server_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// Usernames of the connected sessions, read through the router's `kick_users` visitor (which
/// closes nobody when the predicate keeps everyone).
fn connected_usernames(broker: &TestBroker) -> Vec<String> {
    let seen = Mutex::new(Vec::new());
    let kicked = broker.router.kick_users(|user| {
        seen.lock().push(user.to_owned());
        true
    });
    assert_eq!(kicked, 0);
    let mut seen = seen.into_inner();
    seen.sort();
    seen
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn mosquitto_clients_over_tls_share_the_router_with_plain_tcp() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    let ca = pki.arg("ca.pem");

    // Published over TLS by mosquitto_pub.
    let sub = mosquitto_sub(tls, &ca);
    subscriptions(&broker, 1).await;
    let publish = mosquitto_pub(tls, &ca, "tls/from-tls", "over TLS", &[]).await;
    assert!(
        publish.status.success(),
        "mosquitto_pub: {}",
        describe(&publish)
    );
    let received = finish("mosquitto_sub", sub).await;
    assert!(
        received.status.success(),
        "mosquitto_sub: {}",
        describe(&received)
    );
    assert_eq!(stdout(&received), "tls/from-tls over TLS\n");

    // Published over plain TCP on the other listener.
    subscriptions(&broker, 0).await;
    let sub = mosquitto_sub(tls, &ca);
    subscriptions(&broker, 1).await;
    let mut plain = RawClient::connected(broker.addr_of("plain"), "plain-pub").await;
    plain
        .publish("tls/from-plain", b"over TCP", QoS::AtMostOnce, false, 0)
        .await;
    let received = finish("mosquitto_sub", sub).await;
    assert!(
        received.status.success(),
        "mosquitto_sub: {}",
        describe(&received)
    );
    assert_eq!(stdout(&received), "tls/from-plain over TCP\n");
    plain.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn client_not_trusting_the_ca_fails_and_broker_keeps_serving() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    let mut watcher = plain_subscriber(&broker, "watcher", "tls/#").await;

    let untrusted = pki.arg("other-ca.pem");
    let sub = finish("mosquitto_sub", mosquitto_sub(tls, &untrusted)).await;
    assert!(
        !sub.status.success(),
        "untrusted mosquitto_sub: {}",
        describe(&sub)
    );
    assert_eq!(
        stdout(&sub),
        "",
        "untrusted mosquitto_sub received something"
    );
    let stderr = String::from_utf8_lossy(&sub.stderr);
    assert!(stderr.contains("TLS error"), "{}", describe(&sub));
    let publish = mosquitto_pub(tls, &untrusted, "tls/x", "untrusted", &[]).await;
    assert!(
        !publish.status.success(),
        "untrusted mosquitto_pub: {}",
        describe(&publish)
    );

    let publish = mosquitto_pub(tls, &pki.arg("ca.pem"), "tls/x", "trusted", &[]).await;
    assert!(
        publish.status.success(),
        "trusted mosquitto_pub: {}",
        describe(&publish)
    );
    // The first message the watcher sees is the trusted one: the untrusted publish never arrived.
    let p = watcher.expect_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("tls/x", &b"trusted"[..]));
    watcher.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn plain_mqtt_on_the_tls_port_gets_no_connack() {
    let pki = Pki::generate();
    let handshake_timeout = Duration::from_secs(2);
    let broker = broker(pki.server_tls(handshake_timeout)).await;
    let tls = broker.addr_of("tls");

    let mut raw = RawClient::connect(tls).await;
    let mut connect = BytesMut::new();
    protocol::encode(
        &Packet::Connect(Box::new(connect_packet("plain-on-tls"))),
        ProtocolVersion::V311,
        &mut connect,
    )
    .expect("encode CONNECT");
    raw.send_bytes(&connect).await;
    let started = tokio::time::Instant::now();
    let mut reply = Vec::new();
    let end = tokio::time::timeout(
        handshake_timeout + Duration::from_secs(1),
        raw.stream.read_to_end(&mut reply),
    )
    .await
    .expect("broker closes the connection within the handshake timeout");
    assert!(started.elapsed() < handshake_timeout + Duration::from_secs(1));
    assert!(end.is_ok(), "connection ended with {end:?}");
    // rustls rejects the first byte as a record type at once and answers with one alert record
    // (type 21, TLS 1.2 framing, 2 bytes): fatal (2) decode_error (50). Never a CONNACK (0x20).
    assert_eq!(
        reply,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32],
        "{reply:02x?}"
    );

    // Unaffected: TLS and plain clients still connect.
    let mut c = TlsMqtt::connected(tls, pki.client(rustls::DEFAULT_VERSIONS), "after", None).await;
    c.ping().await;
    RawClient::connected(broker.addr_of("plain"), "plain")
        .await
        .ping()
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate() {
    let pki = Pki::generate();
    let broker = broker(pki.mtls(false)).await;
    let tls = broker.addr_of("tls");
    let ca = pki.arg("ca.pem");
    let mut watcher = plain_subscriber(&broker, "watcher", "tls/#").await;

    let without = mosquitto_pub(tls, &ca, "tls/m", "without cert", &[]).await;
    assert!(
        !without.status.success(),
        "mosquitto_pub without cert: {}",
        describe(&without)
    );

    let with_cert = args(&[
        "--cert",
        &pki.arg("alice.pem"),
        "--key",
        &pki.arg("alice.key"),
    ]);
    let with = mosquitto_pub(tls, &ca, "tls/m", "with cert", &with_cert).await;
    assert!(
        with.status.success(),
        "mosquitto_pub with cert: {}",
        describe(&with)
    );
    let p = watcher.expect_publish().await;
    assert_eq!(
        &p.payload[..],
        b"with cert",
        "the certless publish must not arrive"
    );

    // Without use_identity_as_username the certificate does not name the session.
    let _alice = TlsMqtt::connected(tls, pki.alice_client(), "alice", None).await;
    assert_eq!(connected_usernames(&broker), Vec::<String>::new());
    watcher.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn use_identity_as_username_takes_the_certificate_cn() {
    let pki = Pki::generate();
    let broker = broker(pki.mtls(true)).await;
    let tls = broker.addr_of("tls");
    let mut watcher = plain_subscriber(&broker, "watcher", "tls/#").await;

    let with_cert = args(&[
        "--cert",
        &pki.arg("alice.pem"),
        "--key",
        &pki.arg("alice.key"),
    ]);
    let with = mosquitto_pub(tls, &pki.arg("ca.pem"), "tls/id", "hi", &with_cert).await;
    assert!(
        with.status.success(),
        "mosquitto_pub with cert: {}",
        describe(&with)
    );
    assert_eq!(&watcher.expect_publish().await.payload[..], b"hi");

    // The session's username is the CN, whether CONNECT names no user or another one.
    let router = broker.router.clone();
    eventually("mosquitto_pub's session ended", move || {
        router.session_count() == 1
    })
    .await;
    let _a = TlsMqtt::connected(tls, pki.alice_client(), "a", None).await;
    assert_eq!(connected_usernames(&broker), ["alice"]);
    let _b = TlsMqtt::connected(tls, pki.alice_client(), "b", Some("mallory")).await;
    assert_eq!(connected_usernames(&broker), ["alice", "alice"]);
    watcher.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn tls12_and_tls13_clients_connect() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut c = TlsMqtt::connected(tls, pki.client(&[version]), "versioned", None).await;
        assert_eq!(c.tls_version(), Some(expected));
        c.ping().await;
        assert_eq!(c.server_cert(), pki.server_der);
    }
    // TLS 1.1 cannot be offered by a rustls client; the unit tests in src/tls.rs send a raw
    // TLS 1.1 ClientHello and check the protocol_version alert.
    broker.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_handshake_timeout() {
    let pki = Pki::generate();
    let handshake_timeout = Duration::from_millis(300);
    let broker = broker(pki.server_tls(handshake_timeout)).await;

    let started = tokio::time::Instant::now();
    let mut silent = RawClient::connect(broker.addr_of("tls")).await;
    let mut reply = Vec::new();
    let end = tokio::time::timeout(
        Duration::from_secs(2),
        silent.stream.read_to_end(&mut reply),
    )
    .await
    .expect("silent connection closed within 2 s");
    let elapsed = started.elapsed();
    assert_eq!(end.expect("clean close"), 0, "{reply:02x?}");
    assert!(
        elapsed >= handshake_timeout,
        "closed after only {elapsed:?}"
    );
    assert_eq!(
        broker
            .router
            .stats
            .limit_hits(mqttd::stats::Limit::HandshakeTimeout),
        1,
        "counted in $SYS/broker/limits/handshake_timeout"
    );

    // Only that connection was affected.
    let mut c = TlsMqtt::connected(
        broker.addr_of("tls"),
        pki.client(rustls::DEFAULT_VERSIONS),
        "after",
        None,
    )
    .await;
    c.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn reload_swaps_certificates_for_new_handshakes_only() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    let client = || pki.client(rustls::DEFAULT_VERSIONS);

    let mut before = TlsMqtt::connected(tls, client(), "before", None).await;
    assert_eq!(before.server_cert(), pki.server_der);
    // Parked through the reload, and served after it with the session it began with.
    broker.parked(1).await;

    let next = pki.issue_server_cert();
    std::fs::write(pki.path("server.pem"), &next.cert_pem).unwrap();
    std::fs::write(pki.path("server.key"), &next.key_pem).unwrap();
    broker
        .reloader
        .reload()
        .expect("reload with a valid new certificate");
    assert_ne!(next.der, pki.server_der);
    let after = tls_handshake(tls, client())
        .await
        .expect("handshake after reload");
    assert_eq!(
        server_cert(&after),
        next.der,
        "new handshakes see the new certificate"
    );
    before.ping().await; // the connection from before the reload is still served

    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    let err = broker
        .reloader
        .reload()
        .expect_err("reload with a broken certificate file fails");
    assert!(
        err.contains("server.pem") && err.contains("\"tls\""),
        "{err}"
    );
    let mut later = TlsMqtt::connected(tls, client(), "later", None).await;
    assert_eq!(
        later.server_cert(),
        next.der,
        "the previous certificate stays in force"
    );
    later.ping().await;
    before.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn missing_certificate_file_fails_bind_naming_the_file() {
    let pki = Pki::generate();
    let tls = TlsConfig {
        cert: pki.path("missing.pem"),
        ..pki.server_tls(WAIT)
    };
    let err = match Server::bind(config(tls), CancellationToken::new()).await {
        Ok(_) => panic!("bind succeeded without a certificate file"),
        Err(e) => e.to_string(),
    };
    let path = pki.path("missing.pem");
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("cannot read")
            && err.contains("\"tls\""),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_closes_connections_still_in_handshake_or_before_connect() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    let mut mid_handshake = RawClient::connect(tls).await;
    let mut no_connect_tls = tls_handshake(tls, pki.client(rustls::DEFAULT_VERSIONS))
        .await
        .expect("TLS handshake");
    let mut no_connect_plain = RawClient::connect(broker.addr_of("plain")).await;
    // A connected client proves both listeners' tasks are up before the shutdown.
    RawClient::connected(broker.addr_of("plain"), "probe")
        .await
        .ping()
        .await;

    // Well below handshake_timeout (5 s), connect_timeout (10 s) and the drain deadline (5 s):
    // shutdown itself must end these connections.
    let bound = Duration::from_secs(1);
    broker.shutdown.cancel();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(bound, mid_handshake.stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "mid-handshake socket: {closed:?}"
    );
    let closed = tokio::time::timeout(bound, no_connect_tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "TLS socket without CONNECT still open");
    let closed = tokio::time::timeout(bound, no_connect_plain.stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "plain socket without CONNECT: {closed:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn tls_connections_park_like_plain_ones() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let tls = broker.addr_of("tls");
    let mut tls13 =
        TlsMqtt::connected(tls, pki.client(&[&rustls::version::TLS13]), "tls13", None).await;
    let mut tls12 =
        TlsMqtt::connected(tls, pki.client(&[&rustls::version::TLS12]), "tls12", None).await;
    let mut plain = RawClient::connected(broker.addr_of("plain"), "plain").await;
    broker.parked(3).await;
    // Each resumes for its packet and parks again.
    tls13.ping().await;
    tls12.ping().await;
    plain.ping().await;
    broker.parked(3).await;
    tls13.ping().await;
    broker.stop().await;
}

/// A parked TLS connection is resumed at shutdown, and closes with close_notify: its client reads
/// a clean end of stream (rustls reports an error for a close without it).
#[tokio::test]
async fn a_parked_tls_client_gets_close_notify_at_shutdown() {
    let pki = Pki::generate();
    let broker = broker(pki.server_tls(WAIT)).await;
    let mut c = TlsMqtt::connected(
        broker.addr_of("tls"),
        pki.client(rustls::DEFAULT_VERSIONS),
        "c",
        None,
    )
    .await;
    broker.parked(1).await;
    broker.stop().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, c.stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(read.is_ok(), "closed without close_notify: {read:?}");
}

/// The identity a certificate gave a connection stays with it while parked: the ACL still knows
/// it as alice (whatever username its CONNECT named).
#[tokio::test]
async fn a_certificate_identity_and_its_acl_survive_parking() {
    let pki = Pki::generate();
    let acl = pki.path("acl");
    std::fs::write(
        &acl,
        "topic read #\n\nuser alice\ntopic readwrite alice/#\n",
    )
    .unwrap();
    let mut config = config(pki.mtls(true));
    config.auth.acl_file = Some(acl);
    let broker = TestBroker::start_with(config).await;
    let mut watcher = plain_subscriber(&broker, "watcher", "#").await;
    let mut alice = TlsMqtt::connected(
        broker.addr_of("tls"),
        pki.alice_client(),
        "a",
        Some("mallory"),
    )
    .await;
    broker.parked(2).await;
    for topic in ["mallory/x", "alice/x"] {
        alice
            .send(&Packet::Publish(protocol::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                packet_id: 0,
                payload: bytes::Bytes::from_static(b"m"),
                properties: None,
            }))
            .await;
    }
    // mallory/x was refused: the first message the watcher sees is alice's own.
    assert_eq!(&*watcher.expect_publish().await.topic, "alice/x");
    alice.ping().await;
    broker.stop().await;
}

/// A kick reaches a parked TLS connection: deleting its user and reloading closes it.
#[tokio::test]
async fn a_parked_tls_client_whose_user_is_deleted_is_closed() {
    let pki = Pki::generate();
    let passwd = pki.path("passwd");
    common::set_passwords(
        &passwd,
        &[("alice", b"alice"), ("bob", b"bob")],
        common::FAST_ARGON2,
    );
    let mut config = config(pki.server_tls(WAIT));
    config.auth.password_file = Some(passwd.clone());
    config.auth.allow_anonymous = Some(false);
    let broker = TestBroker::start_with(config).await;
    let tls = broker.addr_of("tls");
    let client = || pki.client(rustls::DEFAULT_VERSIONS);
    let mut alice = TlsMqtt::login(tls, client(), "alice").await;
    let mut bob = TlsMqtt::login(tls, client(), "bob").await;
    broker.parked(2).await;
    mqttd::auth::passwd::PasswordFile::update::<_, mqttd::auth::passwd::PasswdError>(
        &passwd,
        false,
        |f| Ok(((), f.remove("alice"))),
    )
    .unwrap();
    broker.reloader.reload().expect("reload succeeds");
    assert!(alice.recv().await.is_none(), "alice's connection is closed");
    bob.ping().await;
    broker.stop().await;
}
