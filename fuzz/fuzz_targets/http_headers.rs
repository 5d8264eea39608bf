//! The request headers the browser-facing checks read are hostile input: the `Cookie` header
//! (`http::session::cookie_values`, `Sessions::find`), `Host` and `Origin`
//! (`http::security::split_host`, `local_host`, `same_origin`) and `Content-Type`
//! (`json_body`) never panic; a cookie value is a piece of its header without `;`; a host that
//! splits has a non-empty name; a local host splits; an origin made of `scheme://` and the Host
//! itself is always the same origin.
#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mqttd::http::security::{json_body, local_host, same_origin, split_host};
use mqttd::http::session::{COOKIE, Sessions, cookie_values};

use http::{HeaderMap, HeaderValue, header};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (cookie, host, origin) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Ok(text) = std::str::from_utf8(cookie) {
        let sessions = Sessions::new(Duration::from_secs(60));
        for value in cookie_values(text, COOKIE) {
            assert!(!value.contains(';'));
            assert!(text.contains(value));
            assert!(sessions.find(value).is_none());
        }
    }
    let bind = IpAddr::from([127, 0, 0, 1]);
    let split = split_host(host);
    if let Some((name, _)) = split {
        assert!(!name.is_empty());
    }
    if local_host(host, bind) {
        assert!(split.is_some());
    }
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_bytes(host) else {
        return;
    };
    headers.insert(header::HOST, value);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_bytes(origin).unwrap_or(HeaderValue::from_static("x")),
    );
    let _ = json_body(&headers);
    for scheme in ["http", "https"] {
        let _ = same_origin(origin, scheme, &headers);
        if split.is_some() {
            let own = [scheme.as_bytes(), b"://", host].concat();
            assert!(same_origin(&own, scheme, &headers), "{:?}", String::from_utf8_lossy(&own));
        }
    }
});
