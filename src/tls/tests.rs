//! TLS unit tests: loading, reload, client certificates, handshakes.

use super::*;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::ServerName;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, ProtocolVersion};

/// Upper bound for anything a test waits on.
const BOUND: Duration = Duration::from_secs(10);

type Issuer = CertifiedIssuer<'static, KeyPair>;

/// A throw-away PKI: a CA, a server cert for `localhost` and a client cert, as files in `dir`.
struct Pki {
    dir: TempDir,
    ca: Issuer,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn new_ca(name: &str) -> Issuer {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for localhost signed by `ca`, as (cert PEM, key PEM, cert DER).
fn server_cert(ca: &Issuer, cn: &str) -> (String, String, CertificateDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A client certificate signed by `ca`; `cn: None` leaves the subject empty.
fn client_cert(ca: &Issuer, cn: Option<&str>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    (cert.der().clone(), key)
}

fn pki() -> Pki {
    let dir = TempDir::new().unwrap();
    let ca = new_ca("mqttd test CA");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let (cert_pem, key_pem, server_der) = server_cert(&ca, "server one");
    std::fs::write(dir.path().join("server.pem"), cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), key_pem).unwrap();
    let client = client_cert(&ca, Some("sensor-7"));
    let ca_der = ca.der().clone();
    Pki {
        dir,
        ca,
        ca_der,
        server_der,
        client,
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client_identity(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        (self.client.0.clone(), self.client.1.clone_key())
    }

    fn settings(&self) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: None,
            require_client_cert: false,
            use_identity_as_username: false,
            handshake_timeout: BOUND,
        }
    }

    fn mtls_settings(&self, require: bool) -> TlsConfig {
        TlsConfig {
            client_ca: Some(self.path("ca.pem")),
            require_client_cert: require,
            use_identity_as_username: true,
            ..self.settings()
        }
    }

    fn client_builder(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
    }

    fn client(&self) -> ClientConfig {
        self.client_builder(PROTOCOL_VERSIONS).with_no_client_auth()
    }

    fn client_with_cert(
        &self,
        cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
    ) -> ClientConfig {
        self.client_builder(PROTOCOL_VERSIONS)
            .with_client_auth_cert(vec![cert.0], cert.1)
            .unwrap()
    }
}

/// A client's crypto: aws-lc-rs in its default order (AES-256-GCM first, as OpenSSL's).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

type ServerSide = Result<(TlsStream<DuplexStream>, Option<String>), TlsError>;
type ClientSide = io::Result<tokio_rustls::client::TlsStream<DuplexStream>>;

/// Runs both ends of a handshake over an in-memory pipe.
async fn handshake(tls: &Tls, client: ClientConfig) -> (ServerSide, ClientSide) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(BOUND, async {
        tokio::join!(tls.accept(server_io), connector.connect(name, client_io))
    })
    .await
    .expect("handshake hung")
}

/// Both directions carry data after the handshake.
async fn exchange(
    server: &mut TlsStream<DuplexStream>,
    client: &mut tokio_rustls::client::TlsStream<DuplexStream>,
) {
    tokio::time::timeout(BOUND, async {
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    })
    .await
    .expect("data exchange hung");
}

#[tokio::test]
async fn tls13_handshake_with_trusting_client() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let (server, client) = handshake(&tls, pki.client()).await;
    let (mut server, identity) = server.unwrap();
    let mut client = client.unwrap();
    assert_eq!(identity, None);
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    exchange(&mut server, &mut client).await;
    close(&mut server, BOUND).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(BOUND, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "close_notify ends the stream cleanly");
}

#[tokio::test]
async fn server_picks_aes128_gcm_over_the_clients_aes256_preference() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    assert_eq!(tls.server_config().send_tls13_tickets, TLS13_TICKETS);
    // rustls clients (like OpenSSL's) list TLS13_AES_256_GCM_SHA384 first.
    let client = pki.client();
    assert_eq!(
        client.crypto_provider().cipher_suites[0].suite(),
        CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let (server, client) = handshake(&tls, client).await;
    let (server, _) = server.unwrap();
    client.unwrap();
    assert_eq!(
        server
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite(),
        CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let tls12 = pki.client_builder(&[&TLS12]).with_no_client_auth();
    let (server, _) = handshake(&tls, tls12).await;
    let suite = server.unwrap().0.get_ref().1.negotiated_cipher_suite();
    assert!(
        format!("{:?}", suite.unwrap().suite()).contains("AES_128_GCM"),
        "TLS 1.2 suite {suite:?}"
    );
}

#[tokio::test]
async fn client_without_aes128_gets_its_own_suite() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let mut only_chacha = aws_lc_rs::default_provider();
    only_chacha
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(only_chacha))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (server, client) = handshake(&tls, client).await;
    let (mut server, _) = server.unwrap();
    let mut client = client.unwrap();
    assert_eq!(
        server
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite(),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    exchange(&mut server, &mut client).await;
}

#[tokio::test]
async fn tls12_handshake_when_client_forces_it() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let client = pki.client_builder(&[&TLS12]).with_no_client_auth();
    let (server, client) = handshake(&tls, client).await;
    let (mut server, _) = server.unwrap();
    let mut client = client.unwrap();
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    exchange(&mut server, &mut client).await;
}

#[tokio::test]
async fn handshake_over_loopback_tcp() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connector = TlsConnector::from(Arc::new(pki.client()));
    let result = tokio::time::timeout(BOUND, async {
        let server = async {
            let (socket, _) = listener.accept().await.unwrap();
            tls.accept(socket).await
        };
        let client = async {
            let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), socket)
                .await
        };
        tokio::join!(server, client)
    })
    .await
    .expect("handshake hung");
    assert!(result.0.is_ok(), "{:?}", result.0.err());
    assert!(result.1.is_ok(), "{:?}", result.1.err());
}

#[tokio::test]
async fn client_that_does_not_trust_the_ca_fails() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let other = self::pki(); // an unrelated CA
    let (server, client) = handshake(&tls, other.client()).await;
    assert!(client.is_err());
    assert!(matches!(server, Err(TlsError::Handshake(_))), "{server:?}");
}

#[test]
fn only_tls12_and_tls13_are_configured() {
    let versions: Vec<ProtocolVersion> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
    );
}

#[tokio::test]
async fn tls11_client_hello_is_refused_with_protocol_version_alert() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();
    let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);

    // A TLS 1.1 ClientHello: no supported_versions extension, client_version 3.2.
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // AES-CBC-SHA suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    // Extensions: only signature_algorithms (rustls needs it before it looks at the version).
    body.extend_from_slice(&[0x00, 0x0c, 0x00, 0x0d, 0x00, 0x08, 0x00, 0x06]);
    body.extend_from_slice(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    let mut hello = vec![0x01, 0x00, 0x00, body.len() as u8];
    hello.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, hello.len() as u8];
    record.extend_from_slice(&hello);

    let (server, reply) = tokio::time::timeout(BOUND, async {
        tokio::join!(tls.accept(server_io), async {
            client_io.write_all(&record).await.unwrap();
            let mut reply = Vec::new();
            // The server sends its alert and drops the pipe, which ends this read.
            let _ = client_io.read_to_end(&mut reply).await;
            reply
        })
    })
    .await
    .expect("handshake hung");
    assert!(matches!(server, Err(TlsError::Handshake(_))), "{server:?}");
    // Alert record: fatal (2), protocol_version (70).
    assert_eq!(reply.first(), Some(&0x15), "{reply:02x?}");
    assert_eq!(&reply[reply.len() - 2..], &[2, 70], "{reply:02x?}");
}

#[tokio::test]
async fn mtls_required_refuses_client_without_cert() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(true)).unwrap();
    let (server, _client) = handshake(&tls, pki.client()).await;
    assert!(matches!(server, Err(TlsError::Handshake(_))), "{server:?}");
}

#[tokio::test]
async fn mtls_required_accepts_client_cert_and_returns_cn() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(true)).unwrap();
    let client = pki.client_with_cert(pki.client_identity());
    let (server, client) = handshake(&tls, client).await;
    let (mut server, identity) = server.unwrap();
    assert_eq!(identity.as_deref(), Some("sensor-7"));
    exchange(&mut server, &mut client.unwrap()).await;
}

#[tokio::test]
async fn mtls_refuses_cert_from_another_ca() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(true)).unwrap();
    let stranger = client_cert(&new_ca("other CA"), Some("intruder"));
    let (server, _client) = handshake(&tls, pki.client_with_cert(stranger)).await;
    assert!(matches!(server, Err(TlsError::Handshake(_))), "{server:?}");
}

#[tokio::test]
async fn mtls_optional_allows_client_without_cert() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(false)).unwrap();
    let (server, _client) = handshake(&tls, pki.client()).await;
    let (_server, identity) = server.unwrap();
    assert_eq!(identity, None);
}

#[tokio::test]
async fn identity_without_cn_is_an_error() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(true)).unwrap();
    let nameless = client_cert(&pki.ca, None);
    let (server, _client) = handshake(&tls, pki.client_with_cert(nameless)).await;
    assert!(matches!(server, Err(TlsError::NoIdentity)), "{server:?}");
}

#[tokio::test]
async fn identity_is_not_returned_when_option_is_off() {
    let pki = pki();
    let settings = TlsConfig {
        use_identity_as_username: false,
        ..pki.mtls_settings(true)
    };
    let tls = Tls::load(&settings).unwrap();
    let (server, _client) = handshake(&tls, pki.client_with_cert(pki.client_identity())).await;
    assert_eq!(server.unwrap().1, None);
}

#[tokio::test]
async fn tls12_mtls_returns_cn() {
    let pki = pki();
    let tls = Tls::load(&pki.mtls_settings(true)).unwrap();
    let (cert, key) = pki.client_identity();
    let client = pki
        .client_builder(&[&TLS12])
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    let (server, client) = handshake(&tls, client).await;
    let (mut server, identity) = server.unwrap();
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(identity.as_deref(), Some("sensor-7"));
    exchange(&mut server, &mut client.unwrap()).await;
}

#[tokio::test]
async fn handshake_times_out_when_peer_stalls_mid_hello() {
    let pki = pki();
    let settings = TlsConfig {
        handshake_timeout: Duration::from_millis(200),
        ..pki.settings()
    };
    let tls = Tls::load(&settings).unwrap();
    let (server_io, mut peer) = tokio::io::duplex(1024);
    // A record header announcing 200 bytes of ClientHello, then nothing more.
    peer.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
        .await
        .unwrap();
    let result = tokio::time::timeout(BOUND, tls.accept(server_io))
        .await
        .expect("handshake timeout did not fire");
    assert!(
        matches!(result, Err(TlsError::HandshakeTimeout(_))),
        "{result:?}"
    );
}

/// A writer whose peer never drains it.
struct Stuck;

impl AsyncWrite for Stuck {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Pending
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn close_gives_up_on_a_peer_that_does_not_read() {
    let result = tokio::time::timeout(BOUND, close(&mut Stuck, Duration::from_millis(50)))
        .await
        .expect("close did not time out");
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn handshake_times_out_when_peer_is_silent() {
    let pki = pki();
    let settings = TlsConfig {
        handshake_timeout: Duration::from_millis(200),
        ..pki.settings()
    };
    let tls = Tls::load(&settings).unwrap();
    let (server_io, _silent_peer) = tokio::io::duplex(1024);
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(BOUND, tls.accept(server_io))
        .await
        .expect("handshake timeout did not fire");
    assert!(
        matches!(result, Err(TlsError::HandshakeTimeout(d)) if d == Duration::from_millis(200)),
        "{result:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

fn load_err(settings: &TlsConfig) -> String {
    Tls::load(settings).unwrap_err().to_string()
}

#[test]
fn missing_cert_file_names_the_file() {
    let pki = pki();
    let settings = TlsConfig {
        cert: pki.path("nope.pem"),
        ..pki.settings()
    };
    let msg = load_err(&settings);
    assert!(
        msg.contains("nope.pem") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[test]
fn garbage_key_names_the_file() {
    let pki = pki();
    std::fs::write(pki.path("server.key"), "this is not a key\n").unwrap();
    let msg = load_err(&pki.settings());
    assert!(
        msg.contains("server.key") && msg.contains("no private key"),
        "{msg}"
    );

    let bogus = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    std::fs::write(pki.path("server.key"), bogus).unwrap();
    let msg = load_err(&pki.settings());
    assert!(
        msg.contains("server.key") && msg.contains("private key"),
        "{msg}"
    );
}

#[test]
fn file_without_certificate_names_the_file() {
    let pki = pki();
    let settings = TlsConfig {
        cert: pki.path("server.key"),
        ..pki.settings()
    };
    let msg = load_err(&settings);
    assert!(
        msg.contains("server.key") && msg.contains("no certificate"),
        "{msg}"
    );
}

#[test]
fn key_that_does_not_match_cert_is_refused() {
    let pki = pki();
    let (_, other_key, _) = server_cert(&pki.ca, "other");
    std::fs::write(pki.path("server.key"), other_key).unwrap();
    let err = Tls::load(&pki.settings()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("server.key"), "{err}");
}

#[test]
fn bad_client_ca_names_the_file() {
    let pki = pki();
    std::fs::write(pki.path("garbage-ca.pem"), "garbage").unwrap();
    let settings = TlsConfig {
        client_ca: Some(pki.path("garbage-ca.pem")),
        ..pki.settings()
    };
    let msg = load_err(&settings);
    assert!(msg.contains("garbage-ca.pem"), "{msg}");
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let pki = pki();
    for settings in [
        TlsConfig {
            require_client_cert: true,
            ..pki.settings()
        },
        TlsConfig {
            use_identity_as_username: true,
            ..pki.settings()
        },
        TlsConfig {
            handshake_timeout: Duration::ZERO,
            ..pki.settings()
        },
    ] {
        let err = Tls::load(&settings).unwrap_err();
        assert!(matches!(err, TlsError::Settings { .. }), "{err}");
    }
}

#[tokio::test]
async fn reload_keeps_old_config_on_error_and_serves_new_cert_on_success() {
    let pki = pki();
    let tls = Tls::load(&pki.settings()).unwrap();

    std::fs::write(pki.path("server.key"), "broken").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("server.key"), "{err}");
    let (server, client) = handshake(&tls, pki.client()).await;
    assert!(server.is_ok(), "old config must stay in force: {server:?}");
    let client = client.unwrap();
    assert_eq!(served_cert(&client), &pki.server_der);

    let (cert_pem, key_pem, new_der) = server_cert(&pki.ca, "server two");
    std::fs::write(pki.path("server.pem"), cert_pem).unwrap();
    std::fs::write(pki.path("server.key"), key_pem).unwrap();
    tls.reload().unwrap();
    let (server, client) = handshake(&tls, pki.client()).await;
    assert!(server.is_ok(), "{server:?}");
    let client = client.unwrap();
    assert_eq!(served_cert(&client), &new_der);
    assert_ne!(new_der, pki.server_der);
}

fn served_cert(client: &tokio_rustls::client::TlsStream<DuplexStream>) -> &CertificateDer<'static> {
    &client.get_ref().1.peer_certificates().unwrap()[0]
}
