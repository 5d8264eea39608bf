//! Encoding packets into a write buffer.
//!
//! Every body is written through `Sink`, once into a `Counter` to learn the remaining length and
//! once into the `BytesMut`, so the length prefix and the bytes can never disagree and nothing is
//! allocated besides the single `reserve` on the output buffer.
//!
//! The encoder trusts the packet model: strings and binary fields within 65,535 bytes, a packet
//! within the 268,435,455-byte remaining-length limit, packet ids non-zero where required (the
//! decoder can only produce such packets; the broker builds the rest).

use bytes::{BufMut, BytesMut};

use super::properties;
use super::{
    Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// Where encoded bytes go: a real buffer, or a [`Counter`] that only adds up lengths.
pub(crate) trait Sink {
    fn u8(&mut self, v: u8);
    fn slice(&mut self, s: &[u8]);

    fn u16(&mut self, v: u16) {
        self.slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.slice(&v.to_be_bytes());
    }
    /// A Variable Byte Integer; callers keep `v` within 268,435,455.
    fn varint(&mut self, v: usize) {
        let mut v = v;
        loop {
            let mut byte = (v % 128) as u8;
            v /= 128;
            if v > 0 {
                byte |= 0x80;
            }
            self.u8(byte);
            if v == 0 {
                break;
            }
        }
    }
    /// Binary Data or a UTF-8 string: two-byte length, then the bytes.
    fn binary(&mut self, data: &[u8]) {
        self.u16(data.len() as u16);
        self.slice(data);
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn slice(&mut self, s: &[u8]) {
        self.put_slice(s);
    }
}

/// Counts the bytes that would be written.
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
    fn varint(&mut self, v: usize) {
        self.0 += super::cursor::varint_len(v);
    }
}

/// Appends `packet` encoded for `version` to `out`.
///
/// CONNECT is written for its own `protocol` field (it is what decides the connection's version).
/// For 3.1 / 3.1.1, reason codes of PUBACK..PUBCOMP and DISCONNECT and all properties are dropped,
/// UNSUBACK carries no payload and SUBACK return codes are written as given. AUTH exists only in
/// 5.0 and is always written in the 5.0 form.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let remaining = body_len(packet, version);
    out.reserve(1 + super::cursor::varint_len(remaining) + remaining);
    out.put_u8(first_byte(packet));
    Sink::varint(out, remaining);
    write_body(out, packet, version);
}

/// A PUBLISH to encode, borrowed from wherever the message is kept: the broker encodes one per
/// subscriber per message, and building an owned [`Publish`] would touch the shared topic's and
/// payload's reference counts (contended between cores in a fan-out) for nothing.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    /// Ignored for QoS 0.
    pub packet_id: u16,
    pub payload: &'a [u8],
    /// Written for 5.0 only.
    pub properties: Option<&'a Properties>,
}

impl PublishView<'_> {
    fn first_byte(&self) -> u8 {
        // DUP must be 0 on QoS 0 (MQTT-3.3.1-2), even if a downgraded copy kept it.
        let dup = self.dup && self.qos != QoS::AtMostOnce;
        0x30 | (u8::from(dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut c = Counter(0);
        publish_body(&mut c, self, version.is_v5());
        c.0
    }

    /// Appends this PUBLISH, encoded for `version`, to `out` (as [`encode`] does).
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        let remaining = self.body_len(version);
        out.reserve(1 + super::cursor::varint_len(remaining) + remaining);
        out.put_u8(self.first_byte());
        Sink::varint(out, remaining);
        publish_body(out, self, version.is_v5());
    }

    /// The bytes [`PublishView::encode`] writes, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.body_len(version);
        1 + super::cursor::varint_len(remaining) + remaining
    }
}

impl<'a> From<&'a Publish> for PublishView<'a> {
    fn from(p: &'a Publish) -> Self {
        PublishView {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: p.properties.as_deref(),
        }
    }
}

/// The number of bytes [`encode`] writes for `packet` (fixed header included), for the 5.0
/// Maximum Packet Size check.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = body_len(packet, version);
    1 + super::cursor::varint_len(remaining) + remaining
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut c = Counter(0);
    write_body(&mut c, packet, version);
    c.0
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => PublishView::from(p).first_byte(),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn write_body<S: Sink>(out: &mut S, packet: &Packet, version: ProtocolVersion) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(out, c),
        Packet::ConnAck(c) => connack(out, c, v5),
        Packet::Publish(p) => publish_body(out, &PublishView::from(p), v5),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            pub_resp(out, r, v5)
        }
        Packet::Subscribe(s) => subscribe(out, s, v5),
        Packet::SubAck(s) => suback(out, s, v5),
        Packet::Unsubscribe(u) => unsubscribe(out, u, v5),
        Packet::UnsubAck(u) => unsuback(out, u, v5),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason, properties }) if v5 => {
            reason_and_props(out, *reason, properties.as_deref())
        }
        Packet::Disconnect(_) => {}
        Packet::Auth(Auth { reason, properties }) => {
            reason_and_props(out, *reason, properties.as_deref())
        }
    }
}

fn connect<S: Sink>(out: &mut S, c: &Connect) {
    let v5 = c.protocol.is_v5();
    let name: &[u8] = if c.protocol == ProtocolVersion::V31 {
        b"MQIsdp"
    } else {
        b"MQTT"
    };
    out.binary(name);
    out.u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.u8(flags);
    out.u16(c.keep_alive);
    if v5 {
        properties::write(out, c.properties.as_deref());
    }
    out.binary(c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            properties::write(out, w.properties.as_deref());
        }
        out.binary(w.topic.as_bytes());
        out.binary(&w.payload);
    }
    if let Some(u) = &c.username {
        out.binary(u.as_bytes());
    }
    if let Some(p) = &c.password {
        out.binary(p.as_bytes());
    }
}

fn connack<S: Sink>(out: &mut S, c: &ConnAck, v5: bool) {
    out.u8(u8::from(c.session_present));
    out.u8(c.code);
    if v5 {
        properties::write(out, c.properties.as_deref());
    }
}

fn publish_body<S: Sink>(out: &mut S, p: &PublishView<'_>, v5: bool) {
    out.binary(p.topic.as_bytes());
    if p.qos as u8 > 0 {
        out.u16(p.packet_id);
    }
    if v5 {
        properties::write(out, p.properties);
    }
    out.slice(p.payload);
}

/// PUBACK..PUBCOMP: 5.0 omits the reason code when it is 0 without properties, and the property
/// length when there are no properties (3.4.2.1).
fn pub_resp<S: Sink>(out: &mut S, r: &PubResp, v5: bool) {
    out.u16(r.packet_id);
    if v5 && (r.reason != 0 || r.properties.is_some()) {
        out.u8(r.reason);
        if r.properties.is_some() {
            properties::write(out, r.properties.as_deref());
        }
    }
}

/// DISCONNECT and AUTH: an empty body means reason 0 without properties (3.14.2.1, 3.15.2.1).
fn reason_and_props<S: Sink>(out: &mut S, reason: u8, props: Option<&super::Properties>) {
    if reason != 0 || props.is_some() {
        out.u8(reason);
        if props.is_some() {
            properties::write(out, props);
        }
    }
}

fn subscribe<S: Sink>(out: &mut S, s: &Subscribe, v5: bool) {
    out.u16(s.packet_id);
    if v5 {
        properties::write(out, s.properties.as_deref());
    }
    for f in &s.filters {
        out.binary(f.filter.as_bytes());
        let o = &f.options;
        let mut byte = o.qos as u8;
        if v5 {
            byte |= (u8::from(o.no_local) << 2)
                | (u8::from(o.retain_as_published) << 3)
                | ((o.retain_handling as u8) << 4);
        }
        out.u8(byte);
    }
}

fn suback<S: Sink>(out: &mut S, s: &SubAck, v5: bool) {
    out.u16(s.packet_id);
    if v5 {
        properties::write(out, s.properties.as_deref());
    }
    out.slice(&s.return_codes);
}

fn unsubscribe<S: Sink>(out: &mut S, u: &Unsubscribe, v5: bool) {
    out.u16(u.packet_id);
    if v5 {
        properties::write(out, u.properties.as_deref());
    }
    for f in &u.filters {
        out.binary(f.as_bytes());
    }
}

fn unsuback<S: Sink>(out: &mut S, u: &UnsubAck, v5: bool) {
    out.u16(u.packet_id);
    if v5 {
        properties::write(out, u.properties.as_deref());
        out.slice(&u.reasons);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::protocol::{Properties, SubscribeFilter, SubscriptionOptions};

    fn bytes(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(packet, version, &mut out);
        assert_eq!(out.len(), encoded_len(packet, version));
        out.to_vec()
    }

    fn props() -> Option<Box<Properties>> {
        Some(Box::new(Properties {
            reason_string: Some("why".into()),
            ..Properties::default()
        }))
    }

    #[test]
    fn v311_drops_what_it_cannot_carry() {
        use ProtocolVersion::V311;
        let ack = PubResp {
            packet_id: 1,
            reason: 0x10,
            properties: props(),
        };
        assert_eq!(bytes(&Packet::PubAck(ack.clone()), V311), [0x40, 2, 0, 1]);
        assert_eq!(bytes(&Packet::PubRel(ack), V311), [0x62, 2, 0, 1]);
        let disconnect = Disconnect {
            reason: 0x04,
            properties: props(),
        };
        assert_eq!(bytes(&Packet::Disconnect(disconnect), V311), [0xE0, 0]);
        let unsuback = UnsubAck {
            packet_id: 7,
            reasons: vec![0x11],
            properties: props(),
        };
        assert_eq!(bytes(&Packet::UnsubAck(unsuback), V311), [0xB0, 2, 0, 7]);
        let suback = SubAck {
            packet_id: 7,
            return_codes: vec![0, 2, 0x80],
            properties: props(),
        };
        assert_eq!(
            bytes(&Packet::SubAck(suback), V311),
            [0x90, 5, 0, 7, 0, 2, 0x80]
        );
        let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
        options.no_local = true;
        let subscribe = Subscribe {
            packet_id: 2,
            filters: vec![SubscribeFilter {
                filter: "a".into(),
                options,
            }],
            properties: props(),
        };
        assert_eq!(
            bytes(&Packet::Subscribe(subscribe), V311),
            [0x82, 6, 0, 2, 0, 1, b'a', 1]
        );
    }

    #[test]
    fn v5_short_forms() {
        use ProtocolVersion::V5;
        let ack = |reason, properties| {
            Packet::PubAck(PubResp {
                packet_id: 1,
                reason,
                properties,
            })
        };
        assert_eq!(bytes(&ack(0, None), V5), [0x40, 2, 0, 1]);
        assert_eq!(bytes(&ack(0x10, None), V5), [0x40, 3, 0, 1, 0x10]);
        assert_eq!(
            bytes(&ack(0, props()), V5),
            [0x40, 10, 0, 1, 0, 6, 0x1F, 0, 3, b'w', b'h', b'y']
        );
        let disconnect = Packet::Disconnect(Disconnect::default());
        assert_eq!(bytes(&disconnect, V5), [0xE0, 0]);
        assert_eq!(bytes(&Packet::Auth(Auth::default()), V5), [0xF0, 0]);
        let connack = Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: None,
        });
        assert_eq!(bytes(&connack, V5), [0x20, 3, 1, 0, 0]);
    }

    #[test]
    fn publish_header() {
        let mut publish = Publish {
            dup: true,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: Arc::from("t"),
            packet_id: 0,
            payload: Bytes::from_static(b"x"),
            properties: None,
        };
        // DUP is never written on QoS 0 (MQTT-3.3.1-2).
        let v311 = ProtocolVersion::V311;
        assert_eq!(
            bytes(&Packet::Publish(publish.clone()), v311),
            [0x31, 4, 0, 1, b't', b'x']
        );
        publish.qos = QoS::ExactlyOnce;
        publish.packet_id = 0x0102;
        assert_eq!(
            bytes(&Packet::Publish(publish), v311),
            [0x3D, 6, 0, 1, b't', 1, 2, b'x']
        );
    }

    #[test]
    fn connect_uses_its_own_protocol() {
        let connect = Connect {
            protocol: ProtocolVersion::V31,
            clean_start: true,
            keep_alive: 10,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: None,
        };
        let expected = [
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 1, b'c',
        ];
        let packet = Packet::Connect(Box::new(connect));
        assert_eq!(bytes(&packet, ProtocolVersion::V5), expected);
    }
}
