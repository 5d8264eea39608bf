//! `[[webhook]]`: messages matching filters are POSTed to an HTTP(S) endpoint, see
//! [`crate::gateway::webhook`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::protocol::topic::subscription_filter;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name in logs, `$SYS/broker/webhook/<name>/...`, `/metrics` and the dashboard; unique
    /// among webhooks. Letters, digits, `-`, `_` and `.` (it is a topic level and a label).
    pub name: String,
    /// Where messages go: an `http://` or `https://` URL. Credentials in it (`user:pass@`) are
    /// sent but never shown: the status, logs and `Debug` show the URL without them and without
    /// its query.
    pub url: HookUrl,
    /// The topic filters whose messages are sent (at least one; `+` and `#` as for MQTT).
    /// `$`-topics are only matched by filters that name them, as for MQTT subscribers.
    pub filters: Vec<String>,
    /// The HTTP method. Default `"POST"`; `"PUT"` for endpoints that want it.
    #[serde(default)]
    pub method: Method,
    /// Extra request headers. A value `"env:NAME"` is read from the environment variable NAME
    /// at start (a missing one stops the start), so tokens stay out of the file; other values
    /// are sent as written. Values are never logged nor shown (`Debug` redacts them).
    #[serde(default)]
    pub headers: Headers,
    /// The request body. Default `"json"`, the only form so far: `{topic, payload,
    /// payload_encoding, qos, retain, client_id, username, time}` (see the gateway's doc).
    #[serde(default)]
    pub body: BodyFormat,
    /// How long one request may take, connecting included, before it counts as a connection
    /// error (and is retried). Default `"5s"`.
    #[serde(default = "default_timeout", deserialize_with = "super::duration")]
    pub timeout: Duration,
    /// Attempts after the first, on connection errors, timeouts, 429 and 5xx. Other statuses
    /// are final. Default 3; 0: no retries.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry's delay; each further one doubles it, up to `max_retry_delay`.
    /// Default `"1s"`.
    #[serde(default = "default_retry_delay", deserialize_with = "super::duration")]
    pub retry_delay: Duration,
    /// The longest wait before a retry, also the cap on a 429's `Retry-After` (a receiver
    /// cannot park the hook for hours). Default `"60s"`.
    #[serde(
        default = "default_max_retry_delay",
        deserialize_with = "super::duration"
    )]
    pub max_retry_delay: Duration,
    /// Messages waiting to be sent. When full the oldest is dropped and counted: a receiver
    /// that is down or slow costs at most this much memory and never slows the broker.
    /// Default 10000.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// The bytes (payloads and topics) those waiting messages may hold; past it the oldest are
    /// dropped as for `buffer`. Default 64 MiB.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// Requests in flight at once. Default 1: messages arrive in the order they were routed
    /// (a message is sent, retries included, before the next). More raises throughput to a slow
    /// receiver but gives up that order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// A PEM file of the CA certificates to trust for an `https://` URL, instead of the
    /// system's roots (a private endpoint with its own CA). Unset: the operating system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Receive messages as this user: the ACL's read rules for this username (and the hook's
    /// client id `$webhook/<name>`) then apply to what it sends. Unset: the broker's own
    /// access (every message matching `filters`), as for the message logger.
    #[serde(default)]
    pub username: Option<String>,
}

/// A hook's URL as written; `Debug` shows it as [`shown_url`] does (it may hold credentials).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HookUrl(pub String);

impl HookUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(url) => write!(f, "{:?}", shown_url(&url)),
            Err(_) => f.write_str("<invalid URL>"),
        }
    }
}

/// The URL as the status, logs and `Debug` show it: scheme, host, port and path; without user
/// and password, and with the query (which often holds a token) replaced by `?...`.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    let had_query = shown.query().is_some_and(|q| !q.is_empty());
    shown.set_query(None);
    let mut text = String::from(shown);
    if had_query {
        text.push_str("?...");
    }
    text
}

/// The HTTP methods a webhook may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// The body forms a webhook may send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// One JSON object per message (see [`crate::gateway::webhook`]).
    #[default]
    Json,
}

/// Header names and values as written in the file (`env:` values not yet resolved). The values
/// may be secrets: `Debug` shows the names only.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// Where a header's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource<'a> {
    /// Sent as written.
    Literal(&'a str),
    /// Read from this environment variable at start.
    Env(&'a str),
}

impl<'a> HeaderSource<'a> {
    pub fn of(value: &'a str) -> HeaderSource<'a> {
        match value.strip_prefix("env:") {
            Some(var) => HeaderSource::Env(var),
            None => HeaderSource::Literal(value),
        }
    }
}

/// Headers the client sets itself: one from the file would contradict the request.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// Longest name accepted (it becomes a `$SYS` topic level and a Prometheus label).
const MAX_NAME: usize = 64;
/// The largest `buffer` accepted (each waiting message costs about 100 bytes besides its
/// payload).
pub const MAX_BUFFER: usize = 10_000_000;
/// The most requests one hook may have in flight.
pub const MAX_CONCURRENCY: usize = 64;
/// The longest `timeout`, `retry_delay` or `max_retry_delay`.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// The most retries.
pub const MAX_RETRIES: u32 = 100;

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_retry_delay() -> Duration {
    Duration::from_secs(60)
}
fn default_buffer() -> usize {
    10_000
}
fn default_buffer_bytes() -> usize {
    64 << 20
}
fn default_concurrency() -> usize {
    1
}

impl WebhookConfig {
    /// A hook called `name` sending `filters` to `url`, everything else default (for tests and
    /// embedding).
    pub fn new(name: &str, url: &str, filters: &[&str]) -> Self {
        WebhookConfig {
            name: name.into(),
            url: HookUrl(url.into()),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            method: Method::default(),
            headers: Headers::default(),
            body: BodyFormat::default(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            retry_delay: default_retry_delay(),
            max_retry_delay: default_max_retry_delay(),
            buffer: default_buffer(),
            buffer_bytes: default_buffer_bytes(),
            concurrency: default_concurrency(),
            ca: None,
            username: None,
        }
    }
}

impl Config {
    /// The `[[webhook]]` checks (see `validate.rs`): everything but the environment variables,
    /// which are read at start (`--check-config` may run elsewhere).
    pub(super) fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("webhook.{i}.{k}");
            let fail = |k: &str, why: String| {
                self.invalid(&key(k), format!("webhook {:?}: {why}", w.name))
            };
            let name_ok = !w.name.is_empty()
                && w.name.len() <= MAX_NAME
                && w.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !name_ok {
                let why = format!("1 to {MAX_NAME} letters, digits, '-', '_' or '.'");
                return Err(fail("name", why));
            }
            if !names.insert(&w.name) {
                return Err(fail("name", "the name is used twice".into()));
            }
            let url = reqwest::Url::parse(w.url.as_str())
                .map_err(|e| fail("url", format!("url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(fail(
                    "url",
                    "url must be http://HOST/... or https://HOST/...".into(),
                ));
            }
            if w.ca.is_some() && url.scheme() != "https" {
                return Err(fail("ca", "ca applies to https:// URLs only".into()));
            }
            if w.filters.is_empty() {
                return Err(fail(
                    "filters",
                    "filters must name at least one topic filter".into(),
                ));
            }
            for (j, filter) in w.filters.iter().enumerate() {
                if let Err(e) = subscription_filter(filter) {
                    return Err(fail(
                        &format!("filters.{j}"),
                        format!("filter {filter:?}: {e}"),
                    ));
                }
            }
            for (header, value) in &w.headers.0 {
                let at = format!("headers.{header}");
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(fail(&at, format!("{header:?} is not a valid header name")));
                }
                if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                    return Err(fail(
                        &at,
                        format!("{header} is set by the HTTP client itself"),
                    ));
                }
                match HeaderSource::of(value) {
                    HeaderSource::Env(var) => {
                        let ok = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if !ok {
                            let why = format!(
                                "header {header}: \"env:\" must be followed by a variable name"
                            );
                            return Err(fail(&at, why));
                        }
                    }
                    HeaderSource::Literal(v) => {
                        if reqwest::header::HeaderValue::from_str(v).is_err() {
                            // The value itself is not shown: it may be a secret.
                            let why = format!(
                                "header {header}: the value holds characters a header cannot"
                            );
                            return Err(fail(&at, why));
                        }
                    }
                }
            }
            let delays = [
                ("timeout", w.timeout),
                ("retry_delay", w.retry_delay),
                ("max_retry_delay", w.max_retry_delay),
            ];
            for (k, d) in delays {
                if d.is_zero() || d > MAX_DELAY {
                    return Err(fail(k, format!("{k} must be more than 0 and at most 1h")));
                }
            }
            if w.max_retry_delay < w.retry_delay {
                return Err(fail(
                    "max_retry_delay",
                    "max_retry_delay must be at least retry_delay".into(),
                ));
            }
            if w.max_retries > MAX_RETRIES {
                return Err(fail(
                    "max_retries",
                    format!("max_retries must be at most {MAX_RETRIES}"),
                ));
            }
            if w.buffer == 0 || w.buffer > MAX_BUFFER {
                return Err(fail("buffer", format!("buffer must be 1 to {MAX_BUFFER}")));
            }
            if w.buffer_bytes == 0 {
                return Err(fail(
                    "buffer_bytes",
                    "buffer_bytes must be more than 0".into(),
                ));
            }
            if w.concurrency == 0 || w.concurrency > MAX_CONCURRENCY {
                return Err(fail(
                    "concurrency",
                    format!("concurrency must be 1 to {MAX_CONCURRENCY}"),
                ));
            }
            if let Some(user) = &w.username
                && let Err(e) = crate::auth::passwd::validate_username(user)
            {
                return Err(fail("username", format!("username {user:?}: {e}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HOOK: &str = "[[webhook]]\nname = \"alerts\"\nurl = \"http://h.example/mqtt\"\nfilters = [\"alerts/#\"]\n";

    fn invalid(extra: &str) -> String {
        Config::parse(&format!("{HOOK}{extra}"), Path::new("w.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_redacted_headers() {
        let text = format!("{HOOK}headers = {{ \"Authorization\" = \"Bearer s3cret\" }}\n");
        let c = Config::parse(&text, Path::new("w.toml")).unwrap();
        let w = &c.webhooks[0];
        assert_eq!(
            (
                w.method,
                w.body,
                w.timeout,
                w.max_retries,
                w.buffer,
                w.concurrency
            ),
            (
                Method::Post,
                BodyFormat::Json,
                Duration::from_secs(5),
                3,
                10_000,
                1
            )
        );
        let shown = format!("{w:?}");
        assert!(
            shown.contains("Authorization") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn shown_url_has_no_secrets() {
        let cases = [
            (
                "https://u:p@h.example/x?token=s#f",
                "https://h.example/x?...",
            ),
            ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
            ("https://h.example", "https://h.example/"),
        ];
        for (url, shown) in cases {
            assert_eq!(
                shown_url(&reqwest::Url::parse(url).unwrap()),
                shown,
                "{url}"
            );
            assert_eq!(format!("{:?}", HookUrl(url.into())), format!("{shown:?}"));
        }
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases = [
            ("timeout = \"0s\"\n", "w.toml:5:", "timeout"),
            ("buffer = 0\n", "w.toml:5:", "buffer"),
            ("concurrency = 65\n", "w.toml:5:", "concurrency"),
            (
                "retry_delay = \"10s\"\nmax_retry_delay = \"1s\"\n",
                "w.toml:6:",
                "max_retry_delay",
            ),
            ("ca = \"ca.pem\"\n", "w.toml:5:", "https"),
            (
                "headers = { \"Host\" = \"x\" }\n",
                "w.toml:5:",
                "set by the HTTP client",
            ),
            (
                "headers = { \"X-Key\" = \"env:1BAD\" }\n",
                "w.toml:5:",
                "variable name",
            ),
            (
                "headers = { \"X-Key\" = \"a\\nb\" }\n",
                "w.toml:5:",
                "characters a header cannot",
            ),
            (
                "[[webhook]]\nname = \"alerts\"\nurl = \"http://h/\"\nfilters = [\"a\"]\n",
                "w.toml:6:",
                "used twice",
            ),
        ];
        for (extra, at, why) in cases {
            let e = invalid(extra);
            assert!(e.starts_with(at) && e.contains(why), "{extra:?}: {e}");
        }
        let e = Config::parse(
            "[[webhook]]\nname = \"a\"\nurl = \"ftp://h/x\"\nfilters = [\"a\"]\n",
            Path::new("w.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("w.toml:3:") && e.contains("http://"), "{e}");
        let e = Config::parse(
            "[[webhook]]\nname = \"a/b\"\nurl = \"http://h/\"\nfilters = [\"a\"]\n",
            Path::new("w.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("w.toml:2:"), "{e}");
        let e = Config::parse(
            "[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\nfilters = [\"a/#/b\"]\n",
            Path::new("w.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("w.toml:4:") && e.contains("a/#/b"), "{e}");
    }
}
