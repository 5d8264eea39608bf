//! The CoAP gateway end to end: `coap-client-notls` (libcoap, Debian `libcoap3-bin`) as the real
//! client, and a raw UDP client for exact codes, silent observers, rebinding and floods.
//! MQTT subscribers (rumqttc) see what CoAP publishes, and the other way round.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::{
    FAST_ARGON2, TestBroker, WAIT, config, eventually, mqtt_options, next_publish, rumqtt_client,
    set_passwords,
};
use mqttd::config::{CoapConfig, Config};
use mqttd::gateway::Kind;
use rumqttc::QoS;
use tokio::net::UdpSocket;

const CLIENT: &str = "coap-client-notls";

/// A config with one anonymous CoAP gateway `coap` on 127.0.0.1:0.
fn coap_config(tune: impl FnOnce(&mut CoapConfig)) -> Config {
    let mut c = config();
    let mut g = CoapConfig::new("coap", "127.0.0.1:0".parse().unwrap());
    tune(&mut g);
    c.coap = vec![g];
    c
}

fn metric(broker: &TestBroker, name: &str) -> u64 {
    let g = broker.gateway(Kind::Coap, "coap");
    g.metrics()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("metric {name}"))
        .value
}

/// Runs coap-client-notls with `args` (the URI last) and returns (exit ok, stdout, stderr).
/// Fails, never skips, when the client is not installed.
async fn coap_client(args: &[&str]) -> (bool, String, String) {
    let child = common::spawn(common::command(CLIENT).args(args));
    let out = common::output_within(child, Duration::from_secs(20)).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn uri(broker: &TestBroker, path_and_query: &str) -> String {
    format!("coap://{}{path_and_query}", broker.coap_addr("coap"))
}

/// A raw CoAP client over its own UDP socket.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
    mid: u16,
}

impl Raw {
    async fn new(server: SocketAddr) -> Raw {
        Raw {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            mid: rand::random(),
        }
    }

    fn request(
        &mut self,
        method: RequestType,
        path: &str,
        query: &[&str],
        confirmable: bool,
    ) -> Packet {
        let mut p = Packet::new();
        self.mid = self.mid.wrapping_add(1);
        p.header.message_id = self.mid;
        p.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.header.code = MessageClass::Request(method);
        p.set_token(self.mid.to_be_bytes().to_vec());
        for s in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p
    }

    async fn send(&self, p: &Packet) {
        self.sock
            .send_to(&p.to_bytes_unlimited().unwrap(), self.server)
            .await
            .unwrap();
    }

    async fn recv_within(&self, limit: Duration) -> Option<Packet> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(limit, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Packet::from_bytes(&buf[..n]).expect("the gateway sends valid CoAP"))
    }

    async fn recv(&self) -> Packet {
        self.recv_within(WAIT).await.expect("a datagram in time")
    }

    /// Sends `p` and returns the response with its token.
    async fn call(&self, p: &Packet) -> Packet {
        self.send(p).await;
        loop {
            let r = self.recv().await;
            if r.get_token() == p.get_token() && r.header.code != MessageClass::Empty {
                return r;
            }
        }
    }

    async fn code(
        &mut self,
        method: RequestType,
        path: &str,
        query: &[&str],
        payload: &[u8],
    ) -> ResponseType {
        let mut p = self.request(method, path, query, true);
        p.payload = payload.to_vec();
        code(&self.call(&p).await)
    }
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_con_and_non_reach_an_mqtt_subscriber() {
    let broker = TestBroker::start_with(coap_config(|_| {})).await;
    let (sub, mut rx, _) = rumqtt_client(mqtt_options(broker.addr, "sub")).await;
    sub.subscribe("coap/#", QoS::AtLeastOnce).await.unwrap();
    eventually("subscribed", || broker.router.subscription_count() == 1).await;

    let (ok, _, err) = coap_client(&[
        "-m",
        "post",
        "-e",
        "hello",
        &uri(&broker, "/ps/coap/a?c=dev1"),
    ])
    .await;
    assert!(ok, "coap-client failed: {err}");
    let p = next_publish(&mut rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("coap/a", &b"hello"[..], QoS::AtLeastOnce)
    );

    let (ok, _, err) = coap_client(&[
        "-N",
        "-m",
        "put",
        "-e",
        "world",
        &uri(&broker, "/ps/coap/b?c=dev1"),
    ])
    .await;
    assert!(ok, "coap-client failed: {err}");
    let p = next_publish(&mut rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("coap/b", &b"world"[..], QoS::AtMostOnce)
    );

    // Exact codes: POST 2.01, PUT 2.04, a bad topic 4.00, an unknown resource 4.04.
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    assert_eq!(
        raw.code(RequestType::Post, "/ps/coap/c", &["qos=0"], b"x")
            .await,
        ResponseType::Created
    );
    assert_eq!(
        raw.code(RequestType::Put, "/ps/coap/c", &[], b"y").await,
        ResponseType::Changed
    );
    assert_eq!(
        raw.code(RequestType::Post, "/ps/coap/+", &[], b"z").await,
        ResponseType::BadRequest
    );
    assert_eq!(
        raw.code(RequestType::Post, "/nothing", &[], b"z").await,
        ResponseType::NotFound
    );
    assert_eq!(
        raw.code(RequestType::Post, "/ps/coap/c", &["qos=7"], b"z")
            .await,
        ResponseType::BadRequest
    );
    assert_eq!(metric(&broker, "published"), 4);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observes_with_wildcards_through_coap_client() {
    let broker = TestBroker::start_with(coap_config(|_| {})).await;
    let (mqtt, _rx, _) = rumqtt_client(mqtt_options(broker.addr, "pub")).await;
    let child = common::spawn(common::command(CLIENT).args([
        "-s",
        "4",
        "-w",
        "-B",
        "8",
        &uri(&broker, "/ps/obs/%2B/t?c=watcher"),
    ]));
    eventually("observing", || metric(&broker, "observers") == 1).await;
    mqtt.publish("obs/x/t", QoS::AtLeastOnce, false, "first")
        .await
        .unwrap();
    mqtt.publish("obs/y/t", QoS::AtMostOnce, false, "second")
        .await
        .unwrap();
    mqtt.publish("obs/y/other", QoS::AtMostOnce, false, "not-matching")
        .await
        .unwrap();
    let out = common::output_within(child, Duration::from_secs(15)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("first") && stdout.contains("second"),
        "notifications: {stdout:?}"
    );
    assert!(!stdout.contains("not-matching"), "{stdout:?}");
    assert!(metric(&broker, "notifications") >= 2);

    // '#' (URL-encoded) with a retained message that arrives as the first notification.
    mqtt.publish("deep/a/b", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    eventually("retained", || broker.router.retained_count() == 1).await;
    let (ok, stdout, err) = coap_client(&[
        "-s",
        "1",
        "-w",
        "-B",
        "4",
        &uri(&broker, "/ps/deep/%23?c=w2"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(stdout.contains("kept"), "{stdout:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_get_and_block_wise_both_ways() {
    let broker = TestBroker::start_with(coap_config(|_| {})).await;
    let (mqtt, _rx, _) = rumqtt_client(mqtt_options(broker.addr, "pub")).await;
    mqtt.publish("r/small", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    let big: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    mqtt.publish("r/big", QoS::AtLeastOnce, true, big.clone())
        .await
        .unwrap();
    eventually("retained", || broker.router.retained_count() == 2).await;

    let (ok, stdout, err) = coap_client(&[&uri(&broker, "/ps/r/small?c=g")]).await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim_end(), "kept");
    let (ok, stdout, err) = coap_client(&["-b", "64", &uri(&broker, "/ps/r/big?c=g")]).await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim_end(), big, "Block2 reassembled by the client");
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    assert_eq!(
        raw.code(RequestType::Get, "/ps/r/none", &[], b"").await,
        ResponseType::NotFound
    );
    assert_eq!(
        raw.code(RequestType::Get, "/ps/r/+", &[], b"").await,
        ResponseType::BadRequest
    );

    // Block1: a 1500-byte body in 64-byte blocks reaches the subscriber whole.
    let (sub, mut rx, _) = rumqtt_client(mqtt_options(broker.addr, "sub")).await;
    sub.subscribe("up/#", QoS::AtLeastOnce).await.unwrap();
    eventually("subscribed", || broker.router.subscription_count() == 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, &big.as_bytes()[..1500]).unwrap();
    let (ok, _, err) = coap_client(&[
        "-m",
        "put",
        "-b",
        "64",
        "-f",
        file.to_str().unwrap(),
        &uri(&broker, "/ps/up/file?c=u"),
    ])
    .await;
    assert!(ok, "{err}");
    let p = next_publish(&mut rx).await;
    assert_eq!(&p.payload[..], &big.as_bytes()[..1500]);

    // /.well-known/core lists /ps.
    let (ok, stdout, err) = coap_client(&[&uri(&broker, "/.well-known/core")]).await;
    assert!(ok, "{err}");
    assert!(stdout.contains("</ps>"), "{stdout:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_packet_limit_is_413() {
    let mut c = coap_config(|_| {});
    c.limits.max_packet_size = 1024;
    let broker = TestBroker::start_with(c).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    assert_eq!(
        raw.code(RequestType::Post, "/ps/t", &[], &[1u8; 1100])
            .await,
        ResponseType::RequestEntityTooLarge
    );
    // Block-wise, the limit applies to the assembled body.
    let mut last = ResponseType::Continue;
    for num in 0..20u32 {
        let mut p = raw.request(RequestType::Post, "/ps/t", &[], true);
        p.add_option(
            CoapOption::Block1,
            mqttd::gateway::coap::block::Block {
                num,
                more: true,
                szx: 2,
            }
            .encode(),
        );
        p.payload = vec![2u8; 64];
        last = code(&raw.call(&p).await);
        if last != ResponseType::Continue {
            break;
        }
    }
    assert_eq!(last, ResponseType::RequestEntityTooLarge);
    assert_eq!(metric(&broker, "refused_too_large"), 2);
    broker.stop().await;
}

/// A broker with users alice and bob (password = name), an ACL, and a CoAP gateway that
/// allows no anonymous requests.
async fn secured(tune: impl FnOnce(&mut CoapConfig)) -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(
        &passwd,
        &[("alice", b"alice"), ("bob", b"bob")],
        FAST_ARGON2,
    );
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite alice/#\n\nuser bob\ntopic readwrite #\n",
    )
    .unwrap();
    let mut c = coap_config(tune);
    c.auth.password_file = Some(passwd);
    c.auth.acl_file = Some(acl);
    (TestBroker::start_with(c).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_the_acl_decide() {
    let (broker, _dir) = secured(|_| {}).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    let ok = ["c=d1", "u=alice", "p=alice"];
    assert_eq!(
        raw.code(RequestType::Post, "/ps/alice/t", &ok, b"x").await,
        ResponseType::Created
    );
    assert_eq!(
        raw.code(
            RequestType::Post,
            "/ps/alice/t",
            &["c=d1", "u=alice", "p=wrong"],
            b"x"
        )
        .await,
        ResponseType::Unauthorized
    );
    assert_eq!(
        raw.code(RequestType::Post, "/ps/alice/t", &["c=d1"], b"x")
            .await,
        ResponseType::Unauthorized,
        "anonymous"
    );
    assert_eq!(
        raw.code(RequestType::Post, "/ps/other/t", &ok, b"x").await,
        ResponseType::Forbidden
    );
    let mut p = raw.request(RequestType::Get, "/ps/other/%23", &ok, true);
    p.add_option(CoapOption::Observe, vec![]);
    assert_eq!(code(&raw.call(&p).await), ResponseType::Forbidden);
    assert_eq!(
        raw.code(RequestType::Get, "/ps/other/t", &ok, b"").await,
        ResponseType::Forbidden
    );
    // The same through coap-client: a refusal is not a success.
    let (_, stdout, stderr) = coap_client(&[
        "-m",
        "post",
        "-e",
        "x",
        &uri(&broker, "/ps/alice/t?c=d2&u=alice&p=bad"),
    ])
    .await;
    assert!(
        format!("{stdout}{stderr}").contains("4.01"),
        "{stdout} {stderr}"
    );
    assert!(metric(&broker, "refused_unauthorized") >= 3);
    assert!(metric(&broker, "refused_forbidden") >= 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_mode_tokens() {
    let (broker, _dir) = secured(|g| g.heartbeat = Duration::from_secs(1)).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    let p = raw.request(
        RequestType::Post,
        "/mqtt/connection",
        &["clientid=dev", "username=bob", "password=bob"],
        true,
    );
    let r = raw.call(&p).await;
    assert_eq!(code(&r), ResponseType::Created);
    let token = String::from_utf8(r.payload.clone()).unwrap();
    assert_eq!(token.len(), 32);
    let with = format!("token={token}");
    assert_eq!(
        raw.code(
            RequestType::Post,
            "/ps/any/t",
            &["clientid=dev", &with],
            b"x"
        )
        .await,
        ResponseType::Created
    );
    assert_eq!(
        raw.code(
            RequestType::Post,
            "/ps/any/t",
            &["clientid=other", &with],
            b"x"
        )
        .await,
        ResponseType::Unauthorized
    );
    assert_eq!(
        raw.code(
            RequestType::Put,
            "/mqtt/connection",
            &["clientid=dev", &with],
            b""
        )
        .await,
        ResponseType::Changed
    );
    assert_eq!(
        raw.code(
            RequestType::Delete,
            "/mqtt/connection",
            &["clientid=dev", &with],
            b""
        )
        .await,
        ResponseType::Deleted
    );
    assert_eq!(
        raw.code(RequestType::Post, "/ps/any/t", &[&with], b"x")
            .await,
        ResponseType::Unauthorized
    );

    // Through coap-client, then expiry: no heartbeat within coap.heartbeat (1 s).
    let (ok, stdout, err) = coap_client(&[
        "-m",
        "post",
        &uri(
            &broker,
            "/mqtt/connection?clientid=d2&username=bob&password=bob",
        ),
    ])
    .await;
    assert!(ok, "{err}");
    let with = format!("token={}", stdout.trim());
    assert_eq!(
        raw.code(RequestType::Post, "/ps/any/t", &[&with], b"x")
            .await,
        ResponseType::Created
    );
    assert_eq!(metric(&broker, "sessions"), 1);
    eventually("token expired", || metric(&broker, "sessions") == 0).await;
    assert_eq!(
        raw.code(RequestType::Post, "/ps/any/t", &[&with], b"x")
            .await,
        ResponseType::Unauthorized
    );
    broker.stop().await;
}

/// Observe `filter` from `raw` as client `c` (confirmable, so QoS 1 notifications).
async fn observe(raw: &mut Raw, filter: &str, query: &[&str]) -> Vec<u8> {
    let mut p = raw.request(RequestType::Get, filter, query, true);
    p.add_option(CoapOption::Observe, vec![]);
    let r = raw.call(&p).await;
    assert_eq!(code(&r), ResponseType::Content);
    assert!(r.get_first_option(CoapOption::Observe).is_some());
    p.get_token().to_vec()
}

async fn ack(raw: &Raw, n: &Packet) {
    if n.header.get_type() == MessageType::Confirmable {
        let mut a = Packet::new();
        a.header.set_type(MessageType::Acknowledgement);
        a.header.code = MessageClass::Empty;
        a.header.message_id = n.header.message_id;
        raw.send(&a).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_rebinding_moves_the_notifications() {
    let broker = TestBroker::start_with(coap_config(|_| {})).await;
    let (mqtt, _rx, _) = rumqtt_client(mqtt_options(broker.addr, "pub")).await;
    let mut a = Raw::new(broker.coap_addr("coap")).await;
    let token = observe(&mut a, "/ps/nat/t", &["c=sensor"]).await;
    mqtt.publish("nat/t", QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let n = a.recv().await;
    assert_eq!((n.get_token(), &n.payload[..]), (&token[..], &b"one"[..]));
    ack(&a, &n).await;
    // The device's NAT gives it a new port: its next request comes from there.
    let mut b = Raw::new(broker.coap_addr("coap")).await;
    assert_eq!(
        b.code(RequestType::Post, "/ps/nat/other", &["c=sensor"], b"hi")
            .await,
        ResponseType::Created
    );
    mqtt.publish("nat/t", QoS::AtLeastOnce, false, "two")
        .await
        .unwrap();
    let n = b.recv().await;
    assert_eq!((n.get_token(), &n.payload[..]), (&token[..], &b"two"[..]));
    ack(&b, &n).await;
    assert!(
        a.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing to the old port"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_observer_is_dropped_and_a_reset_ends_one() {
    let broker = TestBroker::start_with(coap_config(|g| {
        g.ack_timeout = Duration::from_millis(100);
        g.max_retransmit = 2;
    }))
    .await;
    let (mqtt, _rx, _) = rumqtt_client(mqtt_options(broker.addr, "pub")).await;
    let mut silent = Raw::new(broker.coap_addr("coap")).await;
    observe(&mut silent, "/ps/quiet/t", &["c=silent"]).await;
    assert_eq!(metric(&broker, "observers"), 1);
    mqtt.publish("quiet/t", QoS::AtLeastOnce, false, "hello?")
        .await
        .unwrap();
    let first = silent.recv().await;
    assert_eq!(first.header.get_type(), MessageType::Confirmable);
    let again = silent.recv().await;
    assert_eq!(
        again.header.message_id, first.header.message_id,
        "retransmitted"
    );
    eventually("silent observer dropped", || {
        metric(&broker, "observers") == 0
    })
    .await;
    assert_eq!(metric(&broker, "observers_dropped"), 1);
    assert_eq!(metric(&broker, "retransmissions"), 2);
    eventually("its subscription gone", || {
        broker.router.subscription_count() == 0
    })
    .await;

    // A Reset in answer to a notification ends the observation (RFC 7641 3.6).
    let mut r = Raw::new(broker.coap_addr("coap")).await;
    observe(&mut r, "/ps/quiet/t", &["c=resetter", "qos=0"]).await;
    mqtt.publish("quiet/t", QoS::AtMostOnce, false, "n")
        .await
        .unwrap();
    let n = r.recv().await;
    assert_eq!(n.header.get_type(), MessageType::NonConfirmable);
    let mut rst = Packet::new();
    rst.header.set_type(MessageType::Reset);
    rst.header.code = MessageClass::Empty;
    rst.header.message_id = n.header.message_id;
    r.send(&rst).await;
    eventually("observation reset", || metric(&broker, "observers") == 0).await;

    // A QoS 0 observer that went away silently: every 100th notification is confirmable, and
    // unacknowledged it drops the observer (RFC 7641 section 4.5).
    let mut gone = Raw::new(broker.coap_addr("coap")).await;
    observe(&mut gone, "/ps/quiet/t", &["c=gone", "qos=0"]).await;
    for i in 0..101 {
        mqtt.publish("quiet/t", QoS::AtMostOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut kinds = Vec::new();
    while kinds.len() < 101 {
        kinds.push(gone.recv().await.header.get_type());
    }
    assert_eq!(kinds[100], MessageType::Confirmable, "the 101st probes");
    assert!(
        kinds[..100]
            .iter()
            .all(|k| *k == MessageType::NonConfirmable)
    );
    eventually("vanished observer dropped", || {
        metric(&broker, "observers") == 0
    })
    .await;
    assert_eq!(metric(&broker, "observers_dropped"), 2);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_is_rate_limited_not_the_others() {
    let broker = TestBroker::start_with(coap_config(|g| {
        g.request_rate = 5;
        g.request_burst = 5;
    }))
    .await;
    let mut flood = Raw::new(broker.coap_addr("coap")).await;
    for _ in 0..200 {
        let p = flood.request(RequestType::Get, "/ps/f", &[], false);
        flood.send(&p).await;
    }
    eventually("rate limited", || metric(&broker, "rate_limited") >= 150).await;
    // Another source (the bucket is per IP: 127.0.0.2) is still served.
    let mut other = Raw {
        sock: UdpSocket::bind("127.0.0.2:0").await.unwrap(),
        server: broker.coap_addr("coap"),
        mid: 1,
    };
    assert_eq!(
        other.code(RequestType::Get, "/ps/f", &[], b"").await,
        ResponseType::NotFound
    );
    // Garbage is counted and never stops the gateway.
    for junk in [
        &b""[..],
        b"\x40",
        b"\x48\x01\x00\x01abc",
        b"\xff\xff\xff\xff\xff",
        b"\x40\x01\x00\x02\xf0",
    ] {
        other.sock.send_to(junk, other.server).await.unwrap();
    }
    eventually("malformed counted", || metric(&broker, "malformed") >= 3).await;
    assert_eq!(
        other.code(RequestType::Get, "/ps/f", &[], b"").await,
        ResponseType::NotFound
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_addresses_get_small_blocks_until_they_echo() {
    let broker = TestBroker::start_with(coap_config(|_| {})).await;
    let (mqtt, _rx, _) = rumqtt_client(mqtt_options(broker.addr, "pub")).await;
    mqtt.publish("e/t", QoS::AtLeastOnce, true, vec![b'z'; 2000])
        .await
        .unwrap();
    eventually("retained", || broker.router.retained_count() == 1).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    // A tiny request: not even a 16-byte block fits three times its size, so 4.01 + Echo.
    let p = raw.request(RequestType::Get, "/ps/e/t", &[], true);
    let r = raw.call(&p).await;
    assert_eq!(code(&r), ResponseType::Unauthorized);
    assert!(r.get_first_option(CoapOption::Unknown(252)).is_some());
    // A larger one (a client id, as devices send) gets a small block, with an Echo value.
    let p = raw.request(RequestType::Get, "/ps/e/t", &["c=a-device-id"], true);
    let request_size = p.to_bytes_unlimited().unwrap().len();
    let r = raw.call(&p).await;
    assert_eq!(code(&r), ResponseType::Content);
    let size = r.to_bytes_unlimited().unwrap().len();
    assert!(
        size <= 3 * request_size,
        "{size} bytes answered {request_size} (RFC 9175 2.4)"
    );
    assert!(r.payload.len() < 1024);
    let echo = r
        .get_first_option(CoapOption::Unknown(252))
        .expect("an Echo value")
        .clone();
    assert!(metric(&broker, "amplification_capped") >= 1);
    // With the Echo value back the address is verified: full 1024-byte blocks.
    let mut p = raw.request(RequestType::Get, "/ps/e/t", &[], true);
    p.add_option(CoapOption::Unknown(252), echo);
    let r = raw.call(&p).await;
    assert_eq!(r.payload.len(), 1024);
    let block =
        mqttd::gateway::coap::block::Block::parse(r.get_first_option(CoapOption::Block2).unwrap())
            .unwrap();
    assert!(block.more && block.szx == 6);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_publish_is_acknowledged_once_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = coap_config(|_| {});
    c.persistence = mqttd::config::PersistenceConfig {
        enabled: true,
        path: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = TestBroker::start_with(c).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    assert_eq!(
        raw.code(RequestType::Post, "/ps/keep/t", &["retain=true"], b"disk")
            .await,
        ResponseType::Created
    );
    broker.stop().await;
    // Restarted on the same store: the message is there.
    let mut c = coap_config(|_| {});
    c.persistence = mqttd::config::PersistenceConfig {
        enabled: true,
        path: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = TestBroker::start_with(c).await;
    let mut raw = Raw::new(broker.coap_addr("coap")).await;
    let p = raw.request(RequestType::Get, "/ps/keep/t", &[], true);
    let r = raw.call(&p).await;
    assert_eq!(
        (code(&r), &r.payload[..]),
        (ResponseType::Content, &b"disk"[..])
    );
    broker.stop().await;
}
