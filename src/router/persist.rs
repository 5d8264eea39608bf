//! The router's side of persistence (see [`crate::store`]): retained messages go to the store
//! in the order they change in memory, and come back from it at start-up.

use std::sync::Arc;

use super::{Message, Router};
use crate::store::{Op, Store, Ticket};

impl Router {
    /// Persists through `store` from now on (set before the router is shared).
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The store, if persistence is on.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Makes `msg` the retained message of its topic (an empty payload clears it) and, if the
    /// store keeps it, returns the ticket its acknowledgement waits for. The store hears of the
    /// change under the same lock as memory does, so both see concurrent changes to one topic in
    /// the same order. `$SYS` topics are not stored: the broker publishes them afresh.
    pub(super) fn retain(&self, msg: &Arc<Message>) -> Option<Ticket> {
        let mut retained = self.retained.write();
        retained.set(msg.clone());
        let store = self.store.as_ref()?;
        if msg.topic.starts_with("$SYS") {
            return None;
        }
        Some(store.submit(if msg.payload.is_empty() {
            Op::Unretain(msg.topic.clone())
        } else {
            Op::Retain(msg.clone())
        }))
    }

    /// Start-up: the retained messages the store held.
    pub fn restore_retained(&self, messages: Vec<Message>) {
        let mut retained = self.retained.write();
        for msg in messages {
            retained.set(Arc::new(msg));
        }
    }
}
