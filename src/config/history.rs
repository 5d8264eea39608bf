//! `[history]`: the message history, `<persistence.path>/history.db` (see
//! [`crate::store::history`]).

use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::protocol::topic::validate_topic_filter;

/// The smallest `max_bytes`: below it the database's own pages (schema, indexes, free space)
/// would leave no room for messages, and every pass would delete everything.
pub const MIN_HISTORY_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Off by default: payloads may be private, and a history keeps them on disk.
    #[serde(default)]
    pub enabled: bool,
    /// Topic filters of the messages to record. `#` does not match `$SYS` (MQTT-4.7.2-1), so the
    /// broker's own statistics are recorded only when a filter names them (`$SYS/#`).
    #[serde(default = "default_filters")]
    pub filters: Vec<String>,
    /// Rows older than this are deleted. Always set (a long one keeps more): a history that
    /// grows without bound until the disk is full is not a default worth having.
    #[serde(default = "default_max_age", deserialize_with = "super::duration")]
    pub max_age: Duration,
    /// At most this many rows; the oldest go first. Unset: no bound on the count.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// The database file at most this big, in bytes (its write-ahead log aside); the oldest
    /// rows go first. Unset: no bound on the size.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

fn default_filters() -> Vec<String> {
    vec!["#".into()]
}

fn default_max_age() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: false,
            filters: default_filters(),
            max_age: default_max_age(),
            max_rows: None,
            max_bytes: None,
        }
    }
}

impl Config {
    /// The `[history]` checks (see `validate.rs`).
    pub(super) fn validate_history(&self) -> Result<(), ConfigError> {
        let h = &self.history;
        if h.enabled && self.persistence.path.as_os_str().is_empty() {
            return Err(self.invalid(
                "persistence.path",
                "persistence.path must not be empty: the history is kept there",
            ));
        }
        if h.filters.is_empty() {
            return Err(self.invalid(
                "history.filters",
                "history.filters must name at least one topic filter (\"#\": everything)",
            ));
        }
        for (i, filter) in h.filters.iter().enumerate() {
            let why = if filter.starts_with("$share/") {
                Some("a shared subscription would take messages from its group's members")
            } else {
                validate_topic_filter(filter).err()
            };
            if let Some(why) = why {
                let message = format!("history.filters: {filter:?} is not a topic filter: {why}");
                return Err(self.invalid(&format!("history.filters.{i}"), message));
            }
        }
        if h.max_age.is_zero() {
            return Err(self.invalid(
                "history.max_age",
                "history.max_age must be greater than zero",
            ));
        }
        if h.max_rows == Some(0) {
            return Err(self.invalid(
                "history.max_rows",
                "history.max_rows must be at least 1 (leave it out for no bound)",
            ));
        }
        if h.max_bytes.is_some_and(|b| b < MIN_HISTORY_BYTES) {
            let why = format!(
                "history.max_bytes must be at least {MIN_HISTORY_BYTES} (1 MiB; leave it out for no bound)"
            );
            return Err(self.invalid("history.max_bytes", why));
        }
        Ok(())
    }
}
