//! Decoding: fixed header framing first, then one parser per packet type.
//!
//! Framing never looks past the fixed header: the packet type and flags are checked as soon as the
//! first byte is there, the declared size against `max_packet_size` as soon as the remaining length
//! is complete, and only then is the body waited for. Each parser gets exactly the body's bytes and
//! must consume all of them.

use std::sync::Arc;

use bytes::BytesMut;

use super::cursor::{Reader, read_varint};
use super::properties::{self, PropCtx};
use super::reason::{
    ConnAckReason, ConnectReturnCode, DisconnectReason, SubAckReason, UnknownReason, UnsubAckReason,
};
use super::topic::validate_topic_name;
use super::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Password, ProtocolVersion,
    PubResp, Publish, QoS, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

type Result<T> = std::result::Result<T, DecodeError>;

const TRAILING: DecodeError =
    DecodeError::Malformed("MQTT-2.2.3: bytes left over after the packet's content");
const PACKET_ID_ZERO: DecodeError =
    DecodeError::Malformed("MQTT-2.3.1-1: packet identifier must be non-zero");

/// Most bytes reserved ahead of their arrival for an incomplete packet. The declared length is
/// only a claim: reserving all of it let five bytes make the broker allocate up to
/// `max_packet_size`, per connection, for as long as the client cared to wait. Larger packets
/// grow the buffer as their bytes actually arrive.
const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// `Ok(None)`: not enough bytes yet (nothing consumed). `max_packet_size` bounds the whole packet
/// (fixed header included) and is checked from the fixed header before the body is buffered.
/// `version` is the connection's negotiated version; a CONNECT is decoded from its own header.
/// On `Err` the connection is beyond repair; what was consumed is unspecified.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, len_bytes)) = read_varint(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let total = header_len + remaining as usize;
    if total > max_packet_size {
        return Err(DecodeError::TooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        buf.reserve((total - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let body = frame.split_off(header_len);
    let mut r = Reader::new(body);
    let packet = parse_body(first, &mut r, version)?;
    if !r.is_empty() {
        return Err(TRAILING);
    }
    Ok(Some(packet))
}

/// Packet type and fixed-header flags (MQTT-2.2.2-1, MQTT-2.2.2-2, MQTT-3.3.1-2, MQTT-3.3.1-4).
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<()> {
    let flags = first & 0x0F;
    match first >> 4 {
        0 => Err(DecodeError::Malformed("MQTT-2.2.1: reserved packet type 0")),
        15 if !version.is_v5() => Err(DecodeError::Malformed(
            "MQTT-2.2.1: reserved packet type 15 (AUTH exists only in 5.0)",
        )),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                Err(DecodeError::Malformed("MQTT-3.3.1-4: PUBLISH with QoS 3"))
            } else if qos == 0 && flags & 0x08 != 0 {
                Err(DecodeError::Malformed(
                    "MQTT-3.3.1-2: DUP set on a QoS 0 PUBLISH",
                ))
            } else {
                Ok(())
            }
        }
        6 | 8 | 10 if flags != 0b0010 => Err(DecodeError::Malformed(
            "MQTT-2.2.2-2: PUBREL/SUBSCRIBE/UNSUBSCRIBE flags must be 0010",
        )),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(DecodeError::Malformed(
            "MQTT-2.2.2-2: reserved fixed header flags must be 0000",
        )),
        _ => Ok(()),
    }
}

fn parse_body(first: u8, r: &mut Reader, version: ProtocolVersion) -> Result<Packet> {
    let v5 = version.is_v5();
    Ok(match first >> 4 {
        1 => Packet::Connect(Box::new(connect(r)?)),
        2 => Packet::ConnAck(connack(r, v5)?),
        3 => Packet::Publish(publish(first, r, v5)?),
        4 => Packet::PubAck(pub_resp(r, v5)?),
        5 => Packet::PubRec(pub_resp(r, v5)?),
        6 => Packet::PubRel(pub_resp(r, v5)?),
        7 => Packet::PubComp(pub_resp(r, v5)?),
        8 => Packet::Subscribe(subscribe(r, v5)?),
        9 => Packet::SubAck(suback(r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(r, v5)?),
        11 => Packet::UnsubAck(unsuback(r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (reason, properties) = if v5 {
                reason_and_props(r, PropCtx::Disconnect)?
            } else {
                (DisconnectReason::default(), None)
            };
            Packet::Disconnect(Disconnect { reason, properties })
        }
        // 15 only passes `check_first_byte` for 5.0.
        _ => {
            let (reason, properties) = reason_and_props(r, PropCtx::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
    })
}

fn packet_id(r: &mut Reader) -> Result<u16> {
    match r.u16()? {
        0 => Err(PACKET_ID_ZERO),
        id => Ok(id),
    }
}

fn qos(bits: u8, rule: &'static str) -> Result<QoS> {
    QoS::from_u8(bits).ok_or(DecodeError::Malformed(rule))
}

fn connect(r: &mut Reader) -> Result<Connect> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (name.as_str(), level) {
        ("MQIsdp", 3) => ProtocolVersion::V31,
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { name, level }),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "MQTT-3.1.2-3: CONNECT reserved flag set",
        ));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && will_qos_bits != 0 {
        return Err(DecodeError::Malformed(
            "MQTT-3.1.2-13: will QoS set without will flag",
        ));
    }
    if !will_flag && will_retain {
        return Err(DecodeError::Malformed(
            "MQTT-3.1.2-15: will retain set without will flag",
        ));
    }
    let will_qos = qos(will_qos_bits, "MQTT-3.1.2-14: will QoS 3")?;
    if password_flag && !username_flag && !v5 {
        return Err(DecodeError::Malformed(
            "MQTT-3.1.2-22: password flag set without user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        properties::read(r, PropCtx::Connect)?
    } else {
        None
    };
    if properties
        .as_ref()
        .is_some_and(|p| p.authentication_data.is_some() && p.authentication_method.is_none())
    {
        return Err(DecodeError::Protocol(
            "MQTT-3.1.2.11.10: Authentication Data without Authentication Method",
        ));
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            properties::read(r, PropCtx::Will)?
        } else {
            None
        };
        let topic: Arc<str> = r.str_with(|s| Arc::from(s))?;
        validate_topic_name(&topic).map_err(DecodeError::Malformed)?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(Password::new(r.binary()?.to_vec()))
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed(
            "MQTT-3.2.2.1: CONNACK reserved flags set",
        ));
    }
    let code = r.u8()?;
    let (code, properties) = if v5 {
        let code = ConnAckReason::try_from(code)
            .map_err(|_| DecodeError::Malformed("MQTT-3.2.2-8: invalid CONNACK reason code"))?;
        (code, properties::read(r, PropCtx::ConnAck)?)
    } else {
        let code = ConnectReturnCode::try_from(code)
            .map_err(|_| DecodeError::Malformed("MQTT-3.2.2.3: invalid CONNACK return code"))?;
        (ConnAckReason::from(code), None)
    };
    let session_present = flags & 0x01 != 0;
    if session_present && code != ConnAckReason::Success {
        return Err(DecodeError::Malformed(
            "MQTT-3.2.2-6: Session Present set on a refusal",
        ));
    }
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn publish(first: u8, r: &mut Reader, v5: bool) -> Result<Publish> {
    // QoS 3 was rejected with the first byte.
    let qos = qos((first >> 1) & 0x03, "MQTT-3.3.1-4: PUBLISH with QoS 3")?;
    let topic: Arc<str> = r.str_with(|s| Arc::from(s))?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let properties = if v5 {
        properties::read(r, PropCtx::Publish)?
    } else {
        None
    };
    let has_alias = properties.as_ref().is_some_and(|p| p.topic_alias.is_some());
    if !(topic.is_empty() && has_alias) {
        validate_topic_name(&topic).map_err(DecodeError::Malformed)?;
    }
    Ok(Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 0x01 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// A reason code of the family `R`; any other byte is malformed (section 2.4).
fn reason_code<R: TryFrom<u8, Error = UnknownReason>>(r: &mut Reader) -> Result<R> {
    R::try_from(r.u8()?)
        .map_err(|_| DecodeError::Malformed("MQTT-2.4: reason code not valid for this packet"))
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 a body of 2 bytes means reason 0 and no properties,
/// 3 bytes means no properties (3.4.2.1).
fn pub_resp<R>(r: &mut Reader, v5: bool) -> Result<PubResp<R>>
where
    R: TryFrom<u8, Error = UnknownReason> + Default,
{
    let packet_id = packet_id(r)?;
    let (reason, properties) = if v5 && !r.is_empty() {
        let reason = reason_code(r)?;
        let props = if r.is_empty() {
            None
        } else {
            properties::read(r, PropCtx::PubResp)?
        };
        (reason, props)
    } else {
        (R::default(), None)
    };
    Ok(PubResp {
        packet_id,
        reason,
        properties,
    })
}

/// DISCONNECT and AUTH (5.0): an empty body means reason 0; no property length means none.
fn reason_and_props<R>(r: &mut Reader, ctx: PropCtx) -> Result<(R, Option<Box<super::Properties>>)>
where
    R: TryFrom<u8, Error = UnknownReason> + Default,
{
    if r.is_empty() {
        return Ok((R::default(), None));
    }
    let reason = reason_code(r)?;
    if r.is_empty() {
        return Ok((reason, None));
    }
    Ok((reason, properties::read(r, ctx)?))
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, PropCtx::Subscribe)?
    } else {
        None
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        if options.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::Protocol(
                "MQTT-3.8.3-4: No Local set on a shared subscription",
            ));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed(
            "MQTT-3.8.3-3: SUBSCRIBE without topic filters",
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions> {
    let qos = qos(byte & 0x03, "MQTT-3.8.3-4: requested QoS 3")?;
    if !v5 {
        if byte & 0xFC != 0 {
            return Err(DecodeError::Malformed(
                "MQTT-3.8.3-4: reserved subscription option bits set",
            ));
        }
        return Ok(SubscriptionOptions::new(qos));
    }
    if byte & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "MQTT-3.8.3-5: reserved subscription option bits set",
        ));
    }
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => {
            return Err(DecodeError::Malformed("MQTT-3.8.3.1: Retain Handling of 3"));
        }
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, PropCtx::SubAck)?
    } else {
        None
    };
    // 3.1.1 knows the granted QoS and 0x80 (Failure) only.
    let return_codes = r
        .rest()
        .iter()
        .map(|&c| match SubAckReason::try_from(c) {
            Ok(code) if v5 || code.v3() == c => Ok(code),
            _ => Err(DecodeError::Malformed(
                "MQTT-3.9.3-2: invalid SUBACK return code",
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SubAck {
        packet_id,
        return_codes,
        properties,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, PropCtx::Unsubscribe)?
    } else {
        None
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed(
            "MQTT-3.10.3-2: UNSUBSCRIBE without topic filters",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck> {
    let packet_id = packet_id(r)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: None,
        });
    }
    let properties = properties::read(r, PropCtx::UnsubAck)?;
    let reasons = r
        .rest()
        .iter()
        .map(|&c| {
            UnsubAckReason::try_from(c)
                .map_err(|_| DecodeError::Malformed("MQTT-3.11.3: invalid UNSUBACK reason code"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5(bytes: &[u8]) -> Result<Option<Packet>> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V5, 1 << 16)
    }

    fn malformed(r: Result<Option<Packet>>) -> bool {
        matches!(r, Err(DecodeError::Malformed(_)))
    }

    fn protocol(r: Result<Option<Packet>>) -> bool {
        matches!(r, Err(DecodeError::Protocol(_)))
    }

    #[test]
    fn pub_resp_short_forms() {
        fn resp<R>(reason: R) -> PubResp<R> {
            PubResp {
                packet_id: 1,
                reason,
                properties: None,
            }
        }
        use crate::protocol::{PubAckReason, PubRelReason};
        assert_eq!(
            v5(&[0x40, 2, 0, 1]),
            Ok(Some(Packet::PubAck(resp(PubAckReason::Success))))
        );
        assert_eq!(
            v5(&[0x50, 3, 0, 1, 0x10]),
            Ok(Some(Packet::PubRec(resp(
                PubAckReason::NoMatchingSubscribers
            ))))
        );
        assert_eq!(
            v5(&[0x62, 4, 0, 1, 0x92, 0]),
            Ok(Some(Packet::PubRel(resp(
                PubRelReason::PacketIdentifierNotFound
            ))))
        );
        assert_eq!(
            v5(&[0x70, 3, 0, 1, 0]),
            Ok(Some(Packet::PubComp(resp(PubRelReason::Success))))
        );
        // Codes from the wrong table, and a property PUBACK may not carry.
        assert!(malformed(v5(&[0x40, 3, 0, 1, 0x92])));
        assert!(malformed(v5(&[0x62, 3, 0, 1, 0x10])));
        assert!(malformed(v5(&[0x40, 7, 0, 1, 0, 3, 0x23, 0, 1])));
        // Property length running past the end.
        assert!(malformed(v5(&[0x40, 4, 0, 1, 0, 5])));
    }

    #[test]
    fn disconnect_and_auth_short_forms() {
        assert_eq!(
            v5(&[0xE0, 0]),
            Ok(Some(Packet::Disconnect(Disconnect::default())))
        );
        let d = Disconnect {
            reason: DisconnectReason::DisconnectWithWillMessage,
            properties: None,
        };
        assert_eq!(v5(&[0xE0, 1, 0x04]), Ok(Some(Packet::Disconnect(d))));
        assert!(malformed(v5(&[0xE0, 1, 0x05])));
        assert_eq!(v5(&[0xF0, 0]), Ok(Some(Packet::Auth(Auth::default()))));
        assert!(malformed(v5(&[0xF0, 1, 0x01])));
        // Session Expiry is allowed in DISCONNECT, not in AUTH.
        assert!(v5(&[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 9]).is_ok());
        assert!(malformed(v5(&[0xF0, 7, 0, 5, 0x11, 0, 0, 0, 9])));
    }

    #[test]
    fn publish_empty_topic_needs_an_alias() {
        let with_alias = [0x30, 8, 0, 0, 3, 0x23, 0, 5, b'h', b'i'];
        let Ok(Some(Packet::Publish(p))) = v5(&with_alias) else {
            panic!("empty topic with alias");
        };
        assert_eq!(&*p.topic, "");
        assert_eq!(p.properties.and_then(|p| p.topic_alias), Some(5));
        assert_eq!(&p.payload[..], b"hi");
        assert!(malformed(v5(&[0x30, 5, 0, 0, 0, b'h', b'i'])));
        assert!(malformed(v5(&[0x30, 3, 0, 0, 0])));
        // A wildcard stays forbidden even with an alias.
        assert!(malformed(v5(&[0x30, 7, 0, 1, b'#', 3, 0x23, 0, 5])));
    }

    #[test]
    fn subscription_options_v5() {
        let sub = |opts: u8, filter: &[u8]| {
            let mut b = vec![
                0x82,
                (6 + filter.len()) as u8,
                0,
                1,
                0,
                0,
                filter.len() as u8,
            ];
            b.extend_from_slice(filter);
            b.push(opts);
            v5(&b)
        };
        let Ok(Some(Packet::Subscribe(s))) = sub(0x2E, b"a/#") else {
            panic!("SUBSCRIBE with all options");
        };
        assert_eq!(
            s.filters.first().map(|f| f.options),
            Some(SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            })
        );
        assert!(malformed(sub(0x30, b"a")));
        assert!(malformed(sub(0x40, b"a")));
        assert!(malformed(sub(0x80, b"a")));
        assert!(malformed(sub(0x03, b"a")));
        assert!(protocol(sub(0x04, b"$share/g/a")));
        assert!(sub(0x00, b"$share/g/a").is_ok());
    }

    #[test]
    fn connect_v5_rules() {
        // Password without user name is allowed in 5.0.
        let mut b = vec![0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x40, 0, 0, 0];
        b.extend_from_slice(&[0, 1, b'c', 0, 2, 0xFF, 0]);
        let Ok(Some(Packet::Connect(c))) = v5(&b) else {
            panic!("5.0 CONNECT with password only");
        };
        assert_eq!(
            (c.username, c.password.map(|p| p.as_bytes().to_vec())),
            (None, Some(vec![0xFF, 0]))
        );
        // Authentication Data without Authentication Method.
        let b = [
            0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0, 4, 0x16, 0, 1, 9, 0, 1, b'c',
        ];
        assert!(protocol(v5(&b)));
        // Will Delay Interval belongs to the will properties, not the CONNECT ones.
        let b = [
            0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0, 5, 0x18, 0, 0, 0, 1, 0, 1, b'c',
        ];
        assert!(malformed(v5(&b)));
    }
}
