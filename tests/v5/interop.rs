//! Real clients: rumqttc v5 with a 3.1.1 client both ways, and mosquitto-clients speaking 5.0.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use mqttd::protocol::QoS;
use rumqttc::v5::mqttbytes::QoS as RQoS;
use rumqttc::v5::mqttbytes::v5::{Packet as RPacket, Publish as RPublish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::common::{self, RawClient, TestBroker, WAIT};

/// A rumqttc v5 client with its event loop running; PUBLISHes and the other incoming packets come
/// out of separate channels. Waits for the CONNACK.
async fn rumqtt_v5(
    addr: SocketAddr,
    id: &str,
) -> (
    AsyncClient,
    UnboundedReceiver<RPublish>,
    UnboundedReceiver<RPacket>,
) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (ptx, prx) = tokio::sync::mpsc::unbounded_channel();
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(RPacket::Publish(p)) => {
                    let _ = ptx.send(p);
                }
                Event::Incoming(other) => {
                    let _ = etx.send(other);
                }
                Event::Outgoing(_) => {}
            }
        }
    });
    match next(&mut erx).await {
        RPacket::ConnAck(ack) => assert_eq!(
            ack.code,
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (client, prx, erx)
}

async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("event in time")
        .expect("event loop alive")
}

/// Skips PUBACKs and the like until a SUBACK arrives.
async fn suback(rx: &mut UnboundedReceiver<RPacket>) {
    loop {
        if let RPacket::SubAck(ack) = next(rx).await {
            assert!(ack.return_codes.iter().all(|c| matches!(
                c,
                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
            )));
            return;
        }
    }
}

#[tokio::test]
async fn rumqttc_v5_and_a_v311_client_exchange_messages_both_ways() {
    let broker = TestBroker::start().await;
    let (v5, mut v5_msgs, mut v5_events) = rumqtt_v5(broker.addr, "real-v5").await;
    v5.subscribe("ix/to5", RQoS::AtLeastOnce)
        .await
        .expect("request queued");
    suback(&mut v5_events).await;
    let mut v311 = RawClient::connected(broker.addr, "old-timer").await;
    v311.subscribe("ix/to3", QoS::AtLeastOnce, 1).await;

    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("from".into(), "v5".into())],
        ..PublishProperties::default()
    };
    v5.publish_with_properties("ix/to3", RQoS::AtLeastOnce, false, "hello 3.1.1", props)
        .await
        .expect("request queued");
    let p = v311.receive().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("ix/to3", &b"hello 3.1.1"[..]));
    assert_eq!(p.properties, None);

    v311.publish("ix/to5", b"hello 5.0", QoS::AtLeastOnce, false, 2)
        .await;
    let p = next(&mut v5_msgs).await;
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.qos),
        (&b"ix/to5"[..], &b"hello 5.0"[..], RQoS::AtLeastOnce)
    );
    assert!(p.properties.is_none_or(|pr| pr.user_properties.is_empty()));
    broker.stop().await;
}

/// Starts a mosquitto client; `kill_on_drop`, so a failed or timed-out test leaves none behind.
fn spawn_mosquitto(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; install mosquitto-clients"))
}

/// Waits (bounded) for a mosquitto client to exit successfully; returns its output.
async fn finish(program: &str, child: Child) -> Output {
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not exit within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("collecting {program} output: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn mosquitto_pub_v5_user_property_reaches_rumqttc_v5() {
    let broker = TestBroker::start().await;
    let (v5, mut msgs, mut events) = rumqtt_v5(broker.addr, "listener").await;
    v5.subscribe("mq/in", RQoS::AtLeastOnce)
        .await
        .expect("request queued");
    suback(&mut events).await;
    let port = broker.addr.port().to_string();
    let args = [
        "-V",
        "mqttv5",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-i",
        "mosq-pub",
        "-q",
        "1",
        "-t",
        "mq/in",
        "-m",
        "from mosquitto",
        "-D",
        "PUBLISH",
        "user-property",
        "a",
        "b",
    ];
    finish("mosquitto_pub", spawn_mosquitto("mosquitto_pub", &args)).await;
    let p = next(&mut msgs).await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"mq/in"[..], &b"from mosquitto"[..])
    );
    let props = p.properties.expect("properties forwarded");
    assert_eq!(
        props.user_properties,
        vec![("a".to_string(), "b".to_string())]
    );
    broker.stop().await;
}

#[tokio::test]
async fn mosquitto_sub_v5_shows_user_properties_from_rumqttc_v5() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port().to_string();
    let args = [
        "-V",
        "mqttv5",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-i",
        "mosq-sub",
        "-q",
        "1",
        "-t",
        "mq/out",
        "-C",
        "1",
        "-W",
        "5",
        "-F",
        "%t %P %p",
    ];
    let sub = spawn_mosquitto("mosquitto_sub", &args);
    common::eventually("mosquitto_sub subscribed", || {
        broker.router.subscription_count() == 1
    })
    .await;
    let (v5, _msgs, _events) = rumqtt_v5(broker.addr, "talker").await;
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        ..PublishProperties::default()
    };
    v5.publish_with_properties(
        "mq/out",
        RQoS::AtLeastOnce,
        false,
        Bytes::from_static(b"payload"),
        props,
    )
    .await
    .expect("request queued");
    let out = finish("mosquitto_sub", sub).await;
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line.trim_end(), "mq/out k:v k:w payload");
    broker.stop().await;
}
