//! Topic names and topic filters (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7 and 4.8.2).

/// Longest topic name or filter: it is a UTF-8 string with a two-byte length (MQTT-4.7.3-3).
const MAX_LEN: usize = 65_535;

/// Checks a topic name as used in PUBLISH and wills: at least one character, at most 65,535 bytes,
/// no `+` or `#`, no U+0000. (UTF-8 validity is guaranteed by `&str`.)
pub fn validate_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("MQTT-4.7.3-1: empty topic name");
    }
    if topic.len() > MAX_LEN {
        return Err("MQTT-4.7.3-3: topic name longer than 65535 bytes");
    }
    if topic.contains(['+', '#']) {
        return Err("MQTT-3.3.2-2: wildcard in topic name");
    }
    if topic.contains('\0') {
        return Err("MQTT-4.7.3-2: U+0000 in topic name");
    }
    Ok(())
}

/// Checks a topic filter: non-empty, at most 65,535 bytes, no U+0000, `#` only as the whole last
/// level, `+` only as a whole level.
pub fn validate_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("MQTT-4.7.3-1: empty topic filter");
    }
    if filter.len() > MAX_LEN {
        return Err("MQTT-4.7.3-3: topic filter longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("MQTT-4.7.3-2: U+0000 in topic filter");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("MQTT-4.7.1-2: '#' must be the last level, alone");
        }
        if level.contains('+') && level != "+" {
            return Err("MQTT-4.7.1-3: '+' must occupy a whole level");
        }
    }
    Ok(())
}

/// Splits a shared subscription `$share/{ShareName}/{filter}` (MQTT 5.0 section 4.8.2) into
/// `(share name, filter)`. `None` if `filter` is not a shared subscription or is an invalid one:
/// the share name must be non-empty without `/`, `+` or `#` (MQTT-4.8.2-1, MQTT-4.8.2-2) and the
/// filter after it must be a valid topic filter.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) {
        return None;
    }
    validate_topic_filter(inner).ok()?;
    Some((group, inner))
}

/// Checks a SUBSCRIBE filter, plain or shared: whether it is shared, and the filter that
/// matches topics (the part after `$share/GROUP/`).
pub fn subscription_filter(filter: &str) -> Result<(bool, &str), &'static str> {
    match split_shared(filter) {
        Some((_, inner)) => Ok((true, inner)),
        None if filter.starts_with("$share/") => Err("MQTT-4.8.2-1: malformed shared subscription"),
        None => validate_topic_filter(filter).map(|()| (false, filter)),
    }
}

/// Does `filter` (already valid) match `topic` (already valid)? Topics starting with `$` are not
/// matched by a filter starting with a wildcard (MQTT-4.7.2-1). `a/#` matches `a` (the parent
/// level, MQTT 4.7.1.2) and `+` matches an empty level.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        let long = "a".repeat(65_536);
        let max = "a".repeat(65_535);
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("/", true),
            ("a//b", true),
            ("$SYS/uptime", true),
            ("sport/tennis player1", true),
            ("é/ü", true),
            ("", false),
            ("a/+", false),
            ("a/#", false),
            ("a+", false),
            ("#", false),
            ("a\0b", false),
            (&long, false),
            (&max, true),
        ];
        for (topic, ok) in cases {
            assert_eq!(validate_topic_name(topic).is_ok(), *ok, "{:.20}", topic);
        }
    }

    #[test]
    fn topic_filters() {
        let long = "a".repeat(65_536);
        let cases: &[(&str, bool)] = &[
            ("#", true),
            ("+", true),
            ("a/#", true),
            ("a/+/b", true),
            ("+/+", true),
            ("/+", true),
            ("$SYS/#", true),
            ("$share/g/a/#", true),
            ("", false),
            ("a#", false),
            ("a/#/b", false),
            ("#/a", false),
            ("a+", false),
            ("a/b+/c", false),
            ("++", false),
            ("##", false),
            ("a\0", false),
            (&long, false),
        ];
        for (filter, ok) in cases {
            assert_eq!(validate_topic_filter(filter).is_ok(), *ok, "{:.20}", filter);
        }
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+/+", "/", true),
            ("+/a", "/a", true),
            ("a/+/c", "a//c", true),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/#", "sport/tennis/player1/ranking", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "$SYS/uptime", false),
            ("+/uptime", "$SYS/uptime", false),
            ("$SYS/#", "$SYS/uptime", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/uptime", true),
            ("a/+/#", "a/b", true),
            ("a/+/#", "a", false),
        ];
        for (filter, topic, m) in cases {
            assert_eq!(matches(filter, topic), *m, "{filter} vs {topic}");
        }
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(split_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(split_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(split_shared("$share/g/+/x"), Some(("g", "+/x")));
        assert_eq!(split_shared("$share/g/"), None);
        assert_eq!(split_shared("$share//a"), None);
        assert_eq!(split_shared("$share/g+/a"), None);
        assert_eq!(split_shared("$share/g#/a"), None);
        assert_eq!(split_shared("$share/g"), None);
        assert_eq!(split_shared("$share/g/a#"), None);
        assert_eq!(split_shared("a/b"), None);
        assert_eq!(split_shared("$SHARE/g/a"), None);
    }
}
