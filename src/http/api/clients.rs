//! `GET /api/v1/clients` (filters, paging), `GET /api/v1/clients/{id}` and
//! `DELETE /api/v1/clients/{id}` (disconnect; a 5.0 client gets DISCONNECT 0x98).
//!
//! Bodies follow EMQX's v5 `/clients`: `{"data": [...], "meta": {"page", "limit", "count",
//! "hasnext"}}`, with its field names (`clientid`, `proto_ver`, `recv_oct`, ...).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::protocol::{DisconnectReason, text};
use crate::router::clients::ClientView;

/// Most clients on one page.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Client ids containing this.
    pub like_clientid: Option<String>,
    /// Exactly this username.
    pub username: Option<String>,
    /// Connected from exactly this address.
    pub ip_address: Option<std::net::IpAddr>,
    /// Only connected (true) or only offline (false) sessions.
    pub connected: Option<bool>,
    /// 1-based. Default 1.
    pub page: Option<usize>,
    /// Clients per page, 1 to 10000. Default 100.
    pub limit: Option<usize>,
}

pub type Page = super::Page<Client, Meta>;

#[derive(Debug, Serialize)]
pub struct Meta {
    pub page: usize,
    pub limit: usize,
    /// Clients matching the filters, on all pages.
    pub count: usize,
    pub hasnext: bool,
}

/// One client, EMQX's field names.
#[derive(Debug, Serialize)]
pub struct Client {
    pub clientid: String,
    pub username: Option<String>,
    pub connected: bool,
    /// Address and port the connection came from (absent while offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// 3 (3.1), 4 (3.1.1), 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto_ver: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_start: Option<bool>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    /// Session Expiry Interval, seconds (4294967295: never).
    pub expiry_interval: u32,
    pub subscriptions_cnt: usize,
    pub inflight_cnt: usize,
    pub mqueue_len: usize,
    pub mqueue_dropped: u64,
    /// Packets and bytes received from / sent to this connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_pkt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_pkt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_oct: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_oct: Option<u64>,
    /// Only in `GET /api/v1/clients/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<Subscription>>,
}

#[derive(Debug, Serialize)]
pub struct Subscription {
    pub topic: String,
    pub qos: u8,
}

impl Client {
    fn of(v: ClientView, detail: bool) -> Self {
        let c = v.connection.as_ref();
        Client {
            clientid: v.client_id.to_string(),
            username: v.username,
            connected: v.connected,
            ip_address: c.map(|c| c.peer.ip().to_string()),
            port: c.map(|c| c.peer.port()),
            listener: c.map(|c| c.listener.to_string()),
            proto_ver: c.map(|c| c.protocol),
            keepalive: c.map(|c| c.keep_alive),
            clean_start: c.map(|c| c.clean_start),
            connected_at: c.map(|c| super::rfc3339(c.connected_at)),
            expiry_interval: v.expiry,
            subscriptions_cnt: v.subscriptions.len(),
            inflight_cnt: v.inflight,
            mqueue_len: v.queued,
            mqueue_dropped: v.dropped,
            recv_pkt: c.map(|c| c.packets_in),
            send_pkt: c.map(|c| c.packets_out),
            recv_oct: c.map(|c| c.bytes_in),
            send_oct: c.map(|c| c.bytes_out),
            subscriptions: detail.then(|| {
                v.subscriptions
                    .into_iter()
                    .map(|(topic, qos)| Subscription {
                        topic,
                        qos: qos as u8,
                    })
                    .collect()
            }),
        }
    }
}

impl ListQuery {
    fn matches(&self, v: &ClientView) -> bool {
        let conn = v.connection.as_ref();
        self.like_clientid
            .as_deref()
            .is_none_or(|like| v.client_id.contains(like))
            && self
                .username
                .as_deref()
                .is_none_or(|u| v.username.as_deref() == Some(u))
            && self
                .ip_address
                .is_none_or(|ip| conn.is_some_and(|c| c.peer.ip() == ip))
            && self.connected.is_none_or(|want| v.connected == want)
    }
}

/// `GET /api/v1/clients`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query?;
    let (page, limit) = super::paging(q.page, q.limit)?;
    let all = state.ctx.router.clients(|v| q.matches(v));
    let (views, meta) = super::page_of(all, page, limit);
    Ok(Json(Page {
        data: views.into_iter().map(|v| Client::of(v, false)).collect(),
        meta,
    }))
}

/// `GET /api/v1/clients/{id}`, with its subscriptions.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Client>, ApiError> {
    caller.may(Need::Read)?;
    match state.ctx.router.client(&id) {
        Some(v) => Ok(Json(Client::of(v, true))),
        None => Err(no_such_client("no client", &id)),
    }
}

/// `DELETE /api/v1/clients/{id}`: closes its connection (5.0: DISCONNECT 0x98, administrative
/// action); its session stays if it is persistent. 204, or 404 when it is not connected.
pub async fn disconnect(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.may(Need::Manage)?;
    if !state
        .ctx
        .router
        .disconnect_client(&id, DisconnectReason::AdministrativeAction)
    {
        return Err(no_such_client("no connected client", &id));
    }
    info!(client_id = %text::cut(&id), by = %caller, "client disconnected through the HTTP API");
    Ok(StatusCode::NO_CONTENT)
}

fn no_such_client(what: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "CLIENTID_NOT_FOUND",
        format!("{what} {:?}", text::cut(id)),
    )
}
