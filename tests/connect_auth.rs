//! CONNECT authentication end to end: CONNACK codes (3.1.1 and 5.0), per-listener anonymous access,
//! binary passwords, timing of unknown users, the credential cache, and passwords kept out of the
//! logs. The back-off rules are tested in `lockout.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{
    BrokerProcess, FAST_ARGON2, RawClient, TestBroker, config, listener, login_packet,
    set_passwords, try_login,
};
use mqttd::auth::credentials::Argon2Params;
use mqttd::config::Config;
use mqttd::protocol::ProtocolVersion;
use mqttd::protocol::reason::{v3, v5};

const ALICE_PW: &[u8] = b"alice-password";
const BOB_PW: &[u8] = b"bob-password";

/// A password file with alice and bob (cheap hashes) in `dir`.
fn users(dir: &Path) -> PathBuf {
    let path = dir.join("passwd");
    set_passwords(&path, &[("alice", ALICE_PW), ("bob", BOB_PW)], FAST_ARGON2);
    path
}

/// One plain listener, the password file, anonymous off.
fn secured(password_file: PathBuf) -> Config {
    let mut c = config();
    c.auth.password_file = Some(password_file);
    c.auth.allow_anonymous = Some(false);
    c
}

/// CONNECT with these credentials on a fresh connection; the CONNACK code.
async fn login_code(addr: std::net::SocketAddr, user: Option<&str>, password: Option<&[u8]>) -> u8 {
    try_login(addr, login_packet("c", user, password)).await.1
}

#[tokio::test]
async fn good_credentials_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, code) = try_login(
        broker.addr,
        login_packet("a", Some("alice"), Some(ALICE_PW)),
    )
    .await;
    assert_eq!(code, v3::ACCEPTED);
    c.ping().await;
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn bad_credentials_get_0x04_then_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    for (user, password) in [
        ("alice", &b"wrong"[..]),
        ("mallory", ALICE_PW),
        // Right user, another user's password.
        ("alice", BOB_PW),
    ] {
        let (mut c, code) =
            try_login(broker.addr, login_packet("c", Some(user), Some(password))).await;
        assert_eq!(code, v3::BAD_USERNAME_OR_PASSWORD, "{user}");
        c.expect_closed().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn no_credentials_get_0x05() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, code) = try_login(broker.addr, login_packet("c", None, None)).await;
    assert_eq!(code, v3::NOT_AUTHORIZED);
    c.expect_closed().await;
    broker.stop().await;
}

/// "No password means any password" must not hold: a username alone is bad credentials, and so is
/// an empty password.
#[tokio::test]
async fn a_username_without_a_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let (mut c, code) = try_login(broker.addr, login_packet("c", Some("alice"), None)).await;
    assert_eq!(code, v3::BAD_USERNAME_OR_PASSWORD);
    c.expect_closed().await;
    assert_eq!(
        login_code(broker.addr, Some("alice"), Some(b"")).await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    broker.stop().await;
}

#[tokio::test]
async fn mqtt5_refusals_use_5_0_reason_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let v5_login = |user: Option<&'static str>, password: Option<&'static [u8]>| {
        let mut p = login_packet("v5", user, password);
        p.protocol = ProtocolVersion::V5;
        p
    };
    for (user, password, want) in [
        (
            Some("alice"),
            Some(&b"wrong"[..]),
            v5::BAD_USERNAME_OR_PASSWORD,
        ),
        (
            Some("nobody"),
            Some(&b"x"[..]),
            v5::BAD_USERNAME_OR_PASSWORD,
        ),
        (None, None, v5::NOT_AUTHORIZED),
        (Some("alice"), Some(ALICE_PW), v5::SUCCESS),
    ] {
        let mut c = RawClient::connect(broker.addr).await;
        c.version = ProtocolVersion::V5;
        assert_eq!(c.login(v5_login(user, password)).await, want, "{user:?}");
        if want != v5::SUCCESS {
            c.expect_closed().await;
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_listener_can_allow_anonymous_while_another_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = secured(users(dir.path()));
    let mut open = listener("open");
    open.allow_anonymous = Some(true);
    c.listeners.push(open);
    let broker = TestBroker::start_with(c).await;
    assert_eq!(
        login_code(broker.addr_of("plain"), None, None).await,
        v3::NOT_AUTHORIZED
    );
    let (mut anon, code_open) =
        try_login(broker.addr_of("open"), login_packet("anon", None, None)).await;
    assert_eq!(code_open, v3::ACCEPTED);
    anon.ping().await;
    // Anonymous access does not make credentials optional: a wrong password is still refused there.
    assert_eq!(
        login_code(broker.addr_of("open"), Some("alice"), Some(b"wrong")).await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    assert_eq!(
        login_code(broker.addr_of("open"), Some("alice"), Some(ALICE_PW)).await,
        v3::ACCEPTED
    );
    broker.stop().await;
}

#[tokio::test]
async fn binary_passwords_work_when_hashed_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    // Not UTF-8, with a NUL and a high byte: MQTT passwords are binary data.
    let binary: &[u8] = &[0xff, 0x00, 0xfe, b'x', 0x80, 0x00];
    set_passwords(&path, &[("blob", binary)], FAST_ARGON2);
    let broker = TestBroker::start_with(secured(path)).await;
    assert_eq!(
        login_code(broker.addr, Some("blob"), Some(binary)).await,
        v3::ACCEPTED
    );
    // Not truncated at the NUL, not lossily decoded.
    let lossy = String::from_utf8_lossy(binary).into_owned();
    for wrong in [&binary[..1], &binary[..5], lossy.as_bytes()] {
        assert_eq!(
            login_code(broker.addr, Some("blob"), Some(wrong)).await,
            v3::BAD_USERNAME_OR_PASSWORD,
            "{wrong:?}"
        );
    }
    broker.stop().await;
}

/// An unknown user is verified against a dummy hash of the same cost, so it is not measurably
/// faster than a known user's wrong password (within a factor of 3, fastest of 5 each: other load
/// only ever adds time, so the fastest run is the work itself).
#[tokio::test]
async fn unknown_users_cost_the_same_as_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    set_passwords(&path, &[("alice", ALICE_PW)], Argon2Params::default());
    let mut c = secured(path);
    // Ten failures from one address would otherwise trip the back-off and end the measurement.
    c.auth.max_failures = 1000;
    let broker = TestBroker::start_with(c).await;
    // Another wrong password each time: a repeat would be answered from memory, without a hash.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let time_it = async |user: &str| {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wrong = format!("wrong-{n}");
        let start = Instant::now();
        assert_eq!(
            login_code(broker.addr, Some(user), Some(wrong.as_bytes())).await,
            v3::BAD_USERNAME_OR_PASSWORD
        );
        start.elapsed()
    };
    // Warm up both paths (connection set-up, first use of the pool).
    time_it("alice").await;
    time_it("nobody").await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..5 {
        known.push(time_it("alice").await);
        unknown.push(time_it(&format!("nobody{i}")).await);
    }
    let k = *known.iter().min().unwrap();
    let u = *unknown.iter().min().unwrap();
    assert!(
        u * 3 >= k && k * 3 >= u,
        "fastest known-user {k:?} vs unknown-user {u:?} (all: {known:?} / {unknown:?})"
    );
    // Both really hashed: one verification per attempt.
    assert_eq!(broker.reloader.current_auth().verifications(), 12);
    broker.stop().await;
}

/// After one verified login the same credentials are remembered: nine more logins run no hash.
/// A different (wrong) password is not served from the cache.
#[tokio::test]
async fn repeated_logins_are_served_from_the_credential_cache() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(users(dir.path()))).await;
    let auth = broker.reloader.current_auth();
    assert_eq!(auth.verifications(), 0);
    for i in 0..10 {
        let (c, code) = try_login(
            broker.addr,
            login_packet(&format!("c{i}"), Some("alice"), Some(ALICE_PW)),
        )
        .await;
        assert_eq!(code, v3::ACCEPTED, "login {i}");
        assert_eq!(auth.verifications(), 1, "after login {i}");
        c.disconnect().await;
    }
    assert_eq!(
        login_code(broker.addr, Some("alice"), Some(b"wrong")).await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    assert_eq!(auth.verifications(), 2);
    broker.stop().await;
}

/// Runs the real binary with debug logging and checks that neither a wrong nor a right password
/// appears anywhere in what it prints.
#[tokio::test]
async fn passwords_never_appear_in_the_logs() {
    const RIGHT: &str = "Right-Pa55word-plugh-7d1e";
    const WRONG: &str = "Wrong-Pa55word-xyzzy-93ab";
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(&passwd, &[("alice", RIGHT.as_bytes())], FAST_ARGON2);
    let config_path = dir.path().join("mqttd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n\n\
             [auth]\npassword_file = {:?}\nallow_anonymous = false\n\n\
             [sys]\ninterval = 0\n\n[log]\nlevel = \"debug\"\n",
            passwd.display().to_string()
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&config_path).await;
    let (ok, code_ok) = try_login(
        broker.addr,
        login_packet("ok", Some("alice"), Some(RIGHT.as_bytes())),
    )
    .await;
    assert_eq!(code_ok, v3::ACCEPTED);
    for user in ["alice", "nobody"] {
        assert_eq!(
            login_code(broker.addr, Some(user), Some(WRONG.as_bytes())).await,
            v3::BAD_USERNAME_OR_PASSWORD
        );
    }
    // v5 too, whose CONNECT has properties and a different layout.
    let mut v5 = login_packet("v5", Some("alice"), Some(WRONG.as_bytes()));
    v5.protocol = ProtocolVersion::V5;
    assert_eq!(
        RawClient::connect(broker.addr).await.login(v5).await,
        v5::BAD_USERNAME_OR_PASSWORD
    );
    ok.disconnect().await;
    // A connection closed before CONNECT is logged at debug level: proof the level is in force.
    drop(RawClient::connect(broker.addr).await);
    broker.wait_for_line("closed before CONNECT").await;
    // The refusals and the re-hash of alice's cheap hash are logged: the log is really being read.
    broker
        .wait_for_line("refused: bad username or password")
        .await;
    broker.wait_for_line("re-hashed password to argon2id").await;
    let output = broker.stop().await;
    assert!(output.contains("DEBUG"), "debug logging is on: {output}");
    for secret in [RIGHT, WRONG] {
        assert!(!output.contains(secret), "{secret} leaked into:\n{output}");
    }
}
