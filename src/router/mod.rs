//! The router: subscriptions, retained messages and sessions, shared by every connection task.
//!
//! There is no router task. Session tasks call [`Router::publish`] directly, so routing runs on
//! whichever core read the PUBLISH, in parallel with the others. Locks (all `parking_lot`, all
//! short, none held across `.await` or I/O):
//!
//! - `subscriptions`: a read lock for the whole fan-out of one message; a write lock per
//!   SUBSCRIBE / UNSUBSCRIBE filter.
//! - `retained`: written by retained PUBLISHes, read by SUBSCRIBE.
//! - `sessions`: client id -> session, taken on connect and disconnect only.
//! - each session's own mutex (see [`state`]), taken once per publisher's batch: a connection
//!   collects what its batch of PUBLISHes fans out in a [`Fanout`], grouped by subscriber, and
//!   hands each subscriber its share under one lock ([`Router::deliver`]).
//!
//! Lock order: `sessions` before a session's mutex; `subscriptions` before a session's mutex; a
//! session's mutex is never held while taking `sessions` or `subscriptions`.
//!
//! Fan-out never awaits a subscriber: it pushes an `Arc<Message>` (payload shared as `Bytes`, never
//! copied per subscriber) into the subscriber's bounded outbox and wakes its task.

pub mod attached;
pub mod clients;
mod fanout;
mod link;
mod message;
mod outbox;
mod persist;
mod queue;
pub mod retained;
mod sessions;
pub mod state;
pub mod subscriber;
pub mod trie;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::protocol::{QoS, SubscriptionOptions};
use crate::stats::{Limit, Stats};
use crate::timer::{self, Timer};
pub use fanout::Fanout;
pub use message::{Message, PublishedBy};
use retained::RetainedStore;
pub use sessions::Attached;
use state::{Delivery, QueuePolicy, SessionState};
use trie::{Match, Subscriber, SubscriptionTrie};

/// Per-client bounds the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    pub max_queued_messages: usize,
    /// Budget for all queued messages together (see `limits.max_queued_bytes`).
    pub max_queued_bytes: usize,
    /// Bytes one session's queue may hold (see `limits.max_queued_bytes_per_client`).
    pub max_queued_bytes_per_client: usize,
    /// A subscriber whose queue is full and that took nothing from it for this long is a slow
    /// consumer (QoS 0 dropped for it); until then its publishers are slowed instead.
    pub slow_subscriber_timeout: Duration,
}

impl From<&crate::config::Limits> for RouterLimits {
    /// The router's part of `[limits]`.
    fn from(l: &crate::config::Limits) -> Self {
        RouterLimits {
            max_queued_messages: l.max_queued_messages,
            max_queued_bytes: l.max_queued_bytes,
            max_queued_bytes_per_client: l.max_queued_bytes_per_client,
            slow_subscriber_timeout: l.slow_subscriber_timeout,
        }
    }
}

/// What [`Router::subscribe`] did.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// The session had this subscription already (5.0 Retain Handling 1).
    pub existed: bool,
    /// Retained messages to send for it.
    pub retained: Vec<Arc<Message>>,
    /// The store's ticket when the session is persistent: the SUBACK waits for it.
    pub ticket: Option<crate::store::Ticket>,
}

#[derive(Debug)]
pub struct Router {
    subscriptions: RwLock<SubscriptionTrie>,
    retained: RwLock<RetainedStore>,
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionState>>>,
    next_id: AtomicU64,
    /// Bytes held in all session queues (see [`state::Queue`]).
    queued_bytes: Arc<AtomicUsize>,
    /// Subscriptions of observers (see [`subscriber`]), left out of `subscription_count`.
    observer_subscriptions: AtomicUsize,
    pub limits: RouterLimits,
    pub stats: Stats,
    /// Connections coming and going, for live views (see [`clients::ClientEvents`]).
    pub client_events: clients::ClientEvents,
    /// Session expiry and will delay (run by the server, see [`crate::timer`]).
    timer: Arc<Timer>,
    /// What must survive a restart goes here too (None: persistence off). See `persist.rs`.
    store: Option<Arc<crate::store::Store>>,
}

impl Router {
    pub fn new(limits: RouterLimits) -> Self {
        Router {
            subscriptions: RwLock::default(),
            retained: RwLock::default(),
            sessions: Mutex::default(),
            next_id: AtomicU64::new(1),
            queued_bytes: Arc::default(),
            observer_subscriptions: AtomicUsize::new(0),
            limits,
            stats: Stats::default(),
            client_events: Default::default(),
            timer: Timer::new(),
            store: None,
        }
    }

    /// The timer service the server runs for this router.
    pub fn timer(&self) -> &Arc<Timer> {
        &self.timer
    }

    /// Bytes currently queued for all sessions.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Is the queued-message memory budget used up? Then QoS 0 is not queued and publishers
    /// are slowed down.
    pub fn over_budget(&self) -> bool {
        self.queued_bytes() >= self.limits.max_queued_bytes
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Subscribes `session` to `filter` (already validated and authorised; `$share/G/F` joins a
    /// shared group). Returns whether the subscription already existed, the retained messages
    /// matching it (none for shared subscriptions, MQTT-4.8.2) and, for a persistent session, the
    /// store's ticket the SUBACK waits for.
    pub fn subscribe(
        &self,
        session: &Arc<SessionState>,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Subscribed {
        let sub = Subscriber {
            observer: session.observer,
            session: session.clone(),
            options,
            sub_id,
        };
        // The trie's lock, then the session's (the router's lock order): the session's map and
        // the trie change together, and never for a session that has ended (see `end_session`).
        let mut trie = self.subscriptions.write();
        let ticket;
        {
            let mut inner = session.inner.lock();
            if inner.ended {
                return Subscribed::default();
            }
            inner
                .subscriptions
                .insert(filter.to_owned(), (options, sub_id));
            ticket = inner.persist.as_ref().map(|p| {
                p.store.submit(crate::store::Op::Subscribe {
                    id: session.id,
                    filter: filter.into(),
                    options,
                    sub_id,
                })
            });
        }
        let existed = trie.insert(filter, sub);
        drop(trie);
        if session.observer && !existed {
            self.observer_subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        let mut subscribed = Subscribed {
            existed,
            retained: Vec::new(),
            ticket,
        };
        if filter.starts_with("$share/") {
            return subscribed;
        }
        let now = timer::wall_now();
        subscribed.retained = self.retained.read().matching(filter);
        subscribed.retained.retain(|m| !m.expired(now));
        subscribed
    }

    /// Removes `session`'s subscription to `filter`; true if it existed.
    pub fn unsubscribe(&self, session: &Arc<SessionState>, filter: &str) -> bool {
        {
            let mut inner = session.inner.lock();
            if inner.subscriptions.remove(filter).is_some()
                && let Some(p) = &inner.persist
            {
                p.store.submit(crate::store::Op::Unsubscribe {
                    id: session.id,
                    filter: filter.into(),
                });
            }
        }
        let existed = self.subscriptions.write().remove(filter, session.id);
        if existed && session.observer {
            self.observer_subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        existed
    }

    /// Routes `msg` to every matching subscription (once per session, at the highest granted QoS,
    /// with every matching subscription identifier; one member per shared group) and stores it if
    /// retained. Returns the number of sessions it was offered to.
    #[cfg(test)]
    pub(crate) fn publish(&self, msg: Arc<Message>) -> usize {
        let mut fanout = Fanout::default();
        let (offered, _, _) = self.publish_to(msg, &mut fanout);
        self.deliver(&mut fanout);
        offered
    }

    /// As [`Router::publish`], but the deliveries are collected in `fanout`, grouped by
    /// subscriber, until [`Router::deliver`]: a connection publishing a batch of messages hands
    /// each subscriber all of its share at once.
    /// Only the ingress calls this: every message enters through [`crate::ingress`]. Also
    /// returns the store's ticket for a retained message it must keep (see `persist.rs`), and
    /// whether a persistent session gets it at QoS 1/2 (then the acknowledgement waits for the
    /// ticket [`Router::deliver`] leaves in `fanout` too).
    pub(crate) fn publish_to(
        &self,
        msg: Arc<Message>,
        fanout: &mut Fanout,
    ) -> (usize, Option<crate::store::Ticket>, bool) {
        let commit = if msg.retain { self.retain(&msg) } else { None };
        let subs = self.subscriptions.read();
        let mut plain: Vec<&Subscriber> = Vec::new();
        let mut shared: Vec<(&Arc<str>, &Subscriber)> = Vec::new();
        subs.for_each_match(&msg.topic, |m| match m {
            Match::Plain(s) => {
                if !(s.options.no_local && s.session.id == msg.origin) {
                    plain.push(s);
                }
            }
            Match::Shared(key, group) => {
                if let Some(member) = group.pick(0) {
                    shared.push((key, member));
                }
            }
        });
        let mut offered = 0;
        let mut durable = false;
        if plain.len() > 1 {
            // Overlapping subscriptions of one client deliver once, at the highest QoS granted,
            // carrying every matching subscription identifier.
            plain.sort_unstable_by(|a, b| {
                a.session
                    .id
                    .cmp(&b.session.id)
                    .then(b.options.qos.cmp(&a.options.qos))
            });
        }
        let mut i = 0;
        while i < plain.len() {
            let best = plain[i];
            let mut j = i + 1;
            while j < plain.len() && plain[j].session.id == best.session.id {
                j += 1;
            }
            let sub_ids: Vec<u32> = plain[i..j].iter().filter_map(|s| s.sub_id).collect();
            durable |= best.keeps(&msg);
            fanout.offer(best, msg.clone(), None, sub_ids);
            offered += usize::from(!best.observer);
            i = j;
        }
        for (key, member) in shared {
            let sub_ids = member.sub_id.into_iter().collect();
            durable |= member.keeps(&msg);
            fanout.offer(member, msg.clone(), Some(key.clone()), sub_ids);
            offered += 1;
        }
        (offered, commit, durable)
    }

    /// Hands every delivery collected in `fanout` to its session, one lock per session.
    pub(crate) fn deliver(&self, fanout: &mut Fanout) {
        fanout.index.clear();
        for (session, deliveries) in fanout.groups.drain(..) {
            let (congested, ticket) = self.enqueue_many(&session, deliveries);
            if ticket.is_some() {
                fanout.ticket = fanout.ticket.max(ticket);
            }
            if congested {
                fanout.congested.push(session);
            }
        }
    }

    /// The policy for `session`'s queue.
    fn queue_policy(&self, session: &SessionState) -> QueuePolicy {
        QueuePolicy {
            max_queued: self.limits.max_queued_messages,
            stall: (!session.observer).then_some(self.limits.slow_subscriber_timeout),
        }
    }

    /// Whether a publisher should still wait for `session` (its queue is over half full and it
    /// keeps draining it).
    pub fn congested(&self, session: &SessionState) -> bool {
        session.congested(self.queue_policy(session))
    }

    /// Offers one delivery to `session`'s outbox (see [`SessionState::enqueue`]), counting drops.
    /// Returns the store's ticket if a persistent session keeps it.
    pub fn enqueue(
        &self,
        session: &SessionState,
        delivery: Delivery,
    ) -> Option<crate::store::Ticket> {
        self.enqueue_many(session, std::iter::once(delivery)).1
    }

    /// Queues for `session`, counting drops; true if its publisher should slow down.
    fn enqueue_many(
        &self,
        session: &SessionState,
        deliveries: impl IntoIterator<Item = Delivery>,
    ) -> (bool, Option<crate::store::Ticket>) {
        // Over the memory budget, QoS 0 is not queued at all. Observers have a bound of their own
        // and keep their own counts.
        let observer = session.observer;
        let over_budget = !observer && self.over_budget();
        let mut over = 0;
        let deliveries = deliveries.into_iter().filter(|d| {
            let drop = over_budget && d.qos == QoS::AtMostOnce;
            over += u64::from(drop);
            !drop
        });
        let counts = session.enqueue_many(deliveries, self.queue_policy(session));
        if observer {
            return (false, None);
        }
        for _ in 0..over {
            self.stats.limit_hit(Limit::QueuedBytes);
            self.stats.dropped();
        }
        for _ in 0..counts.dropped_qos0 {
            self.stats.dropped();
        }
        for _ in 0..counts.dropped_oldest {
            self.stats.limit_hit(Limit::QueuedMessages);
            self.stats.dropped();
        }
        (counts.congested > 0, counts.ticket)
    }

    /// Number of subscriptions, for `$SYS`.
    pub fn subscription_count(&self) -> usize {
        let observers = self.observer_subscriptions.load(Ordering::Relaxed);
        self.subscriptions.read().len().saturating_sub(observers)
    }

    /// Number of retained messages, for `$SYS`.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }
}

#[cfg(test)]
mod tests;
