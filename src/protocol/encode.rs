//! Encoding packets into a write buffer, bounded so that no model value becomes a malformed packet.
//!
//! Every body is written through `Sink` twice: into a `Counter`, to learn the remaining length and
//! whether everything fits, then into the `BytesMut`. Both passes see the same calls, so a length
//! prefix can never disagree with its bytes, and nothing is allocated besides the single
//! `reserve` on the output buffer. What a packet must fit is checked before a byte is written:
//!
//! - Fields: text for people (Reason String, User Property) over 65,535 bytes is cut on a char
//!   boundary; a longer topic, identifier, filter or binary field refuses the packet
//!   ([`EncodeError::FieldTooLong`]): sending a cut topic or password would be worse.
//! - Size: the remaining length stays within 268,435,455 and the whole packet within the bound
//!   given (the peer's Maximum Packet Size). A packet that would exceed it loses its Reason String,
//!   then its User Properties, where the spec allows that (MQTT 5.0 section 3.1.2.11.4: every
//!   packet the server sends but PUBLISH); one that still does not fit is refused
//!   ([`EncodeError::TooLarge`]) for the caller to skip (MQTT-3.1.2-25).
//! - Structure: packet identifiers non-zero where required, SUBSCRIBE and UNSUBSCRIBE with a
//!   filter, a PUBLISH topic (or a Topic Alias), DUP never on QoS 0, Session Present only on
//!   success, no AUTH before 5.0, only the properties the packet may carry (see
//!   `properties::write`). Reason codes are typed per packet family, so a packet cannot carry
//!   another family's; 3.1.1 gets the narrower CONNACK and SUBACK forms.
//!
//! String *content* is the model's invariant, not checked here: UTF-8 by type, no U+0000 and no
//! wildcards in topic names. The decoder enforces it on everything that comes in and
//! [`super::text::cut`] escapes what is built from client input; looking again would cost every
//! PUBLISH a second pass over its topic.

use bytes::{BufMut, BytesMut};

use super::cursor::{Counter, Sink, VARINT_MAX, varint_len};
use super::properties::{self, Omit, PropCtx};
use super::reason::ConnAckReason;
use super::{
    Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// The largest packet MQTT can frame: a 268,435,455-byte remaining length behind a five-byte
/// fixed header. A bound above it means "no bound but the protocol's".
pub const MAX_PACKET_SIZE: usize = 1 + 4 + VARINT_MAX as usize;

/// Why a packet was not written (nothing was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Larger than the bound (the peer's Maximum Packet Size, or the protocol's limit) even
    /// without the properties that may be left out.
    #[error("{packet} of {size} bytes exceeds the maximum packet size of {max}")]
    TooLarge {
        packet: &'static str,
        size: usize,
        max: usize,
    },
    /// A topic, identifier, filter or binary field longer than 65,535 bytes.
    #[error("{packet} has a field longer than 65,535 bytes")]
    FieldTooLong { packet: &'static str },
    /// A value the packet cannot carry; the string names the rule.
    #[error("{packet}: {rule}")]
    Invalid {
        packet: &'static str,
        rule: &'static str,
    },
}

/// Appends `packet` encoded for `version` to `out`, bounded by the protocol's limits only;
/// returns the bytes written. See [`encode_within`].
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    encode_within(packet, version, MAX_PACKET_SIZE, out)
}

/// Appends `packet` encoded for `version` to `out` if it fits in `max` bytes (the peer's Maximum
/// Packet Size; the protocol's limit applies anyway), leaving out its Reason String and then its
/// User Properties if that makes it fit and the spec allows it. Returns the bytes written; on
/// `Err` nothing was written.
///
/// CONNECT is written for its own `protocol` field (it is what decides the connection's version).
/// For 3.1 / 3.1.1, reason codes of PUBACK..PUBCOMP and DISCONNECT and all properties are dropped,
/// UNSUBACK carries no payload, CONNACK and SUBACK codes take their 3.1.1 form. AUTH exists only
/// in 5.0 and is refused for the others.
pub fn encode_within(
    packet: &Packet,
    version: ProtocolVersion,
    max: usize,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check(packet, version)?;
    let reducible = version.is_v5() && may_omit(packet);
    let mut omit = Omit::Nothing;
    let remaining = loop {
        let mut c = Counter::default();
        write_body(&mut c, packet, version, omit);
        match fits(&c, max, packet.name()) {
            Ok(()) => break c.len,
            Err(e @ EncodeError::TooLarge { .. }) => match omit.next() {
                Some(next) if reducible => omit = next,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    };
    let total = 1 + varint_len(remaining) + remaining;
    out.reserve(total);
    out.put_u8(first_byte(packet));
    Sink::varint(out, remaining);
    write_body(out, packet, version, omit);
    Ok(total)
}

/// The packets whose Reason String and User Properties the sender may leave out.
fn may_omit(packet: &Packet) -> bool {
    !matches!(
        packet,
        Packet::Connect(_)
            | Packet::Publish(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::PingResp
    )
}

/// `Ok` if a body counted into `c` can be framed and sent within `max` bytes.
/// (A remaining length over 268,435,455 makes the size exceed `MAX_PACKET_SIZE`: `varint_len`
/// stops at 4.)
#[inline]
fn fits(c: &Counter, max: usize, packet: &'static str) -> Result<(), EncodeError> {
    let size = 1 + varint_len(c.len) + c.len;
    if size > max.min(MAX_PACKET_SIZE) || c.oversized {
        return Err(unfit(c, max, packet));
    }
    Ok(())
}

#[cold]
fn unfit(c: &Counter, max: usize, packet: &'static str) -> EncodeError {
    let size = 1 + varint_len(c.len) + c.len;
    let max = max.min(MAX_PACKET_SIZE);
    if size > max {
        EncodeError::TooLarge { packet, size, max }
    } else {
        EncodeError::FieldTooLong { packet }
    }
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

    /// The rules [`PublishView::encode`] checks in one go, one by one (an empty topic is fine
    /// with a Topic Alias).
    #[cold]
    fn vet(&self, version: ProtocolVersion, c: &Counter, max: usize) -> Result<(), EncodeError> {
        self.check(version)?;
        fits(c, max, "PUBLISH")
    }

    /// The structural rules: a packet identifier with QoS 1 and 2, a topic (or Topic Alias).
    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        let invalid = |rule| {
            Err(EncodeError::Invalid {
                packet: "PUBLISH",
                rule,
            })
        };
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return invalid("MQTT-2.3.1-1: packet identifier 0");
        }
        let alias = version.is_v5() && self.properties.is_some_and(|p| p.topic_alias.is_some());
        if self.topic.is_empty() && !alias {
            return invalid("MQTT-4.7.3-1: empty topic name without a Topic Alias");
        }
        Ok(())
    }

    /// Appends this PUBLISH, encoded for `version`, to `out` if it fits in `max` bytes (see
    /// [`encode_within`]; nothing is ever left out of a PUBLISH). Returns the bytes written; on
    /// `Err` nothing was written, and the caller skips the message (MQTT-3.1.2-25).
    #[inline]
    pub fn encode(
        &self,
        version: ProtocolVersion,
        max: usize,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let v5 = version.is_v5();
        let mut c = Counter::default();
        publish_body(&mut c, self, v5);
        let total = 1 + varint_len(c.len) + c.len;
        // All the rules in one branch (`|`, not `||`): this runs per subscriber per message.
        let unusual = (self.qos != QoS::AtMostOnce) & (self.packet_id == 0) | self.topic.is_empty();
        if unusual | c.oversized | (total > max.min(MAX_PACKET_SIZE)) {
            self.vet(version, &c, max)?;
        }
        out.reserve(total);
        out.put_u8(self.first_byte());
        Sink::varint(out, c.len);
        publish_body(out, self, v5);
        Ok(total)
    }

    /// The bytes [`PublishView::encode`] writes, fixed header included (if it writes them).
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let mut c = Counter::default();
        publish_body(&mut c, self, version.is_v5());
        1 + varint_len(c.len) + c.len
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

/// The number of bytes [`encode`] writes for `packet` (fixed header included) if it writes it,
/// with every property (none left out for size).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut c = Counter::default();
    write_body(&mut c, packet, version, Omit::Nothing);
    1 + varint_len(c.len) + c.len
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

/// The structural rules a model value can break (lengths and sizes are the `Counter`'s).
fn check(packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
    let name = packet.name();
    let invalid = |rule| EncodeError::Invalid { packet: name, rule };
    let id = |id: u16| match id {
        0 => Err(invalid("MQTT-2.3.1-1: packet identifier 0")),
        _ => Ok(()),
    };
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => {
            if c.password.is_some() && c.username.is_none() && !c.protocol.is_v5() {
                return Err(invalid("MQTT-3.1.2-22: password without user name"));
            }
            if c.will.as_ref().is_some_and(|w| w.topic.is_empty()) {
                return Err(invalid("MQTT-4.7.3-1: empty will topic"));
            }
        }
        Packet::ConnAck(_) | Packet::PingReq | Packet::PingResp | Packet::Disconnect(_) => {}
        Packet::Publish(p) => PublishView::from(p).check(version)?,
        Packet::PubAck(r) | Packet::PubRec(r) => id(r.packet_id)?,
        Packet::PubRel(r) | Packet::PubComp(r) => id(r.packet_id)?,
        Packet::Subscribe(s) => {
            id(s.packet_id)?;
            if s.filters.is_empty() {
                return Err(invalid("MQTT-3.8.3-3: SUBSCRIBE without topic filters"));
            }
        }
        Packet::SubAck(s) => id(s.packet_id)?,
        Packet::Unsubscribe(u) => {
            id(u.packet_id)?;
            if u.filters.is_empty() {
                return Err(invalid("MQTT-3.10.3-2: UNSUBSCRIBE without topic filters"));
            }
        }
        Packet::UnsubAck(u) => id(u.packet_id)?,
        Packet::Auth(_) if !v5 => return Err(invalid("MQTT-2.2.1: AUTH exists only in 5.0")),
        Packet::Auth(_) => {}
    }
    Ok(())
}

fn write_body<S: Sink>(out: &mut S, packet: &Packet, version: ProtocolVersion, omit: Omit) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(out, c),
        Packet::ConnAck(c) => connack(out, c, v5, omit),
        Packet::Publish(p) => publish_body(out, &PublishView::from(p), v5),
        Packet::PubAck(r) | Packet::PubRec(r) => pub_resp(out, r, v5, omit),
        Packet::PubRel(r) | Packet::PubComp(r) => pub_resp(out, r, v5, omit),
        Packet::Subscribe(s) => subscribe(out, s, v5),
        Packet::SubAck(s) => suback(out, s, v5, omit),
        Packet::Unsubscribe(u) => unsubscribe(out, u, v5),
        Packet::UnsubAck(u) => unsuback(out, u, v5, omit),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason, properties }) if v5 => {
            let props = properties.as_deref();
            reason_and_props::<_, { PropCtx::Disconnect.bit() }>(out, (*reason).into(), props, omit)
        }
        Packet::Disconnect(_) => {}
        Packet::Auth(Auth { reason, properties }) => {
            let props = properties.as_deref();
            reason_and_props::<_, { PropCtx::Auth.bit() }>(out, (*reason).into(), props, omit)
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
        properties::write::<_, { PropCtx::Connect.bit() }>(
            out,
            c.properties.as_deref(),
            Omit::Nothing,
        );
    }
    out.binary(c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            properties::write::<_, { PropCtx::Will.bit() }>(
                out,
                w.properties.as_deref(),
                Omit::Nothing,
            );
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

fn connack<S: Sink>(out: &mut S, c: &ConnAck, v5: bool, omit: Omit) {
    // Session Present only with success (MQTT-3.2.2-4, MQTT-3.2.2-6).
    out.u8(u8::from(
        c.session_present && c.code == ConnAckReason::Success,
    ));
    out.u8(if v5 {
        c.code.into()
    } else {
        c.code.v3().into()
    });
    if v5 {
        properties::write::<_, { PropCtx::ConnAck.bit() }>(out, c.properties.as_deref(), omit);
    }
}

fn publish_body<S: Sink>(out: &mut S, p: &PublishView<'_>, v5: bool) {
    out.binary(p.topic.as_bytes());
    if p.qos as u8 > 0 {
        out.u16(p.packet_id);
    }
    if v5 {
        properties::write::<_, { PropCtx::Publish.bit() }>(out, p.properties, Omit::Nothing);
    }
    out.slice(p.payload);
}

/// The properties to write for a packet whose property length may be left out when there are
/// none: `None` if nothing of `props` would be written.
fn some_props<const CTX: u16>(props: Option<&Properties>, omit: Omit) -> Option<&Properties> {
    props.filter(|p| properties::any::<CTX>(p, omit))
}

/// PUBACK..PUBCOMP: 5.0 omits the reason code when it is 0 without properties, and the property
/// length when there are no properties (3.4.2.1).
fn pub_resp<S: Sink, R: Copy + Into<u8>>(out: &mut S, r: &PubResp<R>, v5: bool, omit: Omit) {
    out.u16(r.packet_id);
    if !v5 {
        return;
    }
    const CTX: u16 = PropCtx::PubResp.bit();
    let props = some_props::<CTX>(r.properties.as_deref(), omit);
    let reason: u8 = r.reason.into();
    if reason != 0 || props.is_some() {
        out.u8(reason);
        if props.is_some() {
            properties::write::<_, CTX>(out, props, omit);
        }
    }
}

/// DISCONNECT and AUTH: an empty body means reason 0 without properties (3.14.2.1, 3.15.2.1).
fn reason_and_props<S: Sink, const CTX: u16>(
    out: &mut S,
    reason: u8,
    props: Option<&Properties>,
    omit: Omit,
) {
    let props = some_props::<CTX>(props, omit);
    if reason != 0 || props.is_some() {
        out.u8(reason);
        if props.is_some() {
            properties::write::<_, CTX>(out, props, omit);
        }
    }
}

fn subscribe<S: Sink>(out: &mut S, s: &Subscribe, v5: bool) {
    out.u16(s.packet_id);
    if v5 {
        properties::write::<_, { PropCtx::Subscribe.bit() }>(
            out,
            s.properties.as_deref(),
            Omit::Nothing,
        );
    }
    for f in &s.filters {
        out.binary(f.filter.as_bytes());
        let o = &f.options;
        let mut byte = o.qos as u8;
        if v5 {
            // No Local on a shared subscription is a Protocol Error (MQTT-3.8.3-4).
            let no_local = o.no_local && !f.filter.starts_with("$share/");
            byte |= (u8::from(no_local) << 2)
                | (u8::from(o.retain_as_published) << 3)
                | ((o.retain_handling as u8) << 4);
        }
        out.u8(byte);
    }
}

fn suback<S: Sink>(out: &mut S, s: &SubAck, v5: bool, omit: Omit) {
    out.u16(s.packet_id);
    if v5 {
        properties::write::<_, { PropCtx::SubAck.bit() }>(out, s.properties.as_deref(), omit);
        for &code in &s.return_codes {
            out.u8(code.into());
        }
    } else {
        for &code in &s.return_codes {
            out.u8(code.v3());
        }
    }
}

fn unsubscribe<S: Sink>(out: &mut S, u: &Unsubscribe, v5: bool) {
    out.u16(u.packet_id);
    if v5 {
        properties::write::<_, { PropCtx::Unsubscribe.bit() }>(
            out,
            u.properties.as_deref(),
            Omit::Nothing,
        );
    }
    for f in &u.filters {
        out.binary(f.as_bytes());
    }
}

fn unsuback<S: Sink>(out: &mut S, u: &UnsubAck, v5: bool, omit: Omit) {
    out.u16(u.packet_id);
    if v5 {
        properties::write::<_, { PropCtx::UnsubAck.bit() }>(out, u.properties.as_deref(), omit);
        for &code in &u.reasons {
            out.u8(code.into());
        }
    }
}
