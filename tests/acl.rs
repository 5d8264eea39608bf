//! ACL enforcement end to end: PUBLISH (dropped but acknowledged), SUBSCRIBE (0x80 / 0x87),
//! delivery including retained messages, `%u` patterns and names that try to escape them.

mod common;

use std::net::SocketAddr;

use common::{FAST_ARGON2, RawClient, TestBroker, config, login_packet, set_passwords, try_login};
use mqttd::protocol::reason::{v3, v5};
use mqttd::protocol::{Packet, ProtocolVersion, QoS, SubscribeFilter, SubscriptionOptions};

/// The ACL under test. carol exists to show the per-delivery check: her subscription to `#` is
/// granted, but a `deny` keeps `sensors/r` from her.
const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite sensors/#
topic read public/#

user bob
topic write sensors/bob

user carol
topic read #
topic deny sensors/r

pattern readwrite devices/%u/#
";

/// Users with odd names (`+`, `alice/x`) are valid in the password file; the pattern must not
/// widen for them.
const USERS: [&str; 5] = ["alice", "bob", "carol", "+", "alice/x"];

struct Setup {
    broker: TestBroker,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let users: Vec<(&str, &[u8])> = USERS.iter().map(|u| (*u, u.as_bytes())).collect();
    set_passwords(&passwd, &users, FAST_ARGON2);
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let mut c = config();
    c.auth.password_file = Some(passwd);
    c.auth.acl_file = Some(acl);
    c.auth.allow_anonymous = Some(true);
    Setup {
        broker: TestBroker::start_with(c).await,
        _dir: dir,
    }
}

/// Logs in as `user` (password = username; None: anonymous) and asserts CONNACK 0.
async fn login(addr: SocketAddr, user: Option<&str>, client_id: &str) -> RawClient {
    let (c, code) = try_login(addr, login_packet(client_id, user, user.map(str::as_bytes))).await;
    assert_eq!(code, v3::ACCEPTED, "{user:?} logs in");
    c
}

#[tokio::test]
async fn an_allowed_publish_reaches_a_reader() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut reader = login(addr, Some("alice"), "alice-sub").await;
    assert_eq!(
        reader.subscribe("sensors/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    let mut alice = login(addr, Some("alice"), "alice-pub").await;
    alice
        .publish("sensors/x", b"from alice", QoS::AtLeastOnce, false, 7)
        .await;
    let got = reader.receive().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("sensors/x", &b"from alice"[..])
    );
    let mut bob = login(addr, Some("bob"), "bob").await;
    bob.publish("sensors/bob", b"from bob", QoS::AtLeastOnce, false, 1)
        .await;
    let got = reader.receive().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("sensors/bob", &b"from bob"[..])
    );
    s.broker.stop().await;
}

/// bob may not write `public/x`: each QoS is still acknowledged as usual (3.1.1 has no way to say
/// no), the connection stays up, and nothing is delivered.
#[tokio::test]
async fn a_denied_publish_is_acknowledged_and_dropped() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut reader = login(addr, Some("alice"), "reader").await;
    assert_eq!(
        reader.subscribe("public/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    assert_eq!(
        reader.subscribe("sensors/#", QoS::AtLeastOnce, 2).await,
        vec![1]
    );
    let mut bob = login(addr, Some("bob"), "bob").await;
    // `publish` asserts PUBACK for QoS 1 and PUBREC/PUBCOMP for QoS 2.
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        bob.publish("public/x", b"denied", qos, false, i as u16 + 1)
            .await;
    }
    // Retained and denied: not stored either.
    bob.publish("public/r", b"denied", QoS::AtLeastOnce, true, 9)
        .await;
    bob.ping().await;
    // A marker published after the denied ones: it must be the first thing the reader sees.
    bob.publish("sensors/bob", b"marker", QoS::AtLeastOnce, false, 10)
        .await;
    let got = reader.receive().await;
    assert_eq!(&*got.topic, "sensors/bob", "denied message leaked: {got:?}");
    let mut late = login(addr, Some("alice"), "late").await;
    assert_eq!(
        late.subscribe("public/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    late.expect_silence(std::time::Duration::from_millis(200))
        .await;
    s.broker.stop().await;
}

#[tokio::test]
async fn denied_subscriptions_get_a_failure_code() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut bob = login(addr, Some("bob"), "bob").await;
    // bob can write sensors/bob but read nothing there.
    assert_eq!(
        bob.subscribe("sensors/#", QoS::AtMostOnce, 1).await,
        vec![v3::SUBACK_FAILURE]
    );
    assert_eq!(
        bob.subscribe("sensors/bob", QoS::AtMostOnce, 2).await,
        vec![v3::SUBACK_FAILURE]
    );
    let mut alice = login(addr, Some("alice"), "alice").await;
    assert_eq!(
        alice.subscribe("secret/#", QoS::AtMostOnce, 1).await,
        vec![v3::SUBACK_FAILURE]
    );
    // A filter is granted when some topic under it is readable (as Mosquitto, which grants
    // every SUBSCRIBE): deliveries are then checked one by one.
    assert_eq!(
        alice.subscribe("sensors/+/temp", QoS::AtMostOnce, 2).await,
        vec![0]
    );
    assert_eq!(alice.subscribe("#", QoS::AtMostOnce, 3).await, vec![0]);
    // One SUBSCRIBE with an allowed and a denied filter: each gets its own code.
    let sub = mqttd::protocol::Subscribe {
        packet_id: 4,
        filters: ["sensors/a", "secret/a"]
            .into_iter()
            .map(|f| SubscribeFilter {
                filter: f.into(),
                options: SubscriptionOptions::new(QoS::AtLeastOnce),
            })
            .collect(),
        properties: None,
    };
    alice.send(&Packet::Subscribe(sub)).await;
    match alice.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(
                common::wire_codes(&ack.return_codes),
                vec![1, v3::SUBACK_FAILURE]
            )
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // The connection stays usable after refusals.
    alice.ping().await;
    s.broker.stop().await;
}

#[tokio::test]
async fn mqtt5_denied_subscription_is_0x87() {
    let s = start().await;
    let mut bob = RawClient::connect(s.broker.addr).await;
    let mut connect = login_packet("bob5", Some("bob"), Some(b"bob"));
    connect.protocol = ProtocolVersion::V5;
    assert_eq!(bob.login(connect).await, v5::SUCCESS);
    assert_eq!(
        bob.subscribe("sensors/#", QoS::AtMostOnce, 1).await,
        vec![v5::NOT_AUTHORIZED]
    );
    s.broker.stop().await;
}

/// Retained `sensors/r` goes to alice (read sensors/#). bob and anonymous clients cannot
/// subscribe `#` at all (0x80: no read rule covers it), so they get nothing. carol's `#` is
/// granted, and the per-delivery read check keeps the denied `sensors/r` (retained and live) from
/// her while `sensors/ok` arrives.
#[tokio::test]
async fn retained_messages_are_delivered_only_to_readers() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut alice = login(addr, Some("alice"), "alice-pub").await;
    alice
        .publish("sensors/r", b"retained", QoS::AtLeastOnce, true, 1)
        .await;
    alice
        .publish("sensors/ok", b"also retained", QoS::AtLeastOnce, true, 2)
        .await;

    let mut reader = login(addr, Some("alice"), "alice-sub").await;
    assert_eq!(
        reader.subscribe("sensors/r", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    let got = reader.receive().await;
    assert!(got.retain);
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("sensors/r", &b"retained"[..])
    );

    // bob may read only devices/bob/# (the pattern) and anonymous only public/#: `#` is granted to
    // both, but the retained sensors/ messages are not delivered to either.
    for (user, code) in [(Some("bob"), 1), (None, 1)] {
        let mut c = login(addr, user, "outsider").await;
        assert_eq!(
            c.subscribe("#", QoS::AtLeastOnce, 1).await,
            vec![code],
            "{user:?}"
        );
        c.expect_silence(std::time::Duration::from_millis(200))
            .await;
    }
    // Anonymous may read public/#: the subscription is granted, and no sensors/ message follows.
    let mut anon = login(addr, None, "anon").await;
    assert_eq!(
        anon.subscribe("public/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );

    let mut carol = login(addr, Some("carol"), "carol").await;
    assert_eq!(carol.subscribe("#", QoS::AtLeastOnce, 1).await, vec![1]);
    // Live: a denied and an allowed publish, the allowed one last as a marker.
    alice
        .publish("sensors/r", b"live", QoS::AtLeastOnce, false, 3)
        .await;
    alice
        .publish("sensors/marker", b"end", QoS::AtLeastOnce, false, 4)
        .await;
    let mut seen = Vec::new();
    loop {
        let p = carol.receive().await;
        let end = &*p.topic == "sensors/marker";
        seen.push((p.topic.to_string(), p.retain));
        if end {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            ("sensors/ok".to_string(), true),
            ("sensors/marker".to_string(), false)
        ]
    );
    anon.expect_silence(std::time::Duration::from_millis(100))
        .await;
    s.broker.stop().await;
}

/// `pattern readwrite devices/%u/#`: alice has devices/alice/..., not devices/bob/....
#[tokio::test]
async fn username_patterns_give_each_user_their_own_subtree() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut mine = login(addr, Some("alice"), "alice-sub").await;
    assert_eq!(
        mine.subscribe("devices/alice/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );
    assert_eq!(
        mine.subscribe("devices/bob/#", QoS::AtLeastOnce, 2).await,
        vec![v3::SUBACK_FAILURE]
    );
    // Overlaps devices/alice/x, so granted; only alice's own device topics are delivered.
    assert_eq!(
        mine.subscribe("devices/+/x", QoS::AtLeastOnce, 3).await,
        vec![1]
    );
    let mut bobs = login(addr, Some("bob"), "bob-sub").await;
    assert_eq!(
        bobs.subscribe("devices/bob/#", QoS::AtLeastOnce, 1).await,
        vec![1]
    );

    let mut alice = login(addr, Some("alice"), "alice-pub").await;
    alice
        .publish("devices/alice/x", b"own", QoS::AtLeastOnce, false, 1)
        .await;
    let got = mine.receive().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("devices/alice/x", &b"own"[..])
    );
    // Into bob's subtree: acknowledged, dropped.
    alice
        .publish("devices/bob/x", b"intrusion", QoS::AtLeastOnce, false, 2)
        .await;
    let mut bob = login(addr, Some("bob"), "bob-pub").await;
    bob.publish("devices/bob/marker", b"end", QoS::AtLeastOnce, false, 1)
        .await;
    let got = bobs.receive().await;
    assert_eq!(&*got.topic, "devices/bob/marker", "alice got in: {got:?}");
    s.broker.stop().await;
}

/// A username with `+` or `/` would turn `devices/%u/#` into `devices/+/#` (everyone's devices) or
/// `devices/alice/x/#` (inside alice's subtree). Such names get nothing from the pattern.
#[tokio::test]
async fn names_with_wildcards_or_slashes_cannot_widen_a_pattern() {
    let s = start().await;
    let addr = s.broker.addr;
    let mut alices = login(addr, Some("alice"), "alice-sub").await;
    assert_eq!(
        alices
            .subscribe("devices/alice/#", QoS::AtLeastOnce, 1)
            .await,
        vec![1]
    );

    let mut plus = login(addr, Some("+"), "plus").await;
    for (i, filter) in ["devices/+/#", "devices/alice/#", "devices/+/x"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            plus.subscribe(filter, QoS::AtLeastOnce, i as u16 + 1).await,
            vec![v3::SUBACK_FAILURE],
            "user + subscribing {filter}"
        );
    }
    plus.publish("devices/alice/p", b"from +", QoS::AtLeastOnce, false, 9)
        .await;

    let mut slash = login(addr, Some("alice/x"), "slash").await;
    assert_eq!(
        slash
            .subscribe("devices/alice/x/#", QoS::AtLeastOnce, 1)
            .await,
        vec![v3::SUBACK_FAILURE]
    );
    slash
        .publish(
            "devices/alice/x/y",
            b"from alice/x",
            QoS::AtLeastOnce,
            false,
            2,
        )
        .await;

    let mut alice = login(addr, Some("alice"), "alice-pub").await;
    alice
        .publish("devices/alice/marker", b"end", QoS::AtLeastOnce, false, 1)
        .await;
    let got = alices.receive().await;
    assert_eq!(&*got.topic, "devices/alice/marker", "escaped: {got:?}");
    s.broker.stop().await;
}
