//! The state of one MQTT session, shared between the router (which fans messages into its outbox)
//! and the connection task currently serving it (which drains the outbox onto the socket).
//!
//! The state outlives connections: a persistent session (clean session = 0) keeps its subscriptions,
//! queued messages, in-flight messages and received QoS 2 packet ids while the client is offline,
//! and a reconnect (or a takeover) attaches a new connection to the same `SessionState`.
//!
//! Locking: one short `parking_lot::Mutex` per session, never held across an `.await` or I/O. The
//! router takes it for one push per matching message; the connection task takes it to move a batch
//! of deliveries out, then encodes and writes with the lock released.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use std::time::SystemTime;

use super::Message;
pub use super::link::Link;
pub use super::queue::Queue;
use crate::protocol::{DisconnectReason, QoS, SubscriptionOptions};
use crate::timer::TimerKey;

/// One message on its way to one subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS).
    pub qos: QoS,
    /// Retain flag as sent to this subscriber (set for retained messages sent on subscribe).
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (5.0). Empty: no allocation.
    pub sub_ids: Vec<u32>,
    /// The `$share/GROUP/FILTER` this came through, so it can be re-dispatched to another member
    /// if this session goes away without acknowledging it.
    pub shared: Option<Arc<str>>,
    /// Its place in the session's order, as the store knows it (0: not stored; see
    /// `router/persist.rs`). Given by the session's queue to every QoS 1/2 delivery.
    pub seq: u64,
}

impl Delivery {
    pub fn new(msg: Arc<Message>, qos: QoS, retain: bool) -> Self {
        Delivery {
            msg,
            qos,
            retain,
            sub_ids: Vec::new(),
            shared: None,
            seq: 0,
        }
    }
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

#[derive(Debug)]
pub struct Inflight {
    pub delivery: Delivery,
    pub state: OutState,
    /// Written to a connection at least once (re-sent with DUP). False: its packet id waits for
    /// the store's commit (`SessionInner::held`) before its first PUBLISH.
    pub sent: bool,
}

/// What the connection task should put on the wire.
#[derive(Debug)]
pub enum Outgoing {
    Publish {
        delivery: Delivery,
        packet_id: u16,
        dup: bool,
    },
    PubRel {
        packet_id: u16,
    },
}

/// What [`SessionState::enqueue_many`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueCounts {
    /// QoS 0 for an offline or backed-up client.
    pub dropped_qos0: u64,
    /// Oldest messages dropped from a full queue to make room.
    pub dropped_oldest: u64,
    /// QoS 0 queued past the bound for a subscriber that keeps draining: its publishers should
    /// slow down (see [`SessionState::enqueue_many`]).
    pub congested: u64,
    /// The store's ticket for what was queued for a persistent session.
    pub ticket: Option<crate::store::Ticket>,
}

/// QoS 0 messages a draining subscriber may have queued past its bound at least: publishers
/// learn of the congestion only after their batch (up to 256 PUBLISHes each) was routed, and
/// several publish at once; this room takes their batches without losing a message.
pub const CONGESTED_ROOM: usize = 4096;

/// Bytes a draining subscriber may have queued past its byte bound at most.
pub const CONGESTED_BYTES: usize = 256 << 10;

/// How a full queue is treated (see [`SessionState::enqueue_many`]).
#[derive(Debug, Clone, Copy)]
pub struct QueuePolicy {
    /// Messages a session's queue holds (unless it has its own bound).
    pub max_queued: usize,
    /// A subscriber with a full queue that took nothing from it for this long is a slow consumer.
    /// None: never wait for this subscriber (observers), a full queue drops QoS 0.
    pub stall: Option<std::time::Duration>,
}

#[derive(Debug)]
pub(super) struct SessionInner {
    /// Messages not yet sent, in order.
    pub(super) queue: Queue,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, in send order (re-sent in this order).
    pub(super) inflight: VecDeque<(u16, Inflight)>,
    /// Index in `inflight` of the first message not yet (re)sent on the current connection. A
    /// reconnect re-sends in-flight messages only as far as the client's Receive Maximum allows
    /// (MQTT-3.3.4-9); the rest follow as acknowledgements free the window, with their original
    /// packet ids (MQTT-4.4.0-1).
    pub(super) resend_next: usize,
    pub(super) next_packet_id: u16,
    /// Inbound QoS 2 packet ids for which PUBREC was sent and PUBREL not yet received
    /// (exactly-once: a re-sent PUBLISH with one of these ids is not routed again).
    /// Boxed when in use: most clients never publish at QoS 2.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes per session instead of 48 while unused"
    )]
    inbound_qos2: Option<Box<HashSet<u16>>>,
    /// Filter -> options and subscription identifier, to clean up the trie.
    pub(super) subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Set while a connection serves this session; kicked to close that connection
    /// (takeover, slow consumer, deleted user).
    pub(super) connection: Option<Link>,
    /// Session Expiry Interval in seconds: 0 ends the session with the connection (3.1.1 clean
    /// session), `u32::MAX` never expires (3.1.1 persistent session).
    pub(super) expiry: u32,
    /// Incremented by every attach, so delayed work (expiry, will delay) can tell whether the
    /// client came back in the meantime.
    pub(super) attach_count: u64,
    pub(super) username: Option<String>,
    /// Timers of a session without a connection (see [`crate::timer`]), boxed: most sessions
    /// never have one.
    pub(super) timers: Option<Box<SessionTimers>>,
    /// The session has ended (expired, discarded, replaced by a Clean Start).
    pub(super) ended: bool,
    /// Messages taken from the queue so far (wrapping): progress, without reading a clock per
    /// message.
    pub(super) taken: u32,
    /// Since when the queue has been full (milliseconds on [`crate::timer::coarse_millis`], 0:
    /// not full), and `taken` then. Compact: every session carries them.
    full_since: u32,
    full_taken: u32,
    /// While this is a persistent session and persistence is on: every change to what must
    /// survive a restart goes to the store too, under this lock, in the order it happens (see
    /// `persist.rs`). Boxed: a clean session pays 8 bytes for it.
    pub(super) persist: Option<Box<super::persist::Persisting>>,
}

/// A session's pending deadlines: its expiry and a connection's delayed will. Wall-clock, so they
/// can be stored and restored; the timer service holds the matching [`TimerKey`]s.
#[derive(Debug, Default)]
pub(super) struct SessionTimers {
    pub(super) expiry: Option<(SystemTime, TimerKey)>,
    pub(super) will: Option<(SystemTime, TimerKey)>,
}

#[derive(Debug)]
pub struct SessionState {
    pub client_id: Arc<str>,
    /// Unique for this session's lifetime; identifies it in the subscription trie.
    pub id: u64,
    /// Private to the router: everything outside it goes through the methods below, each of
    /// which takes this lock alone, so the lock order (see [`crate::router`]) lives in one module.
    pub(super) inner: Mutex<SessionInner>,
    /// Messages dropped for this session (queue full, QoS 0 while backed up).
    pub dropped: AtomicU64,
    /// A subscriber that watches without taking part (see [`super::subscriber`]).
    pub observer: bool,
    /// Queue bound in messages; 0: the router's `max_queued_messages`. Atomic so that a
    /// bridge can set its own bound on a session it resumes (see `router/attached.rs`).
    pub max_queued: std::sync::atomic::AtomicU32,
    /// Whether the store keeps this session (`inner.persist` is set), readable without the
    /// lock: a publisher's acknowledgement waits for the store when a message goes to one.
    pub(super) persistent: std::sync::atomic::AtomicBool,
}

impl SessionState {
    /// `queued_bytes`: the broker-wide count of queued bytes this session's queue adds to.
    pub fn new(
        client_id: Arc<str>,
        id: u64,
        expiry: u32,
        username: Option<String>,
        queued_bytes: Arc<AtomicUsize>,
    ) -> Self {
        SessionState {
            client_id,
            id,
            inner: Mutex::new(SessionInner {
                queue: Queue::new(queued_bytes),
                inflight: VecDeque::new(),
                resend_next: 0,
                next_packet_id: 1,
                inbound_qos2: None,
                subscriptions: HashMap::new(),
                connection: None,
                expiry,
                attach_count: 0,
                username,
                timers: None,
                ended: false,
                taken: 0,
                full_since: 0,
                full_taken: 0,
                persist: None,
            }),
            dropped: AtomicU64::new(0),
            observer: false,
            max_queued: Default::default(),
            persistent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The session behind a [`super::subscriber::SubscriberHandle`]: online from the start
    /// (`link` wakes the handle), never in the client-id map. An observer's queue counts its
    /// bytes on its own, not in the broker-wide budget.
    pub fn local(
        name: Arc<str>,
        id: u64,
        link: Link,
        options: &super::subscriber::SubscriberOptions,
        queued_bytes: Arc<AtomicUsize>,
    ) -> Self {
        let total = if options.observer {
            Arc::default()
        } else {
            queued_bytes
        };
        let mut session = SessionState::new(name, id, 0, options.username.clone(), total);
        session.observer = options.observer;
        session.max_queued = u32::try_from(options.max_queued.max(1))
            .unwrap_or(u32::MAX)
            .into();
        let inner = session.inner.get_mut();
        inner.connection = Some(link);
        inner.attach_count = 1;
        if options.observer {
            inner.queue.max_bytes = Some(options.max_queued_bytes);
        }
        session
    }

    /// The queue bound in messages: its own, or the router's.
    fn max_queued(&self, policy: QueuePolicy) -> usize {
        match self.max_queued.load(Ordering::Relaxed) {
            0 => policy.max_queued,
            own => own as usize,
        }
    }

    /// Offers deliveries in order under one lock: a publisher's batch of messages costs each
    /// subscriber's lock (which its own task, often on another core, also takes) once, not once
    /// per message. Never blocks beyond the session mutex, never awaits. Each delivery:
    ///
    /// - Online, queue below its bound (`max_queued` messages, and its byte bound if it has one):
    ///   queued.
    /// - QoS 0 while offline: dropped (Mosquitto does not queue QoS 0 for offline clients either).
    /// - QoS 0 while the queue is full and the subscriber keeps draining it (it took something
    ///   within `stall`): queued anyway, up to twice the bound (at least [`CONGESTED_ROOM`] more
    ///   messages; at most [`CONGESTED_BYTES`] past the byte bound), and counted as `congested` so the publisher
    ///   slows down instead of the message being lost.
    /// - QoS 0 while the queue is full and the subscriber has stalled (a slow consumer), or past
    ///   that room: dropped; a slow consumer's queue is trimmed back to its bound.
    /// - QoS 1/2 while the queue is full: the oldest queued message is dropped (counted) and, if a
    ///   connection is attached, that slow connection is closed; the session keeps the newest
    ///   `max_queued` messages for when it comes back.
    pub fn enqueue_many(
        &self,
        deliveries: impl IntoIterator<Item = Delivery>,
        policy: QueuePolicy,
    ) -> EnqueueCounts {
        let mut counts = EnqueueCounts::default();
        let mut inner = self.inner.lock();
        let online = inner.connection.is_some();
        // The connection task drains the whole queue (as far as its in-flight window allows)
        // whenever it wakes, and after every packet it reads: it only needs waking when the queue
        // goes from empty to non-empty. One wake-up per burst, not per message.
        let was_empty = inner.queue.is_empty();
        let max_queued = self.max_queued(policy);
        let mut draining = None;
        // Bytes pushed and not yet in the broker-wide total: added once per call, and before
        // anything is popped (which takes its cost off that total).
        let mut added = 0;
        let mut kept = inner.persist.is_some().then(super::persist::Kept::default);
        for mut delivery in deliveries {
            // Every QoS 1/2 delivery is queued below (a full queue drops the oldest instead).
            if let (Some(p), Some(kept)) = (inner.persist.as_mut(), &mut kept)
                && delivery.qos != QoS::AtMostOnce
            {
                p.last_seq += 1;
                delivery.seq = p.last_seq;
                kept.queued(&delivery);
            }
            let cost = Queue::cost(&delivery);
            let len = inner.queue.len();
            let full = len >= max_queued || inner.queue.over_bytes(cost);
            if delivery.qos == QoS::AtMostOnce && (full || !online) {
                let keeps_draining = online
                    && *draining.get_or_insert_with(|| match policy.stall {
                        Some(stall) => inner.draining(stall),
                        None => false,
                    });
                let room = len < max_queued + max_queued.max(CONGESTED_ROOM)
                    && !inner.queue.over_congested_room(cost);
                if keeps_draining && room {
                    inner.queue.push_back_deferred(delivery, cost, &mut added);
                    counts.congested += 1;
                } else {
                    counts.dropped_qos0 += 1;
                    if online && !keeps_draining {
                        // A slow consumer keeps no more than its bound.
                        inner.queue.commit(std::mem::take(&mut added));
                        counts.dropped_qos0 += inner.trim_qos0(max_queued);
                    }
                }
            } else if full {
                // Oldest out until the newest fits (one, unless the byte bound needs more).
                inner.queue.commit(std::mem::take(&mut added));
                loop {
                    let dropped = inner.queue.pop_front();
                    if let (Some(kept), Some(d)) = (&mut kept, dropped) {
                        kept.dropped(d);
                    }
                    counts.dropped_oldest += 1;
                    if !inner.queue.over_bytes(cost) || inner.queue.is_empty() {
                        break;
                    }
                }
                inner.queue.push_back_deferred(delivery, cost, &mut added);
                if let Some(link) = &inner.connection {
                    link.kick(DisconnectReason::QuotaExceeded);
                }
            } else {
                inner.queue.push_back_deferred(delivery, cost, &mut added);
            }
        }
        inner.queue.commit(added);
        if let Some(kept) = kept {
            counts.ticket = inner.keep(self.id, kept);
        }
        if let (true, false, Some(link)) = (was_empty, inner.queue.is_empty(), &inner.connection) {
            link.notify();
        }
        drop(inner);
        let dropped = counts.dropped_qos0 + counts.dropped_oldest;
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        counts
    }

    /// Whether the queue holds more than half its bound (in messages or bytes) while the
    /// subscriber keeps draining it:
    /// its publishers should wait (see [`EnqueueCounts::congested`]).
    pub fn congested(&self, policy: QueuePolicy) -> bool {
        let mut inner = self.inner.lock();
        let max_queued = self.max_queued(policy);
        let over_half = inner.queue.len() > max_queued / 2
            || inner
                .queue
                .max_bytes
                .is_some_and(|max| inner.queue.bytes > max / 2);
        inner.connection.is_some()
            && over_half
            && policy.stall.is_some_and(|stall| inner.draining(stall))
    }
}

impl SessionState {
    /// Records an inbound QoS 2 packet id (PUBREC sent); false if it was already recorded.
    /// With the store's ticket the PUBREC must wait for (a persistent session's).
    pub fn qos2_insert(&self, packet_id: u16) -> (bool, Option<crate::store::Ticket>) {
        let mut inner = self.inner.lock();
        let fresh = inner.qos2_insert(packet_id);
        let ticket = match &inner.persist {
            Some(p) if fresh => Some(p.store.submit(crate::store::Op::Qos2In {
                id: self.id,
                packet_id,
            })),
            _ => None,
        };
        (fresh, ticket)
    }

    /// Forgets an inbound QoS 2 packet id (PUBREL received); false if it was not recorded.
    pub fn qos2_remove(&self, packet_id: u16) -> bool {
        let mut inner = self.inner.lock();
        let known = inner.qos2_remove(packet_id);
        if let (true, Some(p)) = (known, &inner.persist) {
            p.store.submit(crate::store::Op::Qos2Done {
                id: self.id,
                packet_id,
            });
        }
        known
    }

    /// The connection ended: the store learns the session's expiry deadline.
    pub(super) fn detached(&self, expiry: u32, expires_at: Option<SystemTime>) {
        let mut inner = self.inner.lock();
        if let Some(p) = inner.persist.as_mut() {
            let kept = p.kept();
            let store = p.store.clone();
            inner.keep(self.id, kept);
            store.submit(crate::store::Op::Detached {
                id: self.id,
                expiry,
                expires_at,
            });
        }
    }

    /// Sets the Session Expiry Interval (a 5.0 DISCONNECT may change it).
    pub fn set_expiry(&self, expiry: u32) {
        self.inner.lock().expiry = expiry;
    }

    /// Whether one more subscription to `filter` fits in `max` (replacing one always does).
    pub fn has_room_for(&self, filter: &str, max: usize) -> bool {
        let inner = self.inner.lock();
        inner.subscriptions.len() < max || inner.subscriptions.contains_key(filter)
    }

    /// The username of the session's (last) client.
    pub fn username(&self) -> Option<String> {
        self.inner.lock().username.clone()
    }

    /// The Session Expiry Interval in force.
    pub fn expiry(&self) -> u32 {
        self.inner.lock().expiry
    }

    /// Incremented by every attach (see [`super::Attached::attach_count`]).
    pub fn attach_count(&self) -> u64 {
        self.inner.lock().attach_count
    }

    /// Whether a connection (or a subscriber handle) is attached.
    pub fn is_connected(&self) -> bool {
        self.inner.lock().connection.is_some()
    }

    /// Whether nothing is queued (in-flight messages aside).
    pub fn queue_is_empty(&self) -> bool {
        self.inner.lock().queue.is_empty()
    }
}

impl SessionInner {
    /// Drops the oldest queued QoS 0 messages until the queue is within its bounds again (what a
    /// draining subscriber was allowed past them); returns how many.
    fn trim_qos0(&mut self, max_queued: usize) -> u64 {
        let mut dropped = 0;
        while (self.queue.len() > max_queued || self.queue.over_bound())
            && self.queue.front().is_some_and(|d| d.qos == QoS::AtMostOnce)
        {
            self.queue.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Whether the subscriber took something from its queue within `stall` (counted from when
    /// the queue first filled up, or from its last progress since).
    fn draining(&mut self, stall: std::time::Duration) -> bool {
        let now = crate::timer::coarse_millis();
        if self.full_since != 0 && self.full_taken == self.taken {
            let stalled = now.wrapping_sub(self.full_since);
            return u128::from(stalled) <= stall.as_millis();
        }
        self.full_since = now;
        self.full_taken = self.taken;
        true
    }

    /// Records an inbound QoS 2 packet id (PUBREC sent); false if it was already recorded.
    pub(super) fn qos2_insert(&mut self, packet_id: u16) -> bool {
        self.inbound_qos2.get_or_insert_default().insert(packet_id)
    }

    /// Forgets an inbound QoS 2 packet id (PUBREL received); false if it was not recorded.
    fn qos2_remove(&mut self, packet_id: u16) -> bool {
        let Some(ids) = self.inbound_qos2.as_mut() else {
            return false;
        };
        let removed = ids.remove(&packet_id);
        if ids.is_empty() {
            self.inbound_qos2 = None;
        }
        removed
    }

    /// The inbound QoS 2 packet ids awaiting PUBREL.
    pub(super) fn inbound_qos2_ids(&self) -> impl Iterator<Item = &u16> {
        self.inbound_qos2.iter().flat_map(|ids| ids.iter())
    }
}
