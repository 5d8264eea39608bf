//! TLS: PEM files -> one shared `rustls::ServerConfig`, built at start-up and on reload.
//!
//! - [`Tls::load`] reads the certificate chain, private key and (optional) client CA bundle once and
//!   builds the `ServerConfig`; every connection then shares it through an `Arc`. Certificate files
//!   are never re-read per connection.
//! - [`Tls::reload`] rebuilds the config from the same files and swaps it in only if that worked, so
//!   a half-written or broken file never takes the listener down. Handshakes already running keep
//!   the config they started with; new ones get the new one.
//! - [`Tls::accept`] runs the handshake under `handshake_timeout`, giving our own
//!   [`TlsStream`] (it parks; see [`crate::transport::tls`]). Call it inside the per-connection
//!   task, never in the accept loop: a client that opens a socket and stays silent must only cost
//!   its own task, not stall everyone else's accept.
//! - [`close`] sends close_notify under a timeout so a peer that stops reading cannot pin the task.
//!
//! Crypto is always the aws-lc-rs provider, passed explicitly: with both rustls providers compiled
//! in (a dependency may enable ring), `ServerConfig::builder()` cannot choose one and panics.
//! Only TLS 1.3 and 1.2 are offered.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{
    CipherSuite, InconsistentKeys, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::TlsConfig;
use crate::transport::tls::TlsStream;

/// The protocol versions every listener offers, newest first. TLS 1.0/1.1 are never offered.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: no certificate (-----BEGIN CERTIFICATE-----) found in PEM file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: bad certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "{path}: no private key found; expected an unencrypted PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key in PEM"
    )]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: unsupported or malformed private key: {reason}")]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: bad client CA: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("{cert}: invalid TLS settings: {reason}")]
    Settings { cert: PathBuf, reason: &'static str },
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("client certificate has no usable common name (CN) for use_identity_as_username")]
    NoIdentity,
    #[error("client certificate cannot be parsed: {0}")]
    ClientCertificate(String),
}

/// The TLS side of one listener: its settings plus the current `ServerConfig`.
///
/// Cloning is cheap (one `Arc`), and all clones see a [`reload`](Tls::reload).
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TlsConfig,
    /// Replaced wholesale on reload. A handshake clones the inner `Arc` under the read lock and
    /// releases it at once, so the lock is never held across an `.await`.
    current: RwLock<Arc<ServerConfig>>,
    /// The leaf certificate of `current` (for `GET /api/v1/listeners`: subject, expiry).
    leaf: RwLock<CertificateDer<'static>>,
}

/// What an operator wants to know about a listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The subject's distinguished name (`CN=broker.example, O=...`).
    pub subject: String,
    /// The end of its validity.
    pub not_after: std::time::SystemTime,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the PEM files named in `cfg` and builds the server config. Blocking file I/O: call it at
    /// start-up (or from `spawn_blocking`).
    pub fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        let (config, leaf) = build(cfg)?;
        Ok(Tls {
            inner: Arc::new(Inner {
                settings: cfg.clone(),
                current: RwLock::new(Arc::new(config)),
                leaf: RwLock::new(leaf),
            }),
        })
    }

    /// Re-reads the files and swaps the new config in only if it builds; on error the old config
    /// stays in force. Affects new handshakes only. Blocking file I/O: run it from `spawn_blocking`.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (config, leaf) = build(&self.inner.settings)?;
        *self.inner.current.write() = Arc::new(config);
        *self.inner.leaf.write() = leaf;
        tracing::info!(cert = %self.inner.settings.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// The settings this was loaded from.
    pub fn settings(&self) -> &TlsConfig {
        &self.inner.settings
    }

    /// The subject and expiry of the certificate new handshakes present (None if it cannot be
    /// parsed, which a loaded certificate always can).
    pub fn certificate(&self) -> Option<CertificateSummary> {
        let leaf = self.inner.leaf.read().clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).ok()?;
        let secs = parsed.validity().not_after.timestamp();
        let not_after = match u64::try_from(secs) {
            Ok(s) => std::time::UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => std::time::UNIX_EPOCH,
        };
        Some(CertificateSummary {
            subject: parsed.subject().to_string(),
            not_after,
        })
    }

    /// The config new handshakes will use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.current.read())
    }

    /// Runs the server handshake on `io` under `handshake_timeout`.
    ///
    /// Returns the stream and, when `use_identity_as_username` is on and the client presented a
    /// (verified) certificate, that certificate's subject CN. A presented certificate without a CN
    /// is then an error rather than an anonymous login.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, Option<String>), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let limit = self.inner.settings.handshake_timeout;
        let accept = TlsStream::accept(io, self.server_config());
        let stream = match tokio::time::timeout(limit, accept).await {
            Err(_elapsed) => return Err(TlsError::HandshakeTimeout(limit)),
            Ok(Err(e)) => return Err(TlsError::Handshake(e)),
            Ok(Ok(stream)) => stream,
        };
        if !self.inner.settings.use_identity_as_username {
            return Ok((stream, None));
        }
        // Only a verified certificate can be here: the client verifier fails the handshake
        // otherwise, and without a client CA no certificate is ever requested.
        let identity = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => Some(common_name(leaf)?),
            _ => None,
        };
        Ok((stream, identity))
    }
}

/// Shuts `stream` down (for TLS: sends close_notify and flushes) but gives up after `limit`, so a
/// peer that stopped reading cannot keep the connection task alive.
pub async fn close<S: AsyncWrite + Unpin>(stream: &mut S, limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, stream.shutdown()).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS close_notify timed out",
        )),
    }
}

/// The first subject CN of `cert`.
fn common_name(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let (_rest, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::ClientCertificate(e.to_string()))?;
    let Some(cn) = parsed.subject().iter_common_name().next() else {
        return Err(TlsError::NoIdentity);
    };
    match cn.as_str() {
        Ok(name) if !name.is_empty() => Ok(name.to_owned()),
        Ok(_) => Err(TlsError::NoIdentity),
        Err(e) => Err(TlsError::ClientCertificate(format!("subject CN: {e}"))),
    }
}

/// The server's crypto: aws-lc-rs with the AES-128-GCM suites first (then its default order:
/// AES-256-GCM, ChaCha20-Poly1305). With `ignore_client_order`, the server's order decides, as in
/// Go's crypto/tls: AES-128 is all the security a 2048-bit RSA or X25519 key exchange can carry,
/// and its SHA-256 handshake hashing is cheaper than AES-256's SHA-384 (about 9% more full
/// handshakes per second here). A client that offers no AES-128-GCM suite gets its best other.
///
/// The record protection is aws-lc's too, with keys that release their memory while a connection
/// is parked ([`keys`]).
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = keys::lazy_record_keys(aws_lc_rs::default_provider());
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// TLS 1.3 session tickets sent after a full handshake. An MQTT client holds one connection and
/// resumes it once per reconnect, for which one (single-use) ticket is enough; a resumption
/// gets a fresh ticket. rustls' default of 2 costs a second ticket's key derivation and cache
/// entry per handshake.
const TLS13_TICKETS: usize = 1;

/// The server config `cfg` describes, and its leaf certificate.
fn build(cfg: &TlsConfig) -> Result<(ServerConfig, CertificateDer<'static>), TlsError> {
    let settings_error = |reason| TlsError::Settings {
        cert: cfg.cert.clone(),
        reason,
    };
    if cfg.handshake_timeout.is_zero() {
        return Err(settings_error(
            "handshake_timeout must be greater than zero",
        ));
    }
    if cfg.client_ca.is_none() && cfg.require_client_cert {
        return Err(settings_error("require_client_cert needs client_ca"));
    }
    if cfg.client_ca.is_none() && cfg.use_identity_as_username {
        return Err(settings_error("use_identity_as_username needs client_ca"));
    }

    let provider = server_provider();
    let chain = read_certs(&cfg.cert)?;
    warn_if_not_valid_now(&cfg.cert, &chain[0]);
    let leaf = chain[0].clone();
    let key = read_key(&cfg.key)?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: cfg.key.clone(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cfg.cert.clone(),
                key: cfg.key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cfg.cert.clone(),
                reason: e.to_string(),
            });
        }
    }

    let verifier = match &cfg.client_ca {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(ca_path) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                path: ca_path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_path)? {
                roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if cfg.require_client_cert {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder.build().map_err(|e| ca_error(e.to_string()))?
        }
    };

    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::BadCertificate {
            path: cfg.cert.clone(),
            reason: format!("crypto provider: {e}"),
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    let mut config = config;
    config.ignore_client_order = true;
    config.send_tls13_tickets = TLS13_TICKETS;
    Ok((config, leaf))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file at `path`, in order; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in the PEM file at `path`.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// An expired certificate still loads (clients decide), but the operator should hear about it.
fn warn_if_not_valid_now(path: &Path, cert: &CertificateDer<'_>) {
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert)
        && !parsed.validity().is_valid()
    {
        tracing::warn!(
            cert = %path.display(),
            not_before = %parsed.validity().not_before,
            not_after = %parsed.validity().not_after,
            "TLS certificate is not valid now"
        );
    }
}

pub mod keys;
#[cfg(test)]
mod tests;
