//! PROXY header unit tests: the bytes the parser asks for, what it makes of them, and the reader
//! that never reads past the header. Headers are written out by hand (not with `ppp`'s builder),
//! so the parser is checked against the specification rather than against itself.

use super::*;

use tokio::io::AsyncWriteExt;

fn gate(version: ProxyProtocol, identity: bool) -> ProxyGate {
    ProxyGate {
        version,
        trusted: vec!["127.0.0.1".parse().unwrap()],
        use_identity_as_username: identity,
    }
}

fn v1() -> ProxyGate {
    gate(ProxyProtocol::V1, false)
}

fn v2() -> ProxyGate {
    gate(ProxyProtocol::V2, false)
}

/// A v2 header: version 2 with `command`, `family_protocol`, then `payload` (addresses + TLVs).
fn v2_header(command: u8, family_protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family_protocol);
    h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// PROXY over TCP/IPv4 from 203.0.113.7:5000 to 10.0.0.1:1883, then `tlvs`.
fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
    let mut payload = vec![203, 0, 113, 7, 10, 0, 0, 1];
    payload.extend_from_slice(&5000u16.to_be_bytes());
    payload.extend_from_slice(&1883u16.to_be_bytes());
    payload.extend_from_slice(tlvs);
    v2_header(0x1, 0x11, &payload)
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// An SSL TLV: `client` flags, `verify`, and a CN sub-TLV if given.
fn ssl(client: u8, verify: u32, cn: Option<&[u8]>) -> Vec<u8> {
    let mut value = vec![client];
    value.extend_from_slice(&verify.to_be_bytes());
    value.extend(tlv(0x21, b"TLSv1.3"));
    if let Some(cn) = cn {
        value.extend(tlv(PP2_SUBTYPE_SSL_CN, cn));
    }
    tlv(PP2_TYPE_SSL, &value)
}

fn done(step: Result<Step, ProxyError>) -> Proxied {
    match step {
        Ok(Step::Done(p)) => p,
        other => panic!("expected a complete header, got {other:?}"),
    }
}

fn source(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn v1_headers() {
    let cases = [
        (
            "PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883\r\n",
            source("203.0.113.7:5000"),
        ),
        (
            "PROXY TCP6 2001:db8::7 2001:db8::1 5000 1883\r\n",
            source("[2001:db8::7]:5000"),
        ),
        // An IPv4 client behind an IPv6 socket is that IPv4 address (one per-IP slot, not two).
        (
            "PROXY TCP6 ::ffff:203.0.113.7 ::1 5000 1883\r\n",
            source("203.0.113.7:5000"),
        ),
        ("PROXY UNKNOWN\r\n", None),
        ("PROXY UNKNOWN ::1 ::1 1 1\r\n", None),
    ];
    for (text, want) in cases {
        let got = done(v1().parse(text.as_bytes()));
        assert_eq!(got.source, want, "{text:?}");
        assert_eq!(got.verified_cn, None);
    }
}

#[test]
fn v1_asks_for_no_byte_past_the_crlf() {
    let text = b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883\r\n";
    let mut have = 0;
    let mut reads = 0;
    loop {
        match v1().parse(&text[..have]).unwrap() {
            Step::Done(_) => break,
            Step::More(n) => {
                assert!(n >= 1 && have + n <= text.len(), "asked {n} at {have}");
                have += n;
                reads += 1;
            }
        }
    }
    assert_eq!(have, text.len());
    assert!(reads < 20, "{reads} reads");
    assert_eq!(v1().parse(b"").unwrap(), Step::More(15));
    assert_eq!(v1().parse(b"PROXY UNKNOWN").unwrap(), Step::More(2));
    assert_eq!(v1().parse(b"PROXY UNKNOWN\r").unwrap(), Step::More(1));
    // A CR as the 107th byte leaves no room for its LF: refused, not asked for a 108th.
    let cr_last = format!("PROXY UNKNOWN {}\r", "x".repeat(V1_MAX_LEN - 15));
    assert_eq!(cr_last.len(), V1_MAX_LEN);
    assert!(matches!(
        v1().parse(cr_last.as_bytes()),
        Err(ProxyError::Malformed(_))
    ));
    let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 16));
    assert_eq!(done(v1().parse(longest.as_bytes())).source, None);
}

#[test]
fn malformed_v1_headers_are_refused() {
    let long = format!("PROXY UNKNOWN {}", "x".repeat(100));
    let cases: [&[u8]; 9] = [
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883\r\r",
        b"PROXY TCP4 203.0.113.777 10.0.0.1 5000 1883\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 5000 1883\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 05000 1883\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883 \r\n",
        b"PROXY TCP5 203.0.113.7 10.0.0.1 5000 1883\r\n",
        b"PROXY TCP4 203.0.113.7\n10.0.0.1 5000 1883\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 \xff\r\n",
        long.as_bytes(),
    ];
    for bytes in cases {
        match v1().parse(bytes) {
            Err(ProxyError::Malformed(_)) => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }
}

#[test]
fn the_other_version_or_no_header_is_named() {
    let v1_text = b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883\r\n";
    let v2_bytes = v2_tcp4(&[]);
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0,
    ];
    for (gate, bytes, want) in [
        (
            v2(),
            &v1_text[..],
            "a PROXY v1 header arrived, but this listener expects v2",
        ),
        (v2(), &v1_text[..3], "a PROXY v1 header arrived"),
        (
            v1(),
            &v2_bytes[..],
            "a PROXY v2 header arrived, but this listener expects v1",
        ),
        (
            v1(),
            &connect[..],
            "no PROXY v1 header: the connection starts with an MQTT CONNECT",
        ),
        (
            v2(),
            &connect[..],
            "no PROXY v2 header: the connection starts with an MQTT CONNECT",
        ),
        (v2(), &[0x16, 3, 1][..], "starts with a TLS handshake"),
        (
            v2(),
            b"GET /mqtt HTTP/1.1\r\n",
            "starts with an HTTP request",
        ),
    ] {
        let e = gate.parse(bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn v2_headers() {
    let got = done(v2().parse(&v2_tcp4(&[])));
    assert_eq!(got.source, source("203.0.113.7:5000"));

    let mut payload = Vec::new();
    payload.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend_from_slice(&[0x13, 0x88, 0x07, 0x5b]);
    let got = done(v2().parse(&v2_header(0x1, 0x21, &payload)));
    assert_eq!(got.source, source("[2001:db8::7]:5000"));

    // Unknown TLVs (here ALPN and a no-op) are skipped.
    let tlvs = [tlv(0x01, b"mqtt"), tlv(0x04, &[0; 3])].concat();
    let got = done(v2().parse(&v2_tcp4(&tlvs)));
    assert_eq!(got.source, source("203.0.113.7:5000"));

    // LOCAL (a health check), UNSPEC, UDP and UNIX: the proxy's own address stays.
    let local = v2_header(0x0, 0x11, &v2_tcp4(&[])[16..]);
    let unix = v2_header(0x1, 0x31, &[0; 216]);
    let udp = v2_header(0x1, 0x12, &v2_tcp4(&[])[16..]);
    for header in [
        v2_header(0x0, 0x00, &[]),
        local,
        v2_header(0x1, 0x00, &[]),
        unix,
        udp,
    ] {
        assert_eq!(done(v2().parse(&header)), Proxied::default(), "{header:?}");
    }
}

#[test]
fn v2_is_read_in_two_steps_and_bounded() {
    let header = v2_tcp4(&tlv(0x04, &[0; 100]));
    assert_eq!(v2().parse(b"").unwrap(), Step::More(16));
    assert_eq!(v2().parse(&header[..5]).unwrap(), Step::More(11));
    assert_eq!(v2().parse(&header[..16]).unwrap(), Step::More(12 + 103));
    assert_eq!(v2().parse(&header[..20]).unwrap(), Step::More(12 + 103 - 4));

    let mut big = v2_header(0x1, 0x11, &[]);
    big[14..16].copy_from_slice(&u16::try_from(V2_MAX_PAYLOAD + 1).unwrap().to_be_bytes());
    let e = v2().parse(&big).unwrap_err().to_string();
    assert!(e.contains("declares 4097 bytes"), "{e}");
    let mut most = big.clone();
    most[14..16].copy_from_slice(&u16::try_from(V2_MAX_PAYLOAD).unwrap().to_be_bytes());
    assert_eq!(v2().parse(&most).unwrap(), Step::More(V2_MAX_PAYLOAD));
}

#[test]
fn malformed_v2_headers_are_refused() {
    let good = v2_tcp4(&[]);
    let with = |i: usize, b: u8| {
        let mut h = good.clone();
        h[i] = b;
        h
    };
    let cases = [
        with(12, 0x11),                     // version 1
        with(12, 0x22),                     // command 2
        with(13, 0x41),                     // family 4
        with(13, 0x13),                     // protocol 3
        v2_header(0x1, 0x11, &[0; 11]),     // IPv4 needs 12 bytes
        v2_tcp4(&[0x04, 0x00]),             // a TLV cut short
        v2_tcp4(&[0x04, 0x00, 0x05, 1, 2]), // a TLV longer than the header
        v2_tcp4(&[ssl(0x07, 0, None), ssl(0x07, 0, None)].concat()),
    ];
    for header in cases {
        match gate(ProxyProtocol::V2, true).parse(&header) {
            Err(ProxyError::Malformed(_)) => {}
            other => panic!("{header:?}: {other:?}"),
        }
    }
}

#[test]
fn the_ssl_tlv_names_the_client_only_when_its_certificate_was_verified() {
    let with_identity = gate(ProxyProtocol::V2, true);
    let verified = [
        ssl(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, Some(b"alice")),
        ssl(PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 0, Some(b"alice")),
        ssl(0x07, 0, Some(b"alice")),
    ];
    for tlv in verified {
        let got = done(with_identity.parse(&v2_tcp4(&tlv)));
        assert_eq!(got.verified_cn.as_deref(), Some("alice"), "{tlv:?}");
        assert_eq!(got.source, source("203.0.113.7:5000"));
        // Without use_identity_as_username the TLV is ignored.
        assert_eq!(done(v2().parse(&v2_tcp4(&tlv))).verified_cn, None);
    }
    let not_verified = [
        ssl(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 1, Some(b"alice")), // verify failed
        ssl(PP2_CLIENT_SSL, 0, Some(b"alice")),                        // no certificate
        ssl(
            PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            0,
            Some(b"alice"),
        ), // not over TLS
        ssl(0, 0, None),
    ];
    for tlv in not_verified {
        let got = done(with_identity.parse(&v2_tcp4(&tlv)));
        assert_eq!(got.verified_cn, None, "{tlv:?}");
    }
    // A LOCAL connection speaks for nobody, whatever its TLVs say.
    let local = v2_header(0x0, 0x11, &v2_tcp4(&ssl(0x07, 0, Some(b"alice")))[16..]);
    assert_eq!(done(with_identity.parse(&local)), Proxied::default());
}

#[test]
fn a_verified_certificate_without_a_usable_cn_is_refused() {
    let with_identity = gate(ProxyProtocol::V2, true);
    for (cn, why) in [
        (None, "no CN sub-TLV"),
        (Some(&b""[..]), "empty CN"),
        (Some(b"al\xffce"), "not UTF-8"),
        (Some(b"al\nice"), "control characters"),
    ] {
        match with_identity.parse(&v2_tcp4(&ssl(0x03, 0, cn))) {
            Err(e @ ProxyError::NoIdentity(_)) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("{cn:?}: {other:?}"),
        }
    }
    match with_identity.parse(&v2_tcp4(&tlv(PP2_TYPE_SSL, &[0x03, 0, 0]))) {
        Err(ProxyError::Malformed(e)) => assert!(e.contains("SSL TLV of 3 bytes"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// The reader leaves what follows the header (here an MQTT CONNECT) in the socket, whether the
/// bytes come all at once or one by one.
#[tokio::test]
async fn the_reader_stops_at_the_end_of_the_header() {
    let connect = [
        0x10u8, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0,
    ];
    let headers = [
        (
            v1(),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1883\r\n".to_vec(),
        ),
        (v1(), b"PROXY UNKNOWN\r\n".to_vec()),
        (v2(), v2_tcp4(&tlv(0x04, &[0; 40]))),
        (v2(), v2_header(0x0, 0x00, &[])),
    ];
    for (gate, header) in headers {
        for chunk in [1, 3, 4096] {
            let (mut client, mut server) = tokio::io::duplex(64);
            let bytes = [header.as_slice(), &connect].concat();
            let writer = tokio::spawn(async move {
                for part in bytes.chunks(chunk) {
                    client.write_all(part).await.unwrap();
                }
                client
            });
            gate.read_header(&mut server).await.unwrap();
            let _client = writer.await.unwrap();
            let mut rest = [0u8; 14];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, connect, "chunks of {chunk}");
        }
    }
}

#[tokio::test]
async fn the_reader_reports_a_close_mid_header() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"PROXY TCP4 203.0").await.unwrap();
    drop(client);
    let e = v1().read_header(&mut server).await.unwrap_err();
    assert!(matches!(e, ProxyError::Closed(16)), "{e}");
}
