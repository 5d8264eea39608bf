//! TLS bytes from a client are hostile input. Our TLS stream (`transport::tls::TlsStream`, over
//! rustls' unbuffered connection with the lazy record keys of `tls::keys`) never panics, whatever
//! arrives and however it is cut into reads, and never hands out bytes that did not come from
//! the client.
//!
//! Input: a mode byte, a read-size byte, then data.
//! - mode even: the data is the client's side of a handshake, raw: the handshake fails or waits
//!   for more, and the stream never panics.
//! - mode odd: a real rustls client completes the handshake (TLS 1.3 for mode & 2 == 0, else 1.2),
//!   seals the data as application records, and the records reach the server cut into reads of
//!   the given size, one byte flipped when mode & 4 == 4 (where: from mode >> 3):
//!   unflipped, the server reads back exactly the data; flipped, it reads a prefix of the data
//!   and then an error or the end.
#![no_main]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mqttd::transport::tls::TlsStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Configs {
    server: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ClientConfig>,
    tls12: Arc<rustls::ClientConfig>,
}

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(mqttd::tls::keys::lazy_record_keys(
            rustls::crypto::aws_lc_rs::default_provider(),
        ));
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let client = |version| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der.clone()).unwrap();
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        };
        Configs {
            server: Arc::new(server),
            tls13: client(&rustls::version::TLS13),
            tls12: client(&rustls::version::TLS12),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, step, data @ ..] = data else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(run(*mode, usize::from(*step) + 1, data));
});

async fn run(mode: u8, step: usize, data: &[u8]) {
    let configs = configs();
    let (server_io, mut client_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(async move {
        let mut stream = match TlsStream::accept(server_io, Arc::clone(&configs.server)).await {
            Ok(stream) => stream,
            Err(e) => {
                if std::env::var_os("TLS_FUZZ_DEBUG").is_some() {
                    eprintln!("accept failed: {e}");
                }
                return None;
            }
        };
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 333];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Some((got, true)),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(_) => return Some((got, false)),
            }
        }
    });

    if mode % 2 == 0 {
        for part in data.chunks(step) {
            let _ = client_io.write_all(part).await;
        }
        // End of stream, as a TCP client's shutdown: the server may still write (alerts).
        let _ = client_io.shutdown().await;
        let _ = server.await.unwrap();
        return;
    }

    // A real client: the handshake, then the data sealed as application records.
    let config = if mode & 2 == 0 { &configs.tls13 } else { &configs.tls12 };
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    client.set_buffer_limit(None);
    let mut buf = vec![0u8; 1 << 16];
    while client.is_handshaking() {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        client_io.write_all(&wire).await.unwrap();
        if !client.is_handshaking() {
            break;
        }
        let n = client_io.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during a valid handshake");
        let mut wire = &buf[..n];
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let sent_from = wire.len();
    client.writer().write_all(data).unwrap();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let flip = (mode & 4 == 4) && wire.len() > sent_from;
    if flip {
        let at = sent_from + usize::from(mode >> 3) * 7 % (wire.len() - sent_from);
        wire[at] ^= 0x20;
    }
    // (A server that failed has closed its end: writes may fail then.)
    for part in wire.chunks(step) {
        let _ = client_io.write_all(part).await;
    }
    // End of stream, as a TCP client's shutdown: the server may still write (its tickets).
    let _ = client_io.shutdown().await;
    // A flipped record that arrives with the client's Finished may fail the handshake itself.
    let outcome = server.await.unwrap();
    if flip && outcome.is_none() {
        return;
    }
    let (got, clean) = outcome.expect("a valid handshake is accepted");
    if flip {
        assert!(data.starts_with(&got), "bytes the client did not send");
    } else {
        assert!(got == data, "the data came through changed");
        assert!(clean, "a clean stream ended in an error");
    }
}
