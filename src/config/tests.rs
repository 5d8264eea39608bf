//! Parsing, defaults and validation of the configuration file.

use super::*;

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = Config::parse(
        "[limits]\nmax_inflight = 4\nbogus = 1\n",
        Path::new("x.toml"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("x.toml:3:"), "{msg}");
    assert!(msg.contains("bogus"), "{msg}");
}

#[test]
fn defaults_are_local_only() {
    let c = Config::parse("", Path::new("empty.toml")).unwrap();
    assert_eq!(c.listeners.len(), 1);
    assert!(c.listeners[0].bind.ip().is_loopback());
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(10));
}

#[test]
fn durations_accept_text_and_seconds() {
    let c = Config::parse("[limits]\nconnect_timeout = \"250ms\"\n", Path::new("a")).unwrap();
    assert_eq!(c.limits.connect_timeout, Duration::from_millis(250));
    let c = Config::parse("[limits]\nconnect_timeout = 3\n", Path::new("a")).unwrap();
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(3));
}

#[test]
fn zero_is_never_unlimited() {
    assert!(Config::parse("[limits]\nmax_queued_messages = 0\n", Path::new("a")).is_err());
}

#[test]
fn auth_tuning_defaults_and_overrides() {
    let c = Config::parse("", Path::new("a")).unwrap();
    assert_eq!(c.auth.cache_ttl, Duration::from_secs(300));
    assert_eq!(c.auth.max_failures, 5);
    let c = Config::parse(
        "[auth]\ncache_ttl = \"0s\"\nverify_threads = 2\nverify_wait = \"500ms\"\n",
        Path::new("a"),
    )
    .unwrap();
    assert!(c.auth.cache_ttl.is_zero());
    assert_eq!(c.auth.verify_threads, Some(2));
    assert!(Config::parse("[auth]\nverify_threads = 0\n", Path::new("a")).is_err());
    assert!(Config::parse("[auth]\nmax_failures = 0\n", Path::new("a")).is_err());
    assert!(Config::parse("[auth]\nbackoff_max = \"1000y\"\n", Path::new("a")).is_err());
    assert!(Config::parse("[auth]\nverify_threads = 100000\n", Path::new("a")).is_err());
}

#[test]
fn anonymous_defaults_off_with_password_file_or_beyond_loopback() {
    let c = Config::parse("[auth]\npassword_file = \"p\"\n", Path::new("a")).unwrap();
    assert!(!c.listener_allows_anonymous(&c.listeners[0]));
    let c = Config::parse("[[listener]]\nbind = \"0.0.0.0:1883\"\n", Path::new("a")).unwrap();
    assert!(!c.listener_allows_anonymous(&c.listeners[0]));
    let c = Config::parse("", Path::new("a")).unwrap();
    assert!(c.listener_allows_anonymous(&c.listeners[0]));
    let text = "[[listener]]\nbind = \"0.0.0.0:1883\"\n[auth]\nallow_anonymous = true\n";
    let c = Config::parse(text, Path::new("a")).unwrap();
    assert!(c.listener_allows_anonymous(&c.listeners[0]));
    assert_eq!(c.anonymous_listeners_beyond_loopback().len(), 1);
}

fn invalid(text: &str) -> String {
    Config::parse(text, Path::new("m.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_values_name_the_line_of_their_key() {
    let e = invalid("[limits]\nmax_inflight = 4\n\nmax_queued_messages = 0\n");
    assert!(e.starts_with("m.toml:4: limits.max_queued_messages"), "{e}");
    let e = invalid("# c\n[auth]\nverify_wait = \"2m\"\n");
    assert!(e.starts_with("m.toml:3: auth.verify_wait"), "{e}");
    let e = invalid("[log]\nlevel = \"no such=level=x\"\n");
    assert!(e.starts_with("m.toml:2: log.level"), "{e}");
    let two = "[[listener]]\nbind = \"127.0.0.1:1\"\n\n[[listener]]\nbind = \"127.0.0.1:2\"\n";
    let e = invalid(two);
    assert!(
        e.starts_with("m.toml:4:") && e.contains("used twice"),
        "{e}"
    );
}

#[test]
fn client_certificate_options_need_a_client_ca() {
    for option in ["require_client_cert", "use_identity_as_username"] {
        let text = format!(
            "[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:8883\"\n\
             [listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{option} = true\n"
        );
        let e = invalid(&text);
        assert!(e.starts_with("m.toml:7: listener \"tls\""), "{e}");
        assert!(e.contains(option) && e.contains("client_ca"), "{e}");
    }
    // Inline tables are located too (at their key).
    let inline = "[[listener]]\nbind = \"127.0.0.1:8883\"\n\
                  tls = { cert = \"c\", key = \"k\", handshake_timeout = \"0s\" }\n";
    let e = invalid(inline);
    assert!(
        e.starts_with("m.toml:3:") && e.contains("handshake_timeout"),
        "{e}"
    );
}

#[test]
fn proxy_keys_are_checked_where_they_apply() {
    let base = "[[listener]]\nname = \"lb\"\nbind = \"127.0.0.1:1883\"\n";
    let ok = format!(
        "{base}proxy_protocol = \"v2\"\nproxy_trusted = [\"10.0.0.0/8\", \"127.0.0.1\"]\n\
         use_identity_as_username = true\n"
    );
    let c = Config::parse(&ok, Path::new("m.toml")).expect("valid");
    assert!(c.listeners[0].use_identity_as_username);
    assert_eq!(c.listeners[0].proxy_trusted.len(), 2);
    for (extra, line, why) in [
        (
            "proxy_protocol = \"v2\"\n",
            4,
            "proxy_protocol needs proxy_trusted",
        ),
        (
            "proxy_trusted = [\"10.0.0.1\"]\n",
            4,
            "no effect without proxy_protocol",
        ),
        ("proxy_protocol = \"v3\"\n", 4, "unknown variant"),
        (
            "proxy_protocol = \"v1\"\nproxy_trusted = [\"10.0.0.0/33\"]\n",
            5,
            "not an address",
        ),
        (
            "use_identity_as_username = true\n",
            4,
            "needs proxy_protocol = \"v2\"",
        ),
        (
            "proxy_protocol = \"v1\"\nproxy_trusted = [\"10.0.0.1\"]\n\
             use_identity_as_username = true\n",
            6,
            "needs proxy_protocol = \"v2\"",
        ),
        (
            "proxy_protocol = \"v2\"\nproxy_trusted = [\"10.0.0.1\"]\n\
             use_identity_as_username = true\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\n",
            6,
            "use tls.use_identity_as_username",
        ),
    ] {
        let e = invalid(&format!("{base}{extra}"));
        assert!(e.starts_with(&format!("m.toml:{line}:")), "{extra}: {e}");
        assert!(e.contains(why), "{extra}: {e}");
    }
}

#[test]
fn persistence_is_on_by_default_and_its_keys_are_checked() {
    let c = Config::parse("[sys]\ninterval = 0\n", Path::new("m.toml")).unwrap();
    assert!(c.persistence.enabled);
    assert_eq!(c.persistence.path, Path::new("data"));
    assert_eq!(c.persistence.sync, crate::config::SyncMode::Normal);
    let text = "[persistence]\nenabled = true\npath = \"/var/lib/mqttd\"\nsync = \"full\"\n\
                on_corrupt = \"move_aside\"\n";
    let c = Config::parse(text, Path::new("m.toml")).unwrap();
    assert_eq!(c.persistence.sync, crate::config::SyncMode::Full);
    assert_eq!(
        c.persistence.on_corrupt,
        crate::config::OnCorrupt::MoveAside
    );
    let e = invalid("[persistence]\nsync = \"sometimes\"\n");
    assert!(e.starts_with("m.toml:2:"), "{e}");
    let e = invalid("[persistence]\nsync = \"periodic\"\n\ninterval = \"0s\"\n");
    assert!(e.starts_with("m.toml:4: persistence.interval"), "{e}");
    let e = invalid("[persistence]\npaht = \"x\"\n");
    assert!(e.starts_with("m.toml:2:") && e.contains("paht"), "{e}");
}

#[test]
fn history_is_off_by_default_and_its_keys_are_checked() {
    let c = Config::parse("", Path::new("m.toml")).unwrap();
    assert!(!c.history.enabled, "payloads may be private");
    assert_eq!(c.history.filters, ["#"]);
    assert_eq!(c.history.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!((c.history.max_rows, c.history.max_bytes), (None, None));
    let text = "[history]\nenabled = true\nfilters = [\"a/#\", \"$SYS/#\"]\nmax_age = \"1d 12h\"\n\
                max_rows = 1000\nmax_bytes = 104857600\n";
    let c = Config::parse(text, Path::new("m.toml")).unwrap();
    assert_eq!(c.history.max_age, Duration::from_secs(36 * 3600));
    assert_eq!(c.history.max_rows, Some(1000));
    assert_eq!(c.history.max_bytes, Some(100 << 20));
    for (text, line, key) in [
        (
            "[history]\nfilters = [\n  \"a\",\n  \"a/#/b\",\n]\n",
            4,
            "history.filters",
        ),
        (
            "[history]\nfilters = [\"$share/g/a\"]\n",
            2,
            "shared subscription",
        ),
        ("[history]\nfilters = []\n", 2, "history.filters"),
        ("[history]\n\nmax_age = \"0s\"\n", 3, "history.max_age"),
        ("[history]\nmax_rows = 0\n", 2, "history.max_rows"),
        ("[history]\nmax_bytes = 1000\n", 2, "history.max_bytes"),
        ("[history]\nmax_age = \"soon\"\n", 2, "expected number"),
        ("[history]\nfilter = [\"a\"]\n", 2, "filter"),
        (
            "[persistence]\npath = \"\"\nenabled = false\n[history]\nenabled = true\n",
            2,
            "persistence.path",
        ),
    ] {
        let e = invalid(text);
        assert!(e.starts_with(&format!("m.toml:{line}:")), "{text}: {e}");
        assert!(e.contains(key), "{text}: {e}");
    }
}
