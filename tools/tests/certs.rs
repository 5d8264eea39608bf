//! Runs the `mqtt-certs` binary into a temporary directory and checks what it wrote with the same
//! rustls (aws-lc-rs) verifiers the broker and its clients use.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

/// Runs mqtt-certs with `args`, killing it if it takes longer than a generous bound.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-certs"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqtt-certs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for mqtt-certs").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mqtt-certs {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect mqtt-certs output")
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mqtt-certs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(cert(&dir.join("ca.pem")))
        .expect("CA is a usable trust anchor");
    Arc::new(roots)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The certificate and key in `name`.pem/.key belong together.
fn assert_key_matches(dir: &Path, name: &str) {
    let chain = vec![cert(&dir.join(format!("{name}.pem")))];
    CertifiedKey::from_der(chain, key(&dir.join(format!("{name}.key"))), &provider())
        .unwrap_or_else(|e| panic!("{name}: key does not match certificate: {e}"));
}

fn assert_server_cert_valid_for(dir: &Path, names: &[&str]) {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .unwrap();
    let server = cert(&dir.join("server.pem"));
    for name in names {
        let server_name = ServerName::try_from(*name).unwrap().to_owned();
        verifier
            .verify_server_cert(&server, &[], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("server cert not valid for {name}: {e}"));
    }
    let other = ServerName::try_from("not-in-the-cert.example").unwrap();
    assert!(
        verifier
            .verify_server_cert(&server, &[], &other, &[], UnixTime::now())
            .is_err(),
        "server cert must not be valid for names it does not list"
    );
}

#[test]
fn init_writes_a_ca_and_a_server_cert_that_chains_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let dir_arg = dir.to_str().unwrap();
    let stdout = run_ok(&[
        "init",
        "--dir",
        dir_arg,
        "--host",
        "broker.example",
        "--host",
        "10.1.2.3",
    ]);
    for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        assert!(dir.join(file).is_file(), "{file} missing");
        assert!(
            stdout.contains(file),
            "output does not mention {file}: {stdout}"
        );
    }
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_key_matches(&dir, "server");
    assert_server_cert_valid_for(
        &dir,
        &[
            "localhost",
            "127.0.0.1",
            "::1",
            "broker.example",
            "10.1.2.3",
        ],
    );
    let key_pem = std::fs::read_to_string(dir.join("server.key")).unwrap();
    assert!(matches!(
        key(&dir.join("server.key")),
        PrivateKeyDer::Pkcs8(_)
    ));
    assert!(!key_pem.contains("RSA"));
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_arg = tmp.path().to_str().unwrap();
    run_ok(&["init", "--dir", dir_arg]);
    let before = std::fs::read(tmp.path().join("server.key")).unwrap();

    let again = run(&["init", "--dir", dir_arg]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(
        std::fs::read(tmp.path().join("server.key")).unwrap(),
        before
    );

    run_ok(&["init", "--dir", dir_arg, "--force"]);
    assert_ne!(
        std::fs::read(tmp.path().join("server.key")).unwrap(),
        before
    );
    assert_eq!(mode(&tmp.path().join("server.key")), 0o600);
    assert_key_matches(tmp.path(), "server");
}

#[test]
fn init_with_rsa_makes_rsa_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_arg = tmp.path().to_str().unwrap();
    run_ok(&["init", "--dir", dir_arg, "--rsa", "--days", "30"]);
    assert_key_matches(tmp.path(), "server");
    assert_server_cert_valid_for(tmp.path(), &["localhost"]);
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key(&tmp.path().join("server.key")))
        .unwrap();
    assert_eq!(
        signing_key.algorithm(),
        rustls::SignatureAlgorithm::RSA,
        "--rsa must produce an RSA key"
    );
}

#[test]
fn client_issues_a_cert_the_broker_accepts_for_mtls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dir_arg = dir.to_str().unwrap();
    run_ok(&["init", "--dir", dir_arg]);
    let stdout = run_ok(&["client", "sensor-7", "--dir", dir_arg, "--days", "10"]);
    assert!(stdout.contains("sensor-7.pem"), "{stdout}");
    assert_eq!(mode(&dir.join("sensor-7.key")), 0o600);
    assert_key_matches(dir, "sensor-7");

    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .unwrap();
    verifier
        .verify_client_cert(&cert(&dir.join("sensor-7.pem")), &[], UnixTime::now())
        .expect("client cert verifies against the CA");
    // clientAuth only: the server certificate is not a client certificate.
    assert!(
        verifier
            .verify_client_cert(&cert(&dir.join("server.pem")), &[], UnixTime::now())
            .is_err()
    );

    let again = run(&["client", "sensor-7", "--dir", dir_arg]);
    assert!(!again.status.success(), "client must not overwrite either");
}

#[test]
fn client_rejects_bad_names_and_a_missing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_arg = tmp.path().to_str().unwrap();
    let no_ca = run(&["client", "alice", "--dir", dir_arg]);
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("ca.pem"));

    run_ok(&["init", "--dir", dir_arg]);
    for bad in ["../escape", "ca", "server", ".hidden", "a b"] {
        let out = run(&["client", bad, "--dir", dir_arg]);
        assert!(!out.status.success(), "{bad:?} must be refused");
    }
    let invalid_host = run(&["init", "--dir", dir_arg, "--force", "--host", "bad host"]);
    assert!(!invalid_host.status.success());
}
