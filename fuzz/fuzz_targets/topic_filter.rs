//! Topic names and filters: the validators, `split_shared`, `matches` and the ACL's
//! `filter_covers` never panic, and agree with the simple reference implementations below.
//!
//! Input: UTF-8 text, split on U+0000 (which no valid name or filter contains) into
//! `filter \0 topic \0 other_filter`; the whole text is also validated as one string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::auth::acl::filter_covers;
use mqttd::protocol::topic::{matches, split_shared, validate_topic_filter, validate_topic_name};

/// MQTT 4.7 matching written the obvious way: level by level, recursively.
fn reference_matches(filter: &str, topic: &str) -> bool {
    fn levels(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            // `#` matches the parent level and any number of child levels.
            (Some((&"#", _)), _) => true,
            (None, None) => true,
            (Some((&"+", f_rest)), Some((_, t_rest))) => levels(f_rest, t_rest),
            (Some((fl, f_rest)), Some((tl, t_rest))) => fl == tl && levels(f_rest, t_rest),
            _ => false,
        }
    }
    // MQTT-4.7.2-1: wildcards at the first level do not match `$` topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    levels(&f, &t)
}

/// Filter rules, written as a whole-level check.
fn reference_filter_ok(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65_535 || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        let hash_ok = !l.contains('#') || (*l == "#" && i + 1 == levels.len());
        let plus_ok = !l.contains('+') || *l == "+";
        hash_ok && plus_ok
    })
}

fn reference_name_ok(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

fn check_one(s: &str) {
    assert_eq!(
        validate_topic_filter(s).is_ok(),
        reference_filter_ok(s),
        "filter {s:?}"
    );
    assert_eq!(
        validate_topic_name(s).is_ok(),
        reference_name_ok(s),
        "name {s:?}"
    );
    if let Some((group, inner)) = split_shared(s) {
        assert_eq!(s, format!("$share/{group}/{inner}"), "split_shared({s:?})");
        assert!(
            !group.is_empty() && !group.contains(['/', '+', '#']),
            "group {group:?}"
        );
        assert!(validate_topic_filter(inner).is_ok(), "inner {inner:?}");
    } else if let Some(rest) = s.strip_prefix("$share/") {
        // Refused: then no split is a valid one.
        let valid = rest.split_once('/').is_some_and(|(g, f)| {
            !g.is_empty() && !g.contains(['+', '#']) && validate_topic_filter(f).is_ok()
        });
        assert!(!valid, "split_shared refused a valid {s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_one(text);
    let mut parts = text.split('\0');
    let (Some(filter), Some(topic)) = (parts.next(), parts.next()) else {
        return;
    };
    check_one(filter);
    check_one(topic);
    let filter_ok = validate_topic_filter(filter).is_ok();
    let topic_ok = validate_topic_name(topic).is_ok();
    if filter_ok && topic_ok {
        assert_eq!(
            matches(filter, topic),
            reference_matches(filter, topic),
            "matches({filter:?}, {topic:?})"
        );
    }
    // A topic name is also a filter that matches exactly itself.
    if topic_ok {
        assert!(matches(topic, topic), "{topic:?} does not match itself");
    }
    // `filter_covers(rule, sub)` must be sound: every topic `sub` matches, `rule` matches too.
    if let Some(other) = parts.next() {
        check_one(other);
        if filter_ok && topic_ok && validate_topic_filter(other).is_ok() {
            if filter_covers(other, filter) && matches(filter, topic) {
                assert!(
                    matches(other, topic),
                    "{other:?} covers {filter:?}, which matches {topic:?}, but does not match it"
                );
            }
            // Every valid filter covers itself.
            assert!(
                filter_covers(filter, filter),
                "{filter:?} does not cover itself"
            );
        }
    }
});
