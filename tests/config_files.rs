//! Every example config in `config/` must parse and validate, so the examples cannot rot.

use std::path::Path;

use mqttd::config::Config;

#[test]
fn every_example_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("readable config");
            if let Err(e) = Config::parse(&text, &path) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no config/*.toml found");
}

#[test]
fn secure_example_is_secure() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/secure.toml");
    let config = Config::load(&path).expect("config/secure.toml loads");
    assert!(!config.auth.anonymous_allowed());
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
