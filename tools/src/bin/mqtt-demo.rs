//! Demo client, equal to the Python prototype's: announces itself on `system/status` (retained,
//! with a will saying it went offline), then publishes three sensor readings every interval until
//! Ctrl+C or `--count` rounds, and says goodbye before disconnecting cleanly.
//!
//! ```text
//! cargo run -p mqttd-tools --bin mqtt-demo -- --count 3
//! MQTT_PASSWORD=... cargo run -p mqttd-tools --bin mqtt-demo -- --port 8883 --cafile certs/ca.pem --username demo
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};

const STATUS_TOPIC: &str = "system/status";
const READINGS: [(&str, &str); 3] = [
    ("sensors/temperature", "24.3°C"),
    ("sensors/humidity", "45%"),
    ("device/status", "operational"),
];

#[derive(Parser, Debug)]
#[command(about = "Publishes demo sensor readings to an MQTT broker")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Use TLS, trusting this CA certificate (PEM).
    #[arg(long, value_name = "PATH")]
    cafile: Option<PathBuf>,
    #[arg(long)]
    username: Option<String>,
    /// Prefer the MQTT_PASSWORD environment variable: arguments are visible to other users.
    #[arg(long)]
    password: Option<String>,
    /// Default: `mqtt-demo-<process id>`.
    #[arg(long)]
    client_id: Option<String>,
    /// Seconds between rounds of readings.
    #[arg(long, default_value_t = 5.0, value_parser = parse_interval)]
    interval: f64,
    /// Stop after this many rounds (default: run until Ctrl+C).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && Duration::try_from_secs_f64(secs).is_ok() => Ok(secs),
        _ => Err("expected a positive number of seconds".into()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("mqtt-demo-{}", std::process::id()));
    let mut options = MqttOptions::new(&client_id, &args.host, args.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_last_will(LastWill::new(
        STATUS_TOPIC,
        "Client offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(username) = &args.username {
        let password = args
            .password
            .clone()
            .or_else(|| std::env::var("MQTT_PASSWORD").ok())
            .unwrap_or_default();
        options.set_credentials(username, password);
    }
    if let Some(path) = &args.cafile {
        let ca = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }

    let (client, mut eventloop) = AsyncClient::new(options, 16);
    wait_for_connack(&mut eventloop)
        .await
        .with_context(|| format!("connecting to {}:{}", args.host, args.port))?;
    println!("Connected to {}:{} as {client_id}", args.host, args.port);
    let mut driver = tokio::spawn(drive(eventloop));

    publish(&client, STATUS_TOPIC, "Client online", true).await?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    while args.count.is_none_or(|n| rounds < n) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("Interrupted");
                break;
            }
            ended = &mut driver => {
                match ended {
                    Ok(Err(e)) => bail!("connection lost: {e}"),
                    _ => bail!("connection closed"),
                }
            }
            _ = ticks.tick() => {
                for (topic, payload) in READINGS {
                    publish(&client, topic, payload, false).await?;
                }
                rounds += 1;
            }
        }
    }

    publish(&client, STATUS_TOPIC, "Client offline", true).await?;
    client.disconnect().await?;
    match tokio::time::timeout(Duration::from_secs(5), driver).await {
        Ok(Ok(Ok(()))) => println!("Disconnected"),
        Ok(Ok(Err(e))) => bail!("while disconnecting: {e}"),
        Ok(Err(e)) => bail!("event loop failed: {e}"),
        Err(_) => bail!("the broker did not let us disconnect within 5 s"),
    }
    Ok(())
}

async fn publish(client: &AsyncClient, topic: &str, payload: &str, retain: bool) -> Result<()> {
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .with_context(|| format!("publishing to {topic}"))?;
    println!("Sent {topic}: {payload}");
    Ok(())
}

/// Polls until the broker accepts the connection (rumqttc reports a refusal as an error).
async fn wait_for_connack(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

/// Runs the network side until the broker closes the connection after our DISCONNECT, or the
/// connection fails. Reading up to the broker's close matters: closing a socket with unread data
/// (PUBACKs) sends a TCP reset, which can make the broker discard our last packets.
async fn drive(mut eventloop: EventLoop) -> Result<(), ConnectionError> {
    let mut disconnecting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
            Ok(_) => {}
            Err(_) if disconnecting => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
