//! `[[bridge]]`: a bridge to another MQTT broker, see [`crate::gateway::bridge`].
//!
//! The keys follow Mosquitto's bridge options (the README maps them one by one); `topics` are
//! its `topic pattern direction qos local_prefix remote_prefix` lines as tables.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::protocol::topic::subscription_filter;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Its name in logs, `$SYS/broker/bridge/<name>/...`, `/metrics` and the dashboard.
    pub name: String,
    /// The remote broker, `host:port` (the host is resolved at every connection attempt, so a
    /// moved DNS name is followed). Mosquitto's `address`.
    pub address: String,
    /// MQTT version spoken to the remote: `v5` (default: No Local and Retain As Published make
    /// loops impossible) or `v311` (the remote must understand Mosquitto's bridge marker).
    #[serde(default)]
    pub protocol: BridgeProtocol,
    /// Client id on the remote. Default `<name>.<hostname>` would change with the machine;
    /// ours is `mqttd-bridge-<name>`, stable, so a persistent remote session is found again.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Start a fresh session on the remote at every connection. Default false: the remote keeps
    /// our subscriptions and queues what arrives for us while the link is down (Mosquitto's
    /// `cleansession false`).
    #[serde(default)]
    pub clean_start: bool,
    /// User name on the remote (Mosquitto's `remote_username`). Unset: none sent.
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose content (trailing newline removed) is the remote password. Never inline in
    /// this file, so the configuration can be shared and logged. Read at start.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the remote password (instead of `password_file`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the remote; unset: plain TCP.
    #[serde(default)]
    pub tls: Option<BridgeTls>,
    /// Keep alive sent in CONNECT; a PINGREQ goes out when nothing was sent for this long, and
    /// the link is dropped when nothing arrives for 1.5 times it. Default 60s (Mosquitto's
    /// `keepalive_interval`), between 5s and 65535s.
    #[serde(default = "default_keepalive", deserialize_with = "super::duration")]
    pub keepalive: Duration,
    /// The topics bridged, in either or both directions. At least one.
    pub topics: Vec<BridgeTopic>,
    /// First wait before reconnecting after a failure; doubled at each failure in a row (with
    /// jitter) up to `backoff_max`. Default 1s.
    #[serde(default = "default_backoff_min", deserialize_with = "super::duration")]
    pub backoff_min: Duration,
    /// The longest wait between attempts. Default 60s (a remote that is down for long is not
    /// hammered; Mosquitto's `restart_timeout` upper bound).
    #[serde(default = "default_backoff_max", deserialize_with = "super::duration")]
    pub backoff_max: Duration,
    /// Outbound QoS 1/2 messages kept while the remote is unreachable (or slower than local
    /// publishers); past it the oldest is dropped and counted (`dropped`). Default 100000.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The same queue's bound in payload and topic bytes. Default 64 MiB.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: usize,
    /// Outbound QoS 1/2 messages sent and not yet acknowledged by the remote (lowered to the
    /// remote's Receive Maximum). Default 32.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// The username the local ACL knows this bridge by: what it may publish in (`Write`) and
    /// read out (`Read`, `Subscribe`). Unset: no username (an ACL's anonymous rules apply; with
    /// no ACL, the bridge is unrestricted). The local client id is `$bridge/<name>`.
    #[serde(default)]
    pub local_username: Option<String>,
}

/// MQTT version towards the remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    #[default]
    V5,
    V311,
}

/// TLS to the remote (rustls, TLS 1.2 and 1.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTls {
    /// PEM CA bundle the remote's certificate is verified against (Mosquitto's
    /// `bridge_cafile`). Required: there is no "insecure" mode.
    pub ca: PathBuf,
    /// PEM client certificate chain for mutual TLS (`bridge_certfile`); needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (`bridge_keyfile`).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the remote's certificate must carry. Default: the host part of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// One `topic` line: what goes which way, at which QoS, renamed how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    /// A topic filter (wildcards allowed), relative to the prefixes. May be "" when both
    /// prefixes are set: then the prefixes are the full topics (one topic renamed).
    pub pattern: String,
    /// `out` (local to remote, the default as in Mosquitto), `in` (remote to local) or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// The QoS of the subscription on the side messages come from (so at most this QoS on the
    /// way). Default 0, as in Mosquitto.
    #[serde(default)]
    pub qos: u8,
    /// Prepended to `pattern` on the local side. Default "".
    #[serde(default)]
    pub local_prefix: String,
    /// Prepended to `pattern` on the remote side. Default "".
    #[serde(default)]
    pub remote_prefix: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    #[default]
    Out,
    Both,
}

impl Direction {
    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_queue() -> usize {
    100_000
}
fn default_queue_bytes() -> usize {
    64 << 20
}
fn default_max_inflight() -> u16 {
    32
}

impl BridgeConfig {
    /// The client id on the remote.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("mqttd-bridge-{}", self.name))
    }

    /// The client id of its local session (and its identity for the ACL).
    pub fn local_client_id(&self) -> String {
        format!("$bridge/{}", self.name)
    }
}

impl Config {
    pub(super) fn validate_bridges(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.bridges.iter().enumerate() {
            let key = |k: &str| format!("bridge.{i}.{k}");
            let bad = |k: &str, why: String| {
                Err(self.invalid(&key(k), format!("bridge {:?}: {why}", b.name)))
            };
            if b.name.is_empty() || b.name.contains(['/', '+', '#']) {
                return bad("name", "the name must be non-empty, without / + #".into());
            }
            if !names.insert(&b.name) {
                return bad("name", "this name is used twice".into());
            }
            if split_host_port(&b.address).is_none() {
                return bad("address", format!("{:?} is not host:port", b.address));
            }
            if b.password_file.is_some() && b.password_env.is_some() {
                return bad(
                    "password_env",
                    "password_file and password_env are exclusive".into(),
                );
            }
            if b.client_id.as_deref() == Some("") {
                return bad("client_id", "the client id must not be empty".into());
            }
            if !(5..=65535).contains(&b.keepalive.as_secs()) {
                return bad(
                    "keepalive",
                    "keepalive must be between 5s and 65535s".into(),
                );
            }
            if b.backoff_min.is_zero() || b.backoff_min > b.backoff_max {
                return bad(
                    "backoff_min",
                    "backoff_min must be above zero and at most backoff_max".into(),
                );
            }
            if b.queue == 0 || b.queue_bytes == 0 || b.max_inflight == 0 {
                return bad(
                    "queue",
                    "queue, queue_bytes and max_inflight must be at least 1".into(),
                );
            }
            if let Some(tls) = &b.tls
                && tls.cert.is_some() != tls.key.is_some()
            {
                return bad("tls", "tls.cert and tls.key go together".into());
            }
            if b.topics.is_empty() {
                return bad("topics", "at least one topic is required".into());
            }
            for (t, topic) in b.topics.iter().enumerate() {
                let tkey = format!("topics.{t}");
                if let Err(why) = topic.check() {
                    return bad(&tkey, format!("topics[{t}]: {why}"));
                }
            }
        }
        Ok(())
    }
}

impl BridgeTopic {
    /// Mosquitto's rules: an empty pattern needs both prefixes; prefixes carry no wildcards;
    /// the prefixed filters are valid on both sides.
    pub fn check(&self) -> Result<(), String> {
        if self.qos > 2 {
            return Err(format!("qos {} is not 0, 1 or 2", self.qos));
        }
        if self.pattern.is_empty()
            && (self.local_prefix.is_empty() || self.remote_prefix.is_empty())
        {
            return Err("an empty pattern needs both local_prefix and remote_prefix".into());
        }
        for prefix in [&self.local_prefix, &self.remote_prefix] {
            if prefix.contains(['+', '#', '\0']) {
                return Err(format!("prefix {prefix:?} must not contain + # or NUL"));
            }
        }
        for filter in [
            format!("{}{}", self.local_prefix, self.pattern),
            format!("{}{}", self.remote_prefix, self.pattern),
        ] {
            if filter.starts_with("$share/") {
                return Err("shared subscriptions cannot be bridged".into());
            }
            subscription_filter(&filter).map_err(|why| format!("{filter:?}: {why}"))?;
        }
        Ok(())
    }
}

/// `host:port` (IPv6 as `[::1]:1883`) split, or None.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ISSUE_EXAMPLE: &str = r##"
[[bridge]]
name = "cloud"
address = "broker.example.com:8883"
protocol = "v5"
client_id = "site1-bridge"
clean_start = false
username = "site1"
password_file = "config/bridge-cloud.secret"
tls = { ca = "certs/cloud-ca.pem" }
keepalive = "60s"
topics = [
  { pattern = "sensors/#", direction = "out",  qos = 1, local_prefix = "",  remote_prefix = "site1/" },
  { pattern = "commands/#", direction = "in",  qos = 1, local_prefix = "cloud/", remote_prefix = "" },
]
"##;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("b.toml"))
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        let b = &c.bridges[0];
        assert_eq!(b.protocol, BridgeProtocol::V5);
        assert_eq!(b.topics.len(), 2);
        assert_eq!(b.topics[1].direction, Direction::In);
        assert_eq!(b.keepalive, Duration::from_secs(60));
        assert_eq!((b.queue, b.max_inflight), (100_000, 32));
        assert_eq!(b.remote_client_id(), "site1-bridge");
        assert_eq!(b.local_client_id(), "$bridge/cloud");
        assert_eq!(split_host_port("[::1]:1883"), Some(("::1", 1883)));
    }

    #[test]
    fn mistakes_name_the_bridge_and_the_line() {
        let cases = [
            ("password = \"x\"", "password"),
            ("password_env = \"X\"", "exclusive"),
            ("keepalive = \"1s\"", "keepalive"),
            ("queue = 0", "at least 1"),
        ];
        for (line, why) in cases {
            let text = ISSUE_EXAMPLE.replace("keepalive = \"60s\"", line);
            let msg = parse(&text).unwrap_err().to_string();
            assert!(
                msg.contains(why) && msg.starts_with("b.toml"),
                "{line}: {msg}"
            );
        }
        let two = format!("{ISSUE_EXAMPLE}{ISSUE_EXAMPLE}");
        assert!(parse(&two).unwrap_err().to_string().contains("used twice"));
        let bad_topic = ISSUE_EXAMPLE.replace("\"sensors/#\"", "\"sensors/#/x\"");
        assert!(
            parse(&bad_topic)
                .unwrap_err()
                .to_string()
                .contains("topics[0]")
        );
        let no_port = ISSUE_EXAMPLE.replace(":8883", "");
        assert!(
            parse(&no_port)
                .unwrap_err()
                .to_string()
                .contains("host:port")
        );
    }
}
