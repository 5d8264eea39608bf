//! `GET /api/v1/listeners`: each MQTT listener and this HTTP one: `{"data": [{"name", "bind",
//! "protocol": "mqtt"|"mqtts"|"ws"|"wss"|"http"|"https", "connections", "max_connections"?,
//! "certificate"?: {"subject", "not_after", "days_left"}}]}`. The certificate is the one new
//! handshakes present now (a reload swaps it); `days_left` is negative once it has expired.
//! The HTTP listener's `connections` are its open HTTP connections (this request's included).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use crate::config::{Config, ListenerProtocol};
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::tls::Tls;

/// What the API tells of a listener (made once, at start-up).
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: String,
    /// The bound address (the port chosen when 0 was configured).
    pub bind: SocketAddr,
    pub protocol: &'static str,
    pub max_connections: Option<usize>,
    /// Its certificates (reloadable), for TLS listeners.
    pub tls: Option<Tls>,
    /// The HTTP listener's connection slots (its open connections are counted from them).
    pub http_slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl ListenerInfo {
    /// `config`'s MQTT listeners, bound to `addrs` (by name), with their loaded `tls` (by index).
    pub fn of(
        config: &Config,
        addrs: &[(String, SocketAddr)],
        tls: &[Option<Tls>],
    ) -> Vec<ListenerInfo> {
        config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let tls = tls.get(i).cloned().flatten();
                let protocol = match (l.protocol, tls.is_some()) {
                    (ListenerProtocol::Mqtt, false) => "mqtt",
                    (ListenerProtocol::Mqtt, true) => "mqtts",
                    (ListenerProtocol::Ws, false) => "ws",
                    (ListenerProtocol::Ws, true) => "wss",
                };
                let bind = addrs
                    .iter()
                    .find(|(n, _)| *n == l.name)
                    .map_or(l.bind, |(_, a)| *a);
                ListenerInfo {
                    name: l.name.clone(),
                    bind,
                    protocol,
                    max_connections: Some(l.max_connections),
                    tls,
                    http_slots: None,
                }
            })
            .collect()
    }

    /// The HTTP listener itself, bound to `bind`, with its connection `slots`.
    pub fn http(
        bind: SocketAddr,
        tls: Option<Tls>,
        slots: Arc<tokio::sync::Semaphore>,
    ) -> ListenerInfo {
        ListenerInfo {
            name: "http".into(),
            bind,
            protocol: if tls.is_some() { "https" } else { "http" },
            max_connections: Some(crate::http::guard::MAX_CONNECTIONS),
            tls,
            http_slots: Some(slots),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Listeners {
    pub data: Vec<Listener>,
}

#[derive(Debug, Serialize)]
pub struct Listener {
    pub name: String,
    pub bind: String,
    pub protocol: &'static str,
    /// MQTT connections (for the HTTP listener: its open HTTP connections).
    pub connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

#[derive(Debug, Serialize)]
pub struct Certificate {
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days until `not_after` (negative: expired that many days ago).
    pub days_left: i64,
}

impl Certificate {
    fn of(tls: &Tls, now: SystemTime) -> Option<Certificate> {
        let c = tls.certificate()?;
        let secs = match c.not_after.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Some(Certificate {
            subject: c.subject,
            not_after: super::rfc3339(c.not_after),
            days_left: secs.div_euclid(86_400),
        })
    }
}

/// `GET /api/v1/listeners`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Listeners>, ApiError> {
    caller.may(Need::Read)?;
    let counts = state.ctx.router.connections_by_listener();
    let now = SystemTime::now();
    let data = state
        .listeners
        .iter()
        .map(|l| {
            let connections = match &l.http_slots {
                Some(slots) => crate::http::guard::open_connections(slots) as u64,
                None => counts
                    .iter()
                    .find(|(n, _)| **n == *l.name)
                    .map_or(0, |(_, c)| *c),
            };
            Listener {
                name: l.name.clone(),
                bind: l.bind.to_string(),
                protocol: l.protocol,
                connections,
                max_connections: l.max_connections,
                certificate: l.tls.as_ref().and_then(|t| Certificate::of(t, now)),
            }
        })
        .collect();
    Ok(Json(Listeners { data }))
}
