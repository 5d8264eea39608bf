//! What was published and what each receiver saw, and the payload format that ties them together.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use mqttd::protocol::{Packet, PubResp, Publish, QoS};
use parking_lot::Mutex;

use crate::client::Client;

/// (publisher number, QoS, sequence number): one application message.
pub type MsgId = (u16, u8, u64);

/// `p<publisher> q<qos> s<seq> ` followed by `pad` bytes of padding.
pub fn payload(id: MsgId, pad: usize) -> Bytes {
    let mut text = format!("p{} q{} s{} ", id.0, id.1, id.2).into_bytes();
    text.resize(text.len() + pad, b'.');
    Bytes::from(text)
}

pub fn parse(payload: &[u8]) -> Option<MsgId> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(64))?).ok()?;
    let mut words = text.split(' ');
    let publisher = words.next()?.strip_prefix('p')?.parse().ok()?;
    let qos = words.next()?.strip_prefix('q')?.parse().ok()?;
    let seq = words.next()?.strip_prefix('s')?.parse().ok()?;
    Some((publisher, qos, seq))
}

/// The publishers' side: QoS 1/2 messages whose handshake completed (the broker took
/// responsibility for them), and counts.
#[derive(Default)]
pub struct Ledger {
    pub acked: Mutex<HashSet<MsgId>>,
    pub sent: [AtomicU64; 3],
    pub errors: AtomicU64,
}

/// One receiver's view. Survives reconnects of a persistent session (as a real client's session
/// state must, for QoS 2).
#[derive(Default, Debug)]
pub struct Inbox {
    pub seen: HashSet<MsgId>,
    /// Messages whose payload is not a soak message (wills), by topic.
    pub other_topics: HashSet<String>,
    pub received: u64,
    /// A QoS 1 message again, with DUP set: allowed (MQTT-4.3.2).
    pub allowed_dups: u64,
    /// A message again where the protocol forbids it (QoS 0, QoS 2, QoS 1 without DUP).
    pub illegal_dups: u64,
    /// QoS 2 packet ids PUBREC'd and not yet released: a DUP PUBLISH with one of these is the
    /// same message, not a new one.
    qos2_pending: HashSet<u16>,
}

impl Inbox {
    /// Records a packet from the broker and sends what the protocol asks in return.
    pub async fn handle(&mut self, c: &mut Client, packet: Packet) -> anyhow::Result<()> {
        match packet {
            Packet::Publish(p) => self.on_publish(c, p).await,
            Packet::PubRel(r) => {
                self.qos2_pending.remove(&r.packet_id);
                c.send(&Packet::PubComp(PubResp::new(r.packet_id))).await
            }
            Packet::PingResp | Packet::SubAck(_) | Packet::UnsubAck(_) => Ok(()),
            other => anyhow::bail!("unexpected {} from the broker", other.name()),
        }
    }

    async fn on_publish(&mut self, c: &mut Client, p: Publish) -> anyhow::Result<()> {
        self.received += 1;
        let repeat_qos2 = p.qos == QoS::ExactlyOnce && self.qos2_pending.contains(&p.packet_id);
        if !repeat_qos2 {
            match parse(&p.payload) {
                Some(id) => {
                    if !self.seen.insert(id) {
                        if p.qos == QoS::AtLeastOnce && p.dup {
                            self.allowed_dups += 1;
                        } else {
                            self.illegal_dups += 1;
                        }
                    }
                }
                None => {
                    self.other_topics.insert(p.topic.to_string());
                }
            }
        } else if !p.dup {
            // The broker reused a packet id we had not released yet.
            self.illegal_dups += 1;
        }
        match p.qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => c.send(&Packet::PubAck(PubResp::new(p.packet_id))).await,
            QoS::ExactlyOnce => {
                self.qos2_pending.insert(p.packet_id);
                c.send(&Packet::PubRec(PubResp::new(p.packet_id))).await
            }
        }
    }

    /// QoS 1/2 messages in `acked` this receiver never saw.
    pub fn missing(&self, acked: &HashSet<MsgId>) -> usize {
        acked.iter().filter(|id| !self.seen.contains(id)).count()
    }
}
