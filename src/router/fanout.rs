//! What one publisher's batch fans out, grouped by subscriber, so each subscriber's lock is
//! taken once per batch (see [`Router::deliver`](super::Router::deliver)).

use std::collections::HashMap;
use std::sync::Arc;

use super::Message;
use super::state::{Delivery, SessionState};
use super::trie::Subscriber;

/// Up to this many subscribers, [`Fanout`] finds a subscriber's group by scanning.
pub(super) const SCAN_GROUPS: usize = 8;

/// Deliveries grouped by subscriber, waiting for [`Router::deliver`](super::Router::deliver) (see [`Router::publish_to`](super::Router::publish_to)).
#[derive(Debug, Default)]
pub struct Fanout {
    pub(super) groups: Vec<(Arc<SessionState>, Vec<Delivery>)>,
    /// Session id -> index in `groups`, once there are more than [`SCAN_GROUPS`].
    pub(super) index: HashMap<u64, usize>,
    /// Subscribers whose queues went past their bound while they keep draining: whoever
    /// published this batch should wait for them (see [`Router::congested`](super::Router::congested)).
    pub congested: Vec<Arc<SessionState>>,
    /// The store's ticket for what [`Router::deliver`](super::Router::deliver) queued for
    /// persistent sessions: acknowledgements of those messages wait for it.
    pub ticket: Option<crate::store::Ticket>,
}

impl Fanout {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub(super) fn offer(
        &mut self,
        sub: &Subscriber,
        msg: Arc<Message>,
        shared: Option<Arc<str>>,
        sub_ids: Vec<u32>,
    ) {
        let delivery = Delivery {
            qos: msg.qos.min(sub.options.qos),
            retain: sub.options.retain_as_published && msg.retain,
            msg,
            sub_ids,
            shared,
            seq: 0,
        };
        let id = sub.session.id;
        // Few subscribers (the common case): a scan beats hashing.
        let found = if self.groups.len() <= SCAN_GROUPS {
            self.groups.iter().position(|(s, _)| s.id == id)
        } else {
            if self.index.is_empty() {
                let ids = self.groups.iter().enumerate().map(|(i, (s, _))| (s.id, i));
                self.index.extend(ids);
            }
            self.index.get(&id).copied()
        };
        let i = found.unwrap_or_else(|| {
            self.groups.push((sub.session.clone(), Vec::new()));
            let i = self.groups.len() - 1;
            if !self.index.is_empty() {
                self.index.insert(id, i);
            }
            i
        });
        self.groups[i].1.push(delivery);
    }
}
