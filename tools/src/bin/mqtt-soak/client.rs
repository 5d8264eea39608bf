//! A raw MQTT 3.1.1 client over TCP, built on the broker's own codec, so the soak test controls
//! every flag (DUP, clean session) and every acknowledgement itself. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    self, Connect, LastWill, Packet, ProtocolVersion, PubResp, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any single handshake step (connect, CONNACK, SUBACK, PUBACK...).
pub const STEP: Duration = Duration::from_secs(10);

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 16 << 20;

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: u16,
}

/// What one receive produced.
pub enum Recv {
    Packet(Packet),
    Timeout,
    Closed,
}

/// CONNECT options for [`Client::connect`].
pub struct Options<'a> {
    pub client_id: &'a str,
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<(String, Bytes)>,
}

impl<'a> Options<'a> {
    pub fn clean(client_id: &'a str) -> Self {
        Options {
            client_id,
            clean: true,
            keep_alive: 30,
            will: None,
        }
    }
}

impl Client {
    /// TCP connect only (for clients that then misbehave).
    pub async fn tcp(addr: SocketAddr) -> Result<Client> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .with_context(|| format!("TCP connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: BytesMut::new(),
            next_id: 0,
        })
    }

    /// Connects and completes CONNECT/CONNACK; returns the client and "session present".
    pub async fn connect(addr: SocketAddr, o: Options<'_>) -> Result<(Client, bool)> {
        let mut c = Client::tcp(addr).await?;
        let connect = Connect {
            protocol: ProtocolVersion::V311,
            clean_start: o.clean,
            keep_alive: o.keep_alive,
            client_id: o.client_id.into(),
            will: o.will.map(|(topic, payload)| LastWill {
                topic: topic.into(),
                payload,
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
            }),
            username: None,
            password: None,
            properties: None,
        };
        c.send(&Packet::Connect(Box::new(connect))).await?;
        match c.recv(STEP).await? {
            Recv::Packet(Packet::ConnAck(a)) if u8::from(a.code) == 0 => Ok((c, a.session_present)),
            Recv::Packet(Packet::ConnAck(a)) => bail!("CONNACK refused with code {}", a.code),
            Recv::Packet(p) => bail!("expected CONNACK, got {}", p.name()),
            Recv::Timeout => bail!("no CONNACK within {STEP:?}"),
            Recv::Closed => bail!("closed before CONNACK"),
        }
    }

    pub fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    pub async fn send(&mut self, packet: &Packet) -> Result<()> {
        let mut out = BytesMut::new();
        protocol::encode(packet, ProtocolVersion::V311, &mut out)
            .with_context(|| format!("cannot encode {}", packet.name()))?;
        self.send_bytes(&out).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .context("write timed out")?
            .context("write")
    }

    /// The next packet within `limit`. A malformed packet from the broker is an error.
    pub async fn recv(&mut self, limit: Duration) -> Result<Recv> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(p) = protocol::decode(&mut self.buf, ProtocolVersion::V311, MAX_PACKET)
                .context("broker sent a malformed packet")?
            {
                return Ok(Recv::Packet(p));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(Recv::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(Recv::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Waits for a packet `want` accepts, skipping PUBLISHes for `on_other` to handle.
    async fn expect(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Result<Packet> {
        match self.recv(STEP).await? {
            Recv::Packet(p) if want(&p) => Ok(p),
            Recv::Packet(p) => bail!("expected {what}, got {}", p.name()),
            Recv::Timeout => bail!("no {what} within {STEP:?}"),
            Recv::Closed => bail!("closed while waiting for {what}"),
        }
    }

    /// SUBSCRIBE one filter and wait for the SUBACK (nothing else may arrive first).
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let id = self.packet_id();
        let sub = Subscribe {
            packet_id: id,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions::new(qos),
            }],
            properties: None,
        };
        self.send(&Packet::Subscribe(sub)).await?;
        let ack = self
            .expect(
                "SUBACK",
                |p| matches!(p, Packet::SubAck(a) if a.packet_id == id),
            )
            .await?;
        match ack {
            Packet::SubAck(a)
                if a.return_codes.first().map(|&c| u8::from(c)) == Some(qos as u8) =>
            {
                Ok(())
            }
            other => bail!("SUBSCRIBE {filter} not granted: {other:?}"),
        }
    }

    /// PUBLISH and complete the publisher side of the QoS flow (the client must not be
    /// subscribed to anything, or deliveries would interleave with the acknowledgements).
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<()> {
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            self.packet_id()
        };
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id,
            payload,
            properties: None,
        };
        self.send(&Packet::Publish(p)).await?;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.expect(
                    "PUBACK",
                    |p| matches!(p, Packet::PubAck(a) if a.packet_id == packet_id),
                )
                .await?;
            }
            QoS::ExactlyOnce => {
                self.expect(
                    "PUBREC",
                    |p| matches!(p, Packet::PubRec(a) if a.packet_id == packet_id),
                )
                .await?;
                self.send(&Packet::PubRel(PubResp::new(packet_id))).await?;
                self.expect(
                    "PUBCOMP",
                    |p| matches!(p, Packet::PubComp(a) if a.packet_id == packet_id),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// DISCONNECT, then wait (bounded) for the broker to close.
    pub async fn disconnect(mut self) -> Result<()> {
        self.send(&Packet::Disconnect(Default::default())).await?;
        self.closed_within(STEP).await;
        Ok(())
    }

    /// Reads and discards until the broker closes; true if it did within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}
