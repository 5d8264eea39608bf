//! The API's errors: a status and a JSON body `{"code", "message"}` (EMQX's shape), for every
//! failure, including requests axum itself rejects (a malformed JSON body, a body over the
//! limit, an unknown path).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (`UNAUTHORIZED`, `NOT_FOUND`, ...).
    pub code: &'static str,
    /// For a person; never holds a secret.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

/// What a 401 offers (RFC 9110 section 11.6.1): a password-file user or an API key.
const CHALLENGE: &str = "Basic realm=\"mqttd\", Bearer realm=\"mqttd\"";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    /// From an axum extractor's rejection (bad JSON, wrong content type, body too large, bad
    /// query string): its status, its text.
    /// axum's 422 (well-formed JSON of the wrong shape) is a 400 here, as every other invalid
    /// body is: one status for "fix your request".
    pub fn rejected(status: StatusCode, text: String) -> Self {
        let (status, code) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => (status, "PAYLOAD_TOO_LARGE"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "UNSUPPORTED_MEDIA_TYPE"),
            _ => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        };
        ApiError::new(status, code, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

/// Unknown paths: 404 in the API's shape.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}
