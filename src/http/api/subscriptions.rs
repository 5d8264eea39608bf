//! `GET /api/v1/subscriptions?clientid=&filter=&page=&limit=`: every session's subscriptions
//! (EMQX's `/subscriptions`): `{"data": [{"clientid", "topic", "qos", "nl", "rap", "rh"}],
//! "meta"}`, sorted by client id, then filter. `clientid`: exactly this client; `filter`:
//! exactly this subscription filter (as subscribed, `$share/...` included).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::clients::Meta;
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub clientid: Option<String>,
    pub filter: Option<String>,
    pub page: Option<usize>,
    pub limit: Option<usize>,
}

pub type Page = super::Page<Subscription, Meta>;

#[derive(Debug, Serialize)]
pub struct Subscription {
    pub clientid: String,
    pub topic: String,
    pub qos: u8,
    /// 5.0 No Local (0/1), Retain As Published (0/1), Retain Handling (0-2).
    pub nl: u8,
    pub rap: u8,
    pub rh: u8,
}

/// `GET /api/v1/subscriptions`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query?;
    let (page, limit) = super::paging(q.page, q.limit)?;
    let all = state.ctx.router.subscriptions_list(|client_id, filter| {
        q.clientid.as_deref().is_none_or(|c| c == client_id)
            && q.filter.as_deref().is_none_or(|f| f == filter)
    });
    let (data, meta) = super::page_of(all, page, limit);
    let data = data
        .into_iter()
        .map(|s| Subscription {
            clientid: s.client_id.to_string(),
            topic: s.filter,
            qos: s.options.qos as u8,
            nl: u8::from(s.options.no_local),
            rap: u8::from(s.options.retain_as_published),
            rh: s.options.retain_handling as u8,
        })
        .collect();
    Ok(Json(Page { data, meta }))
}
