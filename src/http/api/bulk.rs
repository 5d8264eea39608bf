//! `POST /api/v1/publish/bulk`: an array of up to [`MAX_ITEMS`] publish bodies (the single
//! publish's, see [`super::publish`]), each published in order as the caller, exactly as
//! `POST /api/v1/publish` would. The answer is 200 with one entry per item, in order: `{"id"}`
//! for a message taken, `{"code", "message"}` for one refused (`code` as the single publish's
//! error would have it). Only a body that is not a JSON array (or has too many items) fails as a
//! whole, with 400.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use super::publish::{PublishBody, publish_one};
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;

/// Most messages in one request.
pub const MAX_ITEMS: usize = 1000;

/// One item's result.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ItemResult {
    Published { id: String },
    Failed { code: &'static str, message: String },
}

/// `POST /api/v1/publish/bulk`.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Result<Json<Vec<Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Vec<ItemResult>>, ApiError> {
    caller.may(Need::Publish)?;
    // Valid JSON of another shape is 422 to axum; here it is the one whole-request error.
    let Json(items) = body.map_err(|r| match r.status() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY => ApiError::bad_request(format!(
            "the body is not an array of messages: {}",
            r.body_text()
        )),
        _ => ApiError::from(r),
    })?;
    if items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ITEMS} messages per request ({} given)",
            items.len()
        )));
    }
    let mut results = Vec::with_capacity(items.len());
    let mut taken = 0;
    for (i, item) in items.into_iter().enumerate() {
        let result = match serde_json::from_value::<PublishBody>(item) {
            Err(e) => Err(ApiError::bad_request(format!("item {i}: {e}"))),
            Ok(body) => publish_one(&state, &caller, peer.port(), body).await,
        };
        results.push(match result {
            Ok((_, published)) => {
                taken += 1;
                ItemResult::Published { id: published.id }
            }
            Err(e) => ItemResult::Failed {
                code: e.code,
                message: e.message,
            },
        });
    }
    info!(by = %caller, taken, refused = results.len() - taken,
        "bulk publish through the HTTP API");
    Ok(Json(results))
}
