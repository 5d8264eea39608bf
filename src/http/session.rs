//! Dashboard sessions: what `POST /api/v1/login` creates and the `mqttd_session` cookie names.
//!
//! - A session token is 32 random bytes from aws-lc's generator (the one TLS uses), sent to the
//!   browser once, in the cookie, base64url. The store keeps only its SHA-256, so a memory dump
//!   or a debug print of the store gives nobody a usable cookie; with 256 random bits a fast
//!   hash is as safe as a slow one.
//! - Each session has its own CSRF token (another 32 random bytes), which the dashboard reads
//!   from the login answer or `GET /api/v1/session` and sends back in `X-CSRF-Token` with every
//!   state change (see [`super::security`]). It is compared in constant time.
//! - A session lasts `[http] session_ttl` (default 8 h) from the login, not renewed by use: a
//!   stolen cookie is worth a working day at most. Logging out forgets it at once.
//! - At most [`MAX_SESSIONS`]; a login beyond that evicts the oldest session (expired ones go
//!   first), so logins cannot grow memory without bound. Logins are password checks through the
//!   back-off, so nobody can churn this quickly without knowing a password.
//! - The store says only who logged in; whether that user may still come in is decided on each
//!   request against the auth state in force (`auth.rs`): a user removed from the password file
//!   or from `admins` / `viewers` by a reload loses their sessions at their next request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use parking_lot::Mutex;
use sha2::Digest as _;

/// The cookie's name.
pub const COOKIE: &str = "mqttd_session";

/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 1024;

/// Length of a token as sent (32 bytes, base64url without padding).
const TOKEN_LEN: usize = 43;

/// One logged-in dashboard.
#[derive(Debug, Clone)]
pub struct Session {
    /// The password-file user who logged in.
    pub username: Arc<str>,
    /// What state-changing requests must carry in `X-CSRF-Token`.
    pub csrf_token: Arc<str>,
    pub created: Instant,
    pub expires: Instant,
    /// `expires` as wall-clock time, for the login answer.
    pub expires_at: SystemTime,
}

/// The sessions of one HTTP listener (see the module doc).
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    /// By the SHA-256 of the token.
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            map: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `username`: its cookie token and the session.
    pub fn create(&self, username: &str) -> (String, Session) {
        let token = random_token();
        let now = Instant::now();
        let session = Session {
            username: username.into(),
            csrf_token: random_token().into(),
            created: now,
            expires: now + self.ttl,
            expires_at: SystemTime::now() + self.ttl,
        };
        let mut map = self.map.lock();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(key(&token), session.clone());
        (token, session)
    }

    /// The live session `token` names (an expired one is forgotten).
    pub fn find(&self, token: &str) -> Option<Session> {
        if !plausible(token) {
            return None;
        }
        let k = key(token);
        let mut map = self.map.lock();
        let session = map.get(&k)?;
        if session.expires <= Instant::now() {
            map.remove(&k);
            return None;
        }
        Some(session.clone())
    }

    /// The live session named by a `mqttd_session` cookie of `headers`, and its token.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        session_cookies(headers).find_map(|t| self.find(t).map(|s| (t.to_owned(), s)))
    }

    /// Ends the session `token` names; true if there was one.
    pub fn forget(&self, token: &str) -> bool {
        plausible(token) && self.map.lock().remove(&key(token)).is_some()
    }

    /// Ends every session of `username`; how many there were.
    pub fn forget_user(&self, username: &str) -> usize {
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|_, s| &*s.username != username);
        before - map.len()
    }

    /// Sessions kept now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 32 random bytes, base64url without padding.
pub fn random_token() -> String {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    if aws_lc_rs::rand::fill(&mut bytes[..]).is_err() {
        // aws-lc's generator does not fail on supported systems; should it, fall back to the
        // operating system's through `rand` rather than hand out a predictable token.
        rand::fill(&mut bytes[..]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..])
}

fn key(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Shaped like a token we made (a cheap refusal of anything else).
fn plausible(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The values of every `name` cookie in one `Cookie` header value (RFC 6265 section 5.4:
/// `name=value` pairs separated by `;`), in order. Malformed pairs are skipped.
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        // A quoted value (RFC 6265 allows DQUOTE *cookie-octet DQUOTE).
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

/// Every `mqttd_session` cookie value the request carries (several `Cookie` headers, or several
/// cookies of that name, e.g. for another path, are all looked at).
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie_values(v, COOKIE))
}

/// The `Set-Cookie` of a login: HttpOnly (scripts cannot read it), SameSite=Strict (never sent
/// on a request another site starts), Path=/, Max-Age = the session's lifetime, and Secure
/// when the dashboard is served over https.
pub fn set_cookie(token: &str, ttl: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        ttl.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` of a logout: the cookie emptied and expired.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    HeaderValue::from_static(if secure {
        "mqttd_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
    } else {
        "mqttd_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, sa) = sessions.create("alice");
        let (b, _) = sessions.create("alice");
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(&*sa.csrf_token, a.as_str());
        let debug = format!("{sessions:?}");
        assert!(!debug.contains(&a), "the token itself is not stored");
        assert_eq!(&*sessions.find(&a).unwrap().username, "alice");
        assert!(sessions.find("nope").is_none());
        assert!(sessions.forget(&a));
        assert!(sessions.find(&a).is_none());
        assert!(sessions.find(&b).is_some());
    }

    #[test]
    fn expired_sessions_are_gone_and_the_oldest_is_evicted_when_full() {
        let sessions = Sessions::new(Duration::ZERO);
        let (a, _) = sessions.create("alice");
        assert!(sessions.find(&a).is_none(), "expired");
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.create("u0").0;
        for i in 1..MAX_SESSIONS {
            sessions.create(&format!("u{i}"));
        }
        assert!(sessions.find(&first).is_some());
        sessions.create("one more");
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.find(&first).is_none(), "the oldest went");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = "a=1; mqttd_session=xyz ;b=\"q\"; mqttd_session=\"abc\"; junk; =;";
        let got: Vec<_> = cookie_values(h, COOKIE).collect();
        assert_eq!(got, ["xyz", "abc"]);
        assert_eq!(cookie_values("b=\"q\"", "b").collect::<Vec<_>>(), ["q"]);
        assert_eq!(cookie_values("", COOKIE).count(), 0);
        let set = set_cookie("t", Duration::from_secs(60), true);
        assert_eq!(
            set.to_str().unwrap(),
            "mqttd_session=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
        );
    }
}
