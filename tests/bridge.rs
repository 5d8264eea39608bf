//! Bridges against a real Mosquitto started by each test on loopback (`tests/bridge/mosquitto.rs`):
//! out, in, both with prefixes, no loop with `both` on 5.0 and 3.1.1, QoS 1 across a remote
//! restart with nothing lost, TLS to the remote with a test CA, the remote refusing credentials,
//! the queue surviving an mqttd restart with persistence on, the state in `$SYS`.

mod common;

#[path = "bridge/mosquitto.rs"]
mod mosquitto;

use std::time::Duration;

use common::{TestBroker, WAIT, eventually, mqtt_options, next_publish, rumqtt_client};
use mosquitto::Mosquitto;
use mqttd::config::BridgeConfig;
use mqttd::gateway::{GatewayStatus, Kind};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::mpsc::UnboundedReceiver;

type Rx = UnboundedReceiver<Publish>;
type Events = UnboundedReceiver<Event>;

/// A `[[bridge]]` named `name` to `address`, quick to reconnect, with `topics` (TOML inline
/// tables) and `extra` keys.
fn bridge(name: &str, address: &str, protocol: &str, topics: &str, extra: &str) -> BridgeConfig {
    let text = format!(
        "name = \"{name}\"\naddress = \"{address}\"\nprotocol = \"{protocol}\"\n\
         backoff_min = \"100ms\"\nbackoff_max = \"500ms\"\nkeepalive = \"5s\"\n{extra}\n\
         topics = [{topics}]\n"
    );
    toml::from_str(&text).expect("bridge table parses")
}

async fn broker_with(bridges: Vec<BridgeConfig>, sys: u64) -> TestBroker {
    let mut config = common::config();
    config.bridges = bridges;
    config.sys = mqttd::config::SysConfig { interval: sys };
    config.validate().expect("valid config");
    TestBroker::start_with(config).await
}

async fn connected(status: &dyn GatewayStatus) {
    eventually("the bridge to connect", || status.state() == "connected").await;
}

/// A rumqttc client on `addr` subscribed to `filters` (SUBACK received).
async fn subscriber(
    addr: std::net::SocketAddr,
    id: &str,
    filters: &[&str],
) -> (AsyncClient, Rx, Events) {
    let (client, rx, mut events) = rumqtt_client(mqtt_options(addr, id)).await;
    for f in filters {
        client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        suback(&mut events).await;
    }
    (client, rx, events)
}

async fn suback(events: &mut Events) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Incoming(Packet::SubAck(_))) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("SUBACK in time");
}

/// Publishes probes on `topic` through `from` until one arrives on `rx` (as `expect`): the
/// bridge's subscriptions on both ends are in place. Drains the probes that follow.
async fn flowing(from: &AsyncClient, topic: &str, rx: &mut Rx, expect: &str) {
    flowing_within(from, topic, rx, expect, WAIT).await;
}

async fn flowing_within(
    from: &AsyncClient,
    topic: &str,
    rx: &mut Rx,
    expect: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe on {expect} in time"
        );
        from.publish(topic, QoS::AtMostOnce, false, "probe")
            .await
            .unwrap();
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            assert_eq!(p.topic, expect);
            break;
        }
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {}
}

/// What `rx` receives in `window` (probes left out).
async fn collect(rx: &mut Rx, window: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if &p.payload[..] != b"probe" {
            got.push((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
        }
    }
    got
}

fn metric(status: &dyn GatewayStatus, name: &str) -> u64 {
    status
        .metrics()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("metric {name}"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_in_and_both_with_prefixes_and_state_in_sys() {
    let remote = Mosquitto::start("").await;
    let topics = r##"
        { pattern = "sensors/#", direction = "out", qos = 1, remote_prefix = "site1/" },
        { pattern = "commands/#", direction = "in", qos = 1, local_prefix = "cloud/" },
        { pattern = "#", direction = "both", qos = 1, local_prefix = "local/topic/", remote_prefix = "remote/topic/" },
    "##;
    let cfg = bridge("cloud", &remote.addr().to_string(), "v5", topics, "");
    let broker = broker_with(vec![cfg], 1).await;
    let status = broker.gateway(Kind::Bridge, "cloud");
    connected(status.as_ref()).await;

    let (local, mut local_rx, _le) = subscriber(
        broker.addr,
        "local-sub",
        &["cloud/#", "local/topic/#", "$SYS/broker/bridge/cloud/#"],
    )
    .await;
    let (far, mut far_rx, _fe) =
        subscriber(remote.addr(), "remote-sub", &["site1/#", "remote/topic/#"]).await;

    // $SYS: the state word and the gauge.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut state, mut gauge) = (false, false);
    while !(state && gauge) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bridge state in $SYS in time"
        );
        let p = next_publish(&mut local_rx).await;
        state |= p.topic == "$SYS/broker/bridge/cloud/state" && &p.payload[..] == b"connected";
        gauge |= p.topic == "$SYS/broker/bridge/cloud/connected" && &p.payload[..] == b"1";
    }
    local
        .unsubscribe("$SYS/broker/bridge/cloud/#")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while local_rx.try_recv().is_ok() {}

    // out, with a remote prefix.
    flowing(&local, "sensors/probe", &mut far_rx, "site1/sensors/probe").await;
    local
        .publish("sensors/a/b", QoS::AtLeastOnce, false, "t1")
        .await
        .unwrap();
    let p = next_publish(&mut far_rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("site1/sensors/a/b", &b"t1"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);

    // in, with a local prefix.
    flowing(
        &far,
        "commands/probe",
        &mut local_rx,
        "cloud/commands/probe",
    )
    .await;
    far.publish("commands/x", QoS::AtLeastOnce, false, "c1")
        .await
        .unwrap();
    let p = next_publish(&mut local_rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("cloud/commands/x", &b"c1"[..])
    );

    // both, one tree remapped: each side gets the other's once, never its own back.
    local
        .publish("local/topic/up", QoS::AtLeastOnce, false, "u")
        .await
        .unwrap();
    far.publish("remote/topic/down", QoS::AtLeastOnce, false, "d")
        .await
        .unwrap();
    // (Two publishers: the order between them is not defined.)
    let mut near = collect(&mut local_rx, Duration::from_secs(1)).await;
    let mut away = collect(&mut far_rx, Duration::from_millis(300)).await;
    near.sort();
    away.sort();
    assert_eq!(
        near,
        vec![
            ("local/topic/down".into(), "d".into()),
            ("local/topic/up".into(), "u".into())
        ]
    );
    assert_eq!(
        away,
        vec![
            ("remote/topic/down".into(), "d".into()),
            ("remote/topic/up".into(), "u".into())
        ]
    );
    assert!(metric(status.as_ref(), "sent") >= 2);
    assert!(metric(status.as_ref(), "received") >= 2);
    assert_eq!(metric(status.as_ref(), "connected"), 1);
    broker.stop().await;
}

/// `both` with the same topics on both sides: a message must cross once and stop.
async fn no_loop(protocol: &str) {
    let remote = Mosquitto::start("").await;
    let topics = r##"{ pattern = "loop/#", direction = "both", qos = 1 }"##;
    let cfg = bridge("loop", &remote.addr().to_string(), protocol, topics, "");
    let broker = broker_with(vec![cfg], 0).await;
    let status = broker.gateway(Kind::Bridge, "loop");
    connected(status.as_ref()).await;
    let (local, mut local_rx, _le) = subscriber(broker.addr, "near", &["loop/#"]).await;
    let (far, mut far_rx, _fe) = subscriber(remote.addr(), "far", &["loop/#"]).await;
    flowing(&local, "loop/probe", &mut far_rx, "loop/probe").await;
    flowing(&far, "loop/probe", &mut local_rx, "loop/probe").await;
    // Leftover probes went to both ends; settle.
    collect(&mut local_rx, Duration::from_millis(300)).await;
    collect(&mut far_rx, Duration::from_millis(300)).await;
    let (sent, received) = (
        metric(status.as_ref(), "sent"),
        metric(status.as_ref(), "received"),
    );

    local
        .publish("loop/a", QoS::AtLeastOnce, false, "from-near")
        .await
        .unwrap();
    far.publish("loop/b", QoS::AtLeastOnce, false, "from-far")
        .await
        .unwrap();
    let near = collect(&mut local_rx, Duration::from_millis(1500)).await;
    let far_got = collect(&mut far_rx, Duration::from_millis(300)).await;
    let expected: Vec<(String, String)> = vec![
        ("loop/a".into(), "from-near".into()),
        ("loop/b".into(), "from-far".into()),
    ];
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(near), expected, "local side ({protocol})");
    assert_eq!(sorted(far_got), expected, "remote side ({protocol})");
    assert_eq!(
        metric(status.as_ref(), "sent") - sent,
        1,
        "one message out ({protocol})"
    );
    assert_eq!(
        metric(status.as_ref(), "received") - received,
        1,
        "one message in ({protocol})"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loop_with_both_on_v5() {
    no_loop("v5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loop_with_both_on_v311() {
    no_loop("v311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_queued_across_a_remote_restart_nothing_lost_in_order() {
    let mut remote = Mosquitto::start("").await;
    let topics = r##"{ pattern = "q/#", direction = "out", qos = 1, remote_prefix = "site/" }"##;
    let cfg = bridge("q", &remote.addr().to_string(), "v311", topics, "");
    let broker = broker_with(vec![cfg], 0).await;
    let status = broker.gateway(Kind::Bridge, "q");
    connected(status.as_ref()).await;
    // A persistent subscriber on the remote: Mosquitto keeps its session across the restart.
    let mut opts = mqtt_options(remote.addr(), "keeper");
    opts.set_clean_session(false);
    let (keeper, mut keeper_rx, mut ev) = rumqtt_client(opts.clone()).await;
    keeper
        .subscribe("site/q/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    suback(&mut ev).await;
    let (local, _rx, _le) = subscriber(broker.addr, "pub", &[]).await;
    flowing(&local, "q/probe", &mut keeper_rx, "site/q/probe").await;
    keeper.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    remote.stop().await;
    eventually("the bridge to notice", || status.state() != "connected").await;
    for i in 0..20 {
        local
            .publish(format!("q/{i}"), QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .unwrap();
    }
    eventually("20 queued", || metric(status.as_ref(), "queued") == 20).await;
    assert_eq!(metric(status.as_ref(), "connected"), 0);

    assert!(
        remote.launch().await,
        "mosquitto restarts on its port: {}",
        remote.log()
    );
    connected(status.as_ref()).await;
    eventually("the queue to drain", || {
        metric(status.as_ref(), "queued") == 0
    })
    .await;
    assert!(metric(status.as_ref(), "reconnects") >= 1);
    let (_keeper, mut keeper_rx, _ev) = rumqtt_client(opts).await;
    let got: Vec<String> = collect(&mut keeper_rx, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|(t, p)| format!("{t}={p}"))
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("site/q/{i}=m{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(metric(status.as_ref(), "dropped"), 0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_remote_with_a_test_ca_and_credentials() {
    let pki = common::certs::Pki::generate();
    let dir = tempfile::TempDir::new().unwrap();
    let passwd = mosquitto::password_file(dir.path(), "site1", "s3cret");
    let tls = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        passwd.display(),
        pki.arg("ca.pem"),
        pki.arg("server.pem"),
        pki.arg("server.key")
    );
    let remote = Mosquitto::start(&tls).await;
    let secret = dir.path().join("bridge.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let extra = format!(
        "username = \"site1\"\npassword_file = \"{}\"\ntls = {{ ca = \"{}\", server_name = \"localhost\" }}",
        secret.display(),
        pki.arg("ca.pem")
    );
    let topics = r##"{ pattern = "tls/#", direction = "out", qos = 1 }"##;
    let cfg = bridge("secure", &remote.addr().to_string(), "v5", topics, &extra);
    let broker = broker_with(vec![cfg], 0).await;
    let status = broker.gateway(Kind::Bridge, "secure");
    connected(status.as_ref()).await;
    assert!(
        remote.log().contains("site1"),
        "logged in as site1: {}",
        remote.log()
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_refusing_credentials_is_logged_and_backed_off() {
    let dir = tempfile::TempDir::new().unwrap();
    let passwd = mosquitto::password_file(dir.path(), "site1", "right");
    let remote = Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ))
    .await;
    let secret = dir.path().join("bridge.secret");
    std::fs::write(&secret, "pw-Zq81x").unwrap();
    let conf = common::config_file(
        dir.path(),
        &format!(
            "[persistence]\nenabled = false\n\n[[bridge]]\nname = \"cloud\"\naddress = \"{}\"\n\
             protocol = \"v311\"\nusername = \"site1\"\npassword_file = \"{}\"\n\
             backoff_min = \"200ms\"\nbackoff_max = \"2s\"\n\
             topics = [{{ pattern = \"a/#\" }}]\n",
            remote.addr(),
            secret.display()
        ),
    );
    let mqttd = common::BrokerProcess::start(&conf).await;
    mqttd.wait_for_line("refused the bridge's CONNECT").await;
    mqttd.wait_for_line("reconnecting in").await;
    // A second refusal after a wait: backed off, not hammering.
    let deadline = tokio::time::Instant::now() + WAIT;
    while mqttd
        .output()
        .matches("refused the bridge's CONNECT")
        .count()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a second attempt in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = mqttd.stop().await;
    assert!(out.contains("Not authorized"), "{out}");
    assert!(
        !out.contains("pw-Zq81x"),
        "the password is never logged: {out}"
    );
    assert!(
        out.matches("refused the bridge's CONNECT").count() < 10,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_an_mqttd_restart_with_persistence_on() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = mosquitto::free_port();
    let conf = common::config_file(
        dir.path(),
        &format!(
            "[[bridge]]\nname = \"keep\"\naddress = \"127.0.0.1:{port}\"\n\
             backoff_min = \"100ms\"\nbackoff_max = \"300ms\"\n\
             topics = [{{ pattern = \"keep/#\", qos = 1, remote_prefix = \"site/\" }}]\n"
        ),
    );
    // The remote is down: messages queue, then mqttd stops.
    let mqttd = common::BrokerProcess::start(&conf).await;
    let (local, _rx, _ev) = rumqtt_client(mqtt_options(mqttd.addr, "pub")).await;
    for i in 0..10 {
        local
            .publish(
                format!("keep/{i}"),
                QoS::AtLeastOnce,
                false,
                format!("m{i}"),
            )
            .await
            .unwrap();
    }
    // The last PUBACK arrived once its message was committed (persistence on).
    let (probe, mut probe_rx, mut ev) = rumqtt_client(mqtt_options(mqttd.addr, "probe")).await;
    probe.subscribe("keep/#", QoS::AtLeastOnce).await.unwrap();
    suback(&mut ev).await;
    local
        .publish("keep/last", QoS::AtLeastOnce, false, "m10")
        .await
        .unwrap();
    next_publish(&mut probe_rx).await;
    probe.unsubscribe("keep/#").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mqttd.stop().await;

    // The remote comes up with a subscriber; mqttd comes back and delivers the queue in order.
    let remote = Mosquitto::start_on(port, "").await;
    let (_far, mut far_rx, _fe) = subscriber(remote.addr(), "far", &["site/keep/#"]).await;
    let mqttd = common::BrokerProcess::start(&conf).await;
    let got: Vec<String> = {
        let mut got = Vec::new();
        while got.len() < 11 {
            let p = next_publish(&mut far_rx).await;
            got.push(format!(
                "{}={}",
                p.topic,
                String::from_utf8_lossy(&p.payload)
            ));
        }
        got
    };
    let mut want: Vec<String> = (0..10).map(|i| format!("site/keep/{i}=m{i}")).collect();
    want.push("site/keep/last=m10".into());
    assert_eq!(got, want);
    mqttd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_of_bridges_are_reserved() {
    let broker = broker_with(Vec::new(), 0).await;
    let (_c, code) = common::try_login(
        broker.addr,
        common::login_packet("$bridge/cloud", None, None),
    )
    .await;
    assert_eq!(code, 0x02, "3.1.1: identifier rejected");
    broker.stop().await;
}

/// Mosquitto bridging to mqttd: its CONNECT carries the bridge marker (`try_private`, protocol
/// level 0x84), which mqttd does not know; Mosquitto falls back to a plain 3.1.1 CONNECT and
/// the bridge works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_bridge_to_mqttd_works() {
    let broker = broker_with(Vec::new(), 0).await;
    let (_near, mut near_rx, _ne) = subscriber(broker.addr, "near", &["m/#"]).await;
    let conf = format!(
        "connection tomqttd\naddress {}\ntopic m/# out 1\nbridge_protocol_version mqttv311\n\
         try_private true\nrestart_timeout 1\n",
        broker.addr
    );
    let remote = Mosquitto::start(&conf).await;
    let (far, _far_rx, _fe) = subscriber(remote.addr(), "far", &[]).await;
    // Mosquitto retries without the marker after its restart_timeout and back-off: seconds.
    flowing_within(
        &far,
        "m/probe",
        &mut near_rx,
        "m/probe",
        Duration::from_secs(30),
    )
    .await;
    far.publish("m/x", QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    let p = next_publish(&mut near_rx).await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("m/x", &b"hi"[..]));
    broker.stop().await;
}

/// mqttd to mqttd on 3.1.1: the remote refuses the bridge marker as an unsupported protocol
/// version, and the bridge retries without it (as Mosquitto does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v311_bridge_falls_back_without_the_marker() {
    let far = broker_with(Vec::new(), 0).await;
    let topics = r##"{ pattern = "fb/#", direction = "out", qos = 1 }"##;
    let cfg = bridge("fb", &far.addr.to_string(), "v311", topics, "");
    let near = broker_with(vec![cfg], 0).await;
    let status = near.gateway(Kind::Bridge, "fb");
    connected(status.as_ref()).await;
    let (_f, mut far_rx, _fe) = subscriber(far.addr, "far", &["fb/#"]).await;
    let (local, _rx, _le) = subscriber(near.addr, "near", &[]).await;
    flowing(&local, "fb/probe", &mut far_rx, "fb/probe").await;
    near.stop().await;
    far.stop().await;
}

/// The ACL confines a bridge by its `local_username`: what it may bridge out (`Subscribe`,
/// `Read`) and publish in (`Write`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_confines_a_bridge_by_its_local_username() {
    let remote = Mosquitto::start("").await;
    let dir = tempfile::TempDir::new().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite #\nuser bridge-cloud\ntopic read sensors/#\ntopic write cloud/#\n",
    )
    .unwrap();
    let topics = r##"
        { pattern = "sensors/#", direction = "out", qos = 1 },
        { pattern = "secret/#", direction = "out", qos = 1 },
        { pattern = "c/#", direction = "in", qos = 1, local_prefix = "cloud/" },
        { pattern = "x/#", direction = "in", qos = 1, local_prefix = "other/" },
    "##;
    let cfg = bridge(
        "cloud",
        &remote.addr().to_string(),
        "v5",
        topics,
        "local_username = \"bridge-cloud\"",
    );
    let mut config = common::config();
    config.bridges = vec![cfg];
    config.auth.acl_file = Some(acl);
    let broker = TestBroker::start_with(config).await;
    let status = broker.gateway(Kind::Bridge, "cloud");
    connected(status.as_ref()).await;
    let (local, mut local_rx, _le) = subscriber(broker.addr, "near", &["cloud/#", "other/#"]).await;
    let (far, mut far_rx, _fe) = subscriber(remote.addr(), "far", &["sensors/#", "secret/#"]).await;
    flowing(&local, "sensors/probe", &mut far_rx, "sensors/probe").await;
    flowing(&far, "c/probe", &mut local_rx, "cloud/c/probe").await;

    local
        .publish("secret/1", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    local
        .publish("sensors/1", QoS::AtLeastOnce, false, "yes")
        .await
        .unwrap();
    far.publish("x/1", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    far.publish("c/1", QoS::AtLeastOnce, false, "yes")
        .await
        .unwrap();
    let away = collect(&mut far_rx, Duration::from_millis(800)).await;
    let near = collect(&mut local_rx, Duration::from_millis(300)).await;
    assert_eq!(away, vec![("sensors/1".to_owned(), "yes".to_owned())]);
    assert_eq!(near, vec![("cloud/c/1".to_owned(), "yes".to_owned())]);
    broker.stop().await;
}

/// An operator ending the bridge's local session (`DELETE /api/v1/sessions/...`): the bridge
/// reconnects with a new one that has its subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_local_session_comes_back_with_its_subscriptions() {
    let remote = Mosquitto::start("").await;
    let topics = r##"{ pattern = "d/#", direction = "out", qos = 1 }"##;
    let cfg = bridge("d", &remote.addr().to_string(), "v5", topics, "");
    let broker = broker_with(vec![cfg], 0).await;
    let status = broker.gateway(Kind::Bridge, "d");
    connected(status.as_ref()).await;
    let (_far, mut far_rx, _fe) = subscriber(remote.addr(), "far", &["d/#"]).await;
    let (local, _rx, _le) = subscriber(broker.addr, "near", &[]).await;
    flowing(&local, "d/probe", &mut far_rx, "d/probe").await;
    let reason = mqttd::protocol::DisconnectReason::AdministrativeAction;
    assert!(broker.router.discard_session("$bridge/d", reason));
    eventually("a reconnection", || {
        metric(status.as_ref(), "reconnects") >= 1
    })
    .await;
    connected(status.as_ref()).await;
    flowing(&local, "d/probe", &mut far_rx, "d/probe").await;
    broker.stop().await;
}
