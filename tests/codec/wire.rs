//! Byte-level builders and the tables of malformed packets.

/// A packet with the remaining length computed from `body` (which may itself be inconsistent).
pub fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A string as on the wire.
pub fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT body: protocol name, level, flags, keep-alive 60, then `rest`.
pub fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    cat(&[&s(name), &[level, flags, 0, 60], rest])
}

pub fn malformed_v311() -> Vec<(&'static str, Vec<u8>)> {
    let will = |flags: u8| pkt(0x10, &connect_body(b"MQTT", 4, flags, &s(b"c")));
    vec![
        (
            "remaining length with 5 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "remaining length 4 continuation bytes",
            vec![0x30, 0x80, 0x80, 0x80, 0x80],
        ),
        ("remaining length non-minimal", vec![0xC0, 0x80, 0x00]),
        ("packet type 0", vec![0x00, 0x00]),
        ("AUTH in 3.1.1", vec![0xF0, 0x00]),
        ("PINGREQ flags", vec![0xC1, 0x00]),
        ("PINGRESP flags", vec![0xD8, 0x00]),
        ("DISCONNECT flags", vec![0xE2, 0x00]),
        (
            "CONNECT flags",
            pkt(0x12, &connect_body(b"MQTT", 4, 2, &s(b"c"))),
        ),
        ("CONNACK flags", vec![0x21, 2, 0, 0]),
        ("PUBACK flags", vec![0x42, 2, 0, 1]),
        ("PUBREC flags", vec![0x51, 2, 0, 1]),
        ("PUBREL flags 0000", vec![0x60, 2, 0, 1]),
        ("PUBCOMP flags", vec![0x72, 2, 0, 1]),
        (
            "SUBSCRIBE flags 0000",
            pkt(0x80, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        (
            "SUBSCRIBE flags 0011",
            pkt(0x83, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        ("SUBACK flags", vec![0x92, 3, 0, 1, 0]),
        ("UNSUBSCRIBE flags", pkt(0xA0, &cat(&[&[0, 1], &s(b"a")]))),
        ("UNSUBACK flags", vec![0xB2, 2, 0, 1]),
        ("PUBLISH QoS 3", pkt(0x36, &cat(&[&s(b"a"), &[0, 1]]))),
        ("PUBLISH QoS 0 with DUP", pkt(0x38, &s(b"a"))),
        ("PUBLISH '#' topic", pkt(0x30, &s(b"a/#"))),
        ("PUBLISH '+' topic", pkt(0x30, &s(b"+/a"))),
        ("PUBLISH empty topic", pkt(0x30, &s(b""))),
        ("PUBLISH U+0000 in topic", pkt(0x30, &s(b"a\0b"))),
        ("PUBLISH invalid UTF-8 topic", pkt(0x30, &s(&[0xC3, 0x28]))),
        (
            "PUBLISH surrogate in topic",
            pkt(0x30, &s(&[0xED, 0xA0, 0x80])),
        ),
        ("PUBLISH overlong UTF-8 topic", pkt(0x30, &s(&[0xC0, 0xAF]))),
        (
            "PUBLISH QoS 1 packet id 0",
            pkt(0x32, &cat(&[&s(b"a"), &[0, 0]])),
        ),
        ("PUBLISH topic past the end", vec![0x30, 3, 0, 5, b'a']),
        ("PUBLISH QoS 1 without packet id", pkt(0x32, &s(b"a"))),
        ("PUBACK packet id 0", vec![0x40, 2, 0, 0]),
        ("PUBREC packet id 0", vec![0x50, 2, 0, 0]),
        ("PUBREL packet id 0", vec![0x62, 2, 0, 0]),
        ("PUBCOMP packet id 0", vec![0x70, 2, 0, 0]),
        ("PUBACK short", vec![0x40, 1, 0]),
        ("PUBACK trailing byte", vec![0x40, 3, 0, 1, 0]),
        ("PUBREL trailing byte", vec![0x62, 3, 0, 1, 0]),
        (
            "SUBSCRIBE packet id 0",
            pkt(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
        ),
        ("SUBSCRIBE no filters", vec![0x82, 2, 0, 1]),
        ("SUBSCRIBE no packet id", vec![0x82, 0]),
        (
            "SUBSCRIBE missing options byte",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a")])),
        ),
        (
            "SUBSCRIBE QoS 3",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[3]])),
        ),
        (
            "SUBSCRIBE reserved bits",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[4]])),
        ),
        (
            "SUBSCRIBE 5.0 options in 3.1.1",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0x2C]])),
        ),
        (
            "SUBSCRIBE U+0000 in filter",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a\0"), &[0]])),
        ),
        (
            "SUBSCRIBE invalid UTF-8",
            pkt(0x82, &cat(&[&[0, 1], &s(&[0xFF]), &[0]])),
        ),
        ("SUBACK return code 3", vec![0x90, 3, 0, 1, 3]),
        ("SUBACK packet id 0", vec![0x90, 3, 0, 0, 0]),
        (
            "UNSUBSCRIBE packet id 0",
            pkt(0xA2, &cat(&[&[0, 0], &s(b"a")])),
        ),
        ("UNSUBSCRIBE no filters", vec![0xA2, 2, 0, 1]),
        (
            "UNSUBSCRIBE filter past the end",
            vec![0xA2, 5, 0, 1, 0, 9, b'a'],
        ),
        ("UNSUBACK trailing byte", vec![0xB0, 3, 0, 1, 0]),
        ("CONNACK trailing byte", vec![0x20, 3, 0, 0, 0]),
        ("CONNACK reserved flags", vec![0x20, 2, 2, 0]),
        ("CONNACK return code 6", vec![0x20, 2, 0, 6]),
        ("CONNACK session present on a refusal", vec![0x20, 2, 1, 5]),
        ("CONNACK short", vec![0x20, 1, 0]),
        ("PINGREQ with body", vec![0xC0, 1, 0]),
        ("PINGRESP with body", vec![0xD0, 1, 0]),
        ("DISCONNECT with body", vec![0xE0, 1, 0]),
        ("CONNECT reserved flag", will(0x03)),
        ("CONNECT will QoS without will", will(0x08)),
        ("CONNECT will retain without will", will(0x20)),
        (
            "CONNECT will QoS 3",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x1C, &cat(&[&s(b"c"), &s(b"t"), &s(b"p")])),
            ),
        ),
        (
            "CONNECT password without user name",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x40, &cat(&[&s(b"c"), &s(b"p")])),
            ),
        ),
        ("CONNECT user name flag, no user name", will(0x80)),
        ("CONNECT will flag, no will", will(0x04)),
        (
            "CONNECT will topic wildcard",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x04, &cat(&[&s(b"c"), &s(b"t/#"), &s(b"p")])),
            ),
        ),
        (
            "CONNECT will topic empty",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x04, &cat(&[&s(b"c"), &s(b""), &s(b"p")])),
            ),
        ),
        (
            "CONNECT client id invalid UTF-8",
            pkt(0x10, &connect_body(b"MQTT", 4, 0x02, &s(&[0xFE]))),
        ),
        (
            "CONNECT client id with U+0000",
            pkt(0x10, &connect_body(b"MQTT", 4, 0x02, &s(b"a\0"))),
        ),
        (
            "CONNECT user name invalid UTF-8",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x80, &cat(&[&s(b"c"), &s(&[0x80])])),
            ),
        ),
        (
            "CONNECT trailing bytes",
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x02, &cat(&[&s(b"c"), &[0]])),
            ),
        ),
        (
            "CONNECT truncated",
            pkt(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 4]),
        ),
        (
            "CONNECT protocol name invalid UTF-8",
            pkt(0x10, &connect_body(&[0xFF, 0xFE], 4, 2, &s(b"c"))),
        ),
    ]
}

pub fn malformed_v5() -> Vec<(&'static str, Vec<u8>)> {
    let publish = |props: &[u8]| pkt(0x30, &cat(&[&s(b"a"), props, b"payload"]));
    let subscribe =
        |props: &[u8], opts: u8| pkt(0x82, &cat(&[&[0, 1], props, &s(b"a/b"), &[opts]]));
    let connect = |props: &[u8]| {
        pkt(
            0x10,
            &connect_body(b"MQTT", 5, 0x02, &cat(&[props, &s(b"c")])),
        )
    };
    vec![
        ("AUTH flags", vec![0xF1, 0]),
        ("AUTH reason 0x01", vec![0xF0, 1, 0x01]),
        ("AUTH trailing after properties", vec![0xF0, 3, 0x18, 0, 0]),
        ("PINGREQ with body", vec![0xC0, 1, 0]),
        ("DISCONNECT reason 0x05", vec![0xE0, 1, 0x05]),
        (
            "DISCONNECT property past the end",
            vec![0xE0, 3, 0, 4, 0x11],
        ),
        ("PUBACK reason 0x92", vec![0x40, 3, 0, 1, 0x92]),
        ("PUBCOMP reason 0x10", vec![0x70, 3, 0, 1, 0x10]),
        (
            "PUBREC Topic Alias property",
            vec![0x50, 7, 0, 1, 0, 3, 0x23, 0, 1],
        ),
        ("PUBLISH without property length", pkt(0x30, &s(b"a"))),
        (
            "PUBLISH Session Expiry property",
            publish(&[5, 0x11, 0, 0, 0, 1]),
        ),
        ("PUBLISH unknown property 0x7F", publish(&[2, 0x7F, 0])),
        ("PUBLISH property id 0", publish(&[2, 0x00, 0])),
        (
            "PUBLISH property id not minimal",
            publish(&[3, 0x81, 0x00, 1]),
        ),
        (
            "PUBLISH property length past the end",
            pkt(0x30, &cat(&[&s(b"a"), &[9, 0x01]])),
        ),
        ("PUBLISH property value truncated", publish(&[2, 0x02, 0])),
        (
            "PUBLISH Payload Format Indicator twice",
            publish(&[4, 0x01, 0, 0x01, 1]),
        ),
        ("PUBLISH Payload Format Indicator 2", publish(&[2, 0x01, 2])),
        (
            "PUBLISH Topic Alias twice",
            publish(&[6, 0x23, 0, 1, 0x23, 0, 2]),
        ),
        ("PUBLISH Subscription Identifier 0", publish(&[2, 0x0B, 0])),
        (
            "PUBLISH Response Topic wildcard",
            publish(&[4, 0x08, 0, 1, b'+']),
        ),
        (
            "PUBLISH Content Type invalid UTF-8",
            publish(&[4, 0x03, 0, 1, 0xFF]),
        ),
        (
            "PUBLISH User Property U+0000",
            publish(&[7, 0x26, 0, 1, 0, 0, 1, b'v']),
        ),
        (
            "PUBLISH User Property without value",
            publish(&[4, 0x26, 0, 1, b'k']),
        ),
        (
            "PUBLISH empty topic without alias",
            pkt(0x30, &cat(&[&s(b""), &[0]])),
        ),
        (
            "PUBLISH QoS 2 packet id 0",
            pkt(0x34, &cat(&[&s(b"a"), &[0, 0, 0]])),
        ),
        ("SUBSCRIBE Retain Handling 3", subscribe(&[0], 0x30)),
        ("SUBSCRIBE reserved bit 6", subscribe(&[0], 0x40)),
        ("SUBSCRIBE reserved bit 7", subscribe(&[0], 0x80)),
        ("SUBSCRIBE QoS 3", subscribe(&[0], 0x03)),
        (
            "SUBSCRIBE two Subscription Identifiers",
            subscribe(&[4, 0x0B, 1, 0x0B, 2], 0),
        ),
        (
            "SUBSCRIBE Subscription Identifier 0",
            subscribe(&[2, 0x0B, 0], 0),
        ),
        (
            "SUBSCRIBE Subscription Identifier of 5 bytes",
            subscribe(&[6, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 1], 0),
        ),
        (
            "SUBSCRIBE Reason String property",
            subscribe(&[4, 0x1F, 0, 1, b'x'], 0),
        ),
        (
            "SUBSCRIBE without property length",
            pkt(0x82, &cat(&[&[0, 1], &s(b"a"), &[0]])),
        ),
        ("SUBSCRIBE no filters", vec![0x82, 3, 0, 1, 0]),
        (
            "SUBSCRIBE No Local on a shared subscription",
            pkt(0x82, &cat(&[&[0, 1, 0], &s(b"$share/g/a"), &[0x04]])),
        ),
        ("UNSUBSCRIBE no filters", vec![0xA2, 3, 0, 1, 0]),
        (
            "UNSUBSCRIBE Subscription Identifier",
            pkt(0xA2, &cat(&[&[0, 1, 2, 0x0B, 1], &s(b"a")])),
        ),
        ("SUBACK reason 0x05", vec![0x90, 4, 0, 1, 0, 0x05]),
        ("UNSUBACK reason 0x01", vec![0xB0, 4, 0, 1, 0, 0x01]),
        ("UNSUBACK without property length", vec![0xB0, 2, 0, 1]),
        ("CONNACK reason 0x01", vec![0x20, 3, 0, 0x01, 0]),
        (
            "CONNACK session present on a refusal",
            vec![0x20, 3, 1, 0x87, 0],
        ),
        ("CONNACK without property length", vec![0x20, 2, 0, 0]),
        ("CONNACK Maximum QoS 2", vec![0x20, 5, 0, 0, 2, 0x24, 2]),
        (
            "CONNACK Retain Available twice",
            vec![0x20, 7, 0, 0, 4, 0x25, 1, 0x25, 1],
        ),
        ("CONNECT Receive Maximum 0", connect(&[3, 0x21, 0, 0])),
        (
            "CONNECT Maximum Packet Size 0",
            connect(&[5, 0x27, 0, 0, 0, 0]),
        ),
        (
            "CONNECT Request Problem Information 2",
            connect(&[2, 0x17, 2]),
        ),
        (
            "CONNECT Request Response Information 2",
            connect(&[2, 0x19, 2]),
        ),
        (
            "CONNECT Session Expiry twice",
            connect(&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
        ),
        ("CONNECT Topic Alias property", connect(&[3, 0x23, 0, 1])),
        (
            "CONNECT Authentication Data without Method",
            connect(&[4, 0x16, 0, 1, 9]),
        ),
        (
            "CONNECT without property length",
            pkt(0x10, &connect_body(b"MQTT", 5, 0x02, &[0, 1, b'c'])),
        ),
        (
            "CONNECT will property Session Expiry",
            pkt(
                0x10,
                &connect_body(
                    b"MQTT",
                    5,
                    0x04,
                    &cat(&[&[0], &s(b"c"), &[5, 0x11, 0, 0, 0, 1], &s(b"t"), &s(b"p")]),
                ),
            ),
        ),
        (
            "CONNECT will Payload Format Indicator 3",
            pkt(
                0x10,
                &connect_body(
                    b"MQTT",
                    5,
                    0x04,
                    &cat(&[&[0], &s(b"c"), &[2, 0x01, 3], &s(b"t"), &s(b"p")]),
                ),
            ),
        ),
    ]
}
