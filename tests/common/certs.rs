//! A throw-away PKI for TLS tests, generated with rcgen (ECDSA P-256) into a temporary directory:
//!
//! - `ca.pem`: the CA the broker's certificate and alice's chain to;
//! - `server.pem` / `server.key`: the broker, valid for `localhost`, `127.0.0.1` and `::1`;
//! - `alice.pem` / `alice.key`: a client certificate with subject CN "alice", for mTLS;
//! - `other-ca.pem`: an unrelated CA, for clients that must not trust the broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mqttd::config::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

type Issuer = CertifiedIssuer<'static, KeyPair>;

/// A certificate and its private key, as PEM (for files) and DER (for comparisons and rustls).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

pub struct Pki {
    pub dir: TempDir,
    ca: Issuer,
    /// The certificate in `server.pem` as generated (a reload test may replace the file).
    pub server_der: CertificateDer<'static>,
    alice: Issued,
}

fn key_pair() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key")
}

fn new_ca(cn: &str) -> Issuer {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, key_pair()).expect("self-sign CA")
}

fn issue(ca: &Issuer, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
    let key = key_pair();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid subject alt names");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).expect("sign certificate");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: PrivateKeyDer::try_from(key.serialize_der()).expect("PKCS#8 key"),
    }
}

impl Pki {
    /// Generates every file listed in the module doc into a fresh temporary directory.
    pub fn generate() -> Pki {
        let dir = TempDir::new().expect("temp dir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write PEM file");
        };
        let ca = new_ca("mqttd test CA");
        write("ca.pem", &ca.pem());
        write("other-ca.pem", &new_ca("untrusted CA").pem());
        let server = issue_server(&ca);
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key_pem);
        let alice = issue(&ca, "alice", &[], ExtendedKeyUsagePurpose::ClientAuth);
        write("alice.pem", &alice.cert_pem);
        write("alice.key", &alice.key_pem);
        Pki {
            dir,
            ca,
            server_der: server.der,
            alice,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as a `&str` argument for the mosquitto clients.
    pub fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("temp paths are UTF-8")
            .to_owned()
    }

    /// A new server certificate (fresh key, same CA, same names); not written anywhere.
    pub fn issue_server_cert(&self) -> Issued {
        issue_server(&self.ca)
    }

    /// Server-only TLS: no client certificates, `handshake_timeout` as given.
    pub fn server_tls(&self, handshake_timeout: Duration) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: None,
            require_client_cert: false,
            use_identity_as_username: false,
            handshake_timeout,
        }
    }

    /// mTLS: client certificates from `ca.pem` are required.
    pub fn mtls(&self, use_identity_as_username: bool) -> TlsConfig {
        TlsConfig {
            client_ca: Some(self.path("ca.pem")),
            require_client_cert: true,
            use_identity_as_username,
            ..self.server_tls(Duration::from_secs(5))
        }
    }

    /// A rustls client that trusts `ca.pem`, offers only `versions` and presents no certificate.
    pub fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        self.client_builder(versions).with_no_client_auth()
    }

    /// A rustls client that trusts `ca.pem` and presents alice's certificate.
    pub fn alice_client(&self) -> ClientConfig {
        self.client_builder(tokio_rustls::rustls::DEFAULT_VERSIONS)
            .with_client_auth_cert(vec![self.alice.der.clone()], self.alice.key_der.clone_key())
            .expect("alice's key matches her certificate")
    }

    fn client_builder(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> tokio_rustls::rustls::ConfigBuilder<
        ClientConfig,
        tokio_rustls::rustls::client::WantsClientCert,
    > {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.der().clone())
            .expect("CA is a trust anchor");
        ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .expect("aws-lc-rs supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
    }
}

fn issue_server(ca: &Issuer) -> Issued {
    issue(
        ca,
        "mqttd test server",
        &["localhost", "127.0.0.1", "::1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// A TLS connection to the broker's listener at `addr`, as `client` (the server name is the
/// address; the test certificates carry 127.0.0.1); panics after `WAIT`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    client: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(client);
    tokio::time::timeout(super::WAIT, async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        connector
            .connect(rustls_pki_types::ServerName::from(addr.ip()), tcp)
            .await
    })
    .await
    .expect("TLS handshake finished in time")
}
