//! Behaviour of [`Auth`]: outcomes, cache, timing of unknown users, back-off, the verify pool, and
//! re-hashing of legacy entries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha512;

use super::credentials::{Argon2Params, HashKind, hash_argon2id};
use super::passwd::PasswordFile;
use super::*;

const FAST: Argon2Params = Argon2Params {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn peer(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), 40000)
}

fn creds<'a>(user: Option<&'a str>, pw: Option<&'a Password>, ip: u8) -> Credentials<'a> {
    Credentials {
        client_id: "c",
        username: user,
        password: pw,
        peer: peer(ip),
        allow_anonymous: false,
        cert_identity: None,
    }
}

fn pw(s: &str) -> Password {
    Password::new(s.as_bytes().to_vec())
}

fn mosq7(password: &str, iterations: u32) -> String {
    let salt = b"0123456789ab";
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Writes a password file with `users` (name, hash string) and returns an [`AuthConfig`] for it.
fn setup(dir: &Path, lines: &str) -> (PathBuf, AuthConfig) {
    let path = dir.join("passwd");
    std::fs::write(&path, lines).unwrap();
    let config = AuthConfig {
        password_file: Some(path.clone()),
        max_failures: 1000,
        ..AuthConfig::default()
    };
    (path, config)
}

fn line(user: &str, password: &str, params: Argon2Params) -> String {
    format!(
        "{user}:{}\n",
        hash_argon2id(password.as_bytes(), params).unwrap().as_str()
    )
}

fn allowed(user: &str) -> AuthOutcome {
    AuthOutcome::Allowed {
        username: Some(user.to_owned()),
    }
}

#[tokio::test]
async fn anonymous_cert_and_no_password_file() {
    let auth = Auth::load(&AuthConfig::default()).unwrap();
    let mut c = creds(None, None, 1);
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::NotAuthorized);
    c.allow_anonymous = true;
    assert_eq!(
        auth.authenticate(&c).await,
        AuthOutcome::Allowed { username: None }
    );
    // A username without a password file: only where anonymous access is allowed.
    let p = pw("anything");
    let mut c = creds(Some("u"), Some(&p), 1);
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    c.allow_anonymous = true;
    assert_eq!(auth.authenticate(&c).await, allowed("u"));
    // A verified certificate identity wins.
    let mut c = creds(Some("other"), None, 1);
    c.cert_identity = Some("cn-user");
    assert_eq!(auth.authenticate(&c).await, allowed("cn-user"));
    assert!(!auth.has_acl());
    assert!(auth.check(None, "c", "t", Access::Write));
    assert_eq!(auth.password_file(), None);
    assert!(!auth.has_user("u"));
    assert_eq!(auth.verifications(), 0);
}

#[tokio::test]
async fn password_file_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("# users\n{}", line("alice", "s3cret", FAST));
    let (path, config) = setup(dir.path(), &text);
    let auth = Auth::load(&config).unwrap();
    assert!(auth.has_user("alice") && !auth.has_user("bob"));
    assert_eq!(auth.password_file(), Some(path.as_path()));
    let good = pw("s3cret");
    let bad = pw("s3cret!");
    let empty = pw("");
    assert_eq!(
        auth.authenticate(&creds(Some("alice"), Some(&good), 1))
            .await,
        allowed("alice")
    );
    for (user, p) in [
        ("alice", Some(&bad)),
        ("alice", Some(&empty)),
        ("alice", None),
        ("bob", Some(&good)),
    ] {
        assert_eq!(
            auth.authenticate(&creds(Some(user), p, 1)).await,
            AuthOutcome::BadCredentials,
            "{user}"
        );
    }
    // With a password file, allow_anonymous only admits clients without a username.
    let mut c = creds(Some("bob"), Some(&good), 1);
    c.allow_anonymous = true;
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    let dbg = format!("{auth:?}");
    let secret_part = text.rsplit('$').next().unwrap().trim();
    assert!(
        !dbg.contains(secret_part) && !dbg.contains("argon2id$"),
        "{dbg}"
    );
}

#[tokio::test]
async fn load_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = setup(
        dir.path(),
        "# c\nalice:$argon2id$v=19$m=64,t=99,p=1$xx$yy\n",
    );
    let e = Auth::load(&config).unwrap_err().to_string();
    assert!(e.contains("passwd:2:") && e.contains("t=99"), "{e}");
    let missing = AuthConfig {
        password_file: Some(dir.path().join("absent")),
        ..AuthConfig::default()
    };
    let e = Auth::load(&missing).unwrap_err().to_string();
    assert!(e.contains("absent"), "{e}");
}

#[tokio::test]
async fn acl_is_consulted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read #\n").unwrap();
    let auth = Auth::load(&AuthConfig {
        acl_file: Some(acl),
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(auth.has_acl());
}

#[tokio::test]
async fn cache_hit_skips_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = setup(
        dir.path(),
        &line("alice", "s3cret", Argon2Params::default()),
    );
    let auth = Auth::load(&config).unwrap();
    let good = pw("s3cret");
    let c = creds(Some("alice"), Some(&good), 1);
    let t = Instant::now();
    assert_eq!(auth.authenticate(&c).await, allowed("alice"));
    let first = t.elapsed();
    assert_eq!(auth.verifications(), 1);
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(auth.authenticate(&c).await, allowed("alice"));
    }
    let ten_more = t.elapsed();
    assert_eq!(auth.verifications(), 1, "cache hits run no hash");
    assert!(ten_more < first, "{ten_more:?} vs one argon2 run {first:?}");
    // A different password is not a hit: it is verified (and fails).
    let bad = pw("nope");
    assert_eq!(
        auth.authenticate(&creds(Some("alice"), Some(&bad), 1))
            .await,
        AuthOutcome::BadCredentials
    );
    assert_eq!(auth.verifications(), 2);
    // A new Auth (a reload) starts with an empty cache.
    let reloaded = Auth::load(&config).unwrap();
    assert_eq!(reloaded.authenticate(&c).await, allowed("alice"));
    assert_eq!(reloaded.verifications(), 1);
}

#[tokio::test]
async fn cache_ttl_zero_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut config) = setup(
        dir.path(),
        &line("alice", "s3cret", Argon2Params::default()),
    );
    config.cache_ttl = Duration::ZERO;
    let auth = Auth::load(&config).unwrap();
    let good = pw("s3cret");
    for _ in 0..2 {
        let c = creds(Some("alice"), Some(&good), 1);
        assert_eq!(auth.authenticate(&c).await, allowed("alice"));
    }
    assert_eq!(auth.verifications(), 2);
}

/// Wall times of `n` failing logins as `user`, sorted. Each with another wrong password: a
/// repeat would be answered from memory, without a hash.
async fn timings(auth: &Auth, user: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..n {
        let bad = pw(&format!("wrong-{}", rand::random::<u64>()));
        let t = Instant::now();
        let outcome = auth.authenticate(&creds(Some(user), Some(&bad), 1)).await;
        assert_eq!(outcome, AuthOutcome::BadCredentials);
        times.push(t.elapsed());
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_as_much_as_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = setup(
        dir.path(),
        &line("alice", "s3cret", Argon2Params::default()),
    );
    let auth = Auth::load(&config).unwrap();
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // Interleaved, so load from other processes hits both alike; compared by their fastest run,
    // which is the work itself (other load only ever adds time), so the test holds on a busy
    // machine (CI runs the suites in parallel) and still fails if one path skips the hash.
    for _ in 0..3 {
        known.extend(timings(&auth, "alice", 3).await);
        unknown.extend(timings(&auth, "zed", 3).await);
    }
    let k = *known.iter().min().unwrap();
    let u = *unknown.iter().min().unwrap();
    assert!(
        u * 2 >= k && k * 2 >= u,
        "known-user wrong password {k:?} vs unknown user {u:?} ({known:?} / {unknown:?})"
    );
    assert_eq!(auth.verifications(), 18);
}

/// The back-off rules through [`Auth::authenticate`] (paused time; the hashes run on the blocking
/// pool, which holds the clock still): failures from an address slow it down but never refuse a
/// right password; a username that keeps failing is refused from anywhere; repeats and missing
/// passwords are not counted.
#[tokio::test(start_paused = true)]
async fn failures_slow_the_address_and_block_the_username() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}{}", line("alice", "a", FAST), line("bob", "b", FAST));
    let (_, mut config) = setup(dir.path(), &text);
    config.max_failures = 3;
    config.cache_ttl = Duration::ZERO;
    let auth = Auth::load(&config).unwrap();
    let (a, b) = (pw("a"), pw("b"));
    let t0 = tokio::time::Instant::now();
    for i in 0..3 {
        let wrong = pw(&format!("x{i}"));
        let c = creds(Some("alice"), Some(&wrong), 1);
        assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    }
    // Repeats and missing passwords: refused without a hash, not counted.
    let hashed = auth.verifications();
    for _ in 0..5 {
        let wrong = pw("x0");
        let c = creds(Some("alice"), Some(&wrong), 1);
        assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
        let c = creds(Some("bob"), None, 1);
        assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    }
    assert_eq!(auth.verifications(), hashed);
    assert_eq!(t0.elapsed(), Duration::ZERO, "nothing waited so far");
    // The username is refused from anywhere, at once and without a hash...
    let c = creds(Some("alice"), Some(&a), 2);
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::NotAuthorized);
    assert_eq!(auth.verifications(), hashed);
    // ...while bob, from the failing address, gets in after its 1s delay.
    let c = creds(Some("bob"), Some(&b), 1);
    assert_eq!(auth.authenticate(&c).await, allowed("bob"));
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    // His success adds no delay; from elsewhere nothing waits.
    let c = creds(Some("bob"), Some(&b), 1);
    assert_eq!(auth.authenticate(&c).await, allowed("bob"));
    let c = creds(Some("bob"), Some(&b), 3);
    assert_eq!(auth.authenticate(&c).await, allowed("bob"));
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    // A fourth distinct failure from the address: its next turn waits 2s.
    let wrong = pw("y");
    let c = creds(Some("carol"), Some(&wrong), 1);
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    let failed_at = tokio::time::Instant::now();
    let c = creds(Some("bob"), Some(&b), 1);
    assert_eq!(auth.authenticate(&c).await, allowed("bob"));
    assert_eq!(failed_at.elapsed(), Duration::from_secs(2));
    // alice's block (1s from her third failure) is long over: her right password works.
    let c = creds(Some("alice"), Some(&a), 2);
    assert_eq!(auth.authenticate(&c).await, allowed("alice"));
}

#[tokio::test]
async fn a_cached_password_passes_a_username_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut config) = setup(dir.path(), &line("alice", "a", FAST));
    config.max_failures = 2;
    let auth = Auth::load(&config).unwrap();
    let (a, wrong) = (pw("a"), pw("x"));
    assert_eq!(
        auth.authenticate(&creds(Some("alice"), Some(&a), 1)).await,
        allowed("alice")
    );
    for ip in [2, 3] {
        let c = creds(Some("alice"), Some(&wrong), ip);
        assert_eq!(auth.authenticate(&c).await, AuthOutcome::BadCredentials);
    }
    // A guesser elsewhere is refused; the real user (known password, cached) gets in.
    let c = creds(Some("alice"), Some(&wrong), 4);
    assert_eq!(auth.authenticate(&c).await, AuthOutcome::NotAuthorized);
    let c = creds(Some("alice"), Some(&a), 1);
    assert_eq!(auth.authenticate(&c).await, allowed("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_pool_answers_unavailable_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    // PBKDF2 with enough iterations for ~1s (calibrated, as debug and release builds differ by
    // far): a slow verification that needs CPU but little memory. The stored hash is junk: the
    // slow login's password is wrong anyway.
    let probe = 20_000;
    let t = Instant::now();
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(b"pw", b"salt", probe, &mut out);
    let per_iteration = t.elapsed().as_secs_f64() / f64::from(probe);
    let iterations = (1.0 / per_iteration).clamp(100_000.0, 10_000_000.0) as u32;
    let text = format!(
        "slow:$7${iterations}$c2FsdHNhbHQ=${}\n{}",
        STANDARD.encode([0u8; 64]),
        line("quick", "q", FAST)
    );
    let (_, mut config) = setup(dir.path(), &text);
    config.verify_threads = Some(1);
    config.verify_wait = Duration::from_millis(300);
    let auth = Arc::new(Auth::load(&config).unwrap());
    let slow = {
        let auth = Arc::clone(&auth);
        tokio::spawn(async move {
            let wrong = pw("wrong");
            let t = Instant::now();
            let outcome = auth
                .authenticate(&creds(Some("slow"), Some(&wrong), 1))
                .await;
            (outcome, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let q = pw("q");
    let t = Instant::now();
    let outcome = auth.authenticate(&creds(Some("quick"), Some(&q), 2)).await;
    let waited = t.elapsed();
    assert_eq!(outcome, AuthOutcome::Unavailable);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let (slow_outcome, slow_took) = slow.await.unwrap();
    assert_eq!(slow_outcome, AuthOutcome::BadCredentials);
    assert!(
        slow_took > waited + Duration::from_millis(50),
        "the slow verification ({slow_took:?}) must outlast the wait ({waited:?}) for this test \
         to mean anything"
    );
    // Once the slot is free, logins proceed.
    assert_eq!(
        auth.authenticate(&creds(Some("quick"), Some(&q), 2)).await,
        allowed("quick")
    );
}

#[tokio::test]
async fn legacy_hashes_are_rehashed_on_login() {
    let dir = tempfile::tempdir().unwrap();
    // leg also has SCRAM credentials, which the re-hash must keep (same password).
    let scram = super::credentials::ScramCredentials::derive(b"old", b"scram-salt", 4096);
    let text = format!(
        "# migrated\nleg:{}:{}\nweak:{}",
        mosq7("old", 101),
        scram.as_str(),
        line("", "w", FAST).trim_start_matches(':')
    );
    let (path, config) = setup(dir.path(), &text);
    let auth = Auth::load(&config).unwrap();
    let old = pw("old");
    assert_eq!(
        auth.authenticate(&creds(Some("leg"), Some(&old), 1)).await,
        allowed("leg")
    );
    let w = pw("w");
    assert_eq!(
        auth.authenticate(&creds(Some("weak"), Some(&w), 1)).await,
        allowed("weak")
    );
    let file = PasswordFile::load(&path).unwrap();
    let leg = file.get("leg").unwrap();
    assert_eq!(leg.hash.kind(), HashKind::Argon2id);
    assert_eq!(leg.hash.argon2id_params(), Some(Argon2Params::default()));
    assert!(leg.verify(b"old"));
    assert_eq!(leg.scram.as_ref(), Some(&scram));
    let weak = file.get("weak").unwrap();
    assert_eq!(weak.hash.argon2id_params(), Some(Argon2Params::default()));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("# migrated\nleg:$argon2id$")
    );
    // The new hash also serves this Auth (no cache: a fresh one re-reads the file).
    let reloaded = Auth::load(&config).unwrap();
    assert_eq!(
        reloaded
            .authenticate(&creds(Some("leg"), Some(&old), 1))
            .await,
        allowed("leg")
    );
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(".tmp."), "{name}");
    }
}
