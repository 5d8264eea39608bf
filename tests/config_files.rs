//! Every example configuration shipped in `config/` must load: a commented example that no longer
//! parses is worse than none.

use std::path::Path;

use mqttd::config::Config;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no config/*.toml found");
}

#[test]
fn the_main_example_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mqttd.toml");
    let file = Config::load(&path).expect("config/mqttd.toml loads");
    let default = Config::default();
    assert_eq!(file.listeners.len(), 1);
    assert_eq!(file.listeners[0].bind, default.listeners[0].bind);
    assert_eq!(file.listeners[0].name, default.listeners[0].name);
    assert_eq!(
        file.listeners[0].max_connections,
        default.listeners[0].max_connections
    );
    assert_eq!(
        file.listener_allows_anonymous(&file.listeners[0]),
        default.listener_allows_anonymous(&default.listeners[0])
    );
    assert_eq!(file.limits.max_packet_size, default.limits.max_packet_size);
    assert_eq!(file.limits.max_inflight, default.limits.max_inflight);
    assert_eq!(
        file.limits.max_queued_messages,
        default.limits.max_queued_messages
    );
    assert_eq!(file.limits.connect_timeout, default.limits.connect_timeout);
    assert_eq!(
        file.limits.max_queued_bytes_per_client,
        default.limits.max_queued_bytes_per_client
    );
    assert_eq!(
        file.limits.slow_subscriber_timeout,
        default.limits.slow_subscriber_timeout
    );
    assert_eq!(file.limits.max_inflight_in, default.limits.max_inflight_in);
    assert_eq!(
        file.limits.outbound_topic_aliases,
        default.limits.outbound_topic_aliases
    );
    assert_eq!(file.sys.interval, default.sys.interval);
    assert_eq!(file.log.level, default.log.level);
    assert_eq!(file.log.messages, default.log.messages);
    assert_eq!(file.history.enabled, default.history.enabled);
    assert_eq!(file.history.filters, default.history.filters);
    assert_eq!(file.history.max_age, default.history.max_age);
    let (fh, dh) = (file.http.unwrap(), default.http.unwrap());
    assert_eq!(fh.bind, dh.bind);
    assert_eq!(fh.metrics_public, dh.metrics_public);
    assert!(fh.admins.is_empty() && fh.api_keys.is_none() && fh.tls.is_none());
}
#[test]
fn secure_example_is_secure() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/secure.toml");
    let config = Config::load(&path).expect("config/secure.toml loads");
    assert!(
        config
            .listeners
            .iter()
            .all(|l| !config.listener_allows_anonymous(l))
    );
    assert!(config.anonymous_listeners_beyond_loopback().is_empty());
    assert!(config.auth.password_file.is_some());

    let tls = config
        .listeners
        .iter()
        .find(|l| l.name == "tls")
        .expect("a listener named tls");
    assert_eq!(tls.bind.port(), 8883);
    let settings = tls.tls.as_ref().expect("the tls listener has TLS settings");
    assert_eq!(settings.cert, Path::new("certs/server.pem"));
    assert_eq!(settings.key, Path::new("certs/server.key"));

    let plain = config
        .listeners
        .iter()
        .find(|l| l.name == "plain")
        .expect("a listener named plain");
    assert_eq!(plain.bind.port(), 1883);
    assert!(plain.tls.is_none());
}

/// The commented mutual-TLS alternative in secure.toml must stay valid too.
#[test]
fn secure_example_mtls_alternative_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/secure.toml");
    let text = std::fs::read_to_string(&path).expect("readable config");
    let swapped: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with("tls = "))
        .map(|line| match line.strip_prefix("# tls = ") {
            Some(rest) => format!("tls = {rest}"),
            None => line.to_owned(),
        })
        .collect();
    let config = Config::parse(&swapped.join("\n"), &path).unwrap_or_else(|e| panic!("{e}"));
    let tls = config
        .listeners
        .iter()
        .find_map(|l| l.tls.as_ref())
        .expect("a TLS listener");
    assert_eq!(tls.client_ca.as_deref(), Some(Path::new("certs/ca.pem")));
    assert!(tls.require_client_cert && tls.use_identity_as_username);
}
