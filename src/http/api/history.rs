//! `GET /api/v1/history?filter=&from=&to=&limit=&cursor=`: the message history (`[history]`,
//! see [`crate::store::history`]), queried as `mqttd history` does ([`query::run`]): the newest
//! `limit` messages (default 100) on topics matching `filter` between `from` and `to` (each an
//! RFC 3339 time or a duration ago: `1h`, `30m`), shown oldest first. `meta.next_cursor`, when
//! not null, fetches the page of older ones (pass it as `cursor` with the same query).
//!
//! The caller reads as its own username (client id `http:<name>`): a filter under which the
//! ACL lets it read nothing is 403, and messages on topics it may not read are left out.
//! 404 `NOT_ENABLED` without `[history]`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::auth::Access;
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::store::history::{self, query, time};

/// Most messages on one page.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub filter: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

pub type Page = super::Page<Recorded, Meta>;

#[derive(Debug, Serialize)]
pub struct Meta {
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Recorded {
    pub topic: String,
    pub payload: String,
    /// `plain` (UTF-8 text) or `base64`.
    pub payload_encoding: &'static str,
    pub qos: u8,
    pub retain: bool,
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clientid: Option<String>,
}

/// `{time}.{row id}`, as [`history::Found::last`] gives them.
pub fn parse_cursor(s: &str) -> Option<(i64, i64)> {
    let (t, id) = s.split_once('.')?;
    Some((t.parse().ok()?, id.parse().ok()?))
}

/// `GET /api/v1/history`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.may(Need::Read)?;
    let Some(access) = state.history.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_ENABLED",
            "the message history is off ([history] enabled = true records one)",
        ));
    };
    let Query(q) = q?;
    query::check_filter(&q.filter).map_err(|e| ApiError::bad_request(format!("filter {e}")))?;
    let now = std::time::SystemTime::now();
    let parse = |arg: &Option<String>, name: &str| {
        arg.as_deref()
            .map(|t| time::parse_time(t, now))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    let (since, until) = (parse(&q.from, "from")?, parse(&q.to, "to")?);
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| ApiError::bad_request("cursor: malformed"))?),
    };
    let auth = state.ctx.auth.current();
    let (username, client_id) = (caller.name.as_deref(), super::publish::client_id(&caller));
    // As for a SUBSCRIBE: refused when nothing under the filter is readable.
    if !auth.check(username, &client_id, &q.filter, Access::Subscribe) {
        return Err(ApiError::forbidden(
            "the ACL lets this caller read nothing under this filter",
        ));
    }
    let db = access.db.clone();
    let query = history::Query {
        filter: q.filter,
        since,
        until,
        limit,
        before,
    };
    let found = tokio::task::spawn_blocking(move || {
        let conn = history::open_read_only(&db).map_err(|e| e.to_string())?;
        query::run(&conn, &query).map_err(|e| format!("{}: {e}", db.display()))
    })
    .await
    .map_err(|_| ApiError::unavailable("the history query did not finish"))?
    .map_err(|e| {
        warn!("history query through the HTTP API failed: {e}");
        ApiError::unavailable(format!("the history cannot be read: {e}"))
    })?;
    let data = found
        .messages
        .into_iter()
        .filter(|m| auth.check(username, &client_id, &m.topic, Access::Read))
        .map(|m| {
            let (payload, payload_encoding) = super::payload_text(&m.payload);
            Recorded {
                time: time::format_rfc3339(m.time),
                topic: m.topic,
                payload,
                payload_encoding,
                qos: m.qos as u8,
                retain: m.retain,
                clientid: m.client_id,
            }
        })
        .collect();
    let next_cursor = found
        .more
        .then_some(found.last)
        .flatten()
        .map(|(t, id)| format!("{t}.{id}"));
    Ok(Json(Page {
        data,
        meta: Meta { next_cursor },
    }))
}
