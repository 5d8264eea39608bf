//! `/api/v1`: one file per group of endpoints. Each handler checks the caller's role, then
//! translates between JSON and the broker's own API; field names follow EMQX's v5 API where it
//! has the same thing, so its users feel at home.

pub mod clients;
pub mod publish;
pub mod stats;

use std::time::SystemTime;

/// RFC 3339, seconds, UTC ("2025-01-31T12:00:00Z").
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
