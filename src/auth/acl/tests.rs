//! ACL file parsing and access decisions.

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
