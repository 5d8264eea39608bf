//! Retained messages: `GET /api/v1/retained?filter=&page=&limit=` lists them (a preview of each
//! payload), `GET /api/v1/retained/{topic}` shows one whole, `DELETE /api/v1/retained/{topic}`
//! clears it as an empty retained PUBLISH would (removed from the store too, before the answer),
//! without delivering anything to anyone. `{topic}` is URL-encoded (`a%2Fb`); its `/` may also
//! appear as they are (`/api/v1/retained/a/b`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::clients::Meta;
use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::protocol::topic::{validate_topic_filter, validate_topic_name};
use crate::protocol::{Properties, text};
use crate::router::Message;

/// Payload bytes shown in a list.
pub const PREVIEW_BYTES: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// An MQTT topic filter (`sensors/#`); all retained messages without one.
    pub filter: Option<String>,
    pub page: Option<usize>,
    pub limit: Option<usize>,
}

pub type Page = super::Page<Summary, Meta>;

/// One retained message in a list.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub topic: String,
    pub qos: u8,
    pub payload_size: usize,
    /// The first [`PREVIEW_BYTES`] bytes: text if the payload is UTF-8, else base64.
    pub payload_preview: String,
    pub payload_encoding: &'static str,
}

/// One retained message, whole.
#[derive(Debug, Serialize)]
pub struct Retained {
    pub topic: String,
    pub qos: u8,
    /// Base64.
    pub payload: String,
    /// The payload if it is UTF-8, else null.
    pub payload_text: Option<String>,
    pub payload_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<MessageProperties>,
}

/// The 5.0 properties a retained message carries to its subscribers.
#[derive(Debug, Serialize)]
pub struct MessageProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_format_indicator: Option<u8>,
    /// As published (its subscribers get what is left of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_expiry_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
}

impl MessageProperties {
    fn of(p: &Properties) -> Self {
        MessageProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p
                .correlation_data
                .as_ref()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
            user_properties: p.user_properties.clone(),
        }
    }
}

/// The start of `payload`: at most [`PREVIEW_BYTES`] bytes of text (cut at a character
/// boundary) if it is UTF-8, else of base64.
pub fn preview(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(s) => {
            let mut end = s.len().min(PREVIEW_BYTES);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            (s[..end].to_owned(), "plain")
        }
        Err(_) => (
            base64::engine::general_purpose::STANDARD
                .encode(&payload[..payload.len().min(PREVIEW_BYTES)]),
            "base64",
        ),
    }
}

/// `GET /api/v1/retained`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query?;
    let (page, limit) = super::paging(q.page, q.limit)?;
    if let Some(f) = &q.filter {
        validate_topic_filter(f).map_err(|why| ApiError::bad_request(format!("filter: {why}")))?;
        if f.starts_with("$share/") {
            return Err(ApiError::bad_request(
                "filter: a shared subscription is not a filter of topics",
            ));
        }
    }
    let all = state.ctx.router.retained_messages(q.filter.as_deref());
    let (data, meta) = super::page_of(all, page, limit);
    let data = data
        .iter()
        .map(|m| {
            let (payload_preview, payload_encoding) = preview(&m.payload);
            Summary {
                topic: m.topic.to_string(),
                qos: m.qos as u8,
                payload_size: m.payload.len(),
                payload_preview,
                payload_encoding,
            }
        })
        .collect();
    Ok(Json(Page { data, meta }))
}

/// `{topic}`, checked as a topic name (400 otherwise).
fn topic_of(topic: &str) -> Result<&str, ApiError> {
    validate_topic_name(topic).map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "TOPIC_INVALID",
            format!("topic: {why}"),
        )
    })?;
    Ok(topic)
}

fn not_found(topic: &str) -> ApiError {
    ApiError::not_found(format!("no retained message on {:?}", text::cut(topic)))
}

/// `GET /api/v1/retained/{topic}`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    topic: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Retained>, ApiError> {
    caller.may(Need::Read)?;
    let Path(topic) = topic?;
    let topic = topic_of(&topic)?;
    let msg: Arc<Message> = state
        .ctx
        .router
        .retained_message(topic)
        .ok_or_else(|| not_found(topic))?;
    Ok(Json(Retained {
        topic: msg.topic.to_string(),
        qos: msg.qos as u8,
        payload: base64::engine::general_purpose::STANDARD.encode(&msg.payload),
        payload_text: std::str::from_utf8(&msg.payload).ok().map(str::to_owned),
        payload_size: msg.payload.len(),
        properties: msg.properties.as_deref().map(MessageProperties::of),
    }))
}

/// `DELETE /api/v1/retained/{topic}`: 204 once cleared (and, with persistence, committed).
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    topic: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.may(Need::Manage)?;
    let Path(topic) = topic?;
    let topic = topic_of(&topic)?;
    let router = &state.ctx.router;
    let ticket = router
        .clear_retained(topic)
        .ok_or_else(|| not_found(topic))?;
    if let (Some(ticket), Some(store)) = (ticket, router.store()) {
        store
            .committed(ticket)
            .await
            .map_err(|_| ApiError::unavailable("the store could not record the removal"))?;
    }
    info!(topic = %text::cut(topic), by = %caller, "retained message cleared through the HTTP API");
    Ok(StatusCode::NO_CONTENT)
}
