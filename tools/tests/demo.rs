//! The demo client against an in-process mqttd, observed by a raw subscriber: it says it is online,
//! publishes the prototype's sensor readings, says it is offline when it stops, and its will says
//! so when it is killed.

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
mod common;

use common::InProcessBroker;
use mqttd::protocol::{self, Connect, Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Subscribes to `#` and forwards every (topic, payload, retain) it receives.
async fn watch(
    addr: std::net::SocketAddr,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, String, bool)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: "watcher".into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    };
    protocol::encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V311,
        &mut out,
    )
    .expect("encode CONNECT");
    let filter = SubscribeFilter {
        filter: "#".into(),
        options: protocol::SubscriptionOptions::new(QoS::AtMostOnce),
    };
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![filter],
        properties: None,
    };
    protocol::encode(&Packet::Subscribe(sub), ProtocolVersion::V311, &mut out)
        .expect("encode SUBSCRIBE");
    stream.write_all(&out).await.expect("write");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            while let Ok(Some(p)) = protocol::decode(&mut buf, ProtocolVersion::V311, 1 << 20) {
                if let Packet::Publish(p) = p {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    let _ = tx.send((p.topic.to_string(), payload, p.retain));
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    rx
}

/// Waits (bounded) for `topic` = `payload`; returns whether it was retained.
async fn expect(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String, bool)>,
    topic: &str,
    payload: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some((t, p, _)) = rx.recv().await {
            if t == topic && p == payload {
                return;
            }
        }
        panic!("watcher closed");
    })
    .await;
    assert!(found.is_ok(), "no {topic} = {payload} within 15 s");
}

fn demo(port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-demo"));
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--interval",
        "0.1",
    ])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[test]
fn demo_publishes_the_prototype_messages_and_its_will() {
    let broker = InProcessBroker::start(2);
    let addr = broker.addr;

    broker.rt.block_on(async {
        let mut rx = watch(addr).await;
        // A bounded run: online, a round of readings, offline, clean exit.
        let out = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::process::Command::from(demo(
                addr.port(),
                &["--count", "2", "--client-id", "demo-a"],
            ))
            .kill_on_drop(true)
            .output()
            .await
        })
        .await
        .expect("demo finished in time")
        .expect("demo ran");
        assert!(
            out.status.success(),
            "demo failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in [
            "Sent sensors/temperature: 24.3°C",
            "Sent sensors/humidity: 45%",
            "Sent device/status: operational",
        ] {
            assert!(
                stdout.contains(line),
                "demo output lacks {line:?}:\n{stdout}"
            );
        }
        expect(&mut rx, "system/status", "Client online").await;
        expect(&mut rx, "sensors/temperature", "24.3°C").await;
        expect(&mut rx, "sensors/humidity", "45%").await;
        expect(&mut rx, "device/status", "operational").await;
        expect(&mut rx, "system/status", "Client offline").await;

        // Killed without a goodbye: the broker publishes its will.
        let mut child =
            tokio::process::Command::from(demo(addr.port(), &["--client-id", "demo-b"]))
                .kill_on_drop(true)
                .spawn()
                .expect("demo starts");
        expect(&mut rx, "system/status", "Client online").await;
        child.start_kill().expect("kill");
        let _ = child.wait().await;
        expect(&mut rx, "system/status", "Client offline").await;
    });

    broker.stop();
}
