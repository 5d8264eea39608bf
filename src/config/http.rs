//! `[http]`: the HTTP listener for the API and `/metrics` (see [`crate::http`]).
//!
//! On when the file has an `[http]` table; without `--config` ([`Config::default`]) it is on at
//! 127.0.0.1:18083 as [`HttpConfig::local`], which the broker skips with a warning when that port
//! is taken (two brokers on one host must not fight over a port nobody asked for).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, TlsConfig, TrustedNet};
use crate::auth::passwd::validate_username;

/// The port of the built-in HTTP listener (EMQX's dashboard port, so its users find it).
pub const DEFAULT_HTTP_PORT: u16 = 18083;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port. Default 127.0.0.1:18083: loopback, so a fresh install exposes nothing.
    /// A bind beyond loopback needs `[auth] password_file` (refused otherwise: an open API on
    /// the network is never a default) and should have `tls` (warned otherwise).
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// HTTPS with this certificate and key, as `[listener.tls]` (client certificates are not
    /// used here). Unset: plain HTTP, fine on loopback or behind a TLS-terminating proxy.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Password-file users with full access (HTTP Basic): read, publish, disconnect clients.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Password-file users with read-only access (HTTP Basic): statistics, clients, metrics.
    /// A password-file user in neither list is refused (403) even with the right password:
    /// MQTT users are not API users unless named here.
    #[serde(default)]
    pub viewers: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed (the rightmost address not itself trusted
    /// becomes the caller's address for the login back-off and the logs). Empty: the header is
    /// ignored, as a client could forge it.
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedNet>,
    /// Serve `/metrics` without credentials (for a Prometheus that cannot send any). Default
    /// false: metrics name clients' counts and limits, which are nobody's business by default.
    #[serde(default)]
    pub metrics_public: bool,
    /// The API key file (`mqtt-passwd api-key add NAME --role ...` writes it): `Authorization:
    /// Bearer <key>` is accepted for the keys in it. Read at start and on reload (SIGHUP).
    /// Unset: no API keys. Needs `[auth] password_file` (without one the API is open on
    /// loopback and keys would add nothing).
    #[serde(default)]
    pub api_keys: Option<PathBuf>,
    /// How long a dashboard login (its session cookie) lasts, from the login. Default `"8h"`:
    /// a working day; at most 30 days. A reload that removes the user from the password file
    /// or from `admins` / `viewers` ends their sessions at their next request.
    #[serde(default = "default_session_ttl", deserialize_with = "super::duration")]
    pub session_ttl: Duration,
    /// Set only for the built-in listener of the default run: a taken port logs a warning and
    /// the broker runs without HTTP. A configured `[http]` whose port is taken stops the start.
    #[serde(skip)]
    pub optional: bool,
}

/// The longest `session_ttl` accepted.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 86_400);

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))
}

impl HttpConfig {
    /// The HTTP listener of the default run: 127.0.0.1:18083, open (no password file), skipped
    /// if the port is taken.
    pub fn local() -> Self {
        HttpConfig {
            bind: default_bind(),
            tls: None,
            admins: Vec::new(),
            viewers: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_public: false,
            api_keys: None,
            session_ttl: default_session_ttl(),
            optional: true,
        }
    }
}

impl Config {
    /// The `[http]` checks (see `validate.rs`).
    pub(super) fn validate_http(&self) -> Result<(), ConfigError> {
        let Some(http) = &self.http else {
            return Ok(());
        };
        let has_passwords = self.auth.password_file.is_some();
        if !http.bind.ip().is_loopback() && !has_passwords {
            let why = format!(
                "http.bind {} is reachable beyond loopback, and without [auth] password_file the \
                 API would be open to anyone there: set a password file (and http.admins) or bind \
                 127.0.0.1",
                http.bind
            );
            return Err(self.invalid("http.bind", why));
        }
        for (list, names) in [("admins", &http.admins), ("viewers", &http.viewers)] {
            if !names.is_empty() && !has_passwords {
                let why = format!(
                    "http.{list} names password-file users, but [auth] password_file is not set"
                );
                return Err(self.invalid(&format!("http.{list}"), why));
            }
            for (i, name) in names.iter().enumerate() {
                if let Err(e) = validate_username(name) {
                    let why = format!("http.{list}: {name:?}: {e}");
                    return Err(self.invalid(&format!("http.{list}.{i}"), why));
                }
            }
        }
        if let Some((i, name)) = http
            .viewers
            .iter()
            .enumerate()
            .find(|(_, v)| http.admins.contains(v))
        {
            let why = format!("http.viewers: {name:?} is in http.admins too; name each user once");
            return Err(self.invalid(&format!("http.viewers.{i}"), why));
        }
        if http.api_keys.is_some() && !has_passwords {
            return Err(self.invalid(
                "http.api_keys",
                "http.api_keys needs [auth] password_file: without one the API is open on \
                 loopback and API keys would not be asked for",
            ));
        }
        if http.session_ttl.is_zero() || http.session_ttl > MAX_SESSION_TTL {
            return Err(self.invalid(
                "http.session_ttl",
                "http.session_ttl must be greater than zero and at most 30 days",
            ));
        }
        if let Some(tls) = &http.tls {
            let mtls = [
                ("client_ca", tls.client_ca.is_some()),
                ("require_client_cert", tls.require_client_cert),
                ("use_identity_as_username", tls.use_identity_as_username),
            ];
            if let Some((option, _)) = mtls.iter().find(|o| o.1) {
                let why = format!(
                    "http.tls.{option}: client certificates are not used by the HTTP listener \
                     (it authenticates with passwords and API keys)"
                );
                return Err(self.invalid(&format!("http.tls.{option}"), why));
            }
            if tls.handshake_timeout.is_zero() {
                return Err(self.invalid(
                    "http.tls.handshake_timeout",
                    "http.tls.handshake_timeout must be greater than zero",
                ));
            }
        }
        // Port 0 (tests) picks a free port for each.
        let same = |l: &&super::ListenerConfig| l.bind == http.bind && http.bind.port() != 0;
        if let Some(l) = self.listeners.iter().find(same) {
            let why = format!(
                "http.bind {} is the address of listener {:?} too",
                http.bind, l.name
            );
            return Err(self.invalid("http.bind", why));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("m.toml"))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn on_only_with_a_table_and_in_the_default_run() {
        let file = Config::parse("", Path::new("m.toml")).unwrap();
        assert!(
            file.http.is_none(),
            "a file without [http] has no HTTP listener"
        );
        let c = Config::parse("[http]\n", Path::new("m.toml")).unwrap();
        let http = c.http.unwrap();
        assert_eq!(http.bind.to_string(), "127.0.0.1:18083");
        assert!(!http.optional && !http.metrics_public && http.tls.is_none());
        let default = Config::default().http.unwrap();
        assert!(
            default.optional,
            "the default run's listener steps aside if its port is taken"
        );
        assert!(default.bind.ip().is_loopback());
    }

    #[test]
    fn what_would_open_the_api_to_the_network_is_refused_naming_the_line() {
        let e = err("[log]\nlevel = \"info\"\n\n[http]\nbind = \"0.0.0.0:18083\"\n");
        assert!(e.starts_with("m.toml:5: http.bind 0.0.0.0:18083"), "{e}");
        assert!(e.contains("password_file"), "{e}");
        let e = err("[http]\nadmins = [\"alice\"]\n");
        assert!(e.starts_with("m.toml:2: http.admins"), "{e}");
        let e = err("[http]\napi_keys = \"keys\"\n");
        assert!(e.starts_with("m.toml:2: http.api_keys needs"), "{e}");
    }

    #[test]
    fn users_keys_and_tls_are_checked() {
        let auth = "[auth]\npassword_file = \"p\"\n";
        let ok =
            format!("{auth}[http]\nbind = \"0.0.0.0:8080\"\nadmins = [\"a\"]\nviewers = [\"b\"]\n");
        assert!(Config::parse(&ok, Path::new("m.toml")).is_ok());
        let e = err(&format!(
            "{auth}[http]\nadmins = [\"a\"]\nviewers = [\"b\", \"a\"]\n"
        ));
        assert!(
            e.starts_with("m.toml:5: http.viewers: \"a\" is in http.admins"),
            "{e}"
        );
        let e = err(&format!("{auth}[http]\nadmins = [\"a:b\"]\n"));
        assert!(e.contains("http.admins: \"a:b\""), "{e}");
        let e = err(&format!(
            "{auth}[http]\ntls = {{ cert = \"c\", key = \"k\", client_ca = \"ca\" }}\n"
        ));
        assert!(e.contains("http.tls.client_ca: client certificates"), "{e}");
        let e = err("[[listener]]\nbind = \"127.0.0.1:1883\"\n[http]\nbind = \"127.0.0.1:1883\"\n");
        assert!(e.contains("is the address of listener \"default\""), "{e}");
        let e = err("[http]\nsession_ttl = \"0s\"\n");
        assert!(e.starts_with("m.toml:2: http.session_ttl"), "{e}");
        let c = Config::parse("[http]\nsession_ttl = \"1h\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(c.http.unwrap().session_ttl.as_secs(), 3600);
        let e = err("[http]\ntrusted_proxies = [\"nope\"]\n");
        assert!(e.starts_with("m.toml:2:"), "{e}");
    }
}
