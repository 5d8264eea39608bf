//! `/api/v1`: one file per group of endpoints. Each handler checks the caller's role, then
//! translates between JSON and the broker's own API; field names follow EMQX's v5 API where it
//! has the same thing, so its users feel at home.

pub mod bulk;
pub mod clients;
pub mod gateways;
pub mod history;
pub mod listeners;
pub mod publish;
pub mod reload;
pub mod retained;
pub mod sessions;
pub mod stats;
pub mod subscriptions;
pub mod topics;

use std::time::SystemTime;

/// RFC 3339, seconds, UTC ("2025-01-31T12:00:00Z").
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One page of a list: `{"data": [...], "meta": {...}}` (EMQX's shape); each list's `meta`
/// says how to get the rest (page counts, or a cursor).
#[derive(Debug, serde::Serialize)]
pub struct Page<T, M> {
    pub data: Vec<T>,
    pub meta: M,
}

/// `page` (1-based, default 1) and `limit` (1 to [`clients::MAX_LIMIT`], default 100),
/// checked: 400 otherwise.
pub(crate) fn paging(
    page: Option<usize>,
    limit: Option<usize>,
) -> Result<(usize, usize), crate::http::error::ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(100);
    if page == 0 {
        return Err(crate::http::error::ApiError::bad_request(
            "page starts at 1",
        ));
    }
    if !(1..=clients::MAX_LIMIT).contains(&limit) {
        return Err(crate::http::error::ApiError::bad_request(format!(
            "limit must be between 1 and {}",
            clients::MAX_LIMIT
        )));
    }
    Ok((page, limit))
}

/// Page `page` of `all`, `limit` per page, and its `meta` (EMQX's shape).
pub(crate) fn page_of<T>(all: Vec<T>, page: usize, limit: usize) -> (Vec<T>, clients::Meta) {
    let count = all.len();
    let skip = (page - 1).saturating_mul(limit);
    let data = all.into_iter().skip(skip).take(limit).collect();
    let meta = clients::Meta {
        page,
        limit,
        count,
        hasnext: skip.saturating_add(limit) < count,
    };
    (data, meta)
}

/// A payload for JSON: the text if it is UTF-8 (`"plain"`), else base64 (`"base64"`).
pub(crate) fn payload_text(payload: &[u8]) -> (String, &'static str) {
    use base64::Engine as _;
    match std::str::from_utf8(payload) {
        Ok(s) => (s.to_owned(), "plain"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    }
}
