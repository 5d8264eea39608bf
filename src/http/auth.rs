//! Who is calling, and what they may do.
//!
//! Every route but `/healthz` (and `/metrics` with `metrics_public`) goes through
//! [`authenticate`], which finds the [`Caller`] and puts it in the request's extensions; each
//! handler then asks [`Caller::may`] for what it needs. The ways in, tried in order:
//!
//! 1. `Authorization: Basic` with a password-file user listed in `[http] admins` or `viewers`,
//!    verified by [`crate::auth::Auth::authenticate`]: the same argon2 pool, credential cache
//!    and back-off as MQTT logins (so guessing over HTTP slows MQTT guesses for that user too).
//! 2. `Authorization: Bearer <key>` with a key from the `[http] api_keys` file.
//! 3. No credentials, no password file, and a loopback caller: open, as an admin (local-only
//!    mode, like anonymous MQTT there).
//!
//! 4. No `Authorization`, and a `mqttd_session` cookie of a live dashboard session
//!    ([`super::session`]) whose user is still in the password file and still in `admins` or
//!    `viewers` (checked on every request, against the auth state in force: a reload that
//!    removes the user ends the session, which is then forgotten).
//!
//! Then, for requests that change something, the CSRF rules of [`super::security`].
//!
//! No credentials (where they are needed), wrong ones, or an unknown key: 401 with
//! `WWW-Authenticate`. A caller whose role does not allow the request: 403. A username backing
//! off: 429. Passwords and keys are never logged.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::AppState;
use super::error::ApiError;
use crate::auth::apikeys::Role;
use crate::auth::{AuthOutcome, Credentials};
use crate::protocol::Password;

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Nothing to prove: local-only mode (no password file, loopback caller).
    Open,
    /// HTTP Basic with a password-file user.
    Password,
    /// A bearer API key.
    ApiKey,
    /// A dashboard session cookie (after `POST /api/v1/login`).
    Session,
}

impl Via {
    /// As the API names it (`GET /api/v1/session`).
    pub fn name(self) -> &'static str {
        match self {
            Via::Open => "open",
            Via::Password => "password",
            Via::ApiKey => "api_key",
            Via::Session => "session",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Look: statistics, clients, metrics.
    Read,
    /// Publish a message (the ACL still decides where).
    Publish,
    /// Change the broker's state otherwise: disconnect a client.
    Manage,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user or key name (None: open local-only mode). Publishes go out as this username,
    /// so the ACL's rules for it apply.
    pub name: Option<Arc<str>>,
    pub role: Role,
    pub via: Via,
    /// The caller's address (a trusted proxy's `X-Forwarded-For` client, else the peer).
    pub ip: IpAddr,
}

impl Caller {
    /// Whether this caller's role allows `need`: 403 if not.
    pub fn may(&self, need: Need) -> Result<(), ApiError> {
        let allowed = match self.role {
            Role::Admin => true,
            Role::Viewer => need == Need::Read,
            Role::Publisher => need == Need::Publish,
        };
        if allowed {
            return Ok(());
        }
        let what = match need {
            Need::Read => "read the broker's state",
            Need::Publish => "publish",
            Need::Manage => "change the broker's state",
        };
        Err(ApiError::forbidden(format!(
            "the {} role may not {what}",
            self.role.name()
        )))
    }
}

/// For logs: `user "alice"`, `api key "ci"`, `local caller` (with the address).
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("");
        let name = crate::protocol::text::cut(name);
        match self.via {
            Via::Open => write!(f, "local caller at {}", self.ip),
            Via::Password => write!(f, "user {name:?} at {}", self.ip),
            Via::ApiKey => write!(f, "api key {name:?} at {}", self.ip),
            Via::Session => write!(f, "user {name:?} (dashboard) at {}", self.ip),
        }
    }
}

/// The middleware: finds the caller or answers 401 / 403 / 429 / 503 itself.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let identified = identify(&state, peer, request.headers())
        .await
        .and_then(|caller| {
            super::security::check_csrf(&state, &caller, &request)?;
            Ok(caller)
        });
    match identified {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The caller's address: `peer`, or the client a trusted proxy names.
pub fn caller_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    crate::transport::ws::forwarded_client(peer.ip(), forwarded, &state.trusted_proxies)
        .unwrap_or(peer.ip())
}

/// Who sent these headers (see the module doc).
pub async fn identify(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let ip = caller_ip(state, peer, headers);
    let auth = state.ctx.auth.current();
    let open = !auth.has_password_file();
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if !open && let Some((_, session)) = state.web.sessions.from_headers(headers) {
            return match role_of(state, &auth, &session.username) {
                Some(role) => Ok(Caller {
                    name: Some(session.username),
                    role,
                    via: Via::Session,
                    ip,
                }),
                None => {
                    tracing::info!(%ip, username = %crate::protocol::text::cut(&session.username),
                        "dashboard session ended: the user lost its HTTP role or was removed");
                    state.web.sessions.forget_user(&session.username);
                    Err(ApiError::unauthorized("session ended: log in again"))
                }
            };
        }
        if open && ip.is_loopback() {
            return Ok(Caller {
                name: None,
                role: Role::Admin,
                via: Via::Open,
                ip,
            });
        }
        return Err(ApiError::unauthorized("credentials required"));
    };
    if open {
        // No password file: no user or key can be checked; on loopback nothing is needed.
        return match ip.is_loopback() {
            true => Ok(Caller {
                name: None,
                role: Role::Admin,
                via: Via::Open,
                ip,
            }),
            false => Err(ApiError::unauthorized("credentials cannot be checked")),
        };
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return match state.api_keys.check(rest.trim()) {
            Some(holder) => Ok(Caller {
                name: Some(holder.name),
                role: holder.role,
                via: Via::ApiKey,
                ip,
            }),
            None => {
                tracing::info!(%ip, "HTTP request with an unknown API key refused");
                Err(ApiError::unauthorized("unknown API key"))
            }
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::unauthorized(
            "unsupported authorization scheme (Basic or Bearer)",
        ));
    }
    let (user, password) = parse_basic(rest.trim())
        .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
    let creds = password_credentials(&user, &password, SocketAddr::new(ip, peer.port()));
    match auth.authenticate(&creds).await {
        AuthOutcome::Allowed { .. } => {}
        AuthOutcome::BadCredentials => {
            return Err(ApiError::unauthorized("bad username or password"));
        }
        AuthOutcome::NotAuthorized => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_FAILURES",
                "too many failed logins for this user; try again later",
            ));
        }
        AuthOutcome::Unavailable => {
            return Err(ApiError::unavailable("password verification is busy"));
        }
    }
    let Some(role) = http_role(state, &user) else {
        tracing::info!(%ip, username = %crate::protocol::text::cut(&user),
            "HTTP request refused: the user is in neither http.admins nor http.viewers");
        return Err(ApiError::forbidden(
            "this user has no HTTP API role (http.admins, http.viewers)",
        ));
    };
    Ok(Caller {
        name: Some(user.as_str().into()),
        role,
        via: Via::Password,
        ip,
    })
}

/// A password-file user's role from `[http] admins` / `viewers` (None: neither).
pub fn http_role(state: &AppState, user: &str) -> Option<Role> {
    if state.admins.iter().any(|a| a == user) {
        Some(Role::Admin)
    } else if state.viewers.iter().any(|v| v == user) {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// A session user's role now: still in the password file in force, still in a role list.
fn role_of(state: &AppState, auth: &crate::auth::Auth, user: &str) -> Option<Role> {
    auth.has_user(user)
        .then(|| http_role(state, user))
        .flatten()
}

/// What [`still_allowed`] needs to check `caller` again later: its session's token, or its API
/// key (kept in memory only, wiped when dropped).
pub fn token_of(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Option<zeroize::Zeroizing<String>> {
    match caller.via {
        Via::Session => state
            .web
            .sessions
            .from_headers(headers)
            .map(|(t, _)| t.into()),
        Via::ApiKey => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .map(|(_, key)| key.trim().to_owned().into()),
        Via::Open | Via::Password => None,
    }
}

/// Whether `caller`, identified at the start of a long request (an event stream), may still
/// come in: its session still live and its user still allowed; a Basic user still in the
/// password file and a role list; an API key still in the key file with the same role.
/// `token`: from [`token_of`].
pub fn still_allowed(state: &AppState, caller: &Caller, token: Option<&str>) -> bool {
    let name = caller.name.as_deref().unwrap_or("");
    match caller.via {
        Via::Session => {
            token.is_some_and(|t| state.web.sessions.find(t).is_some())
                && role_of(state, &state.ctx.auth.current(), name).is_some()
        }
        Via::Password => role_of(state, &state.ctx.auth.current(), name).is_some(),
        Via::ApiKey => token
            .and_then(|k| state.api_keys.check(k))
            .is_some_and(|h| *h.name == *name && h.role == caller.role),
        Via::Open => true,
    }
}

/// A password-file login over HTTP (Basic or the dashboard's form), for
/// [`crate::auth::Auth::authenticate`]: no client id, never anonymous, no certificate.
pub(super) fn password_credentials<'a>(
    user: &'a str,
    password: &'a Password,
    peer: SocketAddr,
) -> Credentials<'a> {
    Credentials {
        client_id: "",
        username: Some(user),
        password: Some(password),
        peer,
        allow_anonymous: false,
        cert_identity: None,
    }
}

/// `user:password` from a Basic credential (RFC 7617; the user part has no ':'). None for
/// anything else (not base64, no ':', an empty or non-UTF-8 user).
pub fn parse_basic(encoded: &str) -> Option<(String, Password)> {
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    );
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_owned();
    if user.is_empty() {
        return None;
    }
    Some((user, Password::new(decoded[colon + 1..].to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_split_at_the_first_colon() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let (user, pw) = parse_basic(&enc("alice:pa:ss")).unwrap();
        assert_eq!((user.as_str(), pw.as_bytes()), ("alice", &b"pa:ss"[..]));
        let (_, empty) = parse_basic(&enc("bob:")).unwrap();
        assert!(empty.as_bytes().is_empty());
        assert!(parse_basic(&enc("nocolon")).is_none());
        assert!(parse_basic(&enc(":pw")).is_none());
        assert!(parse_basic("not base64!").is_none());
    }

    #[test]
    fn roles_allow_what_they_say() {
        let caller = |role| Caller {
            name: None,
            role,
            via: Via::Password,
            ip: IpAddr::from([127, 0, 0, 1]),
        };
        for (role, read, publish, manage) in [
            (Role::Admin, true, true, true),
            (Role::Viewer, true, false, false),
            (Role::Publisher, false, true, false),
        ] {
            let c = caller(role);
            assert_eq!(c.may(Need::Read).is_ok(), read, "{role:?}");
            assert_eq!(c.may(Need::Publish).is_ok(), publish, "{role:?}");
            assert_eq!(c.may(Need::Manage).is_ok(), manage, "{role:?}");
        }
    }
}
