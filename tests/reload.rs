//! Reload (SIGHUP) semantics: new users get in, deleted users are disconnected and kept out, and a
//! broken password file or ACL is reported (file and line) while the previous one stays in force.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{
    BrokerProcess, FAST_ARGON2, RawClient, TestBroker, config, login_packet, run_tool,
    set_passwords, try_login,
};
use mqttd::auth::passwd::{PasswdError, PasswordFile};
use mqttd::config::Config;
use mqttd::protocol::QoS;
use mqttd::protocol::reason::v3;

struct Files {
    dir: tempfile::TempDir,
    passwd: PathBuf,
    acl: PathBuf,
}

/// alice and bob (password = name), and an ACL letting each use `<name>/#`.
fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(
        &passwd,
        &[("alice", b"alice"), ("bob", b"bob")],
        FAST_ARGON2,
    );
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "pattern readwrite %u/#\n").unwrap();
    Files { dir, passwd, acl }
}

fn secured(f: &Files) -> Config {
    let mut c = config();
    c.auth.password_file = Some(f.passwd.clone());
    c.auth.acl_file = Some(f.acl.clone());
    c.auth.allow_anonymous = Some(false);
    c
}

async fn login_code(addr: SocketAddr, user: &str, password: &str) -> u8 {
    try_login(
        addr,
        login_packet(
            &format!("{user}-client"),
            Some(user),
            Some(password.as_bytes()),
        ),
    )
    .await
    .1
}

async fn logged_in(addr: SocketAddr, user: &str, client_id: &str) -> RawClient {
    let (c, code) = try_login(
        addr,
        login_packet(client_id, Some(user), Some(user.as_bytes())),
    )
    .await;
    assert_eq!(code, v3::ACCEPTED, "{user} logs in");
    c
}

fn delete_user(path: &Path, user: &str) {
    let removed = PasswordFile::update::<_, PasswdError>(path, false, |f| {
        let removed = f.remove(user);
        Ok((removed, removed))
    })
    .unwrap();
    assert!(removed);
}

#[tokio::test]
async fn an_added_user_can_log_in_after_reload() {
    let f = files();
    let broker = TestBroker::start_with(secured(&f)).await;
    assert_eq!(
        login_code(broker.addr, "carol", "carol").await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    set_passwords(&f.passwd, &[("carol", b"carol")], FAST_ARGON2);
    // Not before the reload.
    assert_eq!(
        login_code(broker.addr, "carol", "carol").await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    broker.reloader.reload().expect("reload succeeds");
    assert_eq!(
        login_code(broker.addr, "carol", "carol").await,
        v3::ACCEPTED
    );
    assert_eq!(
        login_code(broker.addr, "alice", "alice").await,
        v3::ACCEPTED
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_deleted_user_is_disconnected_and_kept_out() {
    let f = files();
    let broker = TestBroker::start_with(secured(&f)).await;
    let mut alice = logged_in(broker.addr, "alice", "alice").await;
    let mut bob = logged_in(broker.addr, "bob", "bob").await;
    delete_user(&f.passwd, "alice");
    broker.reloader.reload().expect("reload succeeds");
    alice.expect_closed().await;
    bob.ping().await;
    // Her cached credentials went with the old state.
    assert_eq!(
        login_code(broker.addr, "alice", "alice").await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_broken_password_file_is_reported_and_the_old_one_kept() {
    let f = files();
    let broker = TestBroker::start_with(secured(&f)).await;
    let mut alice = logged_in(broker.addr, "alice", "alice").await;
    // carol is added, then line 4 is garbage: none of the new file may apply.
    set_passwords(&f.passwd, &[("carol", b"carol")], FAST_ARGON2);
    let mut text = std::fs::read_to_string(&f.passwd).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    text.push_str("this line is not a user\n");
    std::fs::write(&f.passwd, text).unwrap();

    let err = broker.reloader.reload().expect_err("reload fails");
    let at = format!("{}:4", f.passwd.display());
    assert!(err.contains(&at), "error names file and line ({at}): {err}");
    // Old users still get in (bob had never logged in, so this is a real verification)...
    assert_eq!(login_code(broker.addr, "bob", "bob").await, v3::ACCEPTED);
    alice.ping().await;
    // ...and the half-written change does not apply.
    assert_eq!(
        login_code(broker.addr, "carol", "carol").await,
        v3::BAD_USERNAME_OR_PASSWORD
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_broken_acl_is_reported_and_the_old_one_kept() {
    let f = files();
    let broker = TestBroker::start_with(secured(&f)).await;
    let mut alice = logged_in(broker.addr, "alice", "alice").await;
    assert_eq!(
        alice.subscribe("alice/#", QoS::AtMostOnce, 1).await,
        vec![0]
    );
    assert_eq!(
        alice.subscribe("shared/#", QoS::AtMostOnce, 2).await,
        vec![v3::SUBACK_FAILURE]
    );
    // Would open shared/# to everyone, but line 3 is broken.
    std::fs::write(
        &f.acl,
        "pattern readwrite %u/#\npattern readwrite shared/#\nbogus directive\n",
    )
    .unwrap();
    let err = broker.reloader.reload().expect_err("reload fails");
    let at = format!("{}:3", f.acl.display());
    assert!(err.contains(&at), "error names file and line ({at}): {err}");
    // The old ACL still governs the open connection and new ones.
    assert_eq!(
        alice.subscribe("shared/#", QoS::AtMostOnce, 3).await,
        vec![v3::SUBACK_FAILURE]
    );
    let mut bob = logged_in(broker.addr, "bob", "bob").await;
    assert_eq!(bob.subscribe("bob/#", QoS::AtMostOnce, 1).await, vec![0]);
    assert_eq!(
        bob.subscribe("shared/#", QoS::AtMostOnce, 2).await,
        vec![v3::SUBACK_FAILURE]
    );
    // Fixed, it applies on the next reload, to open connections too.
    std::fs::write(
        &f.acl,
        "pattern readwrite %u/#\npattern readwrite shared/#\n",
    )
    .unwrap();
    broker.reloader.reload().expect("reload succeeds");
    assert_eq!(
        alice.subscribe("shared/#", QoS::AtMostOnce, 4).await,
        vec![0]
    );
    broker.stop().await;
}

/// The real thing: `mqttd --config`, `mqtt-passwd add`, `kill -HUP`, `mosquitto_pub`.
#[tokio::test]
async fn sighup_reloads_the_password_file_of_the_running_binary() {
    let f = files();
    let config_path = f.dir.path().join("mqttd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n\n\
             [auth]\npassword_file = {:?}\nallow_anonymous = false\n\n[sys]\ninterval = 0\n",
            f.passwd.display().to_string()
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&config_path).await;
    let port = broker.addr.port().to_string();
    let pub_as = async |user: &str, password: &str| {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            user,
            "-P",
            password,
            "-i",
            "reload-test",
            "-t",
            "t",
            "-m",
            "hello",
            "-q",
            "1",
        ];
        run_tool("mosquitto_pub", &args, None).await
    };
    let before = pub_as("carol", "carol-secret").await;
    assert!(!before.status.success(), "carol is not a user yet");

    let passwd = f.passwd.to_str().unwrap();
    let out = run_tool(
        env!("CARGO_BIN_EXE_mqtt-passwd"),
        &[
            "--file",
            passwd,
            "--m-cost",
            "1024",
            "--t-cost",
            "1",
            "--p-cost",
            "1",
            "add",
            "carol",
            "--password-stdin",
        ],
        Some("carol-secret\n"),
    )
    .await;
    assert!(out.status.success(), "mqtt-passwd add: {out:?}");
    let out = pub_as("carol", "carol-secret").await;
    assert!(!out.status.success(), "not before the SIGHUP");

    broker.signal(libc::SIGHUP);
    broker.wait_for_line("reloaded authentication").await;
    let out = pub_as("carol", "carol-secret").await;
    assert!(out.status.success(), "mosquitto_pub as carol: {out:?}");
    let out = pub_as("carol", "wrong").await;
    assert!(!out.status.success());
    let log = broker.stop().await;
    assert!(!log.contains("carol-secret"), "{log}");
}
