//! The `mqtt-passwd` binary, driven non-interactively with `--password-stdin`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-passwd");
/// Cheap argon2 so the suite stays fast; the defaults are exercised by `add_uses_owasp_defaults`.
const FAST: [&str; 6] = ["--m-cost", "64", "--t-cost", "1", "--p-cost", "1"];
const SECRET: &str = "correct horse battery staple";

fn run(file: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--file")
        .arg(file)
        .args(FAST)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqtt-passwd");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        // The tool may exit (refusing its arguments) before reading: a broken pipe is fine.
        let _ = pipe.write_all(text.as_bytes());
    }
    drop(pipe);
    let out = child.wait_with_output().expect("wait");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(SECRET) && !all.contains("hunter2") && !all.contains("$argon2"),
        "output leaks a secret: {all}"
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(".tmp."), "temp file left behind: {name}");
    }
}

#[test]
fn add_verify_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("passwd");
    std::fs::create_dir(dir.path().join("sub")).unwrap();

    let o = run(
        &file,
        &["add", "alice", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&o), 0, "{o:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("alice:$argon2id$v=19$m=64,t=1,p=1$"),
        "{text}"
    );
    assert!(!text.contains(SECRET));

    let o = run(
        &file,
        &["add", "bob", "--password-stdin"],
        Some("hunter2\r\n"),
    );
    assert_eq!(code(&o), 0, "{o:?}");
    no_temp_files(&dir.path().join("sub"));

    // verify: 0 on match, 1 on mismatch or unknown user.
    let ok = run(
        &file,
        &["verify", "alice", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&ok), 0, "{ok:?}");
    let bad = run(
        &file,
        &["verify", "alice", "--password-stdin"],
        Some("wrong\n"),
    );
    assert_eq!(code(&bad), 1);
    let unknown = run(&file, &["verify", "carol", "--password-stdin"], Some("x\n"));
    assert_eq!(code(&unknown), 1);
    // The CR of a CRLF line ending is not part of the password.
    let crlf = run(
        &file,
        &["verify", "bob", "--password-stdin"],
        Some("hunter2\n"),
    );
    assert_eq!(code(&crlf), 0);

    let list = run(&file, &["list"], None);
    assert_eq!(stdout(&list), "alice\nbob\n");

    // Changing a password keeps the user's position.
    let o = run(
        &file,
        &["add", "alice", "--password-stdin"],
        Some("another one\n"),
    );
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&run(&file, &["list"], None)), "alice\nbob\n");
    let old = run(
        &file,
        &["verify", "alice", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&old), 1);

    let o = run(&file, &["delete", "alice"], None);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&run(&file, &["list"], None)), "bob\n");
    let again = run(&file, &["delete", "alice"], None);
    assert_eq!(code(&again), 2);
    assert!(String::from_utf8_lossy(&again.stderr).contains("alice"));
    no_temp_files(&dir.path().join("sub"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn add_refuses_empty_password_and_bad_usernames() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let o = run(&file, &["add", "alice", "--password-stdin"], Some("\n"));
    assert_eq!(code(&o), 2);
    assert!(!file.exists(), "nothing written for a refused add");
    let o = run(&file, &["add", "a:b", "--password-stdin"], Some("pw\n"));
    assert_eq!(code(&o), 2);
    let o = run(&file, &["add", "", "--password-stdin"], Some("pw\n"));
    assert_eq!(code(&o), 2);
    // Parameters over the caps are refused before anything is hashed.
    let o = Command::new(BIN)
        .args(["--file"])
        .arg(&file)
        .args(["--t-cost", "11", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
}

#[test]
fn add_uses_owasp_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let mut child = Command::new(BIN)
        .arg("--file")
        .arg(&file)
        .args(["add", "u", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("u:$argon2id$v=19$m=19456,t=2,p=1$"),
        "{text}"
    );
}

#[test]
fn comments_survive_edits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "# managed by ops\n\n").unwrap();
    let o = run(&file, &["add", "u", "--password-stdin"], Some("pw\n"));
    assert_eq!(code(&o), 0);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("# managed by ops\n\nu:")
    );
}

fn mosq7(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

fn mosq6(password: &str, salt: &[u8]) -> String {
    let mut d = Sha512::new();
    d.update(password.as_bytes());
    d.update(salt);
    format!(
        "$6${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(d.finalize())
    )
}

#[test]
fn import_mosquitto_file_then_rehash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let mosq = dir.path().join("mosquitto.passwd");
    std::fs::write(
        &mosq,
        format!(
            "dave:{}\nerin:{}\nalice:{}\n",
            mosq7(SECRET, b"0123456789ab", 101),
            mosq6("hunter2", b"saltsaltsalt"),
            mosq7("other", b"abcdefghijkl", 101),
        ),
    )
    .unwrap();
    let o = run(&file, &["add", "alice", "--password-stdin"], Some("mine\n"));
    assert_eq!(code(&o), 0);

    let o = run(&file, &["import", mosq.to_str().unwrap()], None);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped existing user alice"));
    assert_eq!(stdout(&run(&file, &["list"], None)), "alice\ndave\nerin\n");
    no_temp_files(dir.path());

    // Imported hashes verify as they are.
    let v = run(
        &file,
        &["verify", "dave", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&v), 0);
    let v = run(
        &file,
        &["verify", "erin", "--password-stdin"],
        Some("hunter2\n"),
    );
    assert_eq!(code(&v), 0);
    let v = run(
        &file,
        &["verify", "alice", "--password-stdin"],
        Some("mine\n"),
    );
    assert_eq!(
        code(&v),
        0,
        "alice was skipped, so her own password still works"
    );

    // --force overwrites.
    let o = run(&file, &["import", "--force", mosq.to_str().unwrap()], None);
    assert_eq!(code(&o), 0);
    let v = run(
        &file,
        &["verify", "alice", "--password-stdin"],
        Some("other\n"),
    );
    assert_eq!(code(&v), 0);

    // rehash lists the legacy users; rehash USER upgrades one, given the right password.
    let r = run(&file, &["rehash"], None);
    let listed = stdout(&r);
    assert!(
        listed.contains("dave") && listed.contains("erin"),
        "{listed}"
    );
    let wrong = run(
        &file,
        &["rehash", "dave", "--password-stdin"],
        Some("nope\n"),
    );
    assert_eq!(code(&wrong), 1);
    let r = run(
        &file,
        &["rehash", "dave", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&r), 0, "{r:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("dave:$argon2id$"), "{text}");
    let v = run(
        &file,
        &["verify", "dave", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&v), 0);
    assert!(!stdout(&run(&file, &["rehash"], None)).contains("dave"));
    no_temp_files(dir.path());
}

#[test]
fn parse_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "# ok\nmallory:plaintext\n").unwrap();
    let o = run(&file, &["list"], None);
    assert_eq!(code(&o), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("passwd:2:"), "{err}");
}

/// Files written by the real `mosquitto_passwd` (if installed) import and verify.
#[test]
fn real_mosquitto_passwd_file() {
    let dir = tempfile::tempdir().unwrap();
    let mosq = dir.path().join("mosq");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&mosq)
        .args(["pbkdf", SECRET])
        .status();
    let Ok(status) = made else {
        eprintln!("note: mosquitto_passwd not installed; skipping the real-file test");
        return;
    };
    assert!(status.success());
    let sha = Command::new("mosquitto_passwd")
        .args(["-H", "sha512", "-b"])
        .arg(&mosq)
        .args(["legacy", "hunter2"])
        .status()
        .unwrap();
    assert!(sha.success());
    let file = dir.path().join("passwd");
    assert_eq!(
        code(&run(&file, &["import", mosq.to_str().unwrap()], None)),
        0
    );
    let v = run(
        &file,
        &["verify", "pbkdf", "--password-stdin"],
        Some(&format!("{SECRET}\n")),
    );
    assert_eq!(code(&v), 0);
    let v = run(
        &file,
        &["verify", "legacy", "--password-stdin"],
        Some("hunter2\n"),
    );
    assert_eq!(code(&v), 0);
    let v = run(
        &file,
        &["verify", "legacy", "--password-stdin"],
        Some("hunter3\n"),
    );
    assert_eq!(code(&v), 1);
}

#[test]
fn api_keys_are_shown_once_stored_hashed_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = run(
        &passwd,
        &["api-key", "add", "grafana", "--role", "viewer"],
        None,
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let key = stdout(&out).trim().to_owned();
    assert!(key.starts_with("mqttd_") && key.len() > 40, "{key}");
    // Next to the password file by default, 0600, without the key itself.
    let keys = dir.path().join("api_keys");
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(
        text.starts_with("grafana:viewer:") && !text.contains(&key),
        "{text}"
    );
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let loaded = mqttd::auth::apikeys::ApiKeys::load(Some(&keys)).unwrap();
    assert_eq!(&*loaded.check(&key).unwrap().name, "grafana");

    let out = run(
        &passwd,
        &["api-key", "add", "grafana", "--role", "admin"],
        None,
    );
    assert_eq!(code(&out), 2, "names are unique: {out:?}");
    let out = run(&passwd, &["api-key", "add", "x", "--role", "root"], None);
    assert_ne!(code(&out), 0);
    let other = dir.path().join("elsewhere");
    let out = run(
        &passwd,
        &[
            "api-key",
            "add",
            "ci",
            "--role",
            "publisher",
            "--keys",
            other.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let out = run(&passwd, &["api-key", "list"], None);
    assert_eq!(stdout(&out), "grafana\tviewer\n");
    let out = run(&passwd, &["api-key", "remove", "grafana"], None);
    assert_eq!(code(&out), 0, "{out:?}");
    let out = run(&passwd, &["api-key", "remove", "grafana"], None);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&run(&passwd, &["api-key", "list"], None)), "");
    no_temp_files(dir.path());
}
