//! The HTTP client of one hook: reqwest on hyper, TLS by rustls with the aws-lc-rs provider
//! passed explicitly (as the listeners use; reqwest is built without a provider of its own, so
//! ring is never compiled in), TLS 1.2 and 1.3 only.
//!
//! Roots: the `ca` file if set (a private endpoint), else the operating system's store read once
//! at start by `rustls-native-certs` (updated with the system, and what an administrator
//! expects "trusted" to mean; a compiled-in Mozilla list would go stale with the binary).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::RootCertStore;

use super::WebhookError;
use crate::config::WebhookConfig;

/// How long an idle connection to the receiver is kept for the next message.
const IDLE_CONNECTION: Duration = Duration::from_secs(60);

/// The client for `cfg` sending to `url`. `headers`: sent with every request.
pub(super) fn build(
    cfg: &WebhookConfig,
    url: &Url,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Client, WebhookError> {
    let tls = tls_config(cfg, url.scheme() == "https")?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(headers)
        .user_agent(concat!("mqttd/", env!("CARGO_PKG_VERSION")))
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        // A redirect is a final status: following one would send the message (and its
        // Authorization header) somewhere the operator did not configure.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(url.scheme() == "https")
        .pool_idle_timeout(IDLE_CONNECTION)
        .pool_max_idle_per_host(cfg.concurrency)
        .build()
        .map_err(|e| WebhookError::Client(e.to_string()))
}

/// rustls' client configuration: the roots (none for plain HTTP, where it is never used),
/// aws-lc-rs, TLS 1.2+.
fn tls_config(cfg: &WebhookConfig, https: bool) -> Result<rustls::ClientConfig, WebhookError> {
    let mut roots = RootCertStore::empty();
    if https {
        match &cfg.ca {
            Some(path) => {
                for cert in crate::tls::read_certs(path)? {
                    roots.add(cert).map_err(|e| WebhookError::Ca {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                if let Some(e) = found.errors.first() {
                    tracing::warn!("webhook {:?}: reading the system's roots: {e}", cfg.name);
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(WebhookError::NoRoots);
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
        .map_err(|e| WebhookError::Client(format!("crypto provider: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
