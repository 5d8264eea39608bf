//! MQTT 5.0 enhanced authentication with SCRAM-SHA-256, end to end over raw packets: the exchange,
//! its failure codes, unknown users looking like wrong passwords, protocol errors mid-exchange,
//! password logins on the same file, and `mqtt-passwd add --scram`.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::{FAST_ARGON2, RawClient, TestBroker, config, connect_v5, login_packet, try_login};
use hmac::{Hmac, KeyInit, Mac};
use mqttd::auth::credentials::{ScramCredentials, hash_argon2id};
use mqttd::auth::passwd::{PasswdError, PasswordFile};
use mqttd::config::Config;
use mqttd::protocol::reason::{v3, v5};
use mqttd::protocol::{Auth, AuthReason, ConnAck, Packet, Properties, ProtocolVersion};
use sha2::{Digest, Sha256};

const METHOD: &str = "SCRAM-SHA-256";
const ALICE_PW: &[u8] = b"alice-password";
const DAVE_PW: &[u8] = b"dave-password";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The client side of SCRAM-SHA-256 (RFC 5802), written independently of the broker's.
struct ScramClient {
    user: String,
    password: Vec<u8>,
    nonce: String,
    server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    fn new(user: &str, password: &[u8]) -> ScramClient {
        ScramClient {
            user: user.into(),
            password: password.into(),
            nonce: STANDARD.encode(rand::random::<[u8; 18]>()),
            server_signature: None,
        }
    }

    fn bare(&self) -> String {
        let user = self.user.replace('=', "=3D").replace(',', "=2C");
        format!("n={user},r={}", self.nonce)
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare()).into_bytes()
    }

    /// client-final for this server-first; remembers the expected server signature.
    fn client_final(&mut self, server_first: &[u8]) -> Vec<u8> {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = Some(v.to_owned()),
                ("s=", v) => salt = Some(STANDARD.decode(v).unwrap()),
                ("i=", v) => iterations = Some(v.parse::<u32>().unwrap()),
                _ => panic!("unexpected attribute in {server_first}"),
            }
        }
        let nonce = nonce.unwrap();
        assert!(nonce.starts_with(&self.nonce), "server nonce extends ours");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            &self.password,
            &salt.unwrap(),
            iterations.unwrap(),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare());
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes()
    }

    fn verify_server_final(&self, data: &[u8]) {
        let expected = format!("v={}", STANDARD.encode(self.server_signature.unwrap()));
        assert_eq!(std::str::from_utf8(data).unwrap(), expected);
    }
}

fn auth_props(method: &str, data: Option<Vec<u8>>) -> Properties {
    Properties {
        authentication_method: Some(method.into()),
        authentication_data: data.map(Bytes::from),
        ..Properties::default()
    }
}

fn auth_packet(reason: u8, props: Properties) -> Packet {
    Packet::Auth(Auth {
        reason: AuthReason::try_from(reason).expect("an AUTH reason code"),
        properties: Some(Box::new(props)),
    })
}

/// alice and dave (password and SCRAM credentials) and bob (password only).
fn users(dir: &Path) -> PathBuf {
    let path = dir.join("passwd");
    PasswordFile::update::<_, PasswdError>(&path, true, |f| {
        for (user, pw) in [("alice", ALICE_PW), ("dave", DAVE_PW)] {
            let scram = ScramCredentials::generate(pw, 4096)?;
            f.set_with_scram(user, hash_argon2id(pw, FAST_ARGON2)?, Some(scram))?;
        }
        f.set("bob", hash_argon2id(b"bob-password", FAST_ARGON2)?)?;
        Ok(((), true))
    })
    .unwrap();
    path
}

fn secured(password_file: PathBuf) -> Config {
    let mut c = config();
    c.auth.password_file = Some(password_file);
    c.auth.allow_anonymous = Some(false);
    c
}

/// Sends CONNECT with client-first; returns the client and the server-first data.
async fn start_scram(addr: std::net::SocketAddr, scram: &ScramClient) -> (RawClient, Vec<u8>) {
    let mut c = RawClient::connect(addr).await;
    c.version = ProtocolVersion::V5;
    let connect = connect_v5("scram", auth_props(METHOD, Some(scram.client_first())));
    c.send(&Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(u8::from(a.reason), v5::CONTINUE_AUTHENTICATION);
            let p = a.properties.unwrap();
            assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
            (c, p.authentication_data.unwrap().to_vec())
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// The full exchange; the final CONNACK.
async fn scram_login(addr: std::net::SocketAddr, user: &str, pw: &[u8]) -> (RawClient, ConnAck) {
    let mut scram = ScramClient::new(user, pw);
    let (mut c, server_first) = start_scram(addr, &scram).await;
    let client_final = scram.client_final(&server_first);
    let props = auth_props(METHOD, Some(client_final));
    c.send(&auth_packet(v5::CONTINUE_AUTHENTICATION, props))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            if u8::from(ack.code) == v5::SUCCESS {
                let p = ack.properties.as_deref().unwrap();
                assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
                scram.verify_server_final(p.authentication_data.as_deref().unwrap());
            }
            (c, ack)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn scram_login_succeeds_and_the_server_proves_itself() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, ack) = scram_login(broker.addr, "alice", ALICE_PW).await;
    assert_eq!(u8::from(ack.code), v5::SUCCESS);
    c.ping().await;
    // The password login still works on the same file.
    let (_, code) = try_login(
        broker.addr,
        login_packet("pw", Some("alice"), Some(ALICE_PW)),
    )
    .await;
    assert_eq!(code, v3::ACCEPTED);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_no_scram_credentials_fail_alike() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    for (user, pw) in [
        ("alice", &b"wrong"[..]),
        ("mallory", ALICE_PW),
        // bob has a password but no SCRAM credentials.
        ("bob", b"bob-password"),
    ] {
        let (mut c, ack) = scram_login(broker.addr, user, pw).await;
        assert_eq!(u8::from(ack.code), v5::NOT_AUTHORIZED, "{user}");
        c.expect_closed().await;
    }
    // An unknown user is shown a stable salt and the usual iteration count.
    let salt_of = |first: &[u8]| {
        let s = std::str::from_utf8(first).unwrap().to_owned();
        s.split_once(",s=").unwrap().1.to_owned()
    };
    let (_, first_a) = start_scram(broker.addr, &ScramClient::new("mallory", b"x")).await;
    let (_, first_b) = start_scram(broker.addr, &ScramClient::new("mallory", b"y")).await;
    assert_eq!(salt_of(&first_a), salt_of(&first_b));
    assert!(salt_of(&first_a).ends_with(",i=4096"));
    broker.stop().await;
}

#[tokio::test]
async fn unknown_method_gets_0x8c() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let connect = connect_v5("c", auth_props("SCRAM-SHA-1", Some(b"n,,n=a,r=b".to_vec())));
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert_eq!(u8::from(ack.code), v5::BAD_AUTHENTICATION_METHOD);
    c.expect_closed().await;
    broker.stop().await;
}

#[tokio::test]
async fn no_password_file_offers_no_method() {
    let broker = TestBroker::start().await;
    let connect = connect_v5("c", auth_props(METHOD, Some(b"n,,n=a,r=b".to_vec())));
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert_eq!(u8::from(ack.code), v5::BAD_AUTHENTICATION_METHOD);
    c.expect_closed().await;
    broker.stop().await;
}

#[tokio::test]
async fn protocol_errors_during_the_exchange_get_connack_0x82() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let cases = [
        // Another method in the AUTH.
        auth_packet(
            v5::CONTINUE_AUTHENTICATION,
            auth_props("PLAIN", Some(b"x".to_vec())),
        ),
        // Re-authenticate before the CONNACK.
        auth_packet(v5::REAUTHENTICATE, auth_props(METHOD, Some(b"x".to_vec()))),
        Packet::PingReq,
    ];
    for packet in cases {
        let scram = ScramClient::new("alice", ALICE_PW);
        let (mut c, _) = start_scram(broker.addr, &scram).await;
        c.send(&packet).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(u8::from(ack.code), v5::PROTOCOL_ERROR, "{packet:?}")
            }
            other => panic!("expected CONNACK 0x82 for {packet:?}, got {other:?}"),
        }
        c.expect_closed().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn malformed_client_first_fails_with_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    for data in [
        None,
        Some(b"p=tls-unique,,n=alice,r=abc".to_vec()),
        Some(b"junk".to_vec()),
    ] {
        let connect = connect_v5("c", auth_props(METHOD, data.clone()));
        let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
        assert_eq!(u8::from(ack.code), v5::NOT_AUTHORIZED, "{data:?}");
        c.expect_closed().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn passwd_tool_add_scram_writes_usable_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let file = path.to_str().unwrap();
    let out = common::run_tool(
        env!("CARGO_BIN_EXE_mqtt-passwd"),
        &[
            "--file",
            file,
            "--m-cost",
            "64",
            "--t-cost",
            "1",
            "add",
            "carol",
            "--scram",
            "--password-stdin",
        ],
        Some("carol-pw\n"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let pf = PasswordFile::load(&path).unwrap();
    let entry = pf.get("carol").unwrap();
    let scram = entry.scram.as_ref().expect("SCRAM credentials written");
    assert_eq!(scram.iterations(), 4096);
    assert!(scram.matches(b"carol-pw"));
    assert!(entry.verify(b"carol-pw"));
    let broker = TestBroker::start_with(secured(path.clone())).await;
    let (_, ack) = scram_login(broker.addr, "carol", b"carol-pw").await;
    assert_eq!(u8::from(ack.code), v5::SUCCESS);
    broker.stop().await;
    // Changing the password without --scram drops the stale SCRAM credentials.
    let out = common::run_tool(
        env!("CARGO_BIN_EXE_mqtt-passwd"),
        &[
            "--file",
            file,
            "--m-cost",
            "64",
            "--t-cost",
            "1",
            "add",
            "carol",
            "--password-stdin",
        ],
        Some("new-pw\n"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        PasswordFile::load(&path)
            .unwrap()
            .get("carol")
            .unwrap()
            .scram
            .is_none()
    );
}

/// One re-authentication round on a connected client: AUTH 0x19 with client-first, then the
/// client-final; returns what the broker answered to the client-final.
async fn reauthenticate(c: &mut RawClient, scram: &mut ScramClient) -> Option<Packet> {
    let props = auth_props(METHOD, Some(scram.client_first()));
    c.send(&auth_packet(v5::REAUTHENTICATE, props)).await;
    let server_first = match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(u8::from(a.reason), v5::CONTINUE_AUTHENTICATION);
            a.properties.unwrap().authentication_data.unwrap().to_vec()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let client_final = scram.client_final(&server_first);
    let props = auth_props(METHOD, Some(client_final));
    c.send(&auth_packet(v5::CONTINUE_AUTHENTICATION, props))
        .await;
    c.recv().await
}

#[tokio::test]
async fn reauthentication_succeeds_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, ack) = scram_login(broker.addr, "alice", ALICE_PW).await;
    assert_eq!(u8::from(ack.code), v5::SUCCESS);
    let mut scram = ScramClient::new("alice", ALICE_PW);
    match reauthenticate(&mut c, &mut scram).await {
        Some(Packet::Auth(a)) => {
            assert_eq!(u8::from(a.reason), v5::SUCCESS);
            let p = a.properties.unwrap();
            assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
            scram.verify_server_final(&p.authentication_data.unwrap());
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    c.ping().await;
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn failed_reauthentication_disconnects_with_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, _) = scram_login(broker.addr, "alice", ALICE_PW).await;
    let mut scram = ScramClient::new("alice", b"wrong");
    match reauthenticate(&mut c, &mut scram).await {
        Some(Packet::Disconnect(d)) => assert_eq!(u8::from(d.reason), v5::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    c.expect_closed().await;
    // Proving another user's identity is no better.
    let (mut c, _) = scram_login(broker.addr, "alice", ALICE_PW).await;
    let mut scram = ScramClient::new("dave", DAVE_PW);
    match reauthenticate(&mut c, &mut scram).await {
        Some(Packet::Disconnect(d)) => assert_eq!(u8::from(d.reason), v5::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    c.expect_closed().await;
    broker.stop().await;
}

#[tokio::test]
async fn auth_after_a_password_login_or_with_another_method_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    // A password login cannot re-authenticate.
    let connect = mqttd::protocol::Connect {
        username: Some("alice".into()),
        password: Some(mqttd::protocol::Password::new(ALICE_PW.to_vec())),
        ..connect_v5("pw", Properties::default())
    };
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, connect).await;
    assert_eq!(u8::from(ack.code), v5::SUCCESS);
    c.send(&auth_packet(v5::REAUTHENTICATE, auth_props(METHOD, None)))
        .await;
    assert_eq!(
        u8::from(c.expect_disconnect().await.reason),
        v5::PROTOCOL_ERROR
    );
    // A SCRAM login re-authenticating with another method.
    let (mut c, _) = scram_login(broker.addr, "alice", ALICE_PW).await;
    c.send(&auth_packet(v5::REAUTHENTICATE, auth_props("PLAIN", None)))
        .await;
    assert_eq!(
        u8::from(c.expect_disconnect().await.reason),
        v5::PROTOCOL_ERROR
    );
    // Continue without a re-authentication in progress.
    let (mut c, _) = scram_login(broker.addr, "alice", ALICE_PW).await;
    c.send(&auth_packet(
        v5::CONTINUE_AUTHENTICATION,
        auth_props(METHOD, None),
    ))
    .await;
    assert_eq!(
        u8::from(c.expect_disconnect().await.reason),
        v5::PROTOCOL_ERROR
    );
    broker.stop().await;
}

/// SCRAM failures count towards the password back-off, and its verdicts go through the same
/// rules: after `max_failures` failures alice's username is refused at the verdict (0x87) even with
/// the right proof, while dave, from the same address, gets in once the address's next turn comes
/// (1 s later): the address is slowed, never locked.
#[tokio::test]
async fn scram_failures_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = secured(users(dir.path()));
    config.auth.max_failures = 2;
    let broker = TestBroker::start_with(config).await;
    for _ in 0..2 {
        let (_, ack) = scram_login(broker.addr, "alice", b"wrong").await;
        assert_eq!(u8::from(ack.code), v5::NOT_AUTHORIZED);
    }
    let slowed = std::time::Instant::now();
    let (mut c, ack) = scram_login(broker.addr, "alice", ALICE_PW).await;
    assert_eq!(
        u8::from(ack.code),
        v5::NOT_AUTHORIZED,
        "alice's username backs off"
    );
    c.expect_closed().await;
    let (_dave, ack) = scram_login(broker.addr, "dave", DAVE_PW).await;
    assert_eq!(
        u8::from(ack.code),
        v5::SUCCESS,
        "the address is slowed, not locked"
    );
    let waited = slowed.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "dave's verdict waited for the address's next turn: {waited:?}"
    );
    broker.stop().await;
}
