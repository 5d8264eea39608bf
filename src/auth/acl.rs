//! Access control lists in Mosquitto's `acl_file` syntax.
//!
//! ```text
//! # comment                         blank lines and leading/trailing whitespace are ignored
//! topic read $SYS/#                 before any `user` line: anonymous clients only
//! user alice smith                  the rest of the line is the user name (spaces allowed)
//! topic readwrite home/#            access: read | write | readwrite (the default) | deny
//! pattern write devices/%c/state    every client; %u = username, %c = client id
//! ```
//!
//! Semantics follow Mosquitto 2: with an ACL loaded everything is denied unless a rule grants it,
//! and a matching `deny` rule wins over any grant. `Write` is checked against the PUBLISH topic,
//! `Read` against each delivered topic (retained messages included). `Subscribe` is granted when a
//! read rule *overlaps* the filter (some topic matches both) and no `deny` rule covers the whole
//! filter (see [`filter_covers`]): Mosquitto 2 accepts every SUBSCRIBE and filters deliveries, so
//! `mosquitto_sub -t '#'` by a user who may read `sensors/#` works and receives only `sensors/...`;
//! we keep that, but answer 0x80 for a filter under which nothing at all is readable. The
//! per-delivery `Read` check is what keeps unreadable messages out.
//!
//! A pattern is never applied with a username or client id containing `+`, `#` or `/` (such a name
//! could widen the rule, as Mosquitto warns): grants from that pattern do not apply, and a `deny`
//! pattern that cannot be applied denies, so refusing a name never opens anything up.
//!
//! Rules are compiled once: each filter is split into levels, `%u`/`%c` become placeholders, and
//! user rules sit in a `HashMap` by name, so a check is one lookup plus a scan of that user's rules
//! and the patterns, without allocating.

use std::collections::HashMap;
use std::path::Path;

use super::Access;
use crate::protocol::topic::validate_topic_filter;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct AclError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// A parsed ACL file.
#[derive(Debug, Default)]
pub struct Acl {
    /// `topic` lines before the first `user` line.
    anonymous: RuleSet,
    /// `topic` lines after `user NAME`, by name.
    users: HashMap<Box<str>, RuleSet>,
    /// `pattern` lines, wherever they appear.
    patterns: RuleSet,
}

/// Rules of one scope, denials kept apart so they are always looked at first.
#[derive(Debug, Default)]
struct RuleSet {
    deny: Vec<Filter>,
    grant: Vec<(Filter, Grant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        match access {
            Access::Read | Access::Subscribe => matches!(self, Grant::Read | Grant::ReadWrite),
            Access::Write => matches!(self, Grant::Write | Grant::ReadWrite),
        }
    }
}

/// A rule's topic filter, split into levels once at load time.
#[derive(Debug)]
struct Filter {
    levels: Box<[Level]>,
    uses_username: bool,
    uses_client_id: bool,
}

#[derive(Debug)]
enum Level {
    Exact(Box<str>),
    Plus,
    Hash,
    /// A `pattern` level containing `%u` or `%c`.
    Template(Box<[Part]>),
}

#[derive(Debug)]
enum Part {
    Text(Box<str>),
    Username,
    ClientId,
}

/// The client a check is about. A name is only usable in a pattern when it cannot change the shape
/// of the filter: with `+`, `#` or `/` in it a client could otherwise widen its own rules (a client
/// id `#` turning `devices/%c/#` into `devices/#/#`, or `a/b` adding a level).
struct Who<'a> {
    username: Option<&'a str>,
    client_id: &'a str,
    username_safe: bool,
    client_id_safe: bool,
}

fn is_safe_name(name: &str) -> bool {
    !name.contains(['+', '#', '/'])
}

/// Outcome of matching one (possibly templated) rule.
#[derive(Debug, PartialEq, Eq)]
enum Match {
    Yes,
    No,
    /// The rule uses a name that is refused (see [`Who`]).
    Unsafe,
}

impl Filter {
    fn compile(filter: &str, is_pattern: bool) -> Filter {
        let levels = filter
            .split('/')
            .map(|level| match level {
                "+" => Level::Plus,
                "#" => Level::Hash,
                _ if is_pattern && (level.contains("%u") || level.contains("%c")) => {
                    Level::Template(compile_template(level))
                }
                _ => Level::Exact(level.into()),
            })
            .collect::<Box<[Level]>>();
        let uses = |wanted: fn(&Part) -> bool| {
            levels.iter().any(|l| match l {
                Level::Template(parts) => parts.iter().any(wanted),
                _ => false,
            })
        };
        let uses_username = uses(|p| matches!(p, Part::Username));
        let uses_client_id = uses(|p| matches!(p, Part::ClientId));
        Filter {
            levels,
            uses_username,
            uses_client_id,
        }
    }

    /// Does this rule match every topic that `sub` (a topic name or a valid filter) matches?
    /// For a topic name that is plain matching.
    fn covers(&self, who: &Who<'_>, sub: &str) -> Match {
        if self.uses_username {
            match who.username {
                // Mosquitto skips %u patterns for anonymous clients.
                None => return Match::No,
                Some(_) if !who.username_safe => return Match::Unsafe,
                Some(_) => {}
            }
        }
        if self.uses_client_id && !who.client_id_safe {
            return Match::Unsafe;
        }
        // MQTT-4.7.2-1: a filter starting with a wildcard does not match `$` topics.
        if sub.starts_with('$') && matches!(self.levels.first(), Some(Level::Plus | Level::Hash)) {
            return Match::No;
        }
        let mut sub_levels = sub.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            if let Level::Hash = level {
                return Match::Yes;
            }
            let Some(s) = sub_levels.next() else {
                return Match::No;
            };
            let same = match level {
                // `+` covers one level, so not `#`, except that a whole rule `+/#` is `#`: topics
                // have at least one level. (`a/+/#` does not cover `a/#`, which matches `a`.)
                Level::Plus if s == "#" => {
                    return if i == 0 && matches!(self.levels[1..], [Level::Hash]) {
                        Match::Yes
                    } else {
                        Match::No
                    };
                }
                Level::Plus => true,
                Level::Exact(e) => **e == *s,
                Level::Template(parts) => template_eq(parts, who, s),
                Level::Hash => true,
            };
            if !same {
                return Match::No;
            }
        }
        if sub_levels.next().is_none() {
            Match::Yes
        } else {
            Match::No
        }
    }
}

impl Filter {
    /// Is there a topic that both this rule and the subscription filter `sub` match?
    fn overlaps(&self, who: &Who<'_>, sub: &str) -> bool {
        if self.uses_username && (who.username.is_none() || !who.username_safe) {
            return false;
        }
        if self.uses_client_id && !who.client_id_safe {
            return false;
        }
        let rule_wild = matches!(self.levels.first(), Some(Level::Plus | Level::Hash));
        let sub_wild = sub.starts_with(['+', '#']);
        let rule_dollar =
            matches!(self.levels.first(), Some(Level::Exact(e)) if e.starts_with('$'));
        // MQTT-4.7.2-1: a leading wildcard never reaches a `$` topic.
        if (rule_wild && sub.starts_with('$')) || (sub_wild && rule_dollar) {
            return false;
        }
        let mut sub_levels = sub.split('/');
        for level in self.levels.iter() {
            let Some(s) = sub_levels.next() else {
                // `sub` ended: the rule must be able to end here too ("a/#" matches "a").
                return matches!(level, Level::Hash);
            };
            if s == "#" || matches!(level, Level::Hash) {
                return true;
            }
            let same = match level {
                Level::Plus => true,
                _ if s == "+" => true,
                Level::Exact(e) => **e == *s,
                Level::Template(parts) => template_eq(parts, who, s),
                Level::Hash => true,
            };
            if !same {
                return false;
            }
        }
        // The rule ended: `sub` must be able to end here too.
        matches!(sub_levels.next(), None | Some("#"))
    }
}

fn compile_template(level: &str) -> Box<[Part]> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let part = match (c, chars.peek()) {
            ('%', Some('u')) => Part::Username,
            ('%', Some('c')) => Part::ClientId,
            _ => {
                text.push(c);
                continue;
            }
        };
        chars.next();
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text).into()));
        }
        parts.push(part);
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
    parts.into()
}

/// Is the topic level `s` exactly the template with the names substituted? (No allocation.)
fn template_eq(parts: &[Part], who: &Who<'_>, mut s: &str) -> bool {
    for part in parts {
        let piece = match part {
            Part::Text(t) => &**t,
            Part::Username => who.username.unwrap_or_default(),
            Part::ClientId => who.client_id,
        };
        match s.strip_prefix(piece) {
            Some(rest) => s = rest,
            None => return false,
        }
    }
    s.is_empty()
}

/// Does `rule_filter` match every topic that `sub_filter` matches? Both must be valid filters.
/// This is how a SUBSCRIBE is checked: rule `sensors/#` covers `sensors/+/temp`, but rule
/// `sensors/a` does not cover `sensors/#`.
pub fn filter_covers(rule_filter: &str, sub_filter: &str) -> bool {
    let who = Who {
        username: None,
        client_id: "",
        username_safe: true,
        client_id_safe: true,
    };
    Filter::compile(rule_filter, false).covers(&who, sub_filter) == Match::Yes
}

impl RuleSet {
    fn push(&mut self, filter: Filter, access: Option<Grant>) {
        match access {
            Some(grant) => self.grant.push((filter, grant)),
            None => self.deny.push(filter),
        }
    }

    /// A deny rule that matches, or a templated deny rule that cannot be applied safely.
    fn denies(&self, who: &Who<'_>, topic: &str) -> bool {
        self.deny
            .iter()
            .any(|f| matches!(f.covers(who, topic), Match::Yes | Match::Unsafe))
    }

    fn grants(&self, who: &Who<'_>, topic: &str, access: Access) -> bool {
        self.grant.iter().any(|(f, g)| {
            g.allows(access)
                && match access {
                    // A SUBSCRIBE is granted when some topic it can match is readable; each
                    // delivery is then checked on its own (Access::Read). So `#` works for a
                    // user who may read only `sensors/#`, as in Mosquitto, and receives only
                    // that, while a filter with nothing readable at all is refused.
                    Access::Subscribe => f.overlaps(who, topic),
                    _ => f.covers(who, topic) == Match::Yes,
                }
        })
    }
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            path: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        Acl::parse(&text, path)
    }

    /// Parses ACL text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        // None: still in the anonymous section at the top of the file.
        let mut user: Option<Box<str>> = None;
        for (index, raw) in text.lines().enumerate() {
            let error = |message: String| AclError {
                path: path.display().to_string(),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (directive, rest) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(d, r)| (d, r.trim_start()));
            match directive {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name".into()));
                    }
                    user = Some(rest.into());
                }
                "topic" | "pattern" => {
                    let is_pattern = directive == "pattern";
                    let (access, topic) = parse_rule(rest).map_err(|m| error(m.into()))?;
                    validate_topic_filter(topic).map_err(|reason| {
                        error(format!("invalid topic filter {topic:?}: {reason}"))
                    })?;
                    let filter = Filter::compile(topic, is_pattern);
                    let set = if is_pattern {
                        &mut acl.patterns
                    } else {
                        match &user {
                            None => &mut acl.anonymous,
                            Some(name) => acl.users.entry(name.clone()).or_default(),
                        }
                    };
                    set.push(filter, access);
                }
                other => {
                    return Err(error(format!(
                        "unknown directive {other:?} (expected user, topic or pattern)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// May `username` (None: anonymous) with `client_id` access `topic` (a filter for Subscribe)?
    pub fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        let who = Who {
            username,
            client_id,
            username_safe: username.is_none_or(is_safe_name),
            client_id_safe: is_safe_name(client_id),
        };
        let own = match username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        };
        let scopes = || own.into_iter().chain(std::iter::once(&self.patterns));
        if scopes().any(|set| set.denies(&who, topic)) {
            return false;
        }
        scopes().any(|set| set.grants(&who, topic, access))
    }

    /// Number of rules loaded (for the start-up log line).
    pub fn rule_count(&self) -> usize {
        let count = |s: &RuleSet| s.deny.len() + s.grant.len();
        count(&self.anonymous)
            + count(&self.patterns)
            + self.users.values().map(count).sum::<usize>()
    }

    /// Does any pattern use `%u` / `%c`? (Lets callers warn about unusable names once.)
    pub fn patterns_use_names(&self) -> bool {
        let uses = |f: &Filter| f.uses_username || f.uses_client_id;
        self.patterns.deny.iter().any(uses) || self.patterns.grant.iter().any(|(f, _)| uses(f))
    }
}

/// Splits `[read|write|readwrite|deny] TOPIC`; None as the access means deny.
fn parse_rule(rest: &str) -> Result<(Option<Grant>, &str), &'static str> {
    if rest.is_empty() {
        return Err("missing topic");
    }
    let Some((word, topic)) = rest.split_once(char::is_whitespace) else {
        // One word: it is the topic, with the default access (as Mosquitto).
        return Ok((Some(Grant::ReadWrite), rest));
    };
    let access = match word {
        "read" => Some(Grant::Read),
        "write" => Some(Grant::Write),
        "readwrite" => Some(Grant::ReadWrite),
        "deny" => None,
        _ => return Err("access must be read, write, readwrite or deny"),
    };
    Ok((access, topic.trim_start()))
}

#[cfg(test)]
mod tests;
