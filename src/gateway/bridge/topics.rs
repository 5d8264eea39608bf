//! Topic mapping with Mosquitto's `topic` semantics (mosquitto.conf(5), "topic pattern [[[ out
//! | in | both ] qos-level] local-prefix remote-prefix]"):
//!
//! - out: subscribe locally to `local_prefix + pattern`; a message on local topic `T` goes to
//!   the remote as `remote_prefix + (T without local_prefix)`.
//! - in: subscribe on the remote to `remote_prefix + pattern`; a message on remote topic `T` is
//!   published locally as `local_prefix + (T without remote_prefix)`.
//! - An empty pattern (both prefixes set) renames one topic: `local_prefix` <-> `remote_prefix`.
//!
//! When several lines match a topic, the first one in the configuration decides (Mosquitto
//! walks its topics in order too).

use crate::config::{BridgeTopic, Direction};
use crate::protocol::QoS;
use crate::protocol::topic::matches;

#[derive(Debug, Clone)]
struct Route {
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
    /// `local_prefix + pattern`: the local subscription (out) and the local topic test.
    local_filter: String,
    /// `remote_prefix + pattern`: the remote subscription (in) and the remote topic test.
    remote_filter: String,
}

/// A bridge's topic lines, ready to map topics both ways.
#[derive(Debug, Clone)]
pub struct Topics {
    routes: Vec<Route>,
}

impl Topics {
    /// From validated configuration lines (see [`BridgeTopic::check`]).
    pub fn new(lines: &[BridgeTopic]) -> Self {
        let routes = lines
            .iter()
            .map(|t| Route {
                direction: t.direction,
                qos: QoS::from_u8(t.qos.min(2)).unwrap_or(QoS::AtMostOnce),
                local_prefix: t.local_prefix.clone(),
                remote_prefix: t.remote_prefix.clone(),
                local_filter: format!("{}{}", t.local_prefix, t.pattern),
                remote_filter: format!("{}{}", t.remote_prefix, t.pattern),
            })
            .collect();
        Topics { routes }
    }

    /// The local subscriptions (direction out or both), each once at its highest QoS.
    pub fn local_filters(&self) -> Vec<(String, QoS)> {
        dedup(
            self.routes
                .iter()
                .filter(|r| r.direction.outbound())
                .map(|r| (r.local_filter.clone(), r.qos)),
        )
    }

    /// The remote subscriptions (direction in or both), each once at its highest QoS.
    pub fn remote_filters(&self) -> Vec<(String, QoS)> {
        dedup(
            self.routes
                .iter()
                .filter(|r| r.direction.inbound())
                .map(|r| (r.remote_filter.clone(), r.qos)),
        )
    }

    /// The remote topic for local topic `topic`, and the line's QoS; None: not bridged out.
    pub fn to_remote(&self, topic: &str) -> Option<(String, QoS)> {
        self.routes
            .iter()
            .filter(|r| r.direction.outbound() && matches(&r.local_filter, topic))
            .find_map(|r| {
                let rest = topic.strip_prefix(r.local_prefix.as_str())?;
                Some((format!("{}{rest}", r.remote_prefix), r.qos))
            })
    }

    /// The local topic for remote topic `topic`; None: not bridged in (the remote sent what we
    /// did not subscribe to, or an overlapping subscription delivered it).
    pub fn to_local(&self, topic: &str) -> Option<String> {
        self.routes
            .iter()
            .filter(|r| r.direction.inbound() && matches(&r.remote_filter, topic))
            .find_map(|r| {
                let rest = topic.strip_prefix(r.remote_prefix.as_str())?;
                Some(format!("{}{rest}", r.local_prefix))
            })
    }
}

fn dedup(filters: impl Iterator<Item = (String, QoS)>) -> Vec<(String, QoS)> {
    let mut out: Vec<(String, QoS)> = Vec::new();
    for (filter, qos) in filters {
        match out.iter_mut().find(|(f, _)| *f == filter) {
            Some((_, q)) => *q = (*q).max(qos),
            None => out.push((filter, qos)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pattern: &str, direction: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    /// The table in mosquitto.conf(5), row by row.
    #[test]
    fn mosquitto_prefix_table() {
        let rows = [
            ("pattern", "L/", "R/", "L/pattern", "R/pattern"),
            ("pattern", "L/", "", "L/pattern", "pattern"),
            ("pattern", "", "R/", "pattern", "R/pattern"),
            ("pattern", "", "", "pattern", "pattern"),
            ("", "local", "remote", "local", "remote"),
        ];
        for (pattern, lp, rp, local, remote) in rows {
            let t = Topics::new(&[line(pattern, Direction::Both, lp, rp)]);
            assert_eq!(
                t.local_filters(),
                vec![(local.to_owned(), QoS::AtLeastOnce)]
            );
            assert_eq!(
                t.remote_filters(),
                vec![(remote.to_owned(), QoS::AtLeastOnce)]
            );
            assert_eq!(t.to_remote(local).map(|r| r.0).as_deref(), Some(remote));
            assert_eq!(t.to_local(remote).as_deref(), Some(local));
        }
        for (pattern, lp, rp) in [("", "local", ""), ("", "", "remote"), ("", "", "")] {
            assert!(line(pattern, Direction::Out, lp, rp).check().is_err());
        }
    }

    #[test]
    fn wildcards_and_directions() {
        let t = Topics::new(&[
            line("sensors/#", Direction::Out, "", "site1/"),
            line("commands/+", Direction::In, "cloud/", ""),
        ]);
        assert_eq!(
            t.to_remote("sensors/a/b").map(|r| r.0).as_deref(),
            Some("site1/sensors/a/b")
        );
        assert_eq!(t.to_remote("commands/x"), None);
        assert_eq!(
            t.to_local("commands/x").as_deref(),
            Some("cloud/commands/x")
        );
        assert_eq!(t.to_local("commands/x/y"), None);
        assert_eq!(t.to_local("site1/sensors/a"), None);
        assert_eq!(
            t.local_filters(),
            vec![("sensors/#".into(), QoS::AtLeastOnce)]
        );
        assert_eq!(
            t.remote_filters(),
            vec![("commands/+".into(), QoS::AtLeastOnce)]
        );
    }

    #[test]
    fn checks() {
        assert!(line("a/#", Direction::Out, "x/+/", "").check().is_err());
        assert!(line("a/#/b", Direction::Out, "", "").check().is_err());
        assert!(line("#", Direction::Out, "$share/g/", "").check().is_err());
        let mut l = line("a", Direction::In, "", "");
        l.qos = 3;
        assert!(l.check().is_err());
        assert!(
            line("#", Direction::Both, "local/topic/", "remote/topic/")
                .check()
                .is_ok()
        );
    }
}
