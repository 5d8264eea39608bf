//! Migrating from Mosquitto: a file made by the real `mosquitto_passwd` is imported with
//! `mqtt-passwd import`, its users log in with `mosquitto_pub`, and each successful login upgrades
//! the entry to argon2id on disk.

mod common;

use common::{BrokerProcess, eventually, run_tool};

#[tokio::test]
async fn mosquitto_users_log_in_and_are_rehashed_to_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("mosquitto.passwd");
    let ours = dir.path().join("passwd");
    let (theirs_s, ours_s) = (theirs.to_str().unwrap(), ours.to_str().unwrap());

    // CI installs mosquitto; without it this must fail, not skip.
    let out = run_tool(
        "mosquitto_passwd",
        &["-c", "-b", theirs_s, "dave", "secret"],
        None,
    )
    .await;
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    let mosquitto_line = std::fs::read_to_string(&theirs).unwrap();
    assert!(
        mosquitto_line.starts_with("dave:$7$") || mosquitto_line.starts_with("dave:$6$"),
        "{mosquitto_line}"
    );

    let out = run_tool(
        env!("CARGO_BIN_EXE_mqtt-passwd"),
        &["--file", ours_s, "import", theirs_s],
        None,
    )
    .await;
    assert!(out.status.success(), "mqtt-passwd import: {out:?}");
    let imported = std::fs::read_to_string(&ours).unwrap();
    assert_eq!(
        imported.trim_end(),
        mosquitto_line.trim_end(),
        "copied as is"
    );

    let config = dir.path().join("mqttd.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n\n\
             [auth]\npassword_file = {ours_s:?}\nallow_anonymous = false\n\n[sys]\ninterval = 0\n"
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&config).await;
    let port = broker.addr.port().to_string();
    let pub_as = async |password: &str| {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "dave",
            "-P",
            password,
            "-i",
            "import-test",
            "-t",
            "t",
            "-m",
            "hello",
            "-q",
            "1",
        ];
        run_tool("mosquitto_pub", &args, None).await
    };

    let out = pub_as("not-the-secret").await;
    assert!(!out.status.success(), "wrong password accepted: {out:?}");
    assert_eq!(
        std::fs::read_to_string(&ours).unwrap(),
        imported,
        "a failed login changes nothing"
    );

    let out = pub_as("secret").await;
    assert!(out.status.success(), "mosquitto_pub as dave: {out:?}");
    eventually("dave's entry to be re-hashed to argon2id", || {
        std::fs::read_to_string(&ours).is_ok_and(|t| t.starts_with("dave:$argon2id$"))
    })
    .await;
    // The upgraded entry verifies the same password, and only it.
    let verify = async |password: &str| {
        run_tool(
            env!("CARGO_BIN_EXE_mqtt-passwd"),
            &["--file", ours_s, "verify", "dave", "--password-stdin"],
            Some(&format!("{password}\n")),
        )
        .await
        .status
        .code()
    };
    assert_eq!(verify("secret").await, Some(0));
    assert_eq!(verify("not-the-secret").await, Some(1));
    let out = pub_as("secret").await;
    assert!(out.status.success(), "{out:?}");
    broker.stop().await;
}
