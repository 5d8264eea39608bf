//! `Acl::parse` over arbitrary text never panics, and a parsed ACL answers checks (for names and
//! topics taken from the same text, including hostile ones with `+`, `#` and `/`) without
//! panicking. With no rules at all, everything is denied.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mqttd::auth::Access;
use mqttd::auth::acl::Acl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(acl) = Acl::parse(text, Path::new("fuzz.acl")) else {
        return;
    };
    let _ = acl.patterns_use_names();
    // Words of the file serve as usernames, client ids and topics (bounded: 16 of them).
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace())
        .filter(|w| !w.is_empty())
        .take(16)
        .collect();
    let none_granted = acl.rule_count() == 0;
    for (i, topic) in words.iter().enumerate() {
        let user = words.get(i + 1).copied();
        let client = words.get(i + 2).copied().unwrap_or("");
        for access in [Access::Read, Access::Write, Access::Subscribe] {
            let allowed = acl.check(user, client, topic, access);
            let anonymous = acl.check(None, client, topic, access);
            if none_granted {
                assert!(!allowed && !anonymous, "empty ACL allowed {topic:?}");
            }
        }
    }
});
