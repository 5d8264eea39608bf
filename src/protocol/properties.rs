//! MQTT 5.0 properties (section 2.2.2): a Variable Byte Integer length, then identifier/value pairs.
//!
//! The decoder enforces which identifiers each packet may carry (anything else is a Malformed Packet,
//! 2.2.2.2), that nothing but User Property (and Subscription Identifier on PUBLISH) repeats, and the
//! value ranges the spec calls Protocol Errors. An empty property block decodes to `None`, so
//! `Some` always holds at least one property.

use bytes::{Bytes, BytesMut};

use super::DecodeError;
use super::Properties;
use super::cursor::{Counter, Reader, Sink, VARINT_MAX};

/// Which packet (or part of CONNECT) a property block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropCtx {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropCtx {
    /// This context's bit in the masks `allowed_in` returns; also the const parameter of
    /// [`write`], so that which properties a packet keeps is decided at compile time.
    pub(crate) const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

const CONNECT: u16 = 1 << PropCtx::Connect as u16;
const WILL: u16 = 1 << PropCtx::Will as u16;
const CONNACK: u16 = 1 << PropCtx::ConnAck as u16;
const PUBLISH: u16 = 1 << PropCtx::Publish as u16;
const PUBRESP: u16 = 1 << PropCtx::PubResp as u16;
const SUBSCRIBE: u16 = 1 << PropCtx::Subscribe as u16;
const SUBACK: u16 = 1 << PropCtx::SubAck as u16;
const UNSUBSCRIBE: u16 = 1 << PropCtx::Unsubscribe as u16;
const UNSUBACK: u16 = 1 << PropCtx::UnsubAck as u16;
const DISCONNECT: u16 = 1 << PropCtx::Disconnect as u16;
const AUTH: u16 = 1 << PropCtx::Auth as u16;
const ALL: u16 = CONNECT
    | WILL
    | CONNACK
    | PUBLISH
    | PUBRESP
    | SUBSCRIBE
    | SUBACK
    | UNSUBSCRIBE
    | UNSUBACK
    | DISCONNECT
    | AUTH;

/// The packets each property identifier may appear in (table in section 2.2.2.2).
#[inline]
const fn allowed_in(id: u32) -> u16 {
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH | WILL,
        0x0B => PUBLISH | SUBSCRIBE,
        0x11 => CONNECT | CONNACK | DISCONNECT,
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => CONNACK,
        0x15 | 0x16 => CONNECT | CONNACK | AUTH,
        0x17 | 0x19 => CONNECT,
        0x18 => WILL,
        0x1C => CONNACK | DISCONNECT,
        0x1F => CONNACK | PUBRESP | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        0x21 | 0x22 | 0x27 => CONNECT | CONNACK,
        0x23 => PUBLISH,
        0x26 => ALL,
        _ => 0,
    }
}

const DUPLICATE: DecodeError =
    DecodeError::Protocol("MQTT-2.2.2.2: property included more than once");

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DUPLICATE);
    }
    *slot = Some(value);
    Ok(())
}

/// A one-byte property whose only values are 0 and 1.
fn flag(r: &mut Reader, rule: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol(rule)),
    }
}

fn non_zero_u16(r: &mut Reader, rule: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(rule)),
        v => Ok(v),
    }
}

/// Reads a property block (length included) for `ctx`.
pub(crate) fn read(r: &mut Reader, ctx: PropCtx) -> Result<Option<Box<Properties>>, DecodeError> {
    let len = r.varint()? as usize;
    if len == 0 {
        return Ok(None);
    }
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        let id = r.varint()?;
        if allowed_in(id) & ctx.bit() == 0 {
            return Err(DecodeError::Malformed(
                "MQTT-2.2.2.2: property identifier not valid for this packet",
            ));
        }
        match id {
            0x01 => once(
                &mut p.payload_format_indicator,
                flag(
                    &mut r,
                    "MQTT-3.3.2.3.2: Payload Format Indicator not 0 or 1",
                )?,
            )?,
            0x02 => once(&mut p.message_expiry_interval, r.u32()?)?,
            0x03 => once(&mut p.content_type, r.string()?)?,
            0x08 => once(&mut p.response_topic, response_topic(&mut r)?)?,
            0x09 => once(&mut p.correlation_data, r.binary()?)?,
            0x0B => {
                let v = r.varint()?;
                if v == 0 {
                    return Err(DecodeError::Protocol(
                        "MQTT-3.8.2.1.2: Subscription Identifier of 0",
                    ));
                }
                if ctx == PropCtx::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DUPLICATE);
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => once(&mut p.session_expiry_interval, r.u32()?)?,
            0x12 => once(&mut p.assigned_client_identifier, r.string()?)?,
            0x13 => once(&mut p.server_keep_alive, r.u16()?)?,
            0x15 => once(&mut p.authentication_method, r.string()?)?,
            0x16 => once(&mut p.authentication_data, r.binary()?)?,
            0x17 => once(
                &mut p.request_problem_information,
                flag(
                    &mut r,
                    "MQTT-3.1.2.11.7: Request Problem Information not 0 or 1",
                )?,
            )?,
            0x18 => once(&mut p.will_delay_interval, r.u32()?)?,
            0x19 => once(
                &mut p.request_response_information,
                flag(
                    &mut r,
                    "MQTT-3.1.2.11.6: Request Response Information not 0 or 1",
                )?,
            )?,
            0x1A => once(&mut p.response_information, r.string()?)?,
            0x1C => once(&mut p.server_reference, r.string()?)?,
            0x1F => once(&mut p.reason_string, r.string()?)?,
            0x21 => once(
                &mut p.receive_maximum,
                non_zero_u16(&mut r, "MQTT-3.1.2.11.3: Receive Maximum of 0")?,
            )?,
            0x22 => once(&mut p.topic_alias_maximum, r.u16()?)?,
            // 0 is out of range (MQTT-3.3.2-8), but the session checks the range against its
            // Topic Alias Maximum and answers Topic Alias Invalid (0x94), not Protocol Error.
            0x23 => once(&mut p.topic_alias, r.u16()?)?,
            0x24 => once(
                &mut p.maximum_qos,
                flag(&mut r, "MQTT-3.2.2.3.4: Maximum QoS not 0 or 1")?,
            )?,
            0x25 => once(
                &mut p.retain_available,
                flag(&mut r, "MQTT-3.2.2.3.5: Retain Available not 0 or 1")?,
            )?,
            0x26 => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            0x27 => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol(
                        "MQTT-3.1.2.11.4: Maximum Packet Size of 0",
                    ));
                }
                once(&mut p.maximum_packet_size, v)?;
            }
            0x28 => once(
                &mut p.wildcard_subscription_available,
                flag(
                    &mut r,
                    "MQTT-3.2.2.3.11: Wildcard Subscription Available not 0 or 1",
                )?,
            )?,
            0x29 => once(
                &mut p.subscription_identifier_available,
                flag(
                    &mut r,
                    "MQTT-3.2.2.3.12: Subscription Identifiers Available not 0 or 1",
                )?,
            )?,
            0x2A => once(
                &mut p.shared_subscription_available,
                flag(
                    &mut r,
                    "MQTT-3.2.2.3.13: Shared Subscription Available not 0 or 1",
                )?,
            )?,
            // `allowed_in` returned 0 for every other identifier.
            _ => {
                return Err(DecodeError::Malformed(
                    "MQTT-2.2.2.2: unknown property identifier",
                ));
            }
        }
    }
    Ok(Some(Box::new(p)))
}

/// Response Topic is a topic name: no wildcards (MQTT-3.3.2-14).
fn response_topic(r: &mut Reader) -> Result<String, DecodeError> {
    let topic = r.string()?;
    super::topic::validate_topic_name(&topic).map_err(DecodeError::Protocol)?;
    Ok(topic)
}

/// Optional properties left out of a packet that would exceed the peer's Maximum Packet Size
/// (MQTT 5.0 section 3.1.2.11.4: the Reason String first, then the User Properties). Only for
/// packets whose sender may leave them out: everything the server sends but PUBLISH, whose User
/// Properties must reach the subscriber unaltered (MQTT-3.3.2-17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Omit {
    #[default]
    Nothing,
    ReasonString,
    ReasonStringAndUserProperties,
}

impl Omit {
    /// The next, larger step; `None` after the last.
    pub(crate) fn next(self) -> Option<Omit> {
        match self {
            Omit::Nothing => Some(Omit::ReasonString),
            Omit::ReasonString => Some(Omit::ReasonStringAndUserProperties),
            Omit::ReasonStringAndUserProperties => None,
        }
    }
}

/// Whether a block written for the context `CTX` (a [`PropCtx::bit`]) keeps identifier `id`: if
/// the packet may carry it (anything else would make it malformed, 2.2.2.2) and `omit` does not
/// leave it out. With `CTX` and `id` constants, only the `omit` test is left at run time.
#[inline(always)]
fn keeps<const CTX: u16>(id: u8, omit: Omit) -> bool {
    allowed_in(id as u32) & CTX != 0
        && !(id == 0x1F && omit >= Omit::ReasonString)
        && !(id == 0x26 && omit >= Omit::ReasonStringAndUserProperties)
}

/// Writes the property block for the context `CTX` (a [`PropCtx::bit`]), length prefix
/// included; `None` is written as length 0.
///
/// Whatever `props` holds, the block decodes: identifiers the packet may not carry are left out,
/// as are values the decoder would call a Protocol Error (a Subscription Identifier of 0, a
/// Receive Maximum or Maximum Packet Size of 0, Authentication Data without a Method in CONNECT,
/// a second Subscription Identifier in SUBSCRIBE); flags are written as 0 or 1.
#[inline]
pub(crate) fn write<S: Sink, const CTX: u16>(out: &mut S, props: Option<&Properties>, omit: Omit) {
    match props {
        None => out.u8(0),
        Some(p) => {
            let mut c = Counter::default();
            write_body::<_, CTX>(&mut c, p, omit);
            out.prefixed(&c, |out| write_body::<_, CTX>(out, p, omit));
        }
    }
}

/// A PUBLISH's property block (length prefix included) as bytes: how the store keeps a message's
/// properties. [`read_publish_block`] reads it back.
pub fn publish_block(props: Option<&Properties>) -> BytesMut {
    let mut out = BytesMut::new();
    write::<_, PUBLISH>(&mut out, props, Omit::Nothing);
    out
}

/// Reads a block [`publish_block`] wrote, with the wire's strict decoder (a block read from disk
/// is as untrusted as one from the network). Trailing bytes are an error.
pub fn read_publish_block(bytes: Bytes) -> Result<Option<Box<Properties>>, DecodeError> {
    let mut r = Reader::new(bytes);
    let props = read(&mut r, PropCtx::Publish)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed("bytes after the property block"));
    }
    Ok(props)
}

/// Whether [`write`] would write any property of `p` at all.
pub(crate) fn any<const CTX: u16>(p: &Properties, omit: Omit) -> bool {
    let mut c = Counter::default();
    write_body::<_, CTX>(&mut c, p, omit);
    c.len > 0
}

fn write_body<S: Sink, const CTX: u16>(out: &mut S, p: &Properties, omit: Omit) {
    let keep = |id: u8| keeps::<CTX>(id, omit);
    let flag = |out: &mut S, id: u8, v: Option<u8>| {
        if let Some(v) = v.filter(|_| keep(id)) {
            out.u8(id);
            out.u8(v.min(1));
        }
    };
    let two = |out: &mut S, id: u8, v: Option<u16>| {
        if let Some(v) = v.filter(|_| keep(id)) {
            out.u8(id);
            out.u16(v);
        }
    };
    let four = |out: &mut S, id: u8, v: Option<u32>| {
        if let Some(v) = v.filter(|_| keep(id)) {
            out.u8(id);
            out.u32(v);
        }
    };
    let bin = |out: &mut S, id: u8, v: Option<&[u8]>| {
        if let Some(v) = v.filter(|_| keep(id)) {
            out.u8(id);
            out.binary(v);
        }
    };
    fn s(v: &Option<String>) -> Option<&[u8]> {
        v.as_deref().map(str::as_bytes)
    }
    let non_zero_u16 = |v: Option<u16>| v.filter(|&v| v != 0);
    flag(out, 0x01, p.payload_format_indicator);
    four(out, 0x02, p.message_expiry_interval);
    bin(out, 0x03, s(&p.content_type));
    bin(out, 0x08, s(&p.response_topic));
    bin(out, 0x09, p.correlation_data.as_deref());
    if keep(0x0B) {
        let ids = p.subscription_identifiers.iter().filter(|&&id| id != 0);
        let most = if CTX == SUBSCRIBE { 1 } else { usize::MAX };
        for &id in ids.take(most) {
            out.u8(0x0B);
            out.varint(id.min(VARINT_MAX) as usize);
        }
    }
    four(out, 0x11, p.session_expiry_interval);
    bin(out, 0x12, s(&p.assigned_client_identifier));
    two(out, 0x13, p.server_keep_alive);
    bin(out, 0x15, s(&p.authentication_method));
    let data_alone = CTX == CONNECT && p.authentication_method.is_none();
    bin(
        out,
        0x16,
        p.authentication_data.as_deref().filter(|_| !data_alone),
    );
    flag(out, 0x17, p.request_problem_information);
    four(out, 0x18, p.will_delay_interval);
    flag(out, 0x19, p.request_response_information);
    bin(out, 0x1A, s(&p.response_information));
    bin(out, 0x1C, s(&p.server_reference));
    if let Some(why) = p.reason_string.as_deref().filter(|_| keep(0x1F)) {
        out.u8(0x1F);
        out.text(why);
    }
    two(out, 0x21, non_zero_u16(p.receive_maximum));
    two(out, 0x22, p.topic_alias_maximum);
    two(out, 0x23, p.topic_alias);
    flag(out, 0x24, p.maximum_qos);
    flag(out, 0x25, p.retain_available);
    if keep(0x26) {
        for (key, value) in &p.user_properties {
            out.u8(0x26);
            out.text(key);
            out.text(value);
        }
    }
    four(out, 0x27, p.maximum_packet_size.filter(|&v| v != 0));
    flag(out, 0x28, p.wildcard_subscription_available);
    flag(out, 0x29, p.subscription_identifier_available);
    flag(out, 0x2A, p.shared_subscription_available);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};

    fn parse(bytes: &'static [u8], ctx: PropCtx) -> Result<Option<Box<Properties>>, DecodeError> {
        let mut r = Reader::new(Bytes::from_static(bytes));
        let out = read(&mut r, ctx);
        if out.is_ok() {
            assert!(r.is_empty(), "property block not fully consumed");
        }
        out
    }

    #[test]
    fn empty_block_is_none() {
        assert_eq!(parse(&[0], PropCtx::Publish), Ok(None));
    }

    #[test]
    fn user_property_repeats_others_do_not() {
        let ok = parse(
            &[13, 0x26, 0, 1, b'a', 0, 1, b'b', 0x26, 0, 1, b'a', 0, 0],
            PropCtx::Disconnect,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.user_properties.len(), 2);
        assert_eq!(
            parse(&[4, 0x23, 0, 1, 0x23], PropCtx::Publish),
            Err(super::super::cursor::SHORT)
        );
        assert_eq!(
            parse(&[6, 0x23, 0, 1, 0x23, 0, 2], PropCtx::Publish),
            Err(DUPLICATE)
        );
    }

    #[test]
    fn identifiers_are_checked_per_packet() {
        // Topic Alias in a SUBACK; Session Expiry in PUBLISH; unknown 0x7F.
        assert!(matches!(
            parse(&[3, 0x23, 0, 1], PropCtx::SubAck),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse(&[5, 0x11, 0, 0, 0, 1], PropCtx::Publish),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse(&[2, 0x7F, 0], PropCtx::Connect),
            Err(DecodeError::Malformed(_))
        ));
        // Will Delay Interval only in will properties.
        assert!(parse(&[5, 0x18, 0, 0, 0, 1], PropCtx::Will).is_ok());
        assert!(parse(&[5, 0x18, 0, 0, 0, 1], PropCtx::Connect).is_err());
    }

    #[test]
    fn value_ranges() {
        let protocol = |r: Result<_, _>| matches!(r, Err(DecodeError::Protocol(_)));
        assert!(protocol(parse(&[2, 0x01, 2], PropCtx::Publish)));
        assert!(protocol(parse(&[2, 0x17, 2], PropCtx::Connect)));
        assert!(protocol(parse(&[2, 0x19, 2], PropCtx::Connect)));
        assert!(protocol(parse(&[2, 0x24, 2], PropCtx::ConnAck)));
        assert!(protocol(parse(&[3, 0x21, 0, 0], PropCtx::Connect)));
        assert!(protocol(parse(&[5, 0x27, 0, 0, 0, 0], PropCtx::Connect)));
        // Topic Alias 0 decodes: the session refuses it with 0x94 (Topic Alias Invalid).
        let alias = parse(&[3, 0x23, 0, 0], PropCtx::Publish).unwrap().unwrap();
        assert_eq!(alias.topic_alias, Some(0));
        assert!(protocol(parse(&[2, 0x0B, 0], PropCtx::Subscribe)));
        assert!(protocol(parse(&[4, 0x0B, 1, 0x0B, 2], PropCtx::Subscribe)));
        let many = parse(&[4, 0x0B, 1, 0x0B, 2], PropCtx::Publish)
            .unwrap()
            .unwrap();
        assert_eq!(many.subscription_identifiers, vec![1, 2]);
        assert!(protocol(parse(
            &[5, 0x08, 0, 2, b'a', b'#'],
            PropCtx::Publish
        )));
    }

    #[test]
    fn write_then_read() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\xFF")),
            subscription_identifiers: vec![1, 268_435_455],
            topic_alias: Some(7),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "".into())],
            ..Properties::default()
        };
        let mut out = BytesMut::new();
        write::<_, PUBLISH>(&mut out, Some(&p), Omit::Nothing);
        let mut c = Counter::default();
        write::<_, PUBLISH>(&mut c, Some(&p), Omit::Nothing);
        assert_eq!(out.len(), c.len);
        let mut r = Reader::new(out.freeze());
        assert_eq!(read(&mut r, PropCtx::Publish), Ok(Some(Box::new(p))));
        assert!(r.is_empty());
    }
}
