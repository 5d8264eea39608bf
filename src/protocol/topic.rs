//! Topic names and topic filters (MQTT 3.1.1 section 4.7).

/// Checks a topic name as used in PUBLISH and wills: at least one character, no `+` or `#`.
/// (UTF-8 validity and U+0000 are checked when the string is decoded.)
pub fn validate_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("MQTT-4.7.3-1: empty topic name");
    }
    if topic.contains(['+', '#']) {
        return Err("MQTT-3.3.2-2: wildcard in topic name");
    }
    Ok(())
}

/// Checks a topic filter: non-empty, `#` only as the whole last level, `+` only as a whole level.
pub fn validate_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("MQTT-4.7.3-1: empty topic filter");
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

/// Does `filter` (already valid) match `topic` (already valid)? Topics starting with `$` are not
/// matched by a filter starting with a wildcard (MQTT-4.7.2-1).
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
