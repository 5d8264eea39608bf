//! `[[listener]]`: where MQTT clients connect (TCP, TLS, WebSocket), and what guards the door
//! (PROXY headers, TLS with client certificates).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_listener_name")]
    pub name: String,
    pub bind: SocketAddr,
    /// Per listener; the next client is refused (and logged) until one leaves.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Overrides `[auth] allow_anonymous` for this listener (e.g. anonymous on loopback only).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// What the connection speaks: MQTT over TCP (default), or MQTT over WebSocket (`ws`; with
    /// `tls`, wss).
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// `ws` only: the HTTP path of the upgrade request; any other path gets 404. Default "/mqtt".
    #[serde(default)]
    pub path: Option<String>,
    /// `ws` only: the Origin header values accepted on the upgrade request (browsers send one;
    /// other clients usually do not, and a request without Origin is accepted). Unset: any.
    #[serde(default)]
    pub ws_origins: Option<Vec<String>>,
    /// A PROXY protocol header (HAProxy's v1 text or v2 binary form) precedes every connection,
    /// and its source address becomes the client's address. Decided by configuration only, never
    /// by sniffing. Default off.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// The proxies allowed to speak for clients: a PROXY header is accepted only from these
    /// addresses (required when `proxy_protocol` is on; any other peer is closed), and on `ws`
    /// listeners an `X-Forwarded-For` header is believed only from them. Addresses or CIDR
    /// blocks: "127.0.0.1", "10.0.0.0/8", "::1/128".
    #[serde(default)]
    pub proxy_trusted: Vec<TrustedNet>,
    /// TLS terminated at the proxy: the CN of a client certificate that the proxy verified (its
    /// v2 SSL TLV) becomes the username, as `tls.use_identity_as_username` does for TLS at mqttd.
    /// Needs `proxy_protocol = "v2"`, no `[listener.tls]`.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

impl ListenerConfig {
    /// A plain MQTT-over-TCP listener with every other setting at its default.
    pub fn mqtt(name: &str, bind: SocketAddr) -> Self {
        ListenerConfig {
            name: name.into(),
            bind,
            max_connections: default_max_connections(),
            tls: None,
            allow_anonymous: None,
            protocol: ListenerProtocol::Mqtt,
            path: None,
            ws_origins: None,
            proxy_protocol: ProxyProtocol::Off,
            proxy_trusted: Vec::new(),
            use_identity_as_username: false,
        }
    }
}

/// A listener's wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT straight over TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (RFC 6455; over TLS: wss), for browsers and MQTT.js.
    Ws,
}

/// Which PROXY protocol header a listener expects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    Off,
    V1,
    V2,
}

/// An address block in `proxy_trusted`: "10.0.0.0/8", or one address ("127.0.0.1" = /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet(pub ipnet::IpNet);

impl TrustedNet {
    /// Whether `ip` is inside; an IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) counts as that IPv4 address.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for TrustedNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(TrustedNet(net.trunc()));
        }
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(TrustedNet(ipnet::IpNet::from(ip))),
            Err(_) => Err(format!(
                "{s:?} is not an address or CIDR block (\"10.0.0.0/8\", \"127.0.0.1\")"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle for verifying client certificates (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub require_client_cert: bool,
    /// The client certificate's CN becomes the username (as Mosquitto's `use_identity_as_username`).
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// No TLS handshake within this -> close (slowloris protection).
    #[serde(default = "default_handshake_timeout", deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

pub(super) fn default_listener_name() -> String {
    "default".into()
}

fn default_max_connections() -> usize {
    10_000
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
