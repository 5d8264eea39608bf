//! What serde cannot check: ranges and combinations, each error naming the file and the line of
//! the key at fault. 0 never means "unlimited". (The files a configuration names, password file,
//! ACL, certificates, are loaded and checked by `server::Resources`, which start-up and
//! `--check-config` share.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Config, ConfigError, MAX_VERIFY_THREADS, line_col};

/// Where each key of the file is: its 1-based line, by dotted path with array indexes
/// (`auth.password_file`, `listener.1.tls.client_ca`). Empty for a configuration not read from a
/// file.
#[derive(Debug, Clone, Default)]
pub struct Locations(HashMap<String, usize>);

impl Locations {
    pub(super) fn of(text: &str, doc: &DeTable<'_>) -> Locations {
        let mut map = HashMap::new();
        walk(text, doc, "", &mut map);
        Locations(map)
    }

    /// The line of `key`, or of its nearest enclosing table that the file names.
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(&line) = self.0.get(key) {
                return Some(line);
            }
            key = &key[..key.rfind('.')?];
        }
    }
}

fn walk(text: &str, table: &DeTable<'_>, prefix: &str, map: &mut HashMap<String, usize>) {
    for (key, value) in table {
        let path = format!("{prefix}{}", key.get_ref());
        map.insert(path.clone(), line_col(text, key.span().start).0);
        match value.get_ref() {
            DeValue::Table(inner) => walk(text, inner, &format!("{path}."), map),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}.{i}");
                    map.insert(at.clone(), line_col(text, item.span().start).0);
                    if let DeValue::Table(inner) = item.get_ref() {
                        walk(text, inner, &format!("{at}."), map);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Config {
    /// The file this configuration came from (a placeholder for one built in code).
    pub fn source_name(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(built-in configuration)"))
    }

    /// `file:line` of `key` (see [`Locations::line`]), or just the file.
    pub fn locate(&self, key: &str) -> String {
        let file = self.source_name();
        match self.locations.line(key) {
            Some(line) => format!("{}:{line}", file.display()),
            None => file.display().to_string(),
        }
    }

    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source_name(),
            line: self.locations.line(key),
            message: message.into(),
        }
    }

    /// A listener's WebSocket and PROXY protocol keys: each only where it has an effect.
    fn validate_front_door(
        &self,
        l: &super::ListenerConfig,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        use super::{ListenerProtocol, ProxyProtocol};
        let ws = l.protocol == ListenerProtocol::Ws;
        let only_ws = [
            ("path", l.path.is_some()),
            ("ws_origins", l.ws_origins.is_some()),
        ];
        if let (false, Some((option, _))) = (ws, only_ws.iter().find(|o| o.1)) {
            let why = format!(
                "listener {:?}: {option} applies to WebSocket listeners only (protocol = \"ws\")",
                l.name
            );
            return Err(self.invalid(&key(option), why));
        }
        if let Some(path) = &l.path
            && (!path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c == '?'))
        {
            let why = format!(
                "listener {:?}: path {path:?} must start with '/' and hold no spaces or '?'",
                l.name
            );
            return Err(self.invalid(&key("path"), why));
        }
        if l.proxy_protocol != ProxyProtocol::Off && l.proxy_trusted.is_empty() {
            let why = format!(
                "listener {:?}: proxy_protocol needs proxy_trusted, the addresses of the proxies \
                 allowed to send the header (e.g. [\"127.0.0.1/32\"])",
                l.name
            );
            return Err(self.invalid(&key("proxy_protocol"), why));
        }
        if l.proxy_protocol == ProxyProtocol::Off && !ws && !l.proxy_trusted.is_empty() {
            let why = format!(
                "listener {:?}: proxy_trusted has no effect without proxy_protocol (or, on a \
                 WebSocket listener, X-Forwarded-For)",
                l.name
            );
            return Err(self.invalid(&key("proxy_trusted"), why));
        }
        let identity = match (l.use_identity_as_username, &l.tls, l.proxy_protocol) {
            (false, _, _) | (true, None, ProxyProtocol::V2) => None,
            (true, Some(_), _) => Some(
                "use_identity_as_username takes the CN a proxy verified, which cannot be when \
                 mqttd terminates TLS itself ([listener.tls]): use tls.use_identity_as_username",
            ),
            (true, None, _) => Some(
                "use_identity_as_username takes the client certificate's CN from a PROXY v2 SSL \
                 TLV and needs proxy_protocol = \"v2\" (with TLS at mqttd: \
                 tls.use_identity_as_username)",
            ),
        };
        if let Some(why) = identity {
            let why = format!("listener {:?}: {why}", l.name);
            return Err(self.invalid(&key("use_identity_as_username"), why));
        }
        Ok(())
    }

    /// Checks what serde cannot: ranges and combinations. 0 never means "unlimited".
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(self.invalid("listener", "at least one [[listener]] is required"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listener.{i}.{k}");
            if !names.insert(&l.name) {
                let why = format!("listener name {:?} is used twice", l.name);
                return Err(self.invalid(&key("name"), why));
            }
            if l.max_connections == 0 {
                let why = format!("listener {:?}: max_connections must be at least 1", l.name);
                return Err(self.invalid(&key("max_connections"), why));
            }
            self.validate_front_door(l, &key)?;
            let Some(tls) = &l.tls else { continue };
            let needs_ca = [
                ("require_client_cert", tls.require_client_cert),
                ("use_identity_as_username", tls.use_identity_as_username),
            ];
            if let (None, Some((option, _))) = (&tls.client_ca, needs_ca.iter().find(|o| o.1)) {
                let why = format!(
                    "listener {:?}: tls.{option} needs tls.client_ca (the CA bundle that client \
                     certificates are verified against)",
                    l.name
                );
                return Err(self.invalid(&key(&format!("tls.{option}")), why));
            }
            if tls.handshake_timeout.is_zero() {
                let why = format!(
                    "listener {:?}: tls.handshake_timeout must be greater than zero",
                    l.name
                );
                return Err(self.invalid(&key("tls.handshake_timeout"), why));
            }
        }
        self.validate_persistence()?;
        self.validate_history()?;
        self.validate_http()?;
        self.validate_coap()?;
        self.validate_bridges()?;
        self.validate_webhooks()?;
        self.validate_limits()?;
        self.validate_auth()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            let why = format!("log.level {:?} is not a valid filter: {e}", self.log.level);
            return Err(self.invalid("log.level", why));
        }
        Ok(())
    }

    fn validate_persistence(&self) -> Result<(), ConfigError> {
        let p = &self.persistence;
        if p.enabled && p.path.as_os_str().is_empty() {
            return Err(self.invalid("persistence.path", "persistence.path must not be empty"));
        }
        if p.sync == super::SyncMode::Periodic && p.interval.is_zero() {
            return Err(self.invalid(
                "persistence.interval",
                "persistence.interval must be greater than zero",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let lim = &self.limits;
        if !(16..=268_435_460).contains(&lim.max_packet_size) {
            return Err(self.invalid(
                "limits.max_packet_size",
                "limits.max_packet_size must be between 16 and 268435460 bytes",
            ));
        }
        let positive = [
            (
                "max_subscriptions_per_client",
                lim.max_subscriptions_per_client,
            ),
            ("max_topic_length", lim.max_topic_length),
            ("max_topic_levels", lim.max_topic_levels),
            ("max_client_id_length", lim.max_client_id_length),
            ("max_queued_bytes", lim.max_queued_bytes),
            (
                "max_queued_bytes_per_client",
                lim.max_queued_bytes_per_client,
            ),
            ("max_inflight_in", usize::from(lim.max_inflight_in)),
            (
                "max_connections_per_ip",
                lim.max_connections_per_ip.unwrap_or(1),
            ),
            (
                "max_publish_rate",
                lim.max_publish_rate.map_or(1, |r| r as usize),
            ),
            ("max_queued_messages", lim.max_queued_messages),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            let why = format!("limits.{name} must be at least 1 (0 never means unlimited)");
            return Err(self.invalid(&format!("limits.{name}"), why));
        }
        for (name, value) in [
            ("max_topic_length", lim.max_topic_length),
            ("max_client_id_length", lim.max_client_id_length),
        ] {
            if value > 65535 {
                let why = format!("limits.{name} is at most 65535");
                return Err(self.invalid(&format!("limits.{name}"), why));
            }
        }
        if lim.max_keepalive == 0 {
            return Err(self.invalid(
                "limits.max_keepalive",
                "limits.max_keepalive must be at least 1 second",
            ));
        }
        if lim.max_inflight == 0 || lim.max_inflight > 65_535 {
            return Err(self.invalid(
                "limits.max_inflight",
                "limits.max_inflight must be between 1 and 65535",
            ));
        }
        if lim.connect_timeout.is_zero() {
            return Err(self.invalid(
                "limits.connect_timeout",
                "limits.connect_timeout must be greater than zero",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.cache_size == 0 {
            return Err(self.invalid(
                "auth.cache_size",
                "auth.cache_size must be at least 1 (use cache_ttl = \"0s\" to turn the cache off)",
            ));
        }
        if auth.max_failures == 0 {
            return Err(self.invalid("auth.max_failures", "auth.max_failures must be at least 1"));
        }
        for (name, value) in [
            ("failure_window", auth.failure_window),
            ("backoff_max", auth.backoff_max),
        ] {
            if value.is_zero() {
                let why = format!("auth.{name} must be greater than zero");
                return Err(self.invalid(&format!("auth.{name}"), why));
            }
        }
        if auth
            .verify_threads
            .is_some_and(|n| !(1..=MAX_VERIFY_THREADS).contains(&n))
        {
            let why = format!("auth.verify_threads must be between 1 and {MAX_VERIFY_THREADS}");
            return Err(self.invalid("auth.verify_threads", why));
        }
        if auth.verify_wait.is_zero() || auth.verify_wait > Duration::from_secs(60) {
            return Err(self.invalid(
                "auth.verify_wait",
                "auth.verify_wait must be greater than zero and at most 60s",
            ));
        }
        let day = Duration::from_secs(86_400);
        for (name, value) in [
            ("cache_ttl", auth.cache_ttl),
            ("failure_window", auth.failure_window),
            ("backoff_max", auth.backoff_max),
        ] {
            if value > day {
                let why = format!("auth.{name} must be at most 24h");
                return Err(self.invalid(&format!("auth.{name}"), why));
            }
        }
        Ok(())
    }
}
