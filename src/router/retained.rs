//! Retained messages: one per topic, in a trie of their own (separate from subscriptions, as in
//! Mosquitto's `retain.c`) so a new subscription's filter walks only matching branches.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Message, Router};
use crate::store::{Op, Ticket};

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    root: Node,
    count: usize,
}

impl RetainedStore {
    /// Stores `msg` as the retained message of its topic; an empty payload clears it.
    pub fn set(&mut self, msg: Arc<Message>) {
        let levels: Vec<&str> = msg.topic.split('/').collect();
        if msg.payload.is_empty() {
            if clear_rec(&mut self.root, &levels) {
                self.count -= 1;
            }
            return;
        }
        let mut node = &mut self.root;
        for level in levels {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(msg).is_none() {
            self.count += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<Arc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.clone()
    }

    /// Every retained message, `$` topics included.
    pub fn all(&self) -> Vec<Arc<Message>> {
        let mut out = Vec::with_capacity(self.count);
        collect_all(&self.root, &mut out);
        out
    }

    /// Every retained message whose topic matches `filter` (already validated).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        collect_rec(&self.root, &levels, true, &mut out);
        out
    }
}

impl Router {
    /// The retained message of `topic` (None: none, or it expired).
    pub fn retained_message(&self, topic: &str) -> Option<Arc<Message>> {
        let msg = self.retained.read().get(topic)?;
        (!msg.expired(crate::timer::wall_now())).then_some(msg)
    }

    /// Retained messages whose topic matches `filter` (all of them, `$` topics too, without
    /// one), unexpired, sorted by topic.
    pub fn retained_messages(&self, filter: Option<&str>) -> Vec<Arc<Message>> {
        let mut out = match filter {
            Some(f) => self.retained.read().matching(f),
            None => self.retained.read().all(),
        };
        let now = crate::timer::wall_now();
        out.retain(|m| !m.expired(now));
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Clears the retained message of `topic` as an empty retained PUBLISH would, delivering
    /// nothing. None when there was none; else the store's ticket for the removal (None when
    /// nothing is stored: persistence off, or a `$SYS` topic).
    pub fn clear_retained(&self, topic: &str) -> Option<Option<Ticket>> {
        let mut retained = self.retained.write();
        let levels: Vec<&str> = topic.split('/').collect();
        if !clear_rec(&mut retained.root, &levels) {
            return None;
        }
        retained.count -= 1;
        // Under the same lock as memory (see `Router::retain` in persist.rs).
        let store = self.store.as_ref().filter(|_| !topic.starts_with("$SYS"));
        Some(store.map(|s| s.submit(Op::Unretain(topic.into()))))
    }
}

fn clear_rec(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let cleared = clear_rec(child, rest);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    cleared
}

fn collect_rec(node: &Node, filter: &[&str], at_root: bool, out: &mut Vec<Arc<Message>>) {
    let Some((first, rest)) = filter.split_first() else {
        out.extend(node.message.iter().cloned());
        return;
    };
    match *first {
        "#" => {
            // "a/#" includes "a" itself; at the root, '$' topics are excluded (MQTT-4.7.2-1).
            if !at_root {
                out.extend(node.message.iter().cloned());
            }
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    collect_all(child, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    collect_rec(child, rest, false, out);
                }
            }
        }
        level => {
            if let Some(child) = node.children.get(level) {
                collect_rec(child, rest, false, out);
            }
        }
    }
}

fn collect_all(node: &Node, out: &mut Vec<Arc<Message>>) {
    out.extend(node.message.iter().cloned());
    for child in node.children.values() {
        collect_all(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::new(
            topic.into(),
            bytes::Bytes::from_static(payload),
            QoS::AtMostOnce,
            true,
        ))
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut v: Vec<String> = store
            .matching(filter)
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn set_match_clear() {
        let mut s = RetainedStore::default();
        for t in ["a", "a/b", "a/b/c", "x/b", "$SYS/u"] {
            s.set(msg(t, b"1"));
        }
        assert_eq!(s.len(), 5);
        assert_eq!(topics(&s, "a/#"), vec!["a", "a/b", "a/b/c"]);
        assert_eq!(topics(&s, "+/b"), vec!["a/b", "x/b"]);
        assert_eq!(topics(&s, "#"), vec!["a", "a/b", "a/b/c", "x/b"]);
        assert_eq!(topics(&s, "$SYS/#"), vec!["$SYS/u"]);
        s.set(msg("a/b", b""));
        assert_eq!(s.len(), 4);
        assert_eq!(topics(&s, "a/#"), vec!["a", "a/b/c"]);
        s.set(msg("a/b/c", b""));
        assert_eq!(topics(&s, "a/+/c"), Vec::<String>::new());
    }
}
