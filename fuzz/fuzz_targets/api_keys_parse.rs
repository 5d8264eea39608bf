//! `ApiKeyFile::parse` over arbitrary text never panics; whatever parses serializes to text that
//! parses back to the same file (and serializes to the same text again); every key is found by
//! name. The `Authorization: Basic` decoder of the HTTP API never panics on the same bytes, and
//! what it accepts has a non-empty user without ':'.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mqttd::auth::apikeys::ApiKeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((user, _password)) = mqttd::http::auth::parse_basic(text) {
        assert!(!user.is_empty() && !user.contains(':'));
    }
    let path = Path::new("fuzz.api_keys");
    let Ok(file) = ApiKeyFile::parse(text, path) else {
        return;
    };
    let written = file.serialize();
    let again = match ApiKeyFile::parse(&written, path) {
        Ok(f) => f,
        Err(e) => panic!("serialized file does not parse: {e}\n{written:?}"),
    };
    assert_eq!(again, file, "{written:?}");
    assert_eq!(again.serialize(), written);
    for entry in file.entries() {
        assert_eq!(again.get(&entry.name), Some(entry));
    }
});
