//! `[persistence]`: what survives a restart, and how durably (see [`crate::store`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// On by default: retained messages survive a restart.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The store's directory (created 0700 if missing); the database is `<path>/mqttd.db`.
    /// Relative paths are resolved against the working directory, as Mosquitto's are.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub sync: SyncMode,
    /// Only for `sync = "periodic"`: how often the store commits.
    #[serde(default = "default_interval", deserialize_with = "super::duration")]
    pub interval: Duration,
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
}

/// How durable an acknowledged message is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Acknowledged after the commit: survives `kill -9`; the last commits may be lost to a power
    /// failure (SQLite's `synchronous = NORMAL` in WAL mode).
    #[default]
    Normal,
    /// Acknowledged after the commit and its fsync: survives a power failure.
    Full,
    /// Acknowledged before the commit, committed every `interval` (Mosquitto-like: speed over
    /// durability).
    Periodic,
}

/// What to do with a database file that cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCorrupt {
    /// Refuse to start, naming the file and what to do.
    #[default]
    Refuse,
    /// Rename it to `mqttd.db.corrupt-<timestamp>` and start empty (logged loudly).
    MoveAside,
}

fn default_enabled() -> bool {
    true
}

fn default_path() -> PathBuf {
    PathBuf::from("data")
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: default_enabled(),
            path: default_path(),
            sync: SyncMode::default(),
            interval: default_interval(),
            on_corrupt: OnCorrupt::default(),
        }
    }
}

impl PersistenceConfig {
    /// Persistence off (tests, and brokers embedded in other programs that keep nothing).
    pub fn off() -> Self {
        PersistenceConfig {
            enabled: false,
            ..PersistenceConfig::default()
        }
    }
}
