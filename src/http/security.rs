//! What keeps a browser from being turned against the API: DNS-rebinding and Origin checks,
//! CSRF tokens, and the security headers of every answer.
//!
//! **Who can be forged.** A page on another site can make the user's browser send requests to
//! the broker, with whatever the browser attaches by itself: cookies (unless SameSite forbids),
//! cached Basic credentials, and, in local-only mode, nothing at all, since a loopback caller
//! needs nothing. What such a page can send without a CORS preflight (which we never answer, so
//! anything needing one is never sent) is a "simple" request: GET, HEAD or POST, with a body of
//! type `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, and no
//! custom headers. Current browsers put an `Origin` header on every cross-site POST (form or
//! fetch) and on every same-origin fetch that is not a GET.
//!
//! **The rules**, for each state-changing request (POST, PUT, PATCH, DELETE):
//! 1. An `Origin` header, whoever the caller, must be the request's own origin (`scheme://Host`,
//!    the scheme being https under `[http] tls` or when a trusted proxy says so in
//!    `X-Forwarded-Proto`): 403 `BAD_ORIGIN`. This alone stops every cross-site request a current
//!    browser makes, cached Basic credentials included, and costs curl and scripts nothing
//!    (they send no Origin).
//! 2. A request carrying `Authorization` (Basic or Bearer) needs nothing more: a browser never
//!    adds that header cross-site without a preflight, and rule 1 covered cached credentials.
//! 3. A request authenticated by the session cookie must carry an `Origin` (browsers do) and
//!    `X-CSRF-Token` equal to its session's token: 403 `BAD_ORIGIN` / `CSRF`. SameSite=Strict
//!    already keeps the cookie off cross-site requests; this is the second lock, for browsers
//!    that ignore SameSite and for a sibling subdomain that could plant requests.
//! 4. Local-only (open) mode: a request that looks like it comes from a browser (it has an
//!    `Origin`, a `Cookie` or a `Sec-Fetch-Site` header, or it is a POST / PUT / PATCH whose
//!    body is not `application/json`, i.e. one a cross-site form could send) must carry
//!    `X-CSRF-Token` equal to the process's open-mode token (`GET /api/v1/session` gives it; a
//!    page of another site cannot read that answer). Anything else, curl or a script on the
//!    host, is let through as before. Why that is enough: a cross-site request from a current
//!    browser carries `Origin` (rule 1 refuses it anyway); an old browser that omits `Origin`
//!    can still only send simple requests, and a simple POST cannot have an `application/json`
//!    body, while PUT / PATCH / DELETE or a JSON body need a preflight that never succeeds.
//! 5. DNS rebinding: a page of `evil.example` whose name is made to resolve to 127.0.0.1 is
//!    same-origin with the API as far as the browser knows (so rule 1 cannot see it), but its
//!    requests say `Host: evil.example`. In open mode (where such a page needs no credentials)
//!    a `Host` that is not `localhost`, a loopback address or the bind address gets 403
//!    `BAD_HOST`, for every request. (A request without `Host`, which no browser sends, is
//!    not a browser's and passes.) With a password file the page would need credentials it
//!    does not have (the cookie belongs to the real host name).
//!
//! No CORS headers are ever sent. Every answer has `X-Content-Type-Options: nosniff`,
//! `X-Frame-Options: DENY` (no clickjacking through frames), `Referrer-Policy: no-referrer`;
//! `/api/*` answers have `Cache-Control: no-store` (nothing of the broker's state in caches).
//! A 401 for a browser's script (`Sec-Fetch-Mode` other than `navigate`) or for the login and
//! session endpoints goes without `WWW-Authenticate`, so the browser shows no password dialog
//! over the dashboard's own form.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::auth::{Caller, Via};
use super::error::ApiError;

/// The header state-changing browser requests carry their CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// POST, PUT, PATCH, DELETE (and any method we do not know).
pub fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The outer layer: the Host and Origin checks (rules 1 and 5), then the headers.
pub async fn layer(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/");
    let quiet = path == "/api/v1/login"
        || path == "/api/v1/session"
        || request
            .headers()
            .get("sec-fetch-mode")
            .is_some_and(|m| m.as_bytes() != b"navigate");
    let mut response = match check(&state, peer, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if quiet && response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

fn check(state: &AppState, peer: SocketAddr, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    if !state.ctx.auth.current().has_password_file()
        && let Some(host) = headers.get(header::HOST)
        && !local_host(host.as_bytes(), state.web.bind.ip())
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "BAD_HOST",
            "in local-only mode the API answers only to localhost or a loopback address in Host \
             (DNS rebinding)",
        ));
    }
    if changes_state(request.method())
        && let Some(origin) = headers.get(header::ORIGIN)
        && !same_origin(origin.as_bytes(), own_scheme(state, peer, headers), headers)
    {
        return Err(bad_origin("the request's Origin is not this server"));
    }
    Ok(())
}

fn bad_origin(why: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "BAD_ORIGIN", why)
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "CSRF",
        "missing or wrong X-CSRF-Token (GET /api/v1/session gives it); scripts may instead send \
         Authorization, or in local-only mode a JSON body without Origin or Cookie",
    )
}

/// Rules 2 to 4, once the caller is known (called by `auth::authenticate`).
pub fn check_csrf(state: &AppState, caller: &Caller, request: &Request) -> Result<(), ApiError> {
    if !changes_state(request.method()) {
        return Ok(());
    }
    let headers = request.headers();
    if headers.contains_key(header::AUTHORIZATION) {
        return Ok(());
    }
    let expected: Arc<str> = match caller.via {
        Via::Session => {
            if !headers.contains_key(header::ORIGIN) {
                return Err(bad_origin(
                    "a request with the session cookie that changes something must have Origin",
                ));
            }
            match state.web.sessions.from_headers(headers) {
                Some((_, session)) => session.csrf_token,
                None => return Err(csrf_refused()),
            }
        }
        Via::Open if from_browser(request.method(), headers) => state.web.open_csrf.clone(),
        _ => return Ok(()),
    };
    let given = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    match bool::from(given.ct_eq(expected.as_bytes())) {
        true => Ok(()),
        false => Err(csrf_refused()),
    }
}

/// Rule 4's "looks like a browser".
fn from_browser(method: &Method, headers: &HeaderMap) -> bool {
    let has = |name: HeaderName| headers.contains_key(name);
    has(header::ORIGIN)
        || has(header::COOKIE)
        || has(HeaderName::from_static("sec-fetch-site"))
        || (matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !json_body(headers))
}

/// `Content-Type: application/json` (parameters such as charset allowed).
pub fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `https` under TLS or when a trusted proxy's `X-Forwarded-Proto` says so, else `http`.
pub fn own_scheme(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> &'static str {
    if state.web.https {
        return "https";
    }
    let trusted = state.trusted_proxies.iter().any(|n| n.contains(peer.ip()));
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    match (trusted, forwarded) {
        (true, Some(p)) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// Is `origin` (an `Origin` header) `scheme://` + this request's `Host`? Default ports (80
/// for http, 443 for https) may be written or left out on either side; host names compare
/// without regard to case. `null` and anything malformed is not.
pub fn same_origin(origin: &[u8], scheme: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (std::str::from_utf8(origin), host.to_str()) else {
        return false;
    };
    let Some(rest) = origin
        .get(..scheme.len() + 3)
        .filter(|p| p.eq_ignore_ascii_case(&format!("{scheme}://")))
        .map(|_| &origin[scheme.len() + 3..])
    else {
        return false;
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    match (split_host(rest.as_bytes()), split_host(host.as_bytes())) {
        (Some((oh, op)), Some((hh, hp))) => {
            oh.eq_ignore_ascii_case(hh) && op.unwrap_or(default_port) == hp.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// `host[:port]` (an IPv6 address in brackets) as host and port; None when malformed (a path,
/// user info, an empty host, a port that is not a number).
pub fn split_host(text: &[u8]) -> Option<(&str, Option<u16>)> {
    let text = std::str::from_utf8(text).ok()?;
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (addr, port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':');
    if host.is_empty() || !host.bytes().all(valid) {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// Rule 5: is `host` (a `Host` header) `localhost`, a loopback address, or `bind`?
pub fn local_host(host: &[u8], bind: IpAddr) -> bool {
    let Some((name, _)) = split_host(host) else {
        return false;
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip == bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn origins_match_their_own_host_only() {
        let same = |o: &str, s: &str, h: &str| same_origin(o.as_bytes(), s, &host(h));
        assert!(same("http://127.0.0.1:18083", "http", "127.0.0.1:18083"));
        assert!(same("HTTP://LocalHost:18083", "http", "localhost:18083"));
        assert!(same("https://example.com", "https", "example.com:443"));
        assert!(same("http://[::1]:8080", "http", "[::1]:8080"));
        assert!(!same("http://127.0.0.1:18083", "https", "127.0.0.1:18083"));
        assert!(!same(
            "http://evil.example:18083",
            "http",
            "127.0.0.1:18083"
        ));
        assert!(!same("http://127.0.0.1:1", "http", "127.0.0.1:18083"));
        assert!(!same("null", "http", "127.0.0.1"));
        assert!(!same("http://a@127.0.0.1", "http", "127.0.0.1"));
        assert!(!same("http://127.0.0.1/x", "http", "127.0.0.1"));
        assert!(!same_origin(b"http://x", "http", &HeaderMap::new()));
    }

    #[test]
    fn only_local_hosts_pass_in_open_mode() {
        let bind: IpAddr = "127.0.0.2".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:18083",
            "localhost.:1",
            "127.0.0.1:18083",
            "127.9.9.9",
            "[::1]:18083",
            "127.0.0.2",
        ] {
            assert!(local_host(ok.as_bytes(), bind), "{ok}");
        }
        for bad in [
            "evil.example:18083",
            "localhost.evil.example",
            "10.0.0.1",
            "",
            "[::1",
            "127.0.0.1:x",
            "a b",
        ] {
            assert!(!local_host(bad.as_bytes(), bind), "{bad}");
        }
    }

    #[test]
    fn browsers_are_told_apart_from_scripts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(!from_browser(&Method::POST, &h));
        assert!(!from_browser(&Method::DELETE, &HeaderMap::new()));
        assert!(from_browser(&Method::POST, &HeaderMap::new()));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        assert!(from_browser(&Method::POST, &h));
        let mut form = HeaderMap::new();
        form.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(from_browser(&Method::POST, &form));
    }
}
