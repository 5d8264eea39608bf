//! The subscription trie: topic filters split once into levels, one node per level, subscribers on
//! the node where their filter ends. Matching a topic walks only the branches that can match
//! (exact level, `+`, `#`), never every filter. Empty nodes are pruned on unsubscribe.
//! (The shape follows Mosquitto's `subs.c`.)

use std::collections::HashMap;
use std::sync::Arc;

use super::state::SessionState;
use crate::protocol::SubscriptionOptions;

#[derive(Debug, Clone)]
pub struct Subscriber {
    pub session: Arc<SessionState>,
    pub options: SubscriptionOptions,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct SubscriptionTrie {
    root: Node,
    count: usize,
}

impl SubscriptionTrie {
    /// Adds or replaces `session`'s subscription to `filter` (already validated).
    /// Returns true if it replaced an existing one.
    pub fn insert(
        &mut self,
        filter: &str,
        session: &Arc<SessionState>,
        options: SubscriptionOptions,
    ) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if let Some(existing) = node
            .subscribers
            .iter_mut()
            .find(|s| s.session.id == session.id)
        {
            existing.options = options;
            existing.session = session.clone();
            return true;
        }
        node.subscribers.push(Subscriber {
            session: session.clone(),
            options,
        });
        self.count += 1;
        false
    }

    /// Removes `session_id`'s subscription to `filter`; true if there was one.
    pub fn remove(&mut self, filter: &str, session_id: u64) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_rec(&mut self.root, &levels, session_id);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Number of (session, filter) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `f` for every subscription matching `topic`. A session subscribed through several
    /// overlapping filters is reported once per filter; the caller merges.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a Subscriber)) {
        let levels: Vec<&str> = topic.split('/').collect();
        // MQTT-4.7.2-1: a filter starting with a wildcard does not match a topic starting with '$'.
        let dollar = topic.starts_with('$');
        match_rec(&self.root, &levels, dollar, &mut f);
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], session_id: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        let before = node.subscribers.len();
        node.subscribers.retain(|s| s.session.id != session_id);
        return node.subscribers.len() != before;
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_rec(child, rest, session_id);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn match_rec<'a>(
    node: &'a Node,
    levels: &[&str],
    skip_wildcards: bool,
    f: &mut impl FnMut(&'a Subscriber),
) {
    if !skip_wildcards {
        // '#' matches the parent level too: "a/#" matches "a".
        if let Some(hash) = node.children.get("#") {
            hash.subscribers.iter().for_each(&mut *f);
        }
    }
    let Some((first, rest)) = levels.split_first() else {
        node.subscribers.iter().for_each(f);
        return;
    };
    if let Some(child) = node.children.get(*first) {
        match_rec(child, rest, false, f);
    }
    if !skip_wildcards {
        if let Some(plus) = node.children.get("+") {
            match_rec(plus, rest, false, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn session(id: u64) -> Arc<SessionState> {
        Arc::new(SessionState::new(format!("c{id}").into(), id, true, None))
    }

    fn matches(trie: &SubscriptionTrie, topic: &str) -> Vec<u64> {
        let mut ids = vec![];
        trie.for_each_match(topic, |s| ids.push(s.session.id));
        ids.sort();
        ids
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut t = SubscriptionTrie::default();
        let opts = SubscriptionOptions::new(QoS::AtMostOnce);
        for (id, f) in [
            (1, "a/#"),
            (2, "a/+"),
            (3, "#"),
            (4, "+/+"),
            (5, "a/b"),
            (6, "$SYS/#"),
            (7, "+/b/#"),
        ] {
            t.insert(f, &session(id), opts);
        }
        assert_eq!(matches(&t, "a"), vec![1, 3]);
        assert_eq!(matches(&t, "a/b"), vec![1, 2, 3, 4, 5, 7]);
        assert_eq!(matches(&t, "a/b/c"), vec![1, 3, 7]);
        assert_eq!(matches(&t, "$SYS/x"), vec![6]);
        assert_eq!(matches(&t, "$SYS"), vec![6]);
        assert_eq!(matches(&t, "/b"), vec![3, 4, 7]);
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut t = SubscriptionTrie::default();
        let s = session(1);
        let opts = SubscriptionOptions::new(QoS::AtLeastOnce);
        assert!(!t.insert("a/b/c", &s, opts));
        assert!(t.insert("a/b/c", &s, opts));
        assert_eq!(t.len(), 1);
        assert!(!t.remove("a/b", 1));
        assert!(t.remove("a/b/c", 1));
        assert!(t.is_empty());
        assert!(t.root.is_empty());
    }
}
