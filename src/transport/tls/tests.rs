//! The TLS stream against rustls' own client: records split anywhere, parking between and inside
//! records, big transfers, key updates, close_notify, and bad input.

use std::io::{Read, Write};
use std::time::Duration;

use rustls::ClientConnection;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const BOUND: Duration = Duration::from_secs(10);

/// A server config for `localhost` (our lazy record keys, as the broker's) and a client config
/// trusting it, for `versions`.
fn configs(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
    configs_with(versions, aws_lc_rs::default_provider(), false)
}

/// As [`configs`], the client with `client_provider` (e.g. only one cipher suite).
fn configs_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_provider: rustls::crypto::CryptoProvider,
    rsa: bool,
) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = if rsa {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
    } else {
        rcgen::KeyPair::generate().unwrap()
    };
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let provider = Arc::new(crate::tls::keys::lazy_record_keys(
        aws_lc_rs::default_provider(),
    ));
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der.to_vec())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// rustls' buffered client, driven by hand so a test decides how its records reach the server.
struct Client {
    tls: ClientConnection,
    io: DuplexStream,
    /// Plaintext taken out of rustls while pumping, not yet returned by `receive`.
    pending: Vec<u8>,
}

impl Client {
    /// Encrypts `data` and returns the records, unsent.
    fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        self.tls.writer().write_all(data).unwrap();
        self.records()
    }

    /// Whatever the client has to send, unsent.
    fn records(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut wire).unwrap();
        }
        wire
    }

    async fn send(&mut self, wire: &[u8]) {
        self.io.write_all(wire).await.unwrap();
    }

    /// Reads from the server until `n` plaintext bytes arrived.
    async fn receive(&mut self, n: usize) -> Vec<u8> {
        let mut plain = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            plain.append(&mut self.pending);
            self.take_plain(&mut plain);
            if plain.len() >= n {
                return plain;
            }
            assert!(self.pump(&mut chunk).await, "end of stream");
        }
    }

    fn take_plain(&mut self, plain: &mut Vec<u8>) {
        let mut more = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut more) {
                Ok(0) => return,
                Ok(got) => plain.extend_from_slice(&more[..got]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// One read from the pipe, all of it into the client (its plaintext may pile up meanwhile:
    /// callers take it after); false at end of stream.
    async fn pump(&mut self, chunk: &mut [u8]) -> bool {
        let got = self.io.read(chunk).await.unwrap();
        let mut wire = &chunk[..got];
        let mut plain = Vec::new();
        while !wire.is_empty() {
            self.tls.read_tls(&mut wire).unwrap();
            self.tls.process_new_packets().unwrap();
            // rustls refuses more records while too much plaintext waits.
            self.take_plain(&mut plain);
        }
        self.pending.extend(plain);
        got > 0
    }
}

/// A finished handshake over a pipe of `pipe` bytes.
async fn connected(
    versions: &[&'static rustls::SupportedProtocolVersion],
    pipe: usize,
) -> (TlsStream<DuplexStream>, Client) {
    handshaken(configs(versions), pipe).await
}

async fn handshaken(
    (server_config, client_config): (Arc<ServerConfig>, Arc<rustls::ClientConfig>),
    pipe: usize,
) -> (TlsStream<DuplexStream>, Client) {
    let (server_io, client_io) = tokio::io::duplex(pipe);
    let accept = tokio::spawn(TlsStream::accept(server_io, server_config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Client {
        tls: ClientConnection::new(client_config, name).unwrap(),
        io: client_io,
        pending: Vec::new(),
    };
    client.tls.set_buffer_limit(None);
    tokio::time::timeout(BOUND, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let wire = client.records();
            client.send(&wire).await;
            if !client.tls.is_handshaking() {
                break;
            }
            assert!(client.pump(&mut chunk).await, "server closed mid-handshake");
        }
        let server = accept.await.unwrap().unwrap();
        (server, client)
    })
    .await
    .expect("handshake hung")
}

/// Polls one read once: `Some(bytes)` if it completed.
fn read_once(server: &mut TlsStream<DuplexStream>) -> Option<Vec<u8>> {
    let mut space = [0u8; 256];
    let mut buf = ReadBuf::new(&mut space);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(server).poll_read(&mut cx, &mut buf) {
        Poll::Ready(result) => {
            result.unwrap();
            Some(buf.filled().to_vec())
        }
        Poll::Pending => None,
    }
}

#[tokio::test]
async fn data_both_ways_over_tls13_and_tls12() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (mut server, mut client) = connected(versions, 64 * 1024).await;
        let wire = client.seal(b"CONNECT");
        client.send(&wire).await;
        let mut got = [0u8; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"CONNECT");
        server.write_all(b"CONNACK").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(client.receive(7).await, b"CONNACK");
    }
}

#[tokio::test]
async fn records_arriving_a_byte_at_a_time() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    // Three records, fed one byte per read.
    let mut wire = client.seal(b"one ");
    wire.extend(client.seal(b"two "));
    wire.extend(client.seal(b"three"));
    let expected = b"one two three";
    let mut got = Vec::new();
    for byte in wire {
        client.send(&[byte]).await;
        while let Some(plain) = read_once(&mut server) {
            assert!(!plain.is_empty(), "end of stream");
            got.extend(plain);
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_megabyte_each_way_through_small_reads_and_a_small_pipe() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 4096).await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    tokio::time::timeout(BOUND, async {
        let wire = client.seal(&data);
        let sender = async {
            client.io.write_all(&wire).await.unwrap();
        };
        let receiver = async {
            let mut got = vec![0u8; data.len()];
            let mut at = 0;
            while at < got.len() {
                let end = (at + 100).min(got.len());
                let n = server.read(&mut got[at..end]).await.unwrap();
                assert!(n > 0);
                at += n;
            }
            assert!(got == data, "the megabyte came back changed");
        };
        tokio::join!(sender, receiver);
        let writer = async {
            server.write_all(&data).await.unwrap();
            server.flush().await.unwrap();
        };
        let (_, echoed) = tokio::join!(writer, client.receive(data.len()));
        assert!(echoed == data, "the megabyte sent back changed");
    })
    .await
    .expect("transfer hung");
    // The output queue does not keep a megabyte's worth once written.
    assert!(server.out.capacity() <= 2 * MAX_WRITE);
}

#[tokio::test]
async fn parks_inside_a_record_and_resumes() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    let wire = client.seal(b"PINGREQ");
    client.send(&wire[..3]).await;
    assert_eq!(
        read_once(&mut server),
        None,
        "a partial record gives nothing"
    );

    let (io, session) = server.into_parts().expect("parks with a partial record");
    assert_eq!(session.incoming.len(), 3, "the partial record is kept");
    let mut server = TlsStream::from_parts(io, session);
    client.send(&wire[3..]).await;
    let mut got = [0u8; 7];
    tokio::time::timeout(BOUND, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"PINGREQ");

    // Idle: nothing pending, no buffer kept.
    let (io, session) = server.into_parts().expect("parks when idle");
    assert_eq!(session.incoming.capacity(), 0);
    let mut server = TlsStream::from_parts(io, session);
    server.write_all(b"PINGRESP").await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(client.receive(8).await, b"PINGRESP");
}

#[tokio::test]
async fn does_not_park_with_output_unwritten_or_plaintext_unread() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    server.write_all(b"unflushed").await.unwrap();
    let mut server = server.into_parts().expect_err("output pending");
    server.flush().await.unwrap();
    assert_eq!(client.receive(9).await, b"unflushed");

    let wire = client.seal(b"0123456789");
    client.send(&wire).await;
    let mut first = [0u8; 4];
    server.read_exact(&mut first).await.unwrap();
    let mut server = server.into_parts().expect_err("plaintext unread");
    let mut rest = [0u8; 6];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"456789");
    assert!(server.into_parts().is_ok());
}

#[tokio::test]
async fn a_client_key_update_is_followed_both_ways() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    client.tls.refresh_traffic_keys().unwrap();
    let wire = client.seal(b"after the update");
    client.send(&wire).await;
    let mut got = [0u8; 16];
    tokio::time::timeout(BOUND, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"after the update");
    server.write_all(b"answer").await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(client.receive(6).await, b"answer");
}

#[tokio::test]
async fn shutdown_sends_close_notify() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(client.receive(3).await, b"bye");
    let mut chunk = vec![0u8; 1024];
    tokio::time::timeout(BOUND, async { while client.pump(&mut chunk).await {} })
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Ok(0) only after close_notify (rustls reports UnexpectedEof otherwise).
    assert_eq!(client.tls.reader().read_to_end(&mut rest).unwrap(), 0);
}

#[tokio::test]
async fn close_notify_from_the_client_reads_as_end_of_stream() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    client.tls.send_close_notify();
    let wire = client.records();
    client.send(&wire).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(BOUND, server.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        server.into_parts().is_err(),
        "a closing stream does not park"
    );
}

#[tokio::test]
async fn garbage_after_the_handshake_is_an_error_and_an_alert() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    // An application-data record that does not decrypt.
    client.send(&[0x17, 0x03, 0x03, 0x00, 0x20]).await;
    client.send(&[0xAB; 0x20]).await;
    let err = tokio::time::timeout(BOUND, server.read(&mut [0u8; 16]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    drop(server);
    let mut wire = Vec::new();
    client.io.read_to_end(&mut wire).await.unwrap();
    // An encrypted alert record (content type application data in TLS 1.3).
    assert_eq!(wire.first(), Some(&0x17), "{wire:02x?}");
}

#[tokio::test]
async fn end_of_stream_inside_a_record_is_an_error() {
    let (mut server, mut client) = connected(&[&rustls::version::TLS13], 64 * 1024).await;
    let wire = client.seal(b"half");
    client.send(&wire[..wire.len() - 2]).await;
    drop(client);
    let err = tokio::time::timeout(BOUND, server.read(&mut [0u8; 16]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_handshake_that_is_not_tls_fails_with_an_alert() {
    let (server_config, _) = configs(&[&rustls::version::TLS13]);
    let (server_io, mut client_io) = tokio::io::duplex(4096);
    let accept = tokio::spawn(TlsStream::accept(server_io, server_config));
    client_io
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let result = tokio::time::timeout(BOUND, accept).await.unwrap().unwrap();
    assert!(result.is_err());
    let mut reply = Vec::new();
    client_io.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply.first(), Some(&0x15), "an alert record: {reply:02x?}");
}

#[tokio::test]
async fn a_client_that_sends_and_closes_at_once_is_still_read() {
    let (server_config, client_config) = configs(&[&rustls::version::TLS13]);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(TlsStream::accept(server_io, server_config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Client {
        tls: ClientConnection::new(client_config, name).unwrap(),
        io: client_io,
        pending: Vec::new(),
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let hello = client.records();
    client.send(&hello).await;
    while client.tls.is_handshaking() {
        assert!(client.pump(&mut chunk).await);
    }
    // Finished, CONNECT and DISCONNECT in one go, then gone: the server's session ticket finds
    // no reader.
    let wire = client.seal(b"CONNECT..DISCONNECT");
    client.send(&wire).await;
    drop(client);
    let mut server = tokio::time::timeout(BOUND, accept)
        .await
        .unwrap()
        .unwrap()
        .expect("the handshake completed");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, server.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"CONNECT..DISCONNECT");
}

/// Every suite the broker serves, each way, against rustls' own record protection; parked and
/// resumed between (the expanded keys are rebuilt), and for TLS 1.3 across a key update.
#[tokio::test]
async fn every_suite_interoperates_and_survives_parking() {
    let suites = aws_lc_rs::default_provider().cipher_suites;
    assert_eq!(suites.len(), 9);
    for suite in suites {
        let version = suite.version();
        let mut client_provider = aws_lc_rs::default_provider();
        client_provider.cipher_suites = vec![suite];
        // TLS 1.2's ECDHE_RSA suites need an RSA certificate.
        let rsa = format!("{:?}", suite.suite()).contains("_RSA_");
        let (mut server, mut client) =
            handshaken(configs_with(&[version], client_provider, rsa), 64 * 1024).await;
        assert_eq!(
            client.tls.negotiated_cipher_suite().unwrap().suite(),
            suite.suite()
        );
        let what = format!("{:?}", suite.suite());
        for round in 0..3 {
            if round == 2 && version == &rustls::version::TLS13 {
                client.tls.refresh_traffic_keys().unwrap();
            }
            let message = format!("{what} round {round}");
            let wire = client.seal(message.as_bytes());
            client.send(&wire).await;
            let mut got = vec![0u8; message.len()];
            tokio::time::timeout(BOUND, server.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, message.as_bytes(), "{what}");
            server.write_all(message.as_bytes()).await.unwrap();
            server.flush().await.unwrap();
            assert_eq!(
                client.receive(message.len()).await,
                message.as_bytes(),
                "{what}"
            );
            let (io, session) = server.into_parts().expect("idle, parks");
            server = TlsStream::from_parts(io, session);
        }
    }
}
