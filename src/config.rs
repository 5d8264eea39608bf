//! Configuration: the TOML file, its safe defaults, and validation.
//!
//! Every struct denies unknown keys so a typo is an error naming the file, line and key rather than
//! a silently ignored setting; [`Config::validate`] (in `config/validate.rs`) checks ranges and
//! combinations, naming the line of the key at fault. A leaf of the crate: nothing here depends
//! on the rest of it.

mod bridge;
mod coap;
mod history;
mod http;
mod listener;
mod persistence;
mod validate;
pub mod webhook;

pub use bridge::{
    BridgeConfig, BridgeProtocol, BridgeTls, BridgeTopic, Direction, split_host_port,
};
pub use coap::CoapConfig;
pub use history::{HistoryConfig, MIN_HISTORY_BYTES};
pub use http::{DEFAULT_HTTP_PORT, HttpConfig};
use listener::default_listener_name;
pub use listener::{ListenerConfig, ListenerProtocol, ProxyProtocol, TlsConfig, TrustedNet};
pub use persistence::{OnCorrupt, PersistenceConfig, SyncMode};
pub use validate::Locations;
pub use webhook::WebhookConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Upper bound on `auth.verify_threads` (each running argon2 holds its memory cost).
pub const MAX_VERIFY_THREADS: usize = 1024;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners; at least one.
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub sys: SysConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub persistence: PersistenceConfig,
    #[serde(default)]
    pub history: HistoryConfig,
    /// The HTTP API and `/metrics`: on with an `[http]` table (see `config/http.rs`).
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// CoAP gateways (`config/coap.rs`).
    #[serde(default, rename = "coap")]
    pub coap: Vec<CoapConfig>,
    /// Bridges to other MQTT brokers (`config/bridge.rs`).
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// HTTP webhooks (`config/webhook.rs`).
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    /// Where the file was loaded from; relative paths in it are resolved against the working directory
    /// (as Mosquitto does).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The line of each key in that file, for errors found after parsing.
    #[serde(skip)]
    pub locations: Locations,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Default: allowed only on loopback listeners and only without a password file
    /// (see [`Config::listener_allows_anonymous`]).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub acl_file: Option<PathBuf>,
    /// How long a successfully verified username/password pair is remembered, so a reconnecting
    /// client does not pay for argon2 again. Only a keyed hash (HMAC with a per-process random key)
    /// of the password is kept. "0s" turns the cache off. Default 5 minutes.
    #[serde(default = "default_cache_ttl", deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Most usernames held in that cache (memory bound). Default 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Failed logins per client IP and per username within `failure_window` before back-off
    /// starts; also the most password checks one address runs at once. An address backing off is
    /// slowed (its logins take turns, ever later), never refused; a username backing off is
    /// refused except for cached credentials. Exact rules: `auth/backoff.rs`. Default 5.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Failures older than this (counted from the last failure or the end of the last delay)
    /// are forgotten; failed credentials are remembered this long (repeats are not counted).
    /// Default 60s.
    #[serde(default = "default_failure_window", deserialize_with = "duration")]
    pub failure_window: Duration,
    /// Longest back-off delay (it starts at 1s after `max_failures` failures and doubles with each
    /// further failure), and the longest a login waits for its address's turn. Default 60s.
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub backoff_max: Duration,
    /// Password hashes verified at once (each argon2 run holds ~19 MiB and a CPU). Default: one per
    /// CPU core.
    #[serde(default)]
    pub verify_threads: Option<usize>,
    /// How long a login waits for a free verification slot before it is answered "server
    /// unavailable". Default 2s.
    #[serde(default = "default_verify_wait", deserialize_with = "duration")]
    pub verify_wait: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            cache_ttl: default_cache_ttl(),
            cache_size: default_cache_size(),
            max_failures: default_max_failures(),
            failure_window: default_failure_window(),
            backoff_max: default_backoff_max(),
            verify_threads: None,
            verify_wait: default_verify_wait(),
        }
    }
}

impl Config {
    /// Whether `listener` admits clients without credentials. Explicit settings win (the listener's,
    /// then `[auth]`'s); by default anonymous access is allowed only on a loopback listener of a
    /// broker without a password file, so nothing reachable from the network is open by accident.
    pub fn listener_allows_anonymous(&self, listener: &ListenerConfig) -> bool {
        listener
            .allow_anonymous
            .or(self.auth.allow_anonymous)
            .unwrap_or(self.auth.password_file.is_none() && listener.bind.ip().is_loopback())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes, whole packet; a larger packet disconnects that client only.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, per client.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Messages queued per client (online backlog or offline persistent session).
    #[serde(default = "default_max_queued")]
    pub max_queued_messages: usize,
    /// No CONNECT within this -> close. A socket that never speaks would otherwise hold a
    /// connection slot (and its memory) forever: the classic slowloris denial of service.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Topic aliases a 5.0 client may use towards the broker (Topic Alias Maximum in CONNACK;
    /// Mosquitto's `max_topic_alias`). 0 disables aliases.
    #[serde(default = "default_max_topic_alias")]
    pub max_topic_alias: u16,
    /// The longest keep alive a 5.0 client may ask for (Mosquitto's `max_keepalive`): a longer one,
    /// or 0, is replaced by this and announced as Server Keep Alive. 65535 leaves clients alone.
    #[serde(default = "default_max_keepalive")]
    pub max_keepalive: u16,
    /// Connections from one IP address across all listeners. Unset: only each listener's
    /// `max_connections` applies (a fleet behind one NAT address is common).
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Subscriptions one client may hold; more get SUBACK 0x80 (5.0: 0x97 quota exceeded).
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or filter, in bytes (the protocol allows 65535).
    #[serde(default = "default_max_topic_length")]
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter: bounds trie depth and the
    /// work of matching one message.
    #[serde(default = "default_max_topic_levels")]
    pub max_topic_levels: usize,
    /// Longest client identifier, in bytes; longer ones get CONNACK 0x02 (5.0: 0x85).
    #[serde(default = "default_max_client_id_length")]
    pub max_client_id_length: usize,
    /// Memory budget for all queued messages, bytes (payload + topic + overhead, approximate).
    /// Past it, QoS 0 messages for queues are dropped and publishers are slowed down (their
    /// sockets are read less often) until subscribers catch up.
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    /// PUBLISH packets per second one client may send. Past it the broker stops reading that
    /// client's socket until the rate is back under the limit (TCP back-pressure, nothing is
    /// dropped). Unset: no per-client rate limit.
    #[serde(default)]
    pub max_publish_rate: Option<u32>,
    /// Bytes queued per client (payload + topic + overhead, approximate), next to
    /// `max_queued_messages`: bounds what one stuck subscriber of large messages can pin.
    #[serde(default = "default_max_queued_bytes_per_client")]
    pub max_queued_bytes_per_client: usize,
    /// A subscriber whose queue is full and that has taken nothing from it for this long is a
    /// slow consumer: QoS 0 is dropped for it (QoS 1/2 overflow disconnects it). Until then a
    /// subscriber that keeps draining slows its publishers (their sockets are read later) instead
    /// of losing QoS 0 messages.
    #[serde(
        default = "default_slow_subscriber_timeout",
        deserialize_with = "duration"
    )]
    pub slow_subscriber_timeout: Duration,
    /// Receive Maximum announced to 5.0 clients: QoS 2 PUBLISHes a client may have awaiting
    /// PUBREL; one more gets DISCONNECT 0x93 (MQTT-3.3.4-7).
    #[serde(default = "default_max_inflight_in")]
    pub max_inflight_in: u16,
    /// Use topic aliases towards 5.0 clients that allow them (Topic Alias Maximum in CONNECT):
    /// a topic sent again costs 3 bytes instead of its length. Up to 64 per connection, the
    /// least recently used one reassigned when all are in use (see `client/alias.rs`).
    #[serde(default = "default_true")]
    pub outbound_topic_aliases: bool,
}

fn default_max_queued_bytes_per_client() -> usize {
    2 * 1024 * 1024
}
fn default_slow_subscriber_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_inflight_in() -> u16 {
    1024
}
fn default_true() -> bool {
    true
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: default_max_packet_size(),
            max_inflight: default_max_inflight(),
            max_queued_messages: default_max_queued(),
            connect_timeout: default_connect_timeout(),
            max_topic_alias: default_max_topic_alias(),
            max_keepalive: default_max_keepalive(),
            max_connections_per_ip: None,
            max_subscriptions_per_client: default_max_subscriptions(),
            max_topic_length: default_max_topic_length(),
            max_topic_levels: default_max_topic_levels(),
            max_client_id_length: default_max_client_id_length(),
            max_queued_bytes: default_max_queued_bytes(),
            max_publish_rate: None,
            max_queued_bytes_per_client: default_max_queued_bytes_per_client(),
            slow_subscriber_timeout: default_slow_subscriber_timeout(),
            max_inflight_in: default_max_inflight_in(),
            outbound_topic_aliases: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysConfig {
    /// Seconds between `$SYS` publications; 0 turns them off.
    #[serde(default = "default_sys_interval")]
    pub interval: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval: default_sys_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "mqttd=debug".
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Print every accepted PUBLISH as `[MSG] Topic: ...` / `Payload: ...`.
    #[serde(default)]
    pub messages: bool,
    /// Write logs (and the message log) to this file instead of standard output.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            messages: false,
            file: None,
        }
    }
}

fn default_listeners() -> Vec<ListenerConfig> {
    let bind = SocketAddr::from(([127, 0, 0, 1], 1883));
    vec![ListenerConfig::mqtt(&default_listener_name(), bind)]
}
fn default_max_packet_size() -> usize {
    1_048_576
}
fn default_max_inflight() -> usize {
    32
}
fn default_max_queued() -> usize {
    1000
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_subscriptions() -> usize {
    1000
}
fn default_max_topic_length() -> usize {
    65535
}
fn default_max_topic_levels() -> usize {
    128
}
fn default_max_client_id_length() -> usize {
    256
}
fn default_max_queued_bytes() -> usize {
    512 * 1024 * 1024
}
fn default_max_topic_alias() -> u16 {
    10
}
fn default_max_keepalive() -> u16 {
    65535
}
fn default_sys_interval() -> u64 {
    10
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_cache_size() -> usize {
    10_000
}
fn default_max_failures() -> u32 {
    5
}
fn default_failure_window() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_verify_wait() -> Duration {
    Duration::from_secs(2)
}
fn default_log_level() -> String {
    "info".into()
}

/// Accepts "10s", "500ms", "2m" (humantime) or a bare integer number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

impl Default for Config {
    /// The configuration used without `--config`: 127.0.0.1:1883 only, anonymous (Mosquitto 2's
    /// local-only mode), and the HTTP API on 127.0.0.1:18083 if that port is free.
    fn default() -> Self {
        Config {
            listeners: default_listeners(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            sys: SysConfig::default(),
            log: LogConfig::default(),
            persistence: PersistenceConfig::default(),
            history: HistoryConfig::default(),
            http: Some(HttpConfig::local()),
            coap: Vec::new(),
            bridges: Vec::new(),
            webhooks: Vec::new(),
            source: None,
            locations: Locations::default(),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        };
        let doc = toml::de::DeTable::parse(text).map_err(parse_error)?;
        let mut config: Config = toml::from_str(text).map_err(parse_error)?;
        config.source = Some(path.to_owned());
        config.locations = Locations::of(text, doc.get_ref());
        config.validate()?;
        Ok(config)
    }

    /// Listeners reachable from beyond loopback that still allow anonymous access (explicitly
    /// configured so); the broker warns about each at start-up.
    pub fn anonymous_listeners_beyond_loopback(&self) -> Vec<&ListenerConfig> {
        self.listeners
            .iter()
            .filter(|l| self.listener_allows_anonymous(l) && !l.bind.ip().is_loopback())
            .collect()
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
