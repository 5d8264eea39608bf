//! 5.0 topic aliases, both ways, for one connection (MQTT 5.0 section 3.3.2.3.4): the ones the
//! client sets up towards the broker, and the ones the broker uses towards the client.
//!
//! Towards the client (when its CONNECT allows aliases and `limits.outbound_topic_aliases` is on):
//! the first PUBLISH of a topic carries the topic and a new alias, later ones an empty topic and
//! the alias. At most min(the client's Topic Alias Maximum, [`MAX_OUTBOUND`]) aliases are in use;
//! when all are, a new topic takes over the alias of one not used lately (the "clock" or
//! second-chance approximation of least recently used) and is sent with its topic and that alias
//! again. Topics of up to [`ALIAS_BYTES`] bytes are never aliased: an alias would not make them
//! shorter. Aliases live and die with the connection: a new one starts without any, so whatever
//! it re-sends carries its topic again.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Connection;
use crate::protocol::{EncodeError, Properties, PublishView};

/// Aliases the broker uses towards one client at most, whatever the client allows: each holds
/// its topic for as long as the connection lasts.
pub(super) const MAX_OUTBOUND: u16 = 64;

/// What a Topic Alias property costs on the wire (identifier byte + two-byte value): topics up
/// to this long are sent as they are.
const ALIAS_BYTES: usize = 3;

/// A connection's topic aliases. Boxed in [`super::Client`]: most clients use none.
#[derive(Debug, Default)]
pub(super) struct Aliases {
    /// Set up by the client (alias -> topic), at most `limits.max_topic_alias`.
    pub(super) from_client: HashMap<u16, Arc<str>>,
    /// The broker's, when the client allows them.
    pub(super) to_client: Option<Outbound>,
}

impl Aliases {
    /// The aliases of a connection whose client allows `client_max` aliases towards it
    /// (`enabled`: `limits.outbound_topic_aliases`). `None` while there is nothing to hold.
    pub(super) fn for_connection(client_max: u16, enabled: bool) -> Option<Box<Aliases>> {
        let max = client_max.min(MAX_OUTBOUND);
        (enabled && max > 0).then(|| {
            Box::new(Aliases {
                from_client: HashMap::new(),
                to_client: Some(Outbound::new(max)),
            })
        })
    }
}

/// The aliases the broker assigned towards the client.
#[derive(Debug)]
pub(super) struct Outbound {
    /// Topic -> alias.
    by_topic: HashMap<Arc<str>, u16>,
    /// Alias - 1 -> its topic, and whether it was used since the clock hand last passed it.
    slots: Vec<(Arc<str>, bool)>,
    /// The highest alias to use: never above the client's Topic Alias Maximum (MQTT-3.3.2-10).
    max: u16,
    /// Index in `slots` where the search for an alias to take over goes on.
    hand: usize,
    /// The properties of a PUBLISH that carries none but its alias: reused, not allocated for
    /// every message.
    bare: Properties,
}

impl Outbound {
    fn new(max: u16) -> Self {
        Outbound {
            by_topic: HashMap::new(),
            slots: Vec::new(),
            max,
            hand: 0,
            bare: Properties::default(),
        }
    }

    /// The alias for `topic` and whether the client knows it already; `None`: not worth one.
    fn choose(&mut self, topic: &str) -> Option<(u16, bool)> {
        if topic.len() <= ALIAS_BYTES {
            return None;
        }
        if let Some(&alias) = self.by_topic.get(topic) {
            if let Some(slot) = self.slots.get_mut(usize::from(alias - 1)) {
                slot.1 = true;
            }
            return Some((alias, true));
        }
        if self.slots.len() < usize::from(self.max) {
            // Not above `max` (a u16), so it fits.
            return Some((u16::try_from(self.slots.len() + 1).ok()?, false));
        }
        if self.slots.is_empty() {
            return None;
        }
        // All in use: the first one not used since the hand last passed it (at most one turn
        // round, clearing the marks on the way).
        loop {
            let index = self.hand;
            self.hand = (index + 1) % self.slots.len();
            if !std::mem::replace(&mut self.slots[index].1, false) {
                return Some((u16::try_from(index + 1).ok()?, false));
            }
        }
    }

    /// `alias` now stands for `topic` (its PUBLISH, carrying both, was queued).
    fn assign(&mut self, alias: u16, topic: &Arc<str>) {
        let index = usize::from(alias - 1);
        let entry = (topic.clone(), true);
        if index == self.slots.len() {
            self.slots.push(entry);
        } else if let Some(old) = self.slots.get_mut(index) {
            let (old, _) = std::mem::replace(old, entry);
            self.by_topic.remove(&old);
        }
        self.by_topic.insert(topic.clone(), alias);
    }

    /// Queues `publish` (whose topic is `topic`) with an alias where one helps: the topic and a
    /// new alias, or an empty topic and the alias the client already has. `properties`: the
    /// PUBLISH's own (5.0), if it has any. On `Err` nothing was queued and no alias assigned.
    pub(super) fn queue<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        publish: PublishView<'_>,
        topic: &Arc<str>,
        properties: Option<&mut Properties>,
    ) -> Result<(), EncodeError> {
        let Some((alias, known)) = self.choose(topic) else {
            let properties = properties.as_deref();
            return conn.queue_publish(&PublishView {
                properties,
                ..publish
            });
        };
        let properties = match properties {
            Some(p) => p,
            None => &mut self.bare,
        };
        properties.topic_alias = Some(alias);
        conn.queue_publish(&PublishView {
            topic: if known { "" } else { publish.topic },
            properties: Some(properties),
            ..publish
        })?;
        if !known {
            self.assign(alias, topic);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn first_come_first_served_then_known() {
        let mut out = Outbound::new(2);
        let (a, b) = (topic("a/topic"), topic("b/topic"));
        assert_eq!(out.choose(&a), Some((1, false)));
        out.assign(1, &a);
        assert_eq!(out.choose(&b), Some((2, false)));
        out.assign(2, &b);
        assert_eq!(out.choose(&a), Some((1, true)));
        assert_eq!(out.choose(&b), Some((2, true)));
    }

    #[test]
    fn an_unassigned_choice_is_offered_again() {
        let mut out = Outbound::new(2);
        assert_eq!(out.choose("a/topic"), Some((1, false)));
        // Not queued (too large for the client, say): the next topic gets the same alias.
        assert_eq!(out.choose("b/topic"), Some((1, false)));
    }

    #[test]
    fn short_topics_are_not_aliased() {
        let mut out = Outbound::new(2);
        assert_eq!(out.choose("a/b"), None);
        assert_eq!(out.choose("a/bc"), Some((1, false)));
    }

    #[test]
    fn when_full_the_least_recently_used_alias_is_taken_over() {
        let mut out = Outbound::new(3);
        let topics: Vec<_> = ["t/one", "t/two", "t/three", "t/four"]
            .into_iter()
            .map(topic)
            .collect();
        for (i, t) in topics[..3].iter().enumerate() {
            let alias = u16::try_from(i + 1).unwrap();
            assert_eq!(out.choose(t), Some((alias, false)));
            out.assign(alias, t);
        }
        // A full turn clears every mark, then the first slot is taken: "t/one" goes.
        let (alias, known) = out.choose(&topics[3]).unwrap();
        assert_eq!((alias, known), (1, false));
        out.assign(alias, &topics[3]);
        assert_eq!(out.choose(&topics[3]), Some((1, true)));
        // "t/two" is used again; "t/three" was not: it goes next.
        assert_eq!(out.choose(&topics[1]), Some((2, true)));
        let (alias, _) = out.choose(&topics[0]).unwrap();
        assert_eq!(alias, 3);
        out.assign(alias, &topics[0]);
        assert_eq!(out.choose(&topics[0]), Some((3, true)));
        assert_eq!(out.choose(&topics[2]).map(|(_, known)| known), Some(false));
        // Never above the maximum, never two topics for one alias.
        assert!(out.slots.len() <= 3);
        assert_eq!(out.by_topic.len(), out.slots.len());
        for (alias, (t, _)) in out.slots.iter().enumerate() {
            assert_eq!(
                out.by_topic.get(t),
                Some(&u16::try_from(alias + 1).unwrap())
            );
        }
    }

    #[test]
    fn nothing_without_permission() {
        assert!(Aliases::for_connection(0, true).is_none());
        assert!(Aliases::for_connection(5, false).is_none());
        let aliases = Aliases::for_connection(65535, true).unwrap();
        assert_eq!(aliases.to_client.as_ref().unwrap().max, MAX_OUTBOUND);
        let aliases = Aliases::for_connection(2, true).unwrap();
        assert_eq!(aliases.to_client.as_ref().unwrap().max, 2);
    }
}
