//! PROXY protocol listeners end to end (issue 13): raw TCP clients write a v1 or v2 header, built
//! here byte by byte, then MQTT (or a TLS handshake). The header's address is the client's for
//! everything: the per-IP limit, the login back-off, the log. Untrusted proxies, malformed,
//! missing and unfinished headers are closed before MQTT starts.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::certs::Pki;
use common::{BrokerProcess, FAST_ARGON2, RawClient, TestBroker, WAIT, connect_packet};
use common::{config_file, login_packet, set_passwords};
use mqttd::config::{Config, ListenerConfig, ProxyProtocol};
use mqttd::protocol::reason::v3;
use mqttd::protocol::{Packet, QoS};
use mqttd::stats::Limit;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`.
fn v1(src: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if src.is_ipv4() { "10.0.0.1" } else { "::1" };
    format!("PROXY {family} {} {dst} {} 1883\r\n", src.ip(), src.port()).into_bytes()
}

/// A v2 PROXY header over TCP from `src` (IPv4 or IPv6), followed by `tlvs`.
fn v2(src: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    let family = match src.ip() {
        IpAddr::V4(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&[10, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    payload.extend_from_slice(&src.port().to_be_bytes());
    payload.extend_from_slice(&1883u16.to_be_bytes());
    payload.extend_from_slice(tlvs);
    v2_raw(0x21, family, &payload)
}

/// The v2 header `LOCAL` a proxy's health check sends: no address.
fn v2_local() -> Vec<u8> {
    v2_raw(0x20, 0x00, &[])
}

fn v2_raw(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[version_command, family]);
    h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// HAProxy's SSL TLV: client flags, verify result, a CN sub-TLV.
fn ssl_tlv(client: u8, verify: u32, cn: &str) -> Vec<u8> {
    let mut value = vec![client];
    value.extend_from_slice(&verify.to_be_bytes());
    value.extend(tlv(0x21, b"TLSv1.3"));
    value.extend(tlv(0x22, cn.as_bytes()));
    tlv(0x20, &value)
}

/// A listener named "lb" on 127.0.0.1:0 expecting `version` from `trusted`.
fn proxied(version: ProxyProtocol, trusted: &[&str]) -> ListenerConfig {
    ListenerConfig {
        proxy_protocol: version,
        proxy_trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        ..common::listener("lb")
    }
}

/// A broker with the plain listener and `lb`.
fn config_with(lb: ListenerConfig) -> Config {
    let mut c = common::config();
    c.listeners.push(lb);
    c
}

/// Connects from `source` (any 127/8 address) and writes `header`.
async fn through_proxy_from(to: SocketAddr, source: IpAddr, header: &[u8]) -> RawClient {
    let mut c = common::connect_from(to, source).await;
    c.send_bytes(header).await;
    c
}

async fn through_proxy(to: SocketAddr, header: &[u8]) -> RawClient {
    through_proxy_from(to, IpAddr::from([127, 0, 0, 1]), header).await
}

/// Sends a 3.1.1 CONNECT and returns the CONNACK code, or None if the broker closed instead.
async fn connack(c: &mut RawClient, client_id: &str) -> Option<u8> {
    let _ = c
        .stream_write(&Packet::Connect(Box::new(connect_packet(client_id))))
        .await;
    closed_or_connack(c).await
}

async fn closed_or_connack(c: &mut RawClient) -> Option<u8> {
    match c.recv_within(WAIT).await {
        Ok(Some(Packet::ConnAck(ack))) => Some(c.wire_code(&ack)),
        Ok(None) => None,
        other => panic!("expected a CONNACK or the close, got {other:?}"),
    }
}

#[tokio::test]
async fn v1_and_v2_headers_from_a_trusted_proxy_are_accepted() {
    for (version, header) in [
        (ProxyProtocol::V1, v1(addr("203.0.113.7:5000"))),
        (ProxyProtocol::V1, v1(addr("[2001:db8::7]:5000"))),
        (ProxyProtocol::V1, b"PROXY UNKNOWN\r\n".to_vec()),
        (ProxyProtocol::V2, v2(addr("203.0.113.7:5000"), &[])),
        (
            ProxyProtocol::V2,
            v2(addr("[2001:db8::7]:5000"), &tlv(0x04, &[0; 8])),
        ),
        (ProxyProtocol::V2, v2_local()),
    ] {
        let broker = TestBroker::start_with(config_with(proxied(version, &["127.0.0.1"]))).await;
        let mut c = through_proxy(broker.addr_of("lb"), &header).await;
        assert_eq!(connack(&mut c, "c").await, Some(v3::ACCEPTED), "{header:?}");
        c.pingpong().await;
        broker.stop().await;
    }
}

/// The real binary's log names the address from the header, not the proxy's.
#[tokio::test]
async fn the_log_names_the_address_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "\n[[listener]]\nname = \"v1\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = \"v1\"\n\
                 proxy_trusted = [\"127.0.0.0/8\"]\n\n[[listener]]\nname = \"v2\"\n\
                 bind = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1\"]\n";
    let broker = BrokerProcess::start(&config_file(dir.path(), extra)).await;
    let v1_addr = listening_on(&broker, "v1").await;
    let v2_addr = listening_on(&broker, "v2").await;
    let mut a = through_proxy(v1_addr, &v1(addr("198.51.100.1:4001"))).await;
    assert_eq!(connack(&mut a, "via-v1").await, Some(v3::ACCEPTED));
    let mut b = through_proxy(v2_addr, &v2(addr("[2001:db8::2]:4002"), &[])).await;
    assert_eq!(connack(&mut b, "via-v2").await, Some(v3::ACCEPTED));
    broker.wait_for_line("peer=198.51.100.1:4001").await;
    broker.wait_for_line("peer=[2001:db8::2]:4002").await;
    let log = broker.stop().await;
    let connected: Vec<&str> = log.lines().filter(|l| l.contains(" connected")).collect();
    assert_eq!(connected.len(), 2, "{log}");
    assert!(
        connected.iter().all(|l| !l.contains("peer=127.0.0.1")),
        "{log}"
    );
}

/// The address of the listener named `name`, from the binary's "listening on" lines.
async fn listening_on(broker: &BrokerProcess, name: &str) -> SocketAddr {
    broker.wait_for_line(&format!("listener={name}")).await;
    let log = broker.output();
    let line = log
        .lines()
        .find(|l| l.contains("listening on") && l.contains(&format!("listener={name}")))
        .unwrap_or_else(|| panic!("no listening line for {name}: {log}"));
    let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

#[tokio::test]
async fn a_header_from_an_untrusted_address_is_refused() {
    // 127.0.0.2 is not trusted; a list without loopback trusts no test client at all.
    for (trusted, source) in [
        (&["127.0.0.1"][..], [127, 0, 0, 2]),
        (&["10.0.0.0/8"], [127, 0, 0, 1]),
    ] {
        for (version, header) in [
            (ProxyProtocol::V1, v1(addr("203.0.113.7:5000"))),
            (ProxyProtocol::V2, v2(addr("203.0.113.7:5000"), &[])),
        ] {
            let broker = TestBroker::start_with(config_with(proxied(version, trusted))).await;
            let mut c = through_proxy_from(broker.addr_of("lb"), source.into(), &header).await;
            assert_eq!(connack(&mut c, "c").await, None, "{trusted:?} {source:?}");
            broker.stop().await;
        }
    }
}

#[tokio::test]
async fn malformed_or_missing_headers_are_refused() {
    let good_v2 = v2(addr("203.0.113.7:5000"), &[]);
    let mut bad_version = good_v2.clone();
    bad_version[12] = 0x11;
    let mut too_long = v2_raw(0x21, 0x11, &[0; 12]);
    too_long[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    let connect_bytes = common::wire::connect_311("direct");
    let cases: Vec<(ProxyProtocol, Vec<u8>)> = vec![
        (
            ProxyProtocol::V1,
            b"PROXY TCP4 203.0.113.777 10.0.0.1 5000 1883\r\n".to_vec(),
        ),
        (
            ProxyProtocol::V1,
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5000\r\n".to_vec(),
        ),
        (
            ProxyProtocol::V1,
            format!("PROXY UNKNOWN {}", "x".repeat(120)).into_bytes(),
        ),
        (
            ProxyProtocol::V1,
            b"proxy tcp4 203.0.113.7 10.0.0.1 5000 1883\r\n".to_vec(),
        ),
        (ProxyProtocol::V2, bad_version),
        (ProxyProtocol::V2, v2_raw(0x21, 0x11, &[0; 11])),
        (
            ProxyProtocol::V2,
            v2(addr("203.0.113.7:5000"), &[0x04, 0x00, 0x09, 1]),
        ),
        (ProxyProtocol::V2, too_long),
        // The other version.
        (ProxyProtocol::V1, good_v2),
        (ProxyProtocol::V2, v1(addr("203.0.113.7:5000"))),
        // No header: MQTT straight away.
        (ProxyProtocol::V1, connect_bytes.clone()),
        (ProxyProtocol::V2, connect_bytes),
    ];
    for (version, bytes) in cases {
        let broker = TestBroker::start_with(config_with(proxied(version, &["127.0.0.1"]))).await;
        let mut c = through_proxy(broker.addr_of("lb"), &bytes).await;
        // Whatever follows (here a CONNECT) gets no answer: the connection is closed.
        let _ = c
            .stream_write(&Packet::Connect(Box::new(connect_packet("c"))))
            .await;
        assert_eq!(
            closed_or_connack(&mut c).await,
            None,
            "{version:?} {bytes:?}"
        );
        broker.stop().await;
    }
}

/// A header that never ends is closed after `limits.connect_timeout` (paused time: the test
/// takes no real 10 s).
#[tokio::test(start_paused = true)]
async fn a_header_that_never_completes_is_closed_after_connect_timeout() {
    for (version, partial) in [
        (ProxyProtocol::V1, b"PROXY TCP4 203.0.113.7 10.0".to_vec()),
        (
            ProxyProtocol::V2,
            v2(addr("203.0.113.7:5000"), &[])[..20].to_vec(),
        ),
        (ProxyProtocol::V2, Vec::new()),
    ] {
        let mut c = config_with(proxied(version, &["127.0.0.1"]));
        c.limits.connect_timeout = Duration::from_secs(10);
        let broker = TestBroker::start_with(c).await;
        let t0 = Instant::now();
        let mut client = through_proxy(broker.addr_of("lb"), &partial).await;
        let end = client.recv_within(Duration::from_secs(60)).await;
        assert_eq!(end, Ok(None), "closed");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
        assert_eq!(broker.router.stats.limit_hits(Limit::ConnectTimeout), 1);
        broker.stop().await;
    }
}

/// `max_connections_per_ip = 1` counts the header's address: two clients behind one proxy are
/// two addresses; the same address twice is refused; a LOCAL header counts as the proxy.
#[tokio::test]
async fn the_per_ip_limit_counts_the_address_in_the_header() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let header = |a: &str| match version {
            ProxyProtocol::V1 => v1(addr(a)),
            _ => v2(addr(a), &[]),
        };
        let mut c = config_with(proxied(version, &["127.0.0.1"]));
        c.limits.max_connections_per_ip = Some(1);
        let broker = TestBroker::start_with(c).await;
        let lb = broker.addr_of("lb");
        let mut first = through_proxy(lb, &header("203.0.113.1:1000")).await;
        assert_eq!(connack(&mut first, "first").await, Some(v3::ACCEPTED));
        let mut other = through_proxy(lb, &header("203.0.113.2:1000")).await;
        assert_eq!(connack(&mut other, "other").await, Some(v3::ACCEPTED));
        let mut again = through_proxy(lb, &header("203.0.113.1:2000")).await;
        assert_eq!(connack(&mut again, "again").await, None, "{version:?}");
        assert_eq!(broker.router.stats.limit_hits(Limit::ConnectionsPerIp), 1);
        // The proxy's own address (127.0.0.1) still has its slot.
        let local = match version {
            ProxyProtocol::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
            _ => v2_local(),
        };
        let mut health = through_proxy(lb, &local).await;
        assert_eq!(connack(&mut health, "health").await, Some(v3::ACCEPTED));
        let mut direct = RawClient::connect(broker.addr_of("plain")).await;
        assert_eq!(
            connack(&mut direct, "direct").await,
            None,
            "127.0.0.1 is taken"
        );
        first.pingpong().await;
        other.pingpong().await;
        broker.stop().await;
    }
}

/// Failed logins slow down the address in the header, not the proxy (and so not every other
/// client behind it). Paused time: the back-off delay costs nothing.
#[tokio::test(start_paused = true)]
async fn login_back_off_is_keyed_on_the_address_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(&passwd, &[("alice", b"alice-pw")], FAST_ARGON2);
    let mut c = config_with(proxied(ProxyProtocol::V2, &["127.0.0.1"]));
    c.auth.password_file = Some(passwd);
    c.auth.allow_anonymous = Some(false);
    c.auth.cache_ttl = Duration::ZERO;
    let broker = TestBroker::start_with(c).await;
    let lb = broker.addr_of("lb");
    let login = |from: &'static str, user: String, password: &'static [u8]| async move {
        let mut c = through_proxy(lb, &v2(addr(from), &[])).await;
        c.login(login_packet("c", Some(&user), Some(password)))
            .await
    };
    // Five failures (the default max_failures) from the guesser's address: its next turn is
    // 1 s after the fifth.
    for i in 0..5 {
        let code = login("203.0.113.66:1000", format!("nobody-{i}"), b"guess").await;
        assert_eq!(code, v3::BAD_USERNAME_OR_PASSWORD);
    }
    let t0 = Instant::now();
    let code = login("203.0.113.5:1000", "alice".into(), b"alice-pw").await;
    assert_eq!(code, v3::ACCEPTED);
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "another address behind the proxy waits not"
    );
    let code = login("203.0.113.66:2000", "alice".into(), b"alice-pw").await;
    assert_eq!(code, v3::ACCEPTED);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "the guessing address waits for its turn: {:?}",
        t0.elapsed()
    );
    broker.stop().await;
}

/// TLS at the proxy, `use_identity_as_username`: the CN of a certificate the proxy verified is
/// the username (shown by an ACL that lets only alice read `alice/#`); unverified, it is not.
#[tokio::test]
async fn a_verified_client_certificate_from_the_ssl_tlv_is_the_username() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic read alice/#\n").unwrap();
    let mut lb = proxied(ProxyProtocol::V2, &["127.0.0.1"]);
    lb.use_identity_as_username = true;
    lb.allow_anonymous = Some(false);
    let mut c = config_with(lb);
    c.auth.acl_file = Some(acl);
    let broker = TestBroker::start_with(c).await;
    let lb = broker.addr_of("lb");
    let src = addr("203.0.113.7:5000");

    // SSL | CERT_CONN, verify 0: alice, whose ACL lets her read alice/# and nothing else.
    let mut alice = through_proxy(lb, &v2(src, &ssl_tlv(0x03, 0, "alice"))).await;
    assert_eq!(connack(&mut alice, "a").await, Some(v3::ACCEPTED));
    assert_eq!(
        alice.subscribe("alice/#", QoS::AtLeastOnce, 1).await,
        [0x01]
    );
    assert_eq!(alice.subscribe("bob/#", QoS::AtLeastOnce, 2).await, [0x80]);
    // SSL | CERT_SESS (a resumed TLS session), verify 0: alice too.
    let mut resumed = through_proxy(lb, &v2(src, &ssl_tlv(0x05, 0, "alice"))).await;
    assert_eq!(connack(&mut resumed, "r").await, Some(v3::ACCEPTED));

    // Not verified, no certificate, or not over TLS: no identity, so anonymous: refused.
    for (client, verify) in [(0x03, 1), (0x01, 0), (0x06, 0)] {
        let mut c = through_proxy(lb, &v2(src, &ssl_tlv(client, verify, "alice"))).await;
        let code = connack(&mut c, "n").await;
        assert_eq!(code, Some(v3::NOT_AUTHORIZED), "{client:#x} {verify}");
    }
    // Verified but no CN (HAProxy without send-proxy-v2-ssl-cn): closed, not anonymous.
    let mut value = vec![0x03, 0, 0, 0, 0];
    value.extend(tlv(0x21, b"TLSv1.3"));
    let mut c = through_proxy(lb, &v2(src, &tlv(0x20, &value))).await;
    assert_eq!(connack(&mut c, "x").await, None);
    broker.stop().await;
}

/// The listener without `use_identity_as_username` ignores the SSL TLV.
#[tokio::test]
async fn the_ssl_tlv_is_ignored_unless_asked_for() {
    let mut lb = proxied(ProxyProtocol::V2, &["127.0.0.1"]);
    lb.allow_anonymous = Some(false);
    let broker = TestBroker::start_with(config_with(lb)).await;
    let header = v2(addr("203.0.113.7:5000"), &ssl_tlv(0x03, 0, "alice"));
    let mut c = through_proxy(broker.addr_of("lb"), &header).await;
    assert_eq!(connack(&mut c, "c").await, Some(v3::NOT_AUTHORIZED));
    broker.stop().await;
}

/// TLS passthrough: the proxy sends the header, then the client's TLS bytes; mqttd terminates
/// TLS (mTLS here, with the certificate's CN as the username).
#[tokio::test]
async fn tls_passthrough_after_the_header() {
    let pki = Pki::generate();
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let mut lb = proxied(version, &["127.0.0.1"]);
        lb.tls = Some(pki.mtls(true));
        lb.allow_anonymous = Some(false);
        let mut c = config_with(lb);
        c.limits.max_connections_per_ip = Some(1);
        let broker = TestBroker::start_with(c).await;
        let lb = broker.addr_of("lb");
        let src = addr("203.0.113.7:5000");
        let header = match version {
            ProxyProtocol::V1 => v1(src),
            _ => v2(src, &[]),
        };
        let mut client = tls_through_proxy(lb, &header, &pki).await;
        assert_eq!(client.login(connect_packet("tls")).await, v3::ACCEPTED);
        assert_eq!(client.subscribe("t", QoS::AtMostOnce, 1).await, [0x00]);
        // The header's address holds the one per-IP slot: another address behind the same
        // proxy gets in, the same one again does not.
        let other = match version {
            ProxyProtocol::V1 => v1(addr("203.0.113.8:5000")),
            _ => v2(addr("203.0.113.8:5000"), &[]),
        };
        let mut second = tls_through_proxy(lb, &other, &pki).await;
        assert_eq!(second.login(connect_packet("tls2")).await, v3::ACCEPTED);
        let mut tcp = TcpStream::connect(lb).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let mut again = RawClient::from_stream(tcp);
        assert_eq!(closed_or_connack(&mut again).await, None);
        // A TLS handshake without the header is refused.
        let direct = TcpStream::connect(lb).await.unwrap();
        let tls = TlsConnector::from(Arc::new(pki.alice_client()));
        let name = ServerName::try_from("localhost").unwrap();
        let handshake = tokio::time::timeout(WAIT, tls.connect(name, direct)).await;
        assert!(
            matches!(handshake, Ok(Err(_))),
            "handshake without a header"
        );
        broker.stop().await;
    }
}

async fn tls_through_proxy(
    to: SocketAddr,
    header: &[u8],
    pki: &Pki,
) -> RawClient<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4().unwrap();
    let mut tcp = tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect");
    tcp.write_all(header).await.unwrap();
    let tls = TlsConnector::from(Arc::new(pki.alice_client()));
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(WAIT, tls.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    RawClient::from_stream(stream)
}
