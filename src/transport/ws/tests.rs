use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::frames::ReadEnd;
use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: FIN/opcode byte, masked payload.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload)
}

/// Feeds `wire` to a fresh state in chunks of `step` bytes; returns the MQTT bytes and the state.
fn decode_in_steps(wire: &[u8], step: usize) -> (Vec<u8>, WsState) {
    let mut state = WsState::new(1 << 20, Vec::new());
    let mut out = Vec::new();
    for chunk in wire.chunks(step) {
        let mut chunk = chunk.to_vec();
        let n = state.decode(&mut chunk);
        out.extend_from_slice(&chunk[..n]);
    }
    (out, state)
}

#[test]
fn bytes_flow_across_frames_whatever_the_cut() {
    let packets: Vec<u8> = (0..=255u8).cycle().take(700).collect();
    // One packet stream split into frames of many sizes, empty ones and a fragmented message.
    let mut wire = Vec::new();
    wire.extend(binary(&packets[..1]));
    wire.extend(binary(&[]));
    wire.extend(binary(&packets[1..200]));
    wire.extend(frame(0x02, &packets[200..300])); // binary, FIN clear
    wire.extend(frame(0x00, &[])); // empty continuation
    wire.extend(frame(0x80, &packets[300..400])); // final continuation
    wire.extend(binary(&packets[400..]));
    for step in [1, 2, 3, 5, 7, 13, 64, 1000, wire.len()] {
        let (out, state) = decode_in_steps(&wire, step);
        assert_eq!(out, packets, "step {step}");
        assert!(state.ended.is_none());
        assert!(!state.mid_frame());
    }
}

#[test]
fn long_lengths_are_read() {
    let big = vec![7u8; 70_000];
    let mid = vec![9u8; 300];
    let mut wire = binary(&big);
    wire.extend(binary(&mid));
    let (out, _) = decode_in_steps(&wire, 4096);
    assert_eq!(out.len(), 70_300);
    assert!(out[..70_000].iter().all(|&b| b == 7));
    assert!(out[70_000..].iter().all(|&b| b == 9));
}

#[test]
fn ping_is_answered_with_pong_between_bytes() {
    let mut wire = binary(b"ab");
    wire.extend(frame(0x89, b"hi"));
    wire.extend(binary(b"cd"));
    let (out, state) = decode_in_steps(&wire, 3);
    assert_eq!(out, b"abcd");
    assert_eq!(state.control_out, [0x8A, 2, b'h', b'i']);
}

#[test]
fn close_is_answered_and_ends_the_stream() {
    let mut wire = binary(b"x");
    wire.extend(frame(0x88, &1001u16.to_be_bytes()));
    wire.extend(binary(b"ignored"));
    let (out, state) = decode_in_steps(&wire, 100);
    assert_eq!(out, b"x");
    assert!(matches!(state.ended, Some(ReadEnd::Closed)));
    assert_eq!(state.control_out, [0x88, 2, 0x03, 0xE8]);
}

/// Each protocol error: the bytes before it survive, a Close with the status is queued.
#[test]
fn protocol_errors_close_with_their_status() {
    let unmasked = vec![0x82, 1, b'z'];
    let oversize = {
        let mut f = vec![0x82, 0x80 | 126];
        f.extend_from_slice(&2000u16.to_be_bytes());
        f.extend_from_slice(&MASK);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("text", frame(0x81, b"{}"), close::UNSUPPORTED_DATA),
        ("unmasked", unmasked, close::PROTOCOL_ERROR),
        ("rsv1", frame(0xC2, b"z"), close::PROTOCOL_ERROR),
        (
            "continuation first",
            frame(0x80, b"z"),
            close::PROTOCOL_ERROR,
        ),
        ("reserved opcode", frame(0x83, b"z"), close::PROTOCOL_ERROR),
        ("fragmented ping", frame(0x09, b""), close::PROTOCOL_ERROR),
        ("long ping", frame(0x89, &[0; 126]), close::PROTOCOL_ERROR),
        ("close of 1 byte", frame(0x88, &[3]), close::PROTOCOL_ERROR),
        ("oversize", oversize, close::TOO_BIG),
    ];
    for (name, bad, code) in cases {
        let mut wire = binary(b"ok");
        wire.extend(bad);
        let mut state = WsState::new(1024, Vec::new());
        let mut data = wire.clone();
        let n = state.decode(&mut data);
        assert_eq!(&data[..n], b"ok", "{name}");
        assert!(matches!(state.ended, Some(ReadEnd::Failed(_))), "{name}");
        let mut expect = vec![0x88, 2];
        expect.extend_from_slice(&code.to_be_bytes());
        assert_eq!(state.control_out, expect, "{name}");
    }
    // A binary frame inside a fragmented message.
    let mut wire = frame(0x02, b"a");
    wire.extend(binary(b"b"));
    let (_, state) = decode_in_steps(&wire, 100);
    assert!(matches!(state.ended, Some(ReadEnd::Failed(_))));
}

#[tokio::test]
async fn the_stream_reads_frames_and_writes_one_frame_per_write() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let mut ws = WsStream::new(ours, Box::new(WsState::new(1 << 20, binary(b"early"))));
    let mut wire = binary(b" one");
    wire.extend(frame(0x89, b"p"));
    wire.extend(binary(b" two"));
    theirs.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 13 {
        let mut buf = [0u8; 64];
        let n = ws.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"early one two");

    ws.write_all(&[1u8; 300]).await.unwrap();
    ws.flush().await.unwrap();
    ws.shutdown().await.unwrap();
    let mut out = Vec::new();
    theirs.read_to_end(&mut out).await.unwrap();
    // The Pong, the 300-byte binary frame (16-bit length), the Close.
    assert_eq!(&out[..3], &[0x8A, 1, b'p']);
    assert_eq!(&out[3..7], &[0x82, 126, 1, 44]);
    assert_eq!(out[7..307], [1u8; 300]);
    assert_eq!(&out[307..], &[0x88, 2, 0x03, 0xE8]);
}

#[tokio::test]
async fn a_client_close_is_end_of_stream_and_a_broken_frame_an_error() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let mut ws = WsStream::new(ours, Box::new(WsState::new(1 << 20, Vec::new())));
    theirs.write_all(&frame(0x88, &[])).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ws.read(&mut buf).await.unwrap(), 0);

    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let mut ws = WsStream::new(ours, Box::new(WsState::new(1 << 20, Vec::new())));
    let half = binary(b"abcdef");
    theirs.write_all(&half[..5]).await.unwrap();
    drop(theirs);
    let e = ws.read(&mut buf).await;
    // The first read may return the unmasked bytes that did arrive; the end is an error.
    let e = match e {
        Ok(n) if n > 0 => ws.read(&mut buf).await,
        other => other,
    };
    assert_eq!(e.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
}

fn options() -> WsOptions {
    WsOptions {
        path: "/mqtt".into(),
        origins: Some(vec!["https://app.example.com".into()]),
        trusted: vec!["10.0.0.0/8".parse().unwrap()],
        max_frame: 1024,
    }
}

fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /mqtt?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, \
         Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         {extra}\r\n"
    )
    .into_bytes()
}

#[test]
fn upgrade_requests_are_checked() {
    let ok = |extra: &str| {
        let bytes = request(extra);
        let (req, used) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        check(&req, &options())
    };
    assert_eq!(ok("Sec-WebSocket-Protocol: mqtt\r\n"), Ok("mqtt"));
    assert_eq!(
        ok("Sec-WebSocket-Protocol: foo, mqttv3.1\r\n"),
        Ok("mqttv3.1")
    );
    assert_eq!(
        ok("Sec-WebSocket-Protocol: mqttv3.1\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        Ok("mqtt")
    );
    assert_eq!(
        ok("Origin: https://app.example.com\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        Ok("mqtt")
    );
    assert_eq!(ok("").unwrap_err().status, 400);
    assert_eq!(
        ok("Sec-WebSocket-Protocol: chat\r\n").unwrap_err().status,
        400
    );
    let evil = ok("Origin: https://evil.example\r\nSec-WebSocket-Protocol: mqtt\r\n");
    assert_eq!(evil.unwrap_err().status, 403);

    let refused = |bytes: &[u8]| {
        let (req, _) = parse_request(bytes).unwrap().unwrap();
        check(&req, &options()).unwrap_err().status
    };
    let proto = "Sec-WebSocket-Protocol: mqtt\r\n";
    let swap = |from: &str, to: &str| {
        String::from_utf8(request(proto))
            .unwrap()
            .replace(from, to)
            .into_bytes()
    };
    assert_eq!(refused(&swap("GET /mqtt", "GET /other")), 404);
    assert_eq!(refused(&swap("GET /mqtt", "POST /mqtt")), 405);
    assert_eq!(refused(&swap("Upgrade: WebSocket\r\n", "")), 426);
    assert_eq!(refused(&swap("Version: 13", "Version: 8")), 426);
    assert_eq!(refused(&swap("dGhlIHNhbXBsZSBub25jZQ==", "short")), 400);

    assert_eq!(parse_request(b"GET /mqtt HTTP/1.1\r\nHost:").unwrap(), None);
    assert_eq!(
        parse_request(b"\x10\x0c\x00\x04MQTT").unwrap_err().status,
        400
    );
}

#[test]
fn forwarded_for_is_believed_from_trusted_proxies_only() {
    let trusted: Vec<TrustedNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let proxy: IpAddr = "10.1.1.1".parse().unwrap();
    let stranger: IpAddr = "192.0.2.9".parse().unwrap();
    let client = |peer, header| forwarded_client(peer, Some(header), &trusted);
    assert_eq!(
        client(proxy, "203.0.113.5"),
        Some("203.0.113.5".parse().unwrap())
    );
    // The rightmost untrusted entry: what the client wrote further left is not believed.
    assert_eq!(
        client(proxy, "1.1.1.1, 203.0.113.5, 10.2.2.2"),
        Some("203.0.113.5".parse().unwrap())
    );
    assert_eq!(
        client(proxy, "10.3.3.3, 10.2.2.2"),
        Some("10.3.3.3".parse().unwrap())
    );
    assert_eq!(
        client(proxy, "[2001:db8::1]:443"),
        Some("2001:db8::1".parse().unwrap())
    );
    assert_eq!(client(proxy, "nonsense"), None);
    assert_eq!(client(stranger, "203.0.113.5"), None);
    assert_eq!(forwarded_client(proxy, None, &trusted), None);
}
