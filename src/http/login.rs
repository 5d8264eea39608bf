//! The dashboard's way in: `POST /api/v1/login`, `POST /api/v1/logout`, `GET /api/v1/session`
//! (sessions themselves: [`super::session`]; the CSRF rules: [`super::security`]).
//!
//! A login is a password check through [`crate::auth::Auth::authenticate`], exactly as HTTP
//! Basic and MQTT logins are (argon2 pool, credential cache, back-off: guessing here slows
//! guessing there). An unknown user and a wrong password get the same 401
//! `BAD_USERNAME_OR_PWD` through the same path (an unknown user is verified against a dummy
//! hash), so the answer does not tell whether a user exists. Every login, failed login and
//! logout is logged with the user (cut) and the caller's address; passwords never are.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::AppState;
use super::api::rfc3339;
use super::auth::{Caller, Via, caller_ip, http_role};
use super::error::ApiError;
use super::session::{clear_cookie, set_cookie};
use crate::auth::AuthOutcome;
use crate::protocol::{Password, text};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize)]
pub struct LoginAnswer {
    pub username: String,
    pub role: &'static str,
    pub csrf_token: String,
    /// RFC 3339: when the session ends (`[http] session_ttl` after the login).
    pub expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct SessionAnswer {
    /// None in local-only mode.
    pub username: Option<String>,
    pub role: &'static str,
    /// `open`, `password`, `api_key` or `session`.
    pub via: &'static str,
    /// What state changes must carry in `X-CSRF-Token` (a session's, or the open mode's);
    /// None for callers that send `Authorization`, which need none.
    pub csrf_token: Option<String>,
    /// For a session: when it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Whether the cookie gets `Secure`: under https, or behind a trusted proxy that says https.
fn secure(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    super::security::own_scheme(state, peer, headers) == "https"
}

/// `POST /api/v1/login`.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let password = Password::new(body.password.into_bytes());
    let ip = caller_ip(&state, peer, &headers);
    let auth = state.ctx.auth.current();
    if !auth.has_password_file() {
        return Err(ApiError::bad_request(
            "no password file: the API is open to loopback callers and needs no login",
        ));
    }
    let user = body.username;
    let shown = text::cut(&user);
    let creds =
        super::auth::password_credentials(&user, &password, SocketAddr::new(ip, peer.port()));
    let outcome = tokio::select! {
        _ = state.ctx.shutdown.cancelled() => AuthOutcome::Unavailable,
        outcome = auth.authenticate(&creds) => outcome,
    };
    drop(password);
    match outcome {
        AuthOutcome::Allowed { .. } => {}
        AuthOutcome::BadCredentials => {
            warn!(%ip, username = %shown, "dashboard login failed: bad username or password");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "BAD_USERNAME_OR_PWD",
                "bad username or password",
            ));
        }
        AuthOutcome::NotAuthorized => {
            warn!(%ip, username = %shown, "dashboard login refused: the user is backing off");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_FAILURES",
                "too many failed logins for this user; try again later",
            ));
        }
        AuthOutcome::Unavailable => {
            warn!(%ip, username = %shown, "dashboard login refused: verification busy");
            return Err(ApiError::unavailable("password verification is busy"));
        }
    }
    let Some(role) = http_role(&state, &user) else {
        warn!(%ip, username = %shown,
            "dashboard login refused: the user is in neither http.admins nor http.viewers");
        return Err(ApiError::forbidden(
            "this user has no HTTP API role (http.admins, http.viewers)",
        ));
    };
    let sessions = &state.web.sessions;
    let (token, session) = sessions.create(&user);
    info!(%ip, username = %shown, role = role.name(), "dashboard login");
    let answer = LoginAnswer {
        username: user.clone(),
        role: role.name(),
        csrf_token: session.csrf_token.to_string(),
        expires_at: rfc3339(session.expires_at),
    };
    let cookie = set_cookie(&token, sessions.ttl(), secure(&state, peer, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(answer)).into_response())
}

/// `POST /api/v1/logout`: 204, the session forgotten and its cookie cleared (for any caller;
/// only a session has something to forget).
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if caller.via == Via::Session
        && let Some((token, _)) = state.web.sessions.from_headers(&headers)
    {
        state.web.sessions.forget(&token);
        info!(by = %caller, "dashboard logout");
    }
    let cookie = clear_cookie(secure(&state, peer, &headers));
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// `GET /api/v1/session`: who the caller is (401 without credentials, from the middleware).
pub async fn session(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Json<SessionAnswer> {
    let (csrf_token, expires_at) = match caller.via {
        Via::Session => match state.web.sessions.from_headers(&headers) {
            Some((_, s)) => (Some(s.csrf_token.to_string()), Some(rfc3339(s.expires_at))),
            None => (None, None),
        },
        Via::Open => (Some(state.web.open_csrf.to_string()), None),
        Via::Password | Via::ApiKey => (None, None),
    };
    Json(SessionAnswer {
        username: caller.name.as_deref().map(str::to_owned),
        role: caller.role.name(),
        via: caller.via.name(),
        csrf_token,
        expires_at,
    })
}
