//! Interoperability with Mosquitto's command-line clients (Debian `mosquitto-clients`) against an
//! in-process broker. The clients must be installed: a missing binary fails the test, never skips.
//! Every process runs under `-W`/timeouts and is killed if the test ends early.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestBroker, command, eventually, output_within, spawn};
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;

/// Bound for a whole Mosquitto client run.
const RUN: Duration = Duration::from_secs(8);

/// `program -h 127.0.0.1 -p PORT args...`
fn mosquitto(program: &str, broker: &TestBroker, args: &[&str]) -> tokio::process::Command {
    let mut cmd = command(program);
    cmd.args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .args(args);
    cmd
}

/// Runs `mosquitto_pub` to completion and asserts it succeeded.
async fn mosquitto_pub(broker: &TestBroker, args: &[&str]) {
    let out = output_within(spawn(&mut mosquitto("mosquitto_pub", broker, args)), RUN).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the broker holds `n` subscriptions (so a subscriber process is ready).
async fn subscriptions(broker: &TestBroker, n: usize) {
    let router = broker.router.clone();
    eventually(&format!("{n} subscription(s)"), || {
        router.subscription_count() == n
    })
    .await;
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "subscriber failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[tokio::test]
async fn mosquitto_sub_receives_mosquitto_pub_at_each_qos() {
    let broker = TestBroker::start().await;
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &["-t", "sensors/#", "-q", "2", "-v", "-C", "3", "-W", "10"],
    ));
    subscriptions(&broker, 1).await;
    for qos in ["0", "1", "2"] {
        let topic = format!("sensors/qos{qos}");
        let payload = format!("reading at qos {qos}");
        mosquitto_pub(&broker, &["-t", &topic, "-m", &payload, "-q", qos]).await;
    }
    let out = output_within(sub, RUN).await;
    assert_eq!(
        stdout_of(&out),
        "sensors/qos0 reading at qos 0\nsensors/qos1 reading at qos 1\nsensors/qos2 reading at qos 2\n"
    );
    broker.stop().await;
}

#[tokio::test]
async fn mosquitto_sub_receives_rumqttc_at_each_qos() {
    let broker = TestBroker::start().await;
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &["-t", "sensors/#", "-q", "2", "-v", "-C", "3", "-W", "10"],
    ));
    subscriptions(&broker, 1).await;
    let (client, _rx, _events) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "rumqttc-pub")).await;
    for (qos, level) in [
        (QoS::AtMostOnce, 0),
        (QoS::AtLeastOnce, 1),
        (QoS::ExactlyOnce, 2),
    ] {
        client
            .publish(
                format!("sensors/rumqttc{level}"),
                qos,
                false,
                format!("r{level}"),
            )
            .await
            .expect("queued");
    }
    let out = output_within(sub, RUN).await;
    assert_eq!(
        stdout_of(&out),
        "sensors/rumqttc0 r0\nsensors/rumqttc1 r1\nsensors/rumqttc2 r2\n"
    );
    broker.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let broker = TestBroker::start().await;
    mosquitto_pub(
        &broker,
        &["-t", "sensors/retained", "-m", "kept", "-q", "1", "-r"],
    )
    .await;
    // %r: retain flag, %q: QoS, %t: topic, %p: payload.
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-t",
            "sensors/#",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%r %q %t %p",
        ],
    ));
    let out = output_within(sub, RUN).await;
    assert_eq!(stdout_of(&out), "1 1 sensors/retained kept\n");
    broker.stop().await;
}

/// Both protocol versions Mosquitto's clients speak without MQTT 5: `mqttv31` sends protocol name
/// "MQIsdp" level 3, `mqttv311` "MQTT" level 4.
#[tokio::test]
async fn protocol_31_and_311_clients_interoperate() {
    let broker = TestBroker::start().await;
    for (n, version) in ["mqttv31", "mqttv311"].into_iter().enumerate() {
        let topic = format!("versions/{version}");
        let sub = spawn(&mut mosquitto(
            "mosquitto_sub",
            &broker,
            &[
                "-V", version, "-t", &topic, "-q", "1", "-v", "-C", "1", "-W", "10",
            ],
        ));
        subscriptions(&broker, 1).await;
        mosquitto_pub(
            &broker,
            &["-V", version, "-t", &topic, "-m", "hello", "-q", "1"],
        )
        .await;
        let out = output_within(sub, RUN).await;
        assert_eq!(stdout_of(&out), format!("{topic} hello\n"), "run {n}");
        // The subscriber has gone: its clean session (and subscription) with it.
        subscriptions(&broker, 0).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_when_the_client_is_killed() {
    let broker = TestBroker::start().await;
    let watcher = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &["-t", "status/#", "-q", "1", "-v", "-C", "1", "-W", "10"],
    ));
    subscriptions(&broker, 1).await;
    let mut doomed = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-i",
            "doomed",
            "-t",
            "anything",
            "--will-topic",
            "status/doomed",
            "--will-payload",
            "offline",
            "--will-qos",
            "1",
        ],
    ));
    subscriptions(&broker, 2).await;
    doomed.start_kill().expect("SIGKILL sent");
    tokio::time::timeout(RUN, doomed.wait())
        .await
        .expect("killed process reaped in time")
        .expect("wait");
    let out = output_within(watcher, RUN).await;
    assert_eq!(stdout_of(&out), "status/doomed offline\n");
    broker.stop().await;
}

#[tokio::test]
async fn mosquitto_pub_lines_arrive_in_order_at_qos1() {
    const LINES: usize = 500;
    let broker = TestBroker::start().await;
    let (client, mut rx, _events) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "lines-sub")).await;
    client
        .subscribe("bulk/lines", QoS::AtLeastOnce)
        .await
        .expect("queued");
    subscriptions(&broker, 1).await;

    let input: String = (0..LINES).map(|i| format!("line {i:03}\n")).collect();
    let mut cmd = mosquitto(
        "mosquitto_pub",
        &broker,
        &["-t", "bulk/lines", "-q", "1", "-l"],
    );
    cmd.stdin(Stdio::piped());
    let mut publisher = spawn(&mut cmd);
    let mut stdin = publisher.stdin.take().expect("stdin piped");
    tokio::time::timeout(RUN, async {
        stdin.write_all(input.as_bytes()).await.expect("write");
        // EOF ends mosquitto_pub -l.
        drop(stdin);
    })
    .await
    .expect("lines written in time");

    for i in 0..LINES {
        let p = common::next_publish(&mut rx).await;
        assert_eq!(p.topic, "bulk/lines");
        assert_eq!(p.qos, QoS::AtLeastOnce, "message {i}");
        assert_eq!(
            std::str::from_utf8(&p.payload).unwrap(),
            format!("line {i:03}"),
            "message {i} out of order"
        );
    }
    let out = output_within(publisher, RUN).await;
    assert!(
        out.status.success(),
        "mosquitto_pub -l: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    broker.stop().await;
}

/// MQTT 5 with Mosquitto's clients: the subscriber sends an empty client id and must learn the
/// assigned one from the CONNACK (MQTT-3.2.2-16; `-d` shows it), and PUBLISH properties reach it.
#[tokio::test]
async fn mqtt5_clients_get_an_assigned_id_and_properties() {
    let broker = TestBroker::start().await;
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-V",
            "mqttv5",
            "-d",
            "-t",
            "v5/#",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "MSG %t %p C=%C P=%P R=%R E=%E D=%D",
        ],
    ));
    subscriptions(&broker, 1).await;
    mosquitto_pub(
        &broker,
        &[
            "-V",
            "mqttv5",
            "-t",
            "v5/props",
            "-m",
            "hello",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "unit",
            "celsius",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "v5/reply",
            "-D",
            "publish",
            "correlation-data",
            "req-1",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
        ],
    )
    .await;
    let out = stdout_of(&output_within(sub, RUN).await);
    let message: Vec<_> = out.lines().filter(|l| l.starts_with("MSG ")).collect();
    assert_eq!(
        message,
        ["MSG v5/props hello C=text/plain P=unit:celsius R=v5/reply E=60 D=req-1"],
        "{out}"
    );
    // libmosquitto adopts the Assigned Client Identifier, and names itself by it from then on.
    assert!(
        out.lines()
            .any(|l| l.starts_with("Client auto-") && l.ends_with("received CONNACK (0)")),
        "no assigned client id in the CONNACK:\n{out}"
    );
    broker.stop().await;
}

/// `-c` (clean session off): QoS 1 messages published while the subscriber is away are kept and
/// delivered when it comes back with the same client id.
#[tokio::test]
async fn persistent_session_gets_messages_sent_while_away() {
    let broker = TestBroker::start().await;
    // -E: exit as soon as the subscription is acknowledged.
    let first = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &["-c", "-i", "durable", "-t", "queue/#", "-q", "1", "-E"],
    ));
    stdout_of(&output_within(first, RUN).await);
    mosquitto_pub(&broker, &["-t", "queue/job", "-m", "while away", "-q", "1"]).await;
    let again = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-c", "-i", "durable", "-t", "queue/#", "-q", "1", "-v", "-C", "1", "-W", "10",
        ],
    ));
    assert_eq!(
        stdout_of(&output_within(again, RUN).await),
        "queue/job while away\n"
    );
    broker.stop().await;
}

/// A 400 kB payload (three-byte remaining length) at QoS 2 arrives byte for byte.
#[tokio::test]
async fn large_payload_arrives_intact() {
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.txt");
    let payload: String = (0..400_000u32)
        .map(|i| char::from(b'A' + (i.wrapping_mul(7919) % 26) as u8))
        .collect();
    std::fs::write(&file, &payload).unwrap();
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &["-t", "big", "-q", "2", "-C", "1", "-W", "10"],
    ));
    subscriptions(&broker, 1).await;
    mosquitto_pub(
        &broker,
        &["-t", "big", "-q", "2", "-f", file.to_str().unwrap()],
    )
    .await;
    let out = stdout_of(&output_within(sub, RUN).await);
    assert_eq!(out.len(), payload.len() + 1);
    assert!(out == payload + "\n", "payload changed in transit");
    broker.stop().await;
}

/// UTF-8 topic names and filters, and `-T` (client-side exclusion) alongside `+`.
#[tokio::test]
async fn utf8_topics_and_multiple_filters() {
    let broker = TestBroker::start().await;
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-t",
            "capteurs/été/#",
            "-t",
            "x/+",
            "-T",
            "x/skip",
            "-v",
            "-C",
            "2",
            "-W",
            "10",
        ],
    ));
    subscriptions(&broker, 2).await;
    mosquitto_pub(&broker, &["-t", "capteurs/été/température", "-m", "24.3°C"]).await;
    mosquitto_pub(&broker, &["-t", "x/skip", "-m", "filtered by the client"]).await;
    mosquitto_pub(&broker, &["-t", "x/keep", "-m", "yes"]).await;
    assert_eq!(
        stdout_of(&output_within(sub, RUN).await),
        "capteurs/été/température 24.3°C\nx/keep yes\n"
    );
    broker.stop().await;
}

/// MQTT-3.3.2-5: a retained message whose Message Expiry Interval has passed is not delivered.
#[tokio::test]
async fn expired_retained_message_is_not_delivered() {
    let broker = TestBroker::start().await;
    mosquitto_pub(
        &broker,
        &[
            "-V",
            "mqttv5",
            "-t",
            "expiring/r",
            "-m",
            "soon gone",
            "-r",
            "-q",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    )
    .await;
    let router = broker.router.clone();
    eventually("retained", || router.retained_count() == 1).await;
    // Let the one-second lifetime run out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sub = spawn(&mut mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-V",
            "mqttv5",
            "-t",
            "expiring/#",
            "-v",
            "-C",
            "1",
            "-W",
            "1",
        ],
    ));
    let out = output_within(sub, RUN).await;
    // -W ran out with nothing received: exit code 27 (timeout), empty output.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "expired message delivered"
    );
    broker.stop().await;
}
