//! A CoAP request as the gateway reads it: EMQX's URIs (`/ps/{topic}`, `/mqtt/connection`,
//! `/.well-known/core`), the query (credentials, `qos`, `retain`, `token`), and the options that
//! matter (Observe, Block1, Block2, Size1, Echo). Pure: no state, no I/O.

use coap_lite::{CoapOption, Packet, RequestType};

use super::block::Block;
use crate::protocol::{Password, QoS};

/// What the request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/ps/{topic}`: the segments after `ps` joined by `/`, each percent-decoded.
    PubSub(String),
    /// `/mqtt/connection`: connection mode (EMQX).
    Connection,
    /// `/.well-known/core`: the resources, in link format (RFC 6690).
    WellKnownCore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// The Uri-Query parameters the gateway knows (others are ignored, as EMQX does).
#[derive(Debug, Default)]
pub struct Query {
    /// `c` or `clientid`.
    pub client_id: Option<String>,
    /// `u` or `username`.
    pub username: Option<String>,
    /// `p` or `password`; never logged.
    pub password: Option<Password>,
    /// A connection-mode token (`token`).
    pub token: Option<String>,
    pub qos: Option<QoS>,
    pub retain: bool,
}

/// A request, read.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub route: Route,
    pub query: Query,
    /// The Observe option's value (0 register, 1 deregister).
    pub observe: Option<u32>,
    pub block1: Option<Block>,
    pub block2: Option<Block>,
    /// The announced size of a block-wise body (RFC 7959 Size1).
    pub size1: Option<usize>,
    /// The path and query as one string, without the password (so `Debug` never shows it):
    /// what identifies a Block1 transfer.
    pub uri: String,
}

/// Why a request cannot be served, with the response code it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// 4.00
    BadRequest(String),
    /// 4.02: an unrecognised critical option (RFC 7252 section 5.4.1).
    BadOption(u16),
    /// 4.04
    NotFound,
    /// 4.05
    MethodNotAllowed,
    /// 5.05: a Proxy-Uri or Proxy-Scheme (we are no proxy).
    ProxyingNotSupported,
}

/// The options a request may carry that we understand; any other odd (critical) one is refused.
const KNOWN_CRITICAL: [u16; 6] = [3, 7, 11, 15, 23, 27];

/// Reads `packet` (a request) into a [`Request`].
pub fn parse(packet: &Packet, method: RequestType) -> Result<Request, Refused> {
    let method = match method {
        RequestType::Get => Method::Get,
        RequestType::Post => Method::Post,
        RequestType::Put => Method::Put,
        RequestType::Delete => Method::Delete,
        _ => return Err(Refused::MethodNotAllowed),
    };
    for (number, _) in packet.options() {
        let n = *number;
        if n == 35 || n == 39 {
            return Err(Refused::ProxyingNotSupported);
        }
        if n % 2 == 1 && !KNOWN_CRITICAL.contains(&n) {
            return Err(Refused::BadOption(n));
        }
    }
    let empty = Default::default();
    let segments = packet.get_option(CoapOption::UriPath).unwrap_or(&empty);
    let mut uri = String::new();
    let mut path = Vec::with_capacity(segments.len());
    for s in segments {
        let s = std::str::from_utf8(s).map_err(|_| bad("a Uri-Path segment is not UTF-8"))?;
        uri.push('/');
        uri.push_str(s);
        path.push(s);
    }
    let route = match path.as_slice() {
        [".well-known", "core"] => Route::WellKnownCore,
        ["mqtt", "connection"] => Route::Connection,
        ["ps", rest @ ..] if !rest.is_empty() => {
            let mut topic = String::new();
            for (i, s) in rest.iter().enumerate() {
                if i > 0 {
                    topic.push('/');
                }
                topic.push_str(&percent_decode(s)?);
            }
            Route::PubSub(topic)
        }
        ["ps"] => return Err(bad("no topic: the URI is /ps/{topic}")),
        _ => return Err(Refused::NotFound),
    };
    let mut query = Query::default();
    for q in packet.get_option(CoapOption::UriQuery).unwrap_or(&empty) {
        let (key, value) = match q.iter().position(|b| *b == b'=') {
            Some(i) => (&q[..i], &q[i + 1..]),
            None => (&q[..], &[][..]),
        };
        if key != b"p" && key != b"password" {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&String::from_utf8_lossy(q));
        }
        let text = || {
            std::str::from_utf8(value)
                .map(str::to_owned)
                .map_err(|_| bad("a query value is not UTF-8"))
        };
        match key {
            b"c" | b"clientid" => query.client_id = Some(text()?),
            b"u" | b"username" => query.username = Some(text()?),
            b"p" | b"password" => query.password = Some(Password::new(value.to_vec())),
            b"token" => query.token = Some(text()?),
            b"qos" => {
                let qos = match value {
                    b"0" => QoS::AtMostOnce,
                    b"1" => QoS::AtLeastOnce,
                    b"2" => QoS::ExactlyOnce,
                    _ => return Err(bad("qos is 0, 1 or 2")),
                };
                query.qos = Some(qos);
            }
            b"retain" => {
                query.retain = match value {
                    b"true" | b"1" => true,
                    b"false" | b"0" => false,
                    _ => return Err(bad("retain is true or false")),
                }
            }
            _ => {}
        }
    }
    let uint = |o: CoapOption| -> Result<Option<u32>, Refused> {
        match packet.get_first_option(o) {
            None => Ok(None),
            Some(v) if v.len() <= 4 => {
                Ok(Some(v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))))
            }
            Some(_) => Err(bad("an integer option is over 4 bytes")),
        }
    };
    let block = |o: CoapOption| -> Result<Option<Block>, Refused> {
        packet
            .get_first_option(o)
            .map(|v| Block::parse(v).ok_or_else(|| bad("invalid Block option")))
            .transpose()
    };
    Ok(Request {
        method,
        route,
        query,
        observe: uint(CoapOption::Observe)?,
        block1: block(CoapOption::Block1)?,
        block2: block(CoapOption::Block2)?,
        size1: uint(CoapOption::Size1)?.map(|s| s as usize),
        uri,
    })
}

fn bad(why: &str) -> Refused {
    Refused::BadRequest(why.to_owned())
}

/// `%XX` escapes decoded; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, Refused> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("invalid percent-encoding in the topic"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("the decoded topic is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::MessageClass;

    fn packet(path: &[&str], query: &[&str]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Get);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn routes() {
        let cases: &[(&[&str], Result<Route, Refused>)] = &[
            (&["ps", "a", "b"], Ok(Route::PubSub("a/b".into()))),
            (
                &["ps", "a", "%2B", "%23"],
                Ok(Route::PubSub("a/+/#".into())),
            ),
            (&["ps", "a", "", "b"], Ok(Route::PubSub("a//b".into()))),
            (
                &["ps", "100%"],
                Err(bad("invalid percent-encoding in the topic")),
            ),
            (&["ps", "%FF"], Err(bad("the decoded topic is not UTF-8"))),
            (&["ps"], Err(bad("no topic: the URI is /ps/{topic}"))),
            (&["mqtt", "connection"], Ok(Route::Connection)),
            (&[".well-known", "core"], Ok(Route::WellKnownCore)),
            (&["other"], Err(Refused::NotFound)),
            (&[], Err(Refused::NotFound)),
        ];
        for (path, want) in cases {
            let got = parse(&packet(path, &[]), RequestType::Get).map(|r| r.route);
            assert_eq!(&got, want, "{path:?}");
        }
    }

    #[test]
    fn queries() {
        let p = packet(
            &["ps", "t"],
            &[
                "c=dev1",
                "u=alice",
                "p=s3cr=t",
                "qos=2",
                "retain=true",
                "x=y",
            ],
        );
        let r = parse(&p, RequestType::Post).unwrap();
        assert_eq!(r.query.client_id.as_deref(), Some("dev1"));
        assert_eq!(r.query.username.as_deref(), Some("alice"));
        assert_eq!(
            r.query.password.as_ref().map(|p| p.as_bytes()),
            Some(&b"s3cr=t"[..])
        );
        assert_eq!(r.query.qos, Some(QoS::ExactlyOnce));
        assert!(r.query.retain);
        assert_eq!(r.uri, "/ps/t?c=dev1&u=alice&qos=2&retain=true&x=y");
        assert!(!format!("{r:?}").contains("s3cr"));
        let p = packet(&["ps", "t"], &["clientid=d", "username=u", "token=abc"]);
        let r = parse(&p, RequestType::Put).unwrap();
        assert_eq!(
            (r.query.client_id.as_deref(), r.query.token.as_deref()),
            (Some("d"), Some("abc"))
        );
        assert!(parse(&packet(&["ps", "t"], &["qos=3"]), RequestType::Post).is_err());
        assert!(parse(&packet(&["ps", "t"], &["retain=yes"]), RequestType::Post).is_err());
    }

    #[test]
    fn options_and_methods() {
        let mut p = packet(&["ps", "t"], &[]);
        p.add_option(CoapOption::Unknown(2049), vec![]);
        assert_eq!(
            parse(&p, RequestType::Get).unwrap_err(),
            Refused::BadOption(2049)
        );
        let mut p = packet(&["ps", "t"], &[]);
        p.add_option(CoapOption::ProxyUri, b"coap://x".to_vec());
        assert_eq!(
            parse(&p, RequestType::Get).unwrap_err(),
            Refused::ProxyingNotSupported
        );
        let mut p = packet(&["ps", "t"], &[]);
        p.add_option(CoapOption::Unknown(2048), vec![1]); // elective: ignored
        p.add_option(CoapOption::Observe, vec![]);
        p.add_option(CoapOption::Block2, vec![0x16]);
        let r = parse(&p, RequestType::Get).unwrap();
        assert_eq!(r.observe, Some(0));
        assert_eq!(
            r.block2,
            Some(Block {
                num: 1,
                more: false,
                szx: 6
            })
        );
        assert_eq!(
            parse(&p, RequestType::Fetch).unwrap_err(),
            Refused::MethodNotAllowed
        );
    }
}
