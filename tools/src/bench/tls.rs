//! The TLS client configuration of every `--tls` scenario: trusts only `--cafile`, resumes no
//! session (each connection costs the broker a full handshake), and verifies each distinct
//! certificate chain once per run.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// A TLS client configuration trusting only `cafile`, with session resumption off so every
/// connection is a full handshake.
pub fn tls_connector(cafile: &Path) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cafile)
        .with_context(|| format!("reading {}", cafile.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", cafile.display()))?)
            .context("adding the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the certificate verifier")?;
    let verifier = Arc::new(ChainOnce {
        inner: webpki,
        verified: Mutex::new(Vec::new()),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Verifies the broker's certificate chain as any client does (webpki, against `--cafile`), but
/// each distinct chain only once per run: thousands of handshakes with one broker would otherwise
/// re-verify the same bytes every time, a sixth of the generator's CPU, which on a 2-core machine
/// the broker needs. Every handshake's own signature (the broker proving it holds the key) is
/// still checked, so each connection still costs the broker a full handshake.
#[derive(Debug)]
struct ChainOnce {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<Chain>>,
}

/// A verified chain: end entity, intermediates, server name.
type Chain = (Vec<u8>, Vec<Vec<u8>>, String);

impl ServerCertVerifier for ChainOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = (
            end_entity.to_vec(),
            intermediates.iter().map(|c| c.to_vec()).collect::<Vec<_>>(),
            server_name.to_str().into_owned(),
        );
        if self.verified.lock().unwrap().contains(&key) {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.verified.lock().unwrap().push(key);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
