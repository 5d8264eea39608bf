//! From configuration and message to request: the headers (with `env:` values resolved once at
//! start) and the JSON body.

use std::time::SystemTime;

use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::WebhookError;
use crate::config::webhook::{HeaderSource, Headers};
use crate::router::Message;

/// The request headers of a hook: ours (`Content-Type`), then the file's (which may replace
/// it). Every configured value is marked sensitive, so the HTTP stack never logs it either.
pub(super) fn headers(
    configured: &Headers,
    env: impl Fn(&str) -> Option<String>,
    at: impl Fn(&str) -> String,
) -> Result<HeaderMap, WebhookError> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &configured.0 {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| WebhookError::Header {
                at: at(name),
                header: name.clone(),
            })?;
        let text = match HeaderSource::of(value) {
            HeaderSource::Literal(v) => v.to_owned(),
            HeaderSource::Env(var) => env(var).ok_or_else(|| WebhookError::MissingEnv {
                at: at(name),
                header: name.clone(),
                var: var.to_owned(),
            })?,
        };
        let mut header_value = HeaderValue::from_str(&text).map_err(|_| WebhookError::Header {
            at: at(name),
            header: name.clone(),
        })?;
        header_value.set_sensitive(true);
        map.insert(header_name, header_value);
    }
    Ok(map)
}

/// The JSON body of one message:
///
/// ```json
/// {"topic":"alerts/door","payload":"open","payload_encoding":"utf8","qos":1,"retain":false,
///  "client_id":"sensor-7","username":"site1","time":"2026-12-06T16:17:00.123Z"}
/// ```
///
/// `payload` is the payload as text when it is valid UTF-8 (`payload_encoding: "utf8"`), else
/// base64 (`"base64"`, standard alphabet, padded). `client_id` is null for the broker's own
/// messages; `username` is left out for anonymous publishers. `time`: when the hook took the
/// message from the router, RFC 3339 UTC with milliseconds.
#[derive(Debug, Serialize)]
pub(super) struct JsonBody<'a> {
    pub topic: &'a str,
    pub payload: std::borrow::Cow<'a, str>,
    pub payload_encoding: &'static str,
    pub qos: u8,
    pub retain: bool,
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    pub time: String,
}

/// The body for `msg`, delivered at `qos` (the published QoS: the hook's subscription does not
/// lower it) with `retain` as received, taken from the router at `time`.
pub(super) fn json_body(msg: &Message, retain: bool, time: SystemTime) -> Vec<u8> {
    let (payload, payload_encoding) = match std::str::from_utf8(&msg.payload) {
        Ok(text) => (text.into(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD
                .encode(&msg.payload)
                .into(),
            "base64",
        ),
    };
    let by = msg.published_by.as_deref();
    let body = JsonBody {
        topic: &msg.topic,
        payload,
        payload_encoding,
        qos: msg.qos as u8,
        retain,
        client_id: by.map(|b| &*b.client_id),
        username: by.and_then(|b| b.username.as_deref()),
        time: humantime::format_rfc3339_millis(time).to_string(),
    };
    // Serialising strings, numbers and booleans cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::protocol::QoS;
    use crate::router::PublishedBy;

    fn json(msg: &Message) -> serde_json::Value {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        serde_json::from_slice(&json_body(msg, false, time)).unwrap()
    }

    #[test]
    fn body_shape() {
        let mut msg = Message::new(
            "alerts/door".into(),
            Bytes::from("open"),
            QoS::AtLeastOnce,
            true,
        );
        msg.published_by = Some(Arc::new(PublishedBy {
            client_id: "sensor-7".into(),
            username: Some("site1".into()),
        }));
        assert_eq!(
            json(&msg),
            serde_json::json!({
                "topic": "alerts/door", "payload": "open", "payload_encoding": "utf8",
                "qos": 1, "retain": false, "client_id": "sensor-7", "username": "site1",
                "time": "2023-11-14T22:13:20.123Z"
            })
        );
    }

    #[test]
    fn binary_payload_is_base64_and_anonymous_has_no_username() {
        let msg = Message::new(
            "t".into(),
            Bytes::from_static(b"\xff\x00a"),
            QoS::AtMostOnce,
            false,
        );
        let body = json(&msg);
        assert_eq!(body["payload"], "/wBh");
        assert_eq!(body["payload_encoding"], "base64");
        assert_eq!(body["client_id"], serde_json::Value::Null);
        assert!(body.get("username").is_none());
    }

    #[test]
    fn headers_from_env_are_sensitive_and_missing_ones_name_the_variable() {
        let configured = Headers(BTreeMap::from([
            ("Authorization".to_string(), "env:TOKEN".to_string()),
            ("X-Plain".to_string(), "yes".to_string()),
        ]));
        let env = |var: &str| (var == "TOKEN").then(|| "Bearer s3cret".to_string());
        let map = headers(&configured, env, |h| format!("line of {h}")).unwrap();
        assert_eq!(map["authorization"], "Bearer s3cret");
        assert!(map["authorization"].is_sensitive());
        assert_eq!(map["x-plain"], "yes");
        assert_eq!(map["content-type"], "application/json");
        assert!(!format!("{map:?}").contains("s3cret"));

        let err = headers(&configured, |_| None, |h| format!("line of {h}")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("TOKEN") && text.contains("line of Authorization"),
            "{text}"
        );
    }
}
