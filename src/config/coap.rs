//! `[[coap]]`: a CoAP gateway (RFC 7252 over UDP), see [`crate::gateway::coap`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapConfig {
    /// Its name in logs, `$SYS`, `/metrics` and the dashboard; unique among gateways of its kind.
    pub name: String,
    /// The UDP address to bind (CoAP's port is 5683). Plain UDP only: there is no DTLS (see
    /// the gateway's module doc), so bind it on a trusted network or behind a DTLS proxy.
    pub bind: SocketAddr,
    /// Requests without a username (and without a connection token) are let in, as anonymous
    /// MQTT clients are. Unset: as for MQTT listeners, `[auth] allow_anonymous`, else only on a
    /// loopback bind and never with a password file.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// The largest block (RFC 7959) of a response: a body over it (a retained message,
    /// `/.well-known/core`) goes block-wise. 16 to 1024, a power of two; default 1024 (a
    /// block with its header stays under the 1280-byte IPv6 minimum MTU).
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// Requests per second one source IP may make (a token bucket that refills at this rate).
    /// Past it requests are dropped unanswered and counted: a flood from one address gets
    /// nothing back and cannot starve the others. Default 100.
    #[serde(default = "default_request_rate")]
    pub request_rate: u32,
    /// The bucket's size: how many requests a source may send at once after a quiet spell.
    /// Default 200.
    #[serde(default = "default_request_burst")]
    pub request_burst: u32,
    /// Observations (`GET` with Observe 0) one client may hold. Default 16.
    #[serde(default = "default_max_observers_per_client")]
    pub max_observers_per_client: usize,
    /// Observations in all. Each holds a router subscription and its queue. Default 10000.
    #[serde(default = "default_max_observers")]
    pub max_observers: usize,
    /// Connection-mode sessions (`POST /mqtt/connection`) and observing clients in all: the
    /// gateway's state per client is bounded by this. Default 10000.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A connection-mode token expires when no request used it (a `PUT /mqtt/connection`
    /// heartbeat, or any request with `token=`) for this long. Default 120 s: EMQX's
    /// heartbeat is 30 s, and a sleepy device should survive missing a few.
    #[serde(default = "default_heartbeat", deserialize_with = "super::duration")]
    pub heartbeat: Duration,
    /// RFC 7252 ACK_TIMEOUT: the first wait for a confirmable notification's ACK; each
    /// retransmission doubles it. Default 2 s.
    #[serde(default = "default_ack_timeout", deserialize_with = "super::duration")]
    pub ack_timeout: Duration,
    /// RFC 7252 ACK_RANDOM_FACTOR: the first wait is drawn between `ack_timeout` and this many
    /// times it, so that observers do not retransmit in step. 1.0 to 4.0; default 1.5.
    #[serde(default = "default_ack_random_factor")]
    pub ack_random_factor: f64,
    /// RFC 7252 MAX_RETRANSMIT: a confirmable notification not acknowledged after this many
    /// retransmissions drops the observer (RFC 7641 section 4.5). Default 4 (about 45 s).
    #[serde(default = "default_max_retransmit")]
    pub max_retransmit: u32,
    /// Requests waiting for a password check or the store's commit; past it requests get
    /// 5.03 (overloaded) with Max-Age, as the argon2 pool answers MQTT's CONNECT. Default 1024.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

fn default_block_size() -> usize {
    1024
}
fn default_request_rate() -> u32 {
    100
}
fn default_request_burst() -> u32 {
    200
}
fn default_max_observers_per_client() -> usize {
    16
}
fn default_max_observers() -> usize {
    10_000
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(120)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_ack_random_factor() -> f64 {
    1.5
}
fn default_max_retransmit() -> u32 {
    4
}
fn default_max_pending() -> usize {
    1024
}

impl CoapConfig {
    /// A gateway on `bind` with every default (for tests and embedding).
    pub fn new(name: &str, bind: SocketAddr) -> Self {
        CoapConfig {
            name: name.to_owned(),
            bind,
            allow_anonymous: None,
            block_size: default_block_size(),
            request_rate: default_request_rate(),
            request_burst: default_request_burst(),
            max_observers_per_client: default_max_observers_per_client(),
            max_observers: default_max_observers(),
            max_sessions: default_max_sessions(),
            heartbeat: default_heartbeat(),
            ack_timeout: default_ack_timeout(),
            ack_random_factor: default_ack_random_factor(),
            max_retransmit: default_max_retransmit(),
            max_pending: default_max_pending(),
        }
    }
}

impl Config {
    /// Whether the CoAP gateway `c` lets requests without a username in (see
    /// [`CoapConfig::allow_anonymous`]).
    pub fn coap_allows_anonymous(&self, c: &CoapConfig) -> bool {
        c.allow_anonymous
            .or(self.auth.allow_anonymous)
            .unwrap_or(self.auth.password_file.is_none() && c.bind.ip().is_loopback())
    }

    pub(super) fn validate_coap(&self) -> Result<(), ConfigError> {
        for (i, c) in self.coap.iter().enumerate() {
            let key = |k: &str| format!("coap.{i}.{k}");
            if c.name.is_empty() || c.name.contains(['/', '+', '#', '\0']) {
                let why = "coap.name must be non-empty, without '/', '+', '#' (it is a $SYS level)";
                return Err(self.invalid(&key("name"), why));
            }
            if self.coap[..i].iter().any(|o| o.name == c.name) {
                let why = format!("coap.name {:?} is used by another [[coap]] table", c.name);
                return Err(self.invalid(&key("name"), why));
            }
            if !(16..=1024).contains(&c.block_size) || !c.block_size.is_power_of_two() {
                let why = "coap.block_size must be a power of two from 16 to 1024 (RFC 7959)";
                return Err(self.invalid(&key("block_size"), why));
            }
            for (k, v) in [
                ("request_rate", c.request_rate as usize),
                ("request_burst", c.request_burst as usize),
                ("max_observers_per_client", c.max_observers_per_client),
                ("max_observers", c.max_observers),
                ("max_sessions", c.max_sessions),
                ("max_pending", c.max_pending),
            ] {
                if v == 0 {
                    let why = format!("coap.{k} must be greater than zero");
                    return Err(self.invalid(&key(k), why));
                }
            }
            if c.heartbeat.is_zero() || c.ack_timeout.is_zero() {
                let k = if c.heartbeat.is_zero() {
                    "heartbeat"
                } else {
                    "ack_timeout"
                };
                return Err(self.invalid(&key(k), format!("coap.{k} must be greater than zero")));
            }
            if !(1.0..=4.0).contains(&c.ack_random_factor) {
                let why = "coap.ack_random_factor must be from 1.0 to 4.0";
                return Err(self.invalid(&key("ack_random_factor"), why));
            }
            if c.max_retransmit > 10 {
                let why = "coap.max_retransmit must be at most 10 (each one doubles the wait)";
                return Err(self.invalid(&key("max_retransmit"), why));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn defaults_and_keys() {
        let c = Config::parse(
            "[[coap]]\nname = \"c\"\nbind = \"127.0.0.1:5683\"\nheartbeat = \"30s\"\nack_timeout = 1\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let g = &c.coap[0];
        assert_eq!(
            (g.block_size, g.request_rate, g.max_retransmit),
            (1024, 100, 4)
        );
        assert_eq!(g.heartbeat, Duration::from_secs(30));
        assert_eq!(g.ack_timeout, Duration::from_secs(1));
        assert!(c.coap_allows_anonymous(g), "loopback, no password file");
        let c = Config::parse(
            "[[coap]]\nname = \"c\"\nbind = \"0.0.0.0:5683\"\n",
            Path::new("a"),
        )
        .unwrap();
        assert!(!c.coap_allows_anonymous(&c.coap[0]), "beyond loopback");
    }

    #[test]
    fn refusals_name_the_line() {
        let base = "[[coap]]\nname = \"c\"\nbind = \"127.0.0.1:5683\"\n";
        for (extra, needle) in [
            ("block_size = 100\n", "block_size"),
            ("request_rate = 0\n", "request_rate"),
            ("ack_random_factor = 0.5\n", "ack_random_factor"),
            ("max_retransmit = 11\n", "max_retransmit"),
            ("heartbeat = 0\n", "heartbeat"),
            ("bogus = 1\n", "bogus"),
        ] {
            let err = Config::parse(&format!("{base}{extra}"), Path::new("x.toml")).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("x.toml:4") && msg.contains(needle),
                "{extra}: {msg}"
            );
        }
        let twice = format!("{base}\n[[coap]]\nname = \"c\"\nbind = \"127.0.0.1:5684\"\n");
        let msg = Config::parse(&twice, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("used by another"), "{msg}");
    }
}
