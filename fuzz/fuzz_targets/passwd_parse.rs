//! `PasswordFile::parse` over arbitrary text never panics; whatever parses serializes to text
//! that parses back to the same file (and serializes to the same text again).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mqttd::auth::passwd::PasswordFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.passwd");
    let Ok(file) = PasswordFile::parse(text, path) else {
        return;
    };
    let written = file.serialize();
    let again = match PasswordFile::parse(&written, path) {
        Ok(f) => f,
        Err(e) => panic!("serialized file does not parse: {e}\n{written:?}"),
    };
    assert_eq!(again, file, "{written:?}");
    assert_eq!(again.serialize(), written);
    // Every user is found by name, with the hash it was written with.
    for entry in file.entries() {
        let found = again.get(&entry.username).map(|e| e.hash.as_str());
        assert_eq!(found, Some(entry.hash.as_str()));
    }
});
