//! The router's side of persistence (see [`crate::store`]): every change to what must survive a
//! restart goes to the store in the order it is made in memory, under the same lock, and comes
//! back from it at start-up.
//!
//! - Retained messages: under the retained store's write lock.
//! - Persistent sessions (Session Expiry Interval above 0): the session row, its will and
//!   subscriptions, and its QoS 1/2 deliveries from queued through sent and released to done,
//!   under the session's own lock ([`SessionInner::keep`]). The store's ticket for a delivery
//!   is what its publisher's PUBACK or PUBREC waits for; a QoS 2 delivery is not sent before it
//!   is committed (`held`), so a crash cannot deliver it twice.
//! - Clean sessions and QoS 0 are never stored, and cost one `Option` check.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::state::{Delivery, Inflight, OutState, SessionInner, SessionState};
use super::{Message, Router, timer};
use crate::protocol::{LastWill, QoS};
use crate::store::{MessageRow, Op, Store, StoredSession, Ticket, WillRow};

/// A persistent session's side of the store (`SessionInner::persist`).
#[derive(Debug)]
pub(crate) struct Persisting {
    pub(super) store: Arc<Store>,
    /// The `seq` of the last QoS 1/2 delivery queued.
    pub(super) last_seq: u64,
    /// Nothing is sent before this ticket is committed: a QoS 2 message's packet id, or a
    /// PUBREL's release (a crash would otherwise send it again under a state the client no
    /// longer has, and it would deliver it twice).
    pub(super) held: Option<Ticket>,
    /// Deliveries acknowledged since the store last heard from this session: handed over with
    /// the next batch of changes (one operation per read, not per PUBACK).
    acked: Vec<(u64, Arc<Message>)>,
}

impl Persisting {
    fn new(store: Arc<Store>, last_seq: u64) -> Box<Self> {
        Box::new(Persisting {
            store,
            last_seq,
            held: None,
            acked: Vec::new(),
        })
    }

    /// A fresh [`Kept`], carrying the acknowledged deliveries.
    pub(super) fn kept(&mut self) -> Kept {
        Kept {
            removed: std::mem::take(&mut self.acked),
            ..Kept::default()
        }
    }
}

/// What one call changed in a persistent session's deliveries, handed to the store at its end.
#[derive(Debug, Default)]
pub(super) struct Kept {
    queued: Vec<Delivery>,
    sent: Vec<(u64, u16)>,
    removed: Vec<(u64, Arc<Message>)>,
}

impl Kept {
    pub(super) fn queued(&mut self, d: &Delivery) {
        if d.seq != 0 {
            self.queued.push(d.clone());
        }
    }

    pub(super) fn sent(&mut self, seq: u64, packet_id: u16) {
        if seq != 0 {
            self.sent.push((seq, packet_id));
        }
    }

    /// `d` left the queue unsent (dropped, expired).
    pub(super) fn dropped(&mut self, d: Delivery) {
        if d.seq == 0 {
            return;
        }
        // Queued in this same call: the store never needs to hear of it.
        if let Some(i) = self.queued.iter().position(|q| q.seq == d.seq) {
            self.queued.remove(i);
            return;
        }
        self.removed.push((d.seq, d.msg));
    }
}

impl SessionInner {
    /// Hands `kept` to the store (if this session is kept); returns the ticket of the last
    /// operation, if any (committed in order: it covers them all).
    pub(super) fn keep(&mut self, id: u64, kept: Kept) -> Option<Ticket> {
        let store = &self.persist.as_ref()?.store;
        let mut ticket = None;
        if !kept.removed.is_empty() {
            ticket = Some(store.submit(Op::Remove {
                id,
                removed: kept.removed,
            }));
        }
        if !kept.queued.is_empty() {
            ticket = Some(store.submit(Op::Enqueue {
                id,
                deliveries: kept.queued,
            }));
        }
        if !kept.sent.is_empty() {
            ticket = Some(store.submit(Op::Sent {
                id,
                sent: kept.sent,
            }));
        }
        ticket
    }

    /// The delivery `d` is done with (acknowledged): the store hears of it with the session's
    /// next changes (a crash before redelivers it, which QoS 1 and 2 allow for).
    pub(super) fn done_with(&mut self, d: Delivery) {
        if let (Some(p), true) = (self.persist.as_mut(), d.seq != 0) {
            p.acked.push((d.seq, d.msg));
        }
    }

    /// Everything the session holds, for a store that has not heard of it; numbers its
    /// deliveries (see [`Delivery::seq`]) and returns the last number.
    fn snapshot(&mut self, id: u64, client_id: &Arc<str>, store: &Store) -> u64 {
        let mut seq = 0;
        for (_, f) in self.inflight.iter_mut() {
            seq += 1;
            f.delivery.seq = seq;
        }
        self.queue.number(&mut seq);
        store.submit(Op::Session {
            id,
            client_id: client_id.clone(),
            expiry: self.expiry,
            username: self.username.clone(),
        });
        for (filter, (options, sub_id)) in &self.subscriptions {
            store.submit(Op::Subscribe {
                id,
                filter: filter.as_str().into(),
                options: *options,
                sub_id: *sub_id,
            });
        }
        let mut deliveries: Vec<Delivery> = self
            .inflight
            .iter()
            .map(|(_, f)| f.delivery.clone())
            .collect();
        deliveries.extend(self.queue.iter().filter(|d| d.seq != 0).cloned());
        let sent = self
            .inflight
            .iter()
            .map(|(pid, f)| (f.delivery.seq, *pid))
            .collect();
        store.submit(Op::Enqueue { id, deliveries });
        store.submit(Op::Sent { id, sent });
        for (_, f) in &self.inflight {
            if f.state == OutState::AwaitPubComp {
                store.submit(Op::Released {
                    id,
                    seq: f.delivery.seq,
                });
            }
        }
        for &packet_id in self.inbound_qos2_ids() {
            store.submit(Op::Qos2In { id, packet_id });
        }
        seq
    }
}

impl SessionState {
    /// The store keeps this session (and `persist` the store) from now on, or, with `None`, no
    /// longer. `attach`: the session row changed (a client attached).
    pub(super) fn set_persist(&self, store: Option<&Arc<Store>>, attach: bool) {
        let mut inner = self.inner.lock();
        match (store, inner.persist.is_some()) {
            (Some(store), false) => {
                let last_seq = inner.snapshot(self.id, &self.client_id, store);
                inner.persist = Some(Persisting::new(store.clone(), last_seq));
            }
            (Some(store), true) if attach => {
                store.submit(Op::Session {
                    id: self.id,
                    client_id: self.client_id.clone(),
                    expiry: inner.expiry,
                    username: inner.username.clone(),
                });
            }
            (None, true) => {
                if let Some(p) = inner.persist.take() {
                    p.store.submit(Op::EndSession(self.id));
                }
            }
            _ => {}
        }
        self.persistent
            .store(inner.persist.is_some(), Ordering::Relaxed);
    }

    /// Whether the store keeps this session (read without its lock, see `persistent`).
    pub(super) fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    /// Stores the will of the connection that just attached (attach number `attach_count`;
    /// None: it has none).
    pub fn keep_will(&self, attach_count: u64, will: Option<&LastWill>) {
        self.store_will(attach_count, will, None);
    }

    /// The will of connection number `attach_count` is due at `at` (it ended without
    /// DISCONNECT), or, with `None`, no longer pending (published, or the connection ended
    /// normally).
    pub fn will_due(&self, attach_count: u64, will: Option<(&LastWill, SystemTime)>) {
        self.store_will(attach_count, will.map(|(w, _)| w), will.map(|(_, at)| at));
    }

    /// Hands the store the will of connection number `attach_count`; nothing once a newer
    /// connection attached (the store keeps that one's will).
    fn store_will(&self, attach_count: u64, will: Option<&LastWill>, at: Option<SystemTime>) {
        let inner = self.inner.lock();
        if inner.attach_count != attach_count {
            return;
        }
        if let Some(p) = &inner.persist {
            p.store.submit(Op::Will {
                id: self.id,
                will: will.map(will_row),
                at,
            });
        }
    }
}

impl super::trie::Subscriber {
    /// Whether delivering `msg` through this subscription is something the store keeps (QoS
    /// 1/2 to a persistent session): its publisher's acknowledgement then waits for the commit.
    pub(super) fn keeps(&self, msg: &Message) -> bool {
        msg.qos != QoS::AtMostOnce
            && self.options.qos != QoS::AtMostOnce
            && self.session.is_persistent()
    }
}

fn will_row(will: &LastWill) -> Box<WillRow> {
    let (msg, delay) = Message::from_will(will);
    Box::new(WillRow {
        message: MessageRow::from_message(&msg),
        delay,
    })
}

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

    /// Start-up: the persistent sessions the store held, offline, with their subscriptions,
    /// queues, in-flight messages and expiry. Sessions whose expiry passed while the broker was
    /// down end now. Returns each restored session with its will, for the caller to schedule
    /// (it publishes through the ingress).
    pub fn restore_sessions(
        self: &Arc<Self>,
        stored: Vec<StoredSession>,
    ) -> Vec<(Arc<SessionState>, crate::store::StoredWill)> {
        let now = timer::wall_now();
        let mut wills = Vec::new();
        let max_id = stored.iter().map(|s| s.id).max().unwrap_or(0);
        self.next_id.fetch_max(max_id + 1, Ordering::Relaxed);
        for s in stored {
            let expires_at = s.expires_at.or_else(|| {
                (s.expiry != u32::MAX).then(|| now + Duration::from_secs(u64::from(s.expiry)))
            });
            let session = Arc::new(SessionState::new(
                s.client_id.clone(),
                s.id,
                s.expiry,
                s.username.clone(),
                self.queued_bytes.clone(),
            ));
            let mut last_seq = 0;
            {
                let mut inner = session.inner.lock();
                inner.attach_count = 1;
                inner.queue.max_bytes = Some(self.limits.max_queued_bytes_per_client);
                for (d, packet_id, pubrel) in s.deliveries {
                    last_seq = last_seq.max(d.seq);
                    match packet_id {
                        None => inner.queue.push_back(d),
                        Some(pid) => {
                            let state = match (d.qos, pubrel) {
                                (QoS::AtLeastOnce, _) => OutState::AwaitPubAck,
                                (_, false) => OutState::AwaitPubRec,
                                (_, true) => OutState::AwaitPubComp,
                            };
                            // One packet id, one exchange: an older row with this id is one
                            // whose completion the store did not hear of before the stop.
                            inner.inflight.retain(|(id, _)| *id != pid);
                            inner.inflight.push_back((
                                pid,
                                Inflight {
                                    delivery: d,
                                    state,
                                    sent: true,
                                },
                            ));
                        }
                    }
                }
                for id in s.inbound_qos2 {
                    inner.qos2_insert(id);
                }
            }
            self.sessions
                .lock()
                .insert(session.client_id.clone(), session.clone());
            for (filter, options, sub_id) in s.subscriptions {
                self.subscribe(&session, &filter, options, sub_id);
            }
            // Kept from now on (what was restored is in the store already).
            session.inner.lock().persist = self.store.clone().map(|s| Persisting::new(s, last_seq));
            session
                .persistent
                .store(self.store.is_some(), Ordering::Relaxed);
            if let Some(will) = s.will {
                wills.push((session.clone(), will));
            }
            match expires_at {
                Some(at) if at <= now => {
                    let mut sessions = self.sessions.lock();
                    self.discard(&mut sessions, &session);
                }
                Some(at) => self.expire_at(&session, at, 1),
                None => {}
            }
        }
        wills
    }
}
