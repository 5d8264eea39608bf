//! MQTT 3.1.1 on the wire for the load generator.
//!
//! Everything the generator *sends* is encoded once by the broker's own codec
//! ([`mqttd::protocol::encode`]) and then copied or patched in place, so a publisher's hot loop is a
//! `memcpy` and a `write`. Control packets read during set-up (CONNACK, SUBACK) go through
//! [`mqttd::protocol::decode`]. The hot *receive* path uses [`next_frame`] instead: a framing-only
//! scanner that finds PUBLISH / PUBACK frames in a big read buffer without allocating, because a
//! full decode (an `Arc<str>` topic per message) would make the generator, not the broker, the
//! bottleneck at a million messages a second.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use mqttd::protocol::{
    self, ConnAckReason, Connect, Disconnect, Packet, Password, ProtocolVersion, PubResp, Publish,
    QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Everything is MQTT 3.1.1: the dialect Mosquitto, rumqttd and mqttd all serve.
pub const VERSION: ProtocolVersion = ProtocolVersion::V311;

/// Largest frame the scanner accepts; anything bigger is a protocol error in these scenarios.
pub const MAX_FRAME: usize = 1024 * 1024;

/// How long any set-up exchange (CONNACK, SUBACK) may take before the scenario fails.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes `packet` with the broker's codec.
pub fn encode(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::with_capacity(protocol::encoded_len(packet, VERSION));
    protocol::encode(packet, VERSION, &mut out).expect("benchmark packets are encodable");
    out
}

/// CONNECT with a clean session; `credentials` is (username, password).
pub fn connect_packet(
    client_id: &str,
    keep_alive: u16,
    credentials: Option<(&str, &str)>,
) -> BytesMut {
    connect_session(client_id, keep_alive, credentials, true)
}

/// CONNECT, with a clean session or a persistent one.
pub fn connect_session(
    client_id: &str,
    keep_alive: u16,
    credentials: Option<(&str, &str)>,
    clean: bool,
) -> BytesMut {
    encode(&Packet::Connect(Box::new(Connect {
        protocol: VERSION,
        clean_start: clean,
        keep_alive,
        client_id: client_id.to_owned(),
        will: None,
        username: credentials.map(|(u, _)| u.to_owned()),
        password: credentials.map(|(_, p)| Password::new(p.as_bytes().to_vec())),
        properties: None,
    })))
}

pub fn disconnect_packet() -> BytesMut {
    encode(&Packet::Disconnect(Disconnect::default()))
}

pub fn puback_packet(packet_id: u16) -> BytesMut {
    encode(&Packet::PubAck(PubResp::new(packet_id)))
}

/// One PUBLISH, encoded. The payload is always the last `payload.len()` bytes and a QoS 1 packet
/// id the two bytes before it, which is what [`PublishTemplate`] patches.
pub fn publish_packet(topic: &str, qos: QoS, packet_id: u16, payload: Bytes) -> BytesMut {
    encode(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Arc::from(topic),
        packet_id,
        payload,
        properties: None,
    }))
}

/// A PUBLISH encoded once whose packet id and payload prefix are rewritten per message.
pub struct PublishTemplate {
    bytes: BytesMut,
    payload_at: usize,
}

impl PublishTemplate {
    /// `payload_len` must be at least 16 (sequence number + timestamp).
    pub fn new(topic: &str, qos: QoS, payload_len: usize) -> Self {
        let payload_len = payload_len.max(16);
        let bytes = publish_packet(
            topic,
            qos,
            u16::from(qos != QoS::AtMostOnce),
            Bytes::from(vec![b'x'; payload_len]),
        );
        let payload_at = bytes.len() - payload_len;
        PublishTemplate { bytes, payload_at }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends a copy with `seq` and `stamp` in the first 16 payload bytes and, for QoS 1,
    /// `packet_id`.
    pub fn append(&self, out: &mut BytesMut, packet_id: u16, seq: u64, stamp: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let p = start + self.payload_at;
        out[p..p + 8].copy_from_slice(&seq.to_be_bytes());
        out[p + 8..p + 16].copy_from_slice(&stamp.to_be_bytes());
        if self.payload_at >= 2 && self.bytes[0] & 0x06 != 0 {
            out[p - 2..p].copy_from_slice(&packet_id.to_be_bytes());
        }
    }
}

/// One frame found by [`next_frame`]: the first byte and where the body lies in the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub first: u8,
    pub body_start: usize,
    pub end: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// Finds the frame at the front of `buf`: `Ok(None)` when it is not complete yet.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            let body_start = 2 + i;
            if len > MAX_FRAME {
                bail!("the broker sent a {len}-byte packet (more than {MAX_FRAME})");
            }
            let end = body_start + len;
            return Ok((buf.len() >= end).then_some(Frame {
                first,
                body_start,
                end,
            }));
        }
    }
    bail!("malformed remaining length from the broker")
}

/// The packet id (0 for QoS 0) and payload of a PUBLISH frame.
pub fn publish_parts<'a>(buf: &'a [u8], f: &Frame) -> Result<(u16, &'a [u8])> {
    let body = buf
        .get(f.body_start..f.end)
        .ok_or_else(|| anyhow!("PUBLISH frame out of range"))?;
    let topic_len = match body {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
        _ => bail!("PUBLISH shorter than its topic length"),
    };
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if f.first & 0x06 != 0 {
        match body.get(at..at + 2) {
            Some(&[a, b]) => packet_id = u16::from_be_bytes([a, b]),
            _ => bail!("PUBLISH without its packet id"),
        }
        at += 2;
    }
    let payload = body
        .get(at..)
        .ok_or_else(|| anyhow!("PUBLISH shorter than its topic"))?;
    Ok((packet_id, payload))
}

/// The sequence number and timestamp a [`PublishTemplate`] wrote.
pub fn seq_and_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(payload.get(0..8)?.try_into().ok()?);
    let stamp = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, stamp))
}

/// The packet id of a PUBACK frame.
pub fn ack_id(buf: &[u8], f: &Frame) -> Result<u16> {
    match buf.get(f.body_start..f.body_start + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => bail!("PUBACK without a packet id"),
    }
}

/// Writes `bytes` and flushes: over WebSocket a write is one frame, and a frame the socket could
/// not take at once waits in the stream until the flush.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// Reads until one whole packet has been decoded by the broker's codec (set-up only).
pub async fn read_packet<S: AsyncRead + Unpin>(s: &mut S, rbuf: &mut BytesMut) -> Result<Packet> {
    for _ in 0..10_000 {
        if let Some(p) = protocol::decode(rbuf, VERSION, MAX_FRAME)? {
            return Ok(p);
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        if s.read_buf(rbuf).await? == 0 {
            bail!("the broker closed the connection");
        }
    }
    bail!("no complete packet after 10000 reads")
}

/// Sends CONNECT and waits for a CONNACK with return code 0. Bytes read past the CONNACK stay in
/// `rbuf`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    connect: &[u8],
    rbuf: &mut BytesMut,
) -> Result<()> {
    send(s, connect).await.context("sending CONNECT")?;
    let packet = tokio::time::timeout(SETUP_TIMEOUT, read_packet(s, rbuf))
        .await
        .map_err(|_| anyhow!("no CONNACK within {SETUP_TIMEOUT:?}"))??;
    match packet {
        Packet::ConnAck(a) if a.code == ConnAckReason::Success => Ok(()),
        Packet::ConnAck(a) => bail!("CONNACK refused the connection (return code {})", a.code),
        other => bail!("expected CONNACK, got {}", other.name()),
    }
}

/// Subscribes to `filter` and waits for its SUBACK (publishes that arrive first are an error:
/// the scenarios subscribe before anyone publishes).
pub async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    filter: &str,
    qos: QoS,
    rbuf: &mut BytesMut,
) -> Result<()> {
    let packet = encode(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.to_owned(),
            options: SubscriptionOptions::new(qos),
        }],
        properties: None,
    }));
    send(s, &packet).await.context("sending SUBSCRIBE")?;
    let packet = tokio::time::timeout(SETUP_TIMEOUT, read_packet(s, rbuf))
        .await
        .map_err(|_| anyhow!("no SUBACK within {SETUP_TIMEOUT:?}"))??;
    match packet {
        Packet::SubAck(a) if a.return_codes.first().is_some_and(|c| !c.is_error()) => Ok(()),
        Packet::SubAck(a) => bail!("SUBACK refused {filter:?}: {:?}", a.return_codes),
        other => bail!("expected SUBACK, got {}", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_round_trip_through_the_codec() {
        let t = PublishTemplate::new("a/b", QoS::AtLeastOnce, 64);
        let mut out = BytesMut::new();
        t.append(&mut out, 513, 7, 99);
        t.append(&mut out, 2, 8, 100);
        let f = next_frame(&out).unwrap().unwrap();
        let (pid, payload) = publish_parts(&out, &f).unwrap();
        assert_eq!((pid, seq_and_stamp(payload)), (513, Some((7, 99))));
        let mut codec = out.clone();
        let Some(Packet::Publish(p)) = protocol::decode(&mut codec, VERSION, MAX_FRAME).unwrap()
        else {
            panic!("not a PUBLISH");
        };
        assert_eq!((p.packet_id, &*p.topic, p.payload.len()), (513, "a/b", 64));
        let rest = &out[f.end..];
        let f2 = next_frame(rest).unwrap().unwrap();
        assert_eq!(publish_parts(rest, &f2).unwrap().0, 2);
    }

    #[test]
    fn scanner_waits_for_whole_frames_and_rejects_huge_ones() {
        let t = PublishTemplate::new("t", QoS::AtMostOnce, 200);
        let mut out = BytesMut::new();
        t.append(&mut out, 0, 1, 2);
        for cut in 0..out.len() {
            assert!(next_frame(&out[..cut]).unwrap().is_none());
        }
        assert!(next_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
        assert!(next_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }
}
