//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 description, written by hand next to the
//! handlers and served as it is (no credentials: it describes, it does not reveal).
//!
//! `tests/openapi.rs` keeps it in step: every route in [`super::app`] is described, every
//! described operation answers with one of its documented statuses, and every JSON answer has
//! exactly the documented fields.

use axum::http::header;
use axum::response::IntoResponse;

/// The description, embedded in the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
