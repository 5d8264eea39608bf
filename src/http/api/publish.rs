//! `POST /api/v1/publish`: a message through the one ingress, as the caller's identity.
//!
//! The body is EMQX's: `{"topic", "payload", "payload_encoding": "plain"|"base64", "qos",
//! "retain", "properties": {"message_expiry_interval", "content_type", "response_topic",
//! "correlation_data", "user_properties": {}, "payload_format_indicator"}}`.
//!
//! The publisher is the caller: username = the password-file user or the API key's name (so
//! the ACL's rules for that user decide), client id `http:<name>` (`http` in local-only mode).
//! Answers: 200 `{"id"}`; 202 `{"id"}` when no subscriber matched (the message was still taken:
//! a retained one is kept); 400 invalid topic or body; 403 the ACL refuses; 413 over
//! `limits.max_packet_size`; 503 when the broker cannot take it (shutting down, queued-message
//! memory budget used up, the store failing). A retained message, with persistence on, is
//! answered only once it is on disk.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::http::AppState;
use crate::http::auth::{Caller, Need};
use crate::http::error::ApiError;
use crate::ingress::{Outcome, Refusal, Source};
use crate::protocol::topic::validate_topic_name;
use crate::protocol::{Properties, QoS, text};
use crate::router::Message;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub payload_encoding: Encoding,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub properties: Option<PublishProperties>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Plain,
    Base64,
}

/// The MQTT 5.0 properties a publisher may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishProperties {
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    /// As text (UTF-8), as EMQX takes it.
    pub correlation_data: Option<String>,
    #[serde(default)]
    pub user_properties: std::collections::BTreeMap<String, String>,
    pub payload_format_indicator: Option<u8>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    /// Names this publish in the broker's log.
    pub id: String,
}

/// An MQTT UTF-8 string: at most 65535 bytes, no NUL (MQTT-1.5.4-2).
fn mqtt_string(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() > 65_535 || s.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{what} must be at most 65535 bytes, without NUL characters"
        )));
    }
    Ok(())
}

impl PublishProperties {
    /// The properties as the broker holds them, each checked (400 otherwise).
    pub fn into_properties(self) -> Result<Option<Box<Properties>>, ApiError> {
        if let Some(topic) = &self.response_topic {
            validate_topic_name(topic).map_err(|why| {
                ApiError::bad_request(format!("properties.response_topic: {why}"))
            })?;
            mqtt_string("properties.response_topic", topic)?;
        }
        if let Some(ct) = &self.content_type {
            mqtt_string("properties.content_type", ct)?;
        }
        if let Some(cd) = &self.correlation_data {
            mqtt_string("properties.correlation_data", cd)?;
        }
        for (k, v) in &self.user_properties {
            mqtt_string("properties.user_properties", k)?;
            mqtt_string("properties.user_properties", v)?;
        }
        if self.payload_format_indicator.is_some_and(|p| p > 1) {
            return Err(ApiError::bad_request(
                "properties.payload_format_indicator is 0 (bytes) or 1 (UTF-8)",
            ));
        }
        let p = Properties {
            message_expiry_interval: self.message_expiry_interval,
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data.map(Bytes::from),
            user_properties: self.user_properties.into_iter().collect(),
            payload_format_indicator: self.payload_format_indicator,
            ..Properties::default()
        };
        Ok((p != Properties::default()).then(|| Box::new(p)))
    }
}

/// `POST /api/v1/publish`.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Result<Json<PublishBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    caller.may(Need::Publish)?;
    let Json(body) = body?;
    let (status, published) = publish_one(&state, &caller, peer.port(), body).await?;
    Ok((status, Json(published)))
}

/// One publish, as `caller` (coming from `port`): 200 or 202 (no subscriber matched) with its
/// id, or why not. Shared by the single and the bulk publish.
pub(crate) async fn publish_one(
    state: &AppState,
    caller: &Caller,
    port: u16,
    body: PublishBody,
) -> Result<(StatusCode, Published), ApiError> {
    let ctx = &state.ctx;
    if ctx.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("the broker is shutting down"));
    }
    if ctx.router.over_budget() {
        return Err(ApiError::unavailable(
            "the broker's queued-message memory is used up (limits.max_queued_bytes); retry later",
        ));
    }
    let qos = QoS::from_u8(body.qos).ok_or_else(|| ApiError::bad_request("qos is 0, 1 or 2"))?;
    let payload = match body.payload_encoding {
        Encoding::Plain => Bytes::from(body.payload),
        Encoding::Base64 => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(body.payload.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        ),
    };
    let properties = body
        .properties
        .map(PublishProperties::into_properties)
        .transpose()?
        .flatten();
    let topic: Arc<str> = body.topic.into();
    let msg = Message::new(topic.clone(), payload, qos, body.retain).with_properties(properties);
    let name = caller.name.as_deref();
    let mut publisher = ctx
        .ingress
        .publisher(
            client_id(caller).into(),
            name.map(str::to_owned),
            Source::Http,
        )
        .with_origin("http".into(), std::net::SocketAddr::new(caller.ip, port));
    let id = format!("{:016x}", rand::random::<u64>());
    let outcome = ctx.ingress.publish_now(&mut publisher, msg);
    let (subscribers, commit) = match outcome {
        Outcome::Routed {
            subscribers,
            commit,
            ..
        } => (subscribers, commit),
        Outcome::Refused(refusal) => return Err(refused(refusal)),
    };
    if let (Some(ticket), Some(store)) = (commit, ctx.router.store()) {
        store
            .committed(ticket)
            .await
            .map_err(|_| ApiError::unavailable("the store could not keep the message"))?;
    }
    if body.retain {
        info!(%id, topic = %text::cut(&topic), by = %caller, subscribers,
            "retained message published through the HTTP API");
    } else {
        debug!(%id, topic = %text::cut(&topic), by = %caller, subscribers,
            "message published through the HTTP API");
    }
    let status = match subscribers {
        0 => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, Published { id }))
}

/// The client id the ACL (`%c`) and the logs see for `caller`: `http:<name>`, or `http` in
/// local-only mode.
pub(crate) fn client_id(caller: &Caller) -> String {
    caller
        .name
        .as_deref()
        .map_or_else(|| "http".to_owned(), |n| format!("http:{n}"))
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotAuthorized => ApiError::forbidden(refusal.why()),
        Refusal::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            refusal.why(),
        ),
        Refusal::TopicInvalid(why) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "TOPIC_INVALID",
            format!("topic: {why}"),
        ),
        Refusal::TopicLimit | Refusal::PayloadFormatInvalid => ApiError::bad_request(refusal.why()),
    }
}
