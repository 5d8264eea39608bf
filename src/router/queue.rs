//! A session's queue of deliveries not yet sent, and what it costs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::state::{CONGESTED_BYTES, Delivery};

/// A session's queue of deliveries not yet sent, with its memory cost counted both here and in
/// the broker-wide total that `limits.max_queued_bytes` bounds. Dropping it gives its bytes back.
#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Delivery>,
    pub(super) bytes: usize,
    total: Arc<AtomicUsize>,
    /// Bytes this queue may hold (None: bounded by the broker-wide budget only).
    pub max_bytes: Option<usize>,
}

impl Queue {
    pub fn new(total: Arc<AtomicUsize>) -> Self {
        Queue {
            items: VecDeque::new(),
            bytes: 0,
            total,
            max_bytes: None,
        }
    }

    /// Approximate memory held for one queued delivery. The payload is shared between
    /// subscribers, but each queue keeps it alive, so each counts it (an upper bound).
    pub(super) fn cost(d: &Delivery) -> usize {
        d.msg.payload.len() + d.msg.topic.len() + 96
    }

    pub fn push_back(&mut self, d: Delivery) {
        let cost = Queue::cost(&d);
        self.bytes += cost;
        self.total.fetch_add(cost, Ordering::Relaxed);
        self.items.push_back(d);
    }

    /// Pushes `d` (of `cost`) without updating the broker-wide total: `added` collects it for one
    /// [`Queue::commit`] per batch (that total is shared by every core). Commit before popping.
    pub(super) fn push_back_deferred(&mut self, d: Delivery, cost: usize, added: &mut usize) {
        self.bytes += cost;
        *added += cost;
        self.items.push_back(d);
    }

    /// Adds what [`Queue::push_back_deferred`] collected to the broker-wide total.
    pub(super) fn commit(&self, added: usize) {
        if added > 0 {
            self.total.fetch_add(added, Ordering::Relaxed);
        }
    }

    pub fn pop_front(&mut self) -> Option<Delivery> {
        let mut freed = 0;
        let d = self.pop_front_deferred(&mut freed);
        self.settle(freed);
        d
    }

    /// Pops without updating the broker-wide total: the cost is added to `freed`, to be given
    /// back with one [`Queue::settle`] for a whole batch (that total is shared by every core).
    pub(super) fn pop_front_deferred(&mut self, freed: &mut usize) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        let cost = Queue::cost(&d);
        self.bytes -= cost;
        *freed += cost;
        Some(d)
    }

    pub(super) fn settle(&self, freed: usize) {
        if freed > 0 {
            self.total.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter()
    }

    /// Numbers the QoS 1/2 deliveries in order, after `seq` (see [`Delivery::seq`]).
    pub(super) fn number(&mut self, seq: &mut u64) {
        for d in self
            .items
            .iter_mut()
            .filter(|d| d.qos != crate::protocol::QoS::AtMostOnce)
        {
            *seq += 1;
            d.seq = *seq;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue holds more bytes than its bound.
    pub(super) fn over_bound(&self) -> bool {
        self.max_bytes.is_some_and(|max| self.bytes > max)
    }

    /// Whether a delivery of `cost` (see [`Queue::cost`]) would take the queue past the room a
    /// draining subscriber gets over its byte bound (the bound again, at most
    /// [`CONGESTED_BYTES`]).
    pub(super) fn over_congested_room(&self, cost: usize) -> bool {
        self.max_bytes
            .is_some_and(|max| self.bytes + cost > max + max.min(CONGESTED_BYTES))
    }

    /// Whether a delivery of `cost` would take the queue past its byte bound.
    pub(super) fn over_bytes(&self, cost: usize) -> bool {
        self.max_bytes.is_some_and(|max| self.bytes + cost > max)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps the deliveries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let mut freed = 0;
        self.items.retain(|d| {
            let k = keep(d);
            if !k {
                freed += Queue::cost(d);
            }
            k
        });
        self.bytes -= freed;
        self.total.fetch_sub(freed, Ordering::Relaxed);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
