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
mod tests {
    use super::*;
    use Access::{Read, Subscribe, Write};

    fn acl(text: &str) -> Acl {
        match Acl::parse(text, Path::new("test.acl")) {
            Ok(acl) => acl,
            Err(e) => panic!("{e}"),
        }
    }

    /// Each case: (username, client id, topic, access, expected).
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, Access, bool);

    fn run(acl: &Acl, cases: &[Case<'_>]) {
        for &(user, client, topic, access, want) in cases {
            assert_eq!(
                acl.check(user, client, topic, access),
                want,
                "user {user:?} client {client:?} {access:?} {topic:?}"
            );
        }
    }

    #[test]
    fn filter_covers_table() {
        let cases = [
            ("sensors/#", "sensors/+/temp", true),
            ("sensors/#", "sensors/#", true),
            ("sensors/#", "sensors", true),
            ("sensors/#", "sensors/a/b/c", true),
            ("sensors/a", "sensors/#", false),
            ("sensors/a", "sensors/+", false),
            ("sensors/a", "sensors/a", true),
            ("sensors/+", "sensors/a", true),
            ("sensors/+", "sensors/+", true),
            ("sensors/+", "sensors/#", false),
            ("sensors/+", "sensors/a/b", false),
            ("sensors/+", "sensors", false),
            ("sensors/+/temp", "sensors/+/temp", true),
            ("sensors/+/temp", "sensors/+/+", false),
            ("+/#", "#", true),
            ("a/+/#", "a/#", false),
            ("a/+/#", "a/b/#", true),
            ("a/+/#", "a/+/#", true),
            ("+", "#", false),
            ("#", "#", true),
            ("#", "a/+/b", true),
            ("#", "$SYS/#", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("$SYS/#", "#", false),
            ("$SYS/#", "+/broker", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a/+/b", false),
            ("a/+/b", "a//b", true),
        ];
        for (rule, sub, want) in cases {
            assert_eq!(filter_covers(rule, sub), want, "rule {rule:?} sub {sub:?}");
        }
    }

    /// Levels from a tiny alphabet so random filters and topics often overlap.
    fn filter_strategy(wildcards: bool) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let level = if wildcards {
            prop::sample::select(vec!["a", "b", "", "$s", "+", "#"])
        } else {
            prop::sample::select(vec!["a", "b", "", "$s"])
        };
        prop::collection::vec(level, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid", move |f| {
                if wildcards {
                    validate_topic_filter(f).is_ok()
                } else {
                    crate::protocol::topic::validate_topic_name(f).is_ok()
                }
            })
    }

    proptest::proptest! {
        /// If the rule covers the subscription, it matches every topic the subscription matches;
        /// and for a plain topic name, covering is matching.
        #[test]
        fn covers_agrees_with_matches(
            rule in filter_strategy(true),
            sub in filter_strategy(true),
            topic in filter_strategy(false),
        ) {
            use crate::protocol::topic::matches;
            if filter_covers(&rule, &sub) && matches(&sub, &topic) {
                proptest::prop_assert!(matches(&rule, &topic));
            }
            proptest::prop_assert_eq!(filter_covers(&rule, &topic), matches(&rule, &topic));
        }
    }

    #[test]
    fn anonymous_rules_are_only_for_anonymous_clients() {
        let acl = acl("topic read public/#\nuser alice\ntopic alice/#\n");
        run(
            &acl,
            &[
                (None, "c", "public/news", Read, true),
                (None, "c", "public/news", Write, false),
                (None, "c", "alice/x", Read, false),
                (Some("alice"), "c", "public/news", Read, false),
                (Some("alice"), "c", "alice/x", Read, true),
                (Some("alice"), "c", "alice/x", Write, true),
                (Some("bob"), "c", "alice/x", Read, false),
                (Some("bob"), "c", "public/news", Read, false),
            ],
        );
    }

    #[test]
    fn access_words() {
        let acl = acl(concat!(
            "user u\n",
            "topic read r/#\n",
            "topic write w/#\n",
            "topic readwrite rw/#\n",
            "topic default/#\n",
            "topic deny rw/secret\n",
        ));
        let u = Some("u");
        run(
            &acl,
            &[
                (u, "c", "r/1", Read, true),
                (u, "c", "r/1", Write, false),
                (u, "c", "r/#", Subscribe, true),
                (u, "c", "w/1", Read, false),
                (u, "c", "w/1", Write, true),
                (u, "c", "w/#", Subscribe, false),
                (u, "c", "rw/1", Read, true),
                (u, "c", "rw/1", Write, true),
                (u, "c", "default/1", Read, true),
                (u, "c", "default/1", Write, true),
                (u, "c", "rw/secret", Read, false),
                (u, "c", "rw/secret", Write, false),
                (u, "c", "elsewhere", Read, false),
            ],
        );
    }

    #[test]
    fn deny_wins_wherever_it_is() {
        // The deny line comes after the grant and in another scope (a pattern): still wins.
        let acl = acl(concat!(
            "user u\n",
            "topic readwrite home/#\n",
            "topic deny home/+/private\n",
            "pattern deny home/%u/locked\n",
        ));
        let u = Some("u");
        run(
            &acl,
            &[
                (u, "c", "home/kitchen/temp", Read, true),
                (u, "c", "home/kitchen/private", Read, false),
                (u, "c", "home/kitchen/private", Write, false),
                (u, "c", "home/u/locked", Write, false),
                (u, "c", "home/v/locked", Write, true),
                // The subscription overlaps the deny only partly: accepted, deliveries filtered.
                (u, "c", "home/#", Subscribe, true),
                (u, "c", "home/+/private", Subscribe, false),
                (u, "c", "home/a/private", Subscribe, false),
            ],
        );
    }

    #[test]
    fn subscribe_needs_an_overlapping_read_rule() {
        let acl = acl("user u\ntopic read sensors/#\ntopic read exact/a\ntopic write up/#\n");
        let u = Some("u");
        run(
            &acl,
            &[
                (u, "c", "sensors/+/temp", Subscribe, true),
                (u, "c", "sensors/#", Subscribe, true),
                // Granted because some topic they match is readable; deliveries are checked
                // one by one, so `#` brings only `sensors/...` and `exact/a`.
                (u, "c", "#", Subscribe, true),
                (u, "c", "exact/a", Subscribe, true),
                (u, "c", "exact/#", Subscribe, true),
                (u, "c", "exact/+", Subscribe, true),
                (u, "c", "exact/b", Subscribe, false),
                (u, "c", "other/#", Subscribe, false),
                (u, "c", "sensors", Subscribe, true),
                (u, "c", "$SYS/#", Subscribe, false),
                (u, "c", "up/x", Subscribe, false),
            ],
        );
    }

    #[test]
    fn reading_everything_but_a_denied_branch() {
        let acl = acl("user ops\ntopic read #\ntopic deny secret/#\n");
        let ops = Some("ops");
        run(
            &acl,
            &[
                (ops, "c", "#", Subscribe, true),
                (ops, "c", "a/b", Read, true),
                (ops, "c", "secret/x", Read, false),
                (ops, "c", "secret/#", Subscribe, false),
                (ops, "c", "$SYS/broker/uptime", Read, false),
            ],
        );
    }

    #[test]
    fn patterns_substitute_username_and_client_id() {
        let acl = acl(concat!(
            "pattern readwrite users/%u/#\n",
            "pattern write devices/%c/state\n",
            "pattern read shared/pre-%u-%c-post\n",
        ));
        run(
            &acl,
            &[
                (Some("alice"), "c1", "users/alice/inbox", Read, true),
                (Some("alice"), "c1", "users/alice/inbox", Write, true),
                (Some("alice"), "c1", "users/bob/inbox", Read, false),
                (Some("alice"), "c1", "users/alice/#", Subscribe, true),
                (Some("alice"), "c1", "users/+/inbox", Subscribe, true),
                (Some("alice"), "c1", "users/bob/inbox", Subscribe, false),
                (Some("alice"), "c1", "devices/c1/state", Write, true),
                (Some("alice"), "c1", "devices/c2/state", Write, false),
                (Some("alice"), "c1", "devices/c1/state", Read, false),
                (Some("alice"), "c1", "shared/pre-alice-c1-post", Read, true),
                (Some("alice"), "c1", "shared/pre-alice-c2-post", Read, false),
                // %u patterns never apply to anonymous clients; %c ones do.
                (None, "c1", "users//inbox", Read, false),
                (None, "c1", "devices/c1/state", Write, true),
                // Names containing spaces or other ordinary characters are fine.
                (Some("a b"), "c", "users/a b/x", Read, true),
            ],
        );
    }

    #[test]
    fn topic_lines_do_not_substitute() {
        let acl = acl("user u\ntopic read literal/%u\n");
        run(
            &acl,
            &[
                (Some("u"), "c", "literal/%u", Read, true),
                (Some("u"), "c", "literal/u", Read, false),
            ],
        );
    }

    #[test]
    fn names_that_would_change_a_pattern_are_refused() {
        let acl = acl(concat!(
            "pattern readwrite users/%u/#\n",
            "pattern readwrite devices/%c/#\n",
            "pattern deny private/%c/#\n",
            "topic read anon/#\n",
        ));
        run(
            &acl,
            &[
                // `#` as the user name would turn users/%u/# into users/#/#.
                (Some("#"), "c", "users/bob/inbox", Read, false),
                (Some("+"), "c", "users/bob/inbox", Read, false),
                (Some("a/b"), "c", "users/a/b/x", Read, false),
                (Some("x"), "#", "devices/other/x", Write, false),
                (Some("x"), "+", "devices/other/x", Write, false),
                (Some("x"), "a/b", "devices/a/b/x", Write, false),
                (Some("x"), "#", "devices/#", Subscribe, false),
                // Safe names still work.
                (Some("bob"), "c", "users/bob/inbox", Read, true),
                (Some("x"), "dev1", "devices/dev1/x", Write, true),
                // A deny pattern that cannot be applied safely fails closed for that client.
                (None, "evil/#", "anon/news", Read, false),
                (None, "good", "anon/news", Read, true),
            ],
        );
    }

    #[test]
    fn empty_acl_denies_everything() {
        let acl = acl("# nothing but a comment\n\n");
        run(
            &acl,
            &[
                (None, "c", "a", Read, false),
                (Some("u"), "c", "a", Write, false),
                (Some("u"), "c", "#", Subscribe, false),
            ],
        );
        assert_eq!(acl.rule_count(), 0);
    }

    #[test]
    fn syntax_details() {
        let acl = acl(concat!(
            "  # indented comment\n",
            "user   john smith  \r\n",
            "\ttopic   read   a topic with spaces  \n",
            "topic deny\n",
            "user second\n",
            "topic x\n",
            "user john smith\n",
            "topic y\n",
        ));
        let john = Some("john smith");
        run(
            &acl,
            &[
                (john, "c", "a topic with spaces", Read, true),
                (john, "c", "a topic with spaces", Write, false),
                // A single word is the topic: `deny` here is a topic named "deny", readwrite.
                (john, "c", "deny", Write, true),
                // A user section may be reopened.
                (john, "c", "y", Read, true),
                (john, "c", "x", Read, false),
                (Some("second"), "c", "x", Read, true),
                (Some("john"), "c", "y", Read, false),
            ],
        );
        assert_eq!(acl.rule_count(), 4);
        assert!(!acl.patterns_use_names());
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = acl("topic read #\ntopic read $SYS/broker/#\n");
        run(
            &acl,
            &[
                (None, "c", "$SYS/broker/uptime", Read, true),
                (None, "c", "$SYS/other", Read, false),
                (None, "c", "$SYS/broker/#", Subscribe, true),
                (None, "c", "$SYS/#", Subscribe, true),
                (None, "c", "$other/#", Subscribe, false),
            ],
        );
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let cases = [
            ("topic read a\nbogus a\n", 2, "unknown directive"),
            ("\n\ntopic reed a/b\n", 3, "access must be"),
            ("topic\n", 1, "missing topic"),
            ("user\n", 1, "user name"),
            ("user   \n", 1, "user name"),
            ("topic read a/#/b\n", 1, "invalid topic filter"),
            ("# c\npattern write a+/b\n", 2, "invalid topic filter"),
            ("topic read a/%u+\n", 1, "invalid topic filter"),
            ("Topic read a\n", 1, "unknown directive"),
        ];
        for (text, line, needle) in cases {
            let err = match Acl::parse(text, Path::new("conf/acl")) {
                Ok(_) => panic!("{text:?} parsed"),
                Err(e) => e,
            };
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert_eq!(err.path, "conf/acl");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("conf/acl:{line}: ")));
        }
    }

    #[test]
    fn load_reports_missing_file() {
        let err = match Acl::load(Path::new("/nonexistent/mqttd.acl")) {
            Ok(_) => panic!("loaded"),
            Err(e) => e,
        };
        assert_eq!(err.line, 0);
        assert!(err.to_string().starts_with("/nonexistent/mqttd.acl:0: "));
    }
}
