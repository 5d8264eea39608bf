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
    /// Subscription Identifier (5.0), forwarded on matching messages.
    pub sub_id: Option<u32>,
    /// The session's `observer` (copied here: fan-out reads the trie entry, not the session).
    pub observer: bool,
}

/// A shared subscription group (`$share/GROUP/FILTER`): each message goes to one member,
/// round-robin, preferring members that are connected.
#[derive(Debug, Default)]
pub struct SharedGroup {
    pub members: Vec<Subscriber>,
    next: std::sync::atomic::AtomicUsize,
}

impl SharedGroup {
    /// The member the next message goes to: round-robin over connected members, or over all
    /// members if none is connected (their sessions queue it). `exclude`: a session to skip
    /// (re-dispatch away from a member that left).
    pub fn pick(&self, exclude: u64) -> Option<&Subscriber> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let candidates = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|m| m.session.id != exclude);
        let mut fallback = None;
        for m in candidates {
            if m.session.is_connected() {
                return Some(m);
            }
            fallback.get_or_insert(m);
        }
        fallback
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: Vec<Subscriber>,
    /// Shared subscriptions ending here, by full `$share/GROUP/FILTER` text.
    shared: HashMap<Arc<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.shared.is_empty()
    }
}

/// One match of a topic against the trie.
pub enum Match<'a> {
    Plain(&'a Subscriber),
    /// A shared group; the caller picks one member. The str is the `$share/...` key.
    Shared(&'a Arc<str>, &'a SharedGroup),
}

#[derive(Debug, Default)]
pub struct SubscriptionTrie {
    root: Node,
    count: usize,
}

impl SubscriptionTrie {
    /// Adds or replaces `session`'s subscription to `filter` (already validated). A `$share/G/F`
    /// filter joins group G on F. Returns true if it replaced an existing one.
    pub fn insert(&mut self, filter: &str, sub: Subscriber) -> bool {
        let (share, path) = match crate::protocol::topic::split_shared(filter) {
            Some((_, inner)) => (Some(Arc::<str>::from(filter)), inner),
            None => (None, filter),
        };
        let mut node = &mut self.root;
        for level in path.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let list = match share {
            Some(key) => &mut node.shared.entry(key).or_default().members,
            None => &mut node.subscribers,
        };
        if let Some(existing) = list.iter_mut().find(|s| s.session.id == sub.session.id) {
            *existing = sub;
            return true;
        }
        list.push(sub);
        self.count += 1;
        false
    }

    /// Removes `session_id`'s subscription to `filter`; true if there was one.
    pub fn remove(&mut self, filter: &str, session_id: u64) -> bool {
        let (share, path) = match crate::protocol::topic::split_shared(filter) {
            Some((_, inner)) => (Some(filter), inner),
            None => (None, filter),
        };
        let levels: Vec<&str> = path.split('/').collect();
        let removed = remove_rec(&mut self.root, &levels, share, session_id);
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

    /// The shared group registered under `key` (`$share/G/F`), if any.
    pub fn shared_group(&self, key: &str) -> Option<(&Arc<str>, &SharedGroup)> {
        let (_, path) = crate::protocol::topic::split_shared(key)?;
        let mut node = &self.root;
        for level in path.split('/') {
            node = node.children.get(level)?;
        }
        node.shared.get_key_value(key)
    }

    /// Calls `f` for every subscription matching `topic`. A session subscribed through several
    /// overlapping filters is reported once per filter; the caller merges.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(Match<'a>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        // MQTT-4.7.2-1: a filter starting with a wildcard does not match a topic starting with '$'.
        let dollar = topic.starts_with('$');
        match_rec(&self.root, &levels, dollar, &mut f);
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], share: Option<&str>, session_id: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        let list = match share {
            None => &mut node.subscribers,
            Some(key) => match node.shared.get_mut(key) {
                Some(group) => &mut group.members,
                None => return false,
            },
        };
        let before = list.len();
        list.retain(|s| s.session.id != session_id);
        let removed = list.len() != before;
        if let Some(key) = share
            && node.shared.get(key).is_some_and(|g| g.members.is_empty())
        {
            node.shared.remove(key);
        }
        return removed;
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_rec(child, rest, share, session_id);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn report<'a>(node: &'a Node, f: &mut impl FnMut(Match<'a>)) {
    node.subscribers.iter().for_each(|s| f(Match::Plain(s)));
    node.shared.iter().for_each(|(k, g)| f(Match::Shared(k, g)));
}

fn match_rec<'a>(
    node: &'a Node,
    levels: &[&str],
    skip_wildcards: bool,
    f: &mut impl FnMut(Match<'a>),
) {
    if !skip_wildcards {
        // '#' matches the parent level too: "a/#" matches "a".
        if let Some(hash) = node.children.get("#") {
            report(hash, f);
        }
    }
    let Some((first, rest)) = levels.split_first() else {
        report(node, f);
        return;
    };
    if let Some(child) = node.children.get(*first) {
        match_rec(child, rest, false, f);
    }
    if !skip_wildcards && let Some(plus) = node.children.get("+") {
        match_rec(plus, rest, false, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn session(id: u64) -> Arc<SessionState> {
        Arc::new(SessionState::new(
            format!("c{id}").into(),
            id,
            0,
            None,
            Default::default(),
        ))
    }

    fn sub(id: u64, options: SubscriptionOptions) -> Subscriber {
        Subscriber {
            observer: false,
            session: session(id),
            options,
            sub_id: None,
        }
    }

    fn matches(trie: &SubscriptionTrie, topic: &str) -> Vec<u64> {
        let mut ids = vec![];
        trie.for_each_match(topic, |m| match m {
            Match::Plain(s) => ids.push(s.session.id),
            Match::Shared(_, g) => ids.push(g.pick(0).map_or(0, |s| s.session.id)),
        });
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
            t.insert(f, sub(id, opts));
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
        let opts = SubscriptionOptions::new(QoS::AtLeastOnce);
        assert!(!t.insert("a/b/c", sub(1, opts)));
        assert!(t.insert("a/b/c", sub(1, opts)));
        assert_eq!(t.len(), 1);
        assert!(!t.remove("a/b", 1));
        assert!(t.remove("a/b/c", 1));
        assert!(t.is_empty());
        assert!(t.root.is_empty());
    }

    #[test]
    fn shared_groups_round_robin_and_prune() {
        let mut t = SubscriptionTrie::default();
        let opts = SubscriptionOptions::new(QoS::AtMostOnce);
        t.insert("$share/g/a/+", sub(1, opts));
        t.insert("$share/g/a/+", sub(2, opts));
        t.insert("$share/h/a/b", sub(3, opts));
        t.insert("a/b", sub(4, opts));
        let mut seen = vec![];
        for _ in 0..4 {
            seen.extend(matches(&t, "a/b"));
        }
        let count = |id| seen.iter().filter(|&&x| x == id).count();
        assert_eq!((count(1), count(2), count(3), count(4)), (2, 2, 4, 4));
        assert!(t.remove("$share/g/a/+", 1));
        assert!(t.remove("$share/g/a/+", 2));
        assert!(t.remove("$share/h/a/b", 3));
        assert!(t.remove("a/b", 4));
        assert!(t.root.is_empty());
    }
}
