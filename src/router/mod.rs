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
//! - each session's own mutex (see [`state`]), taken for one push per delivery.
//!
//! Lock order: `sessions` before a session's mutex; `subscriptions` before a session's mutex; a
//! session's mutex is never held while taking `sessions` or `subscriptions`.
//!
//! Fan-out never awaits a subscriber: it pushes an `Arc<Message>` (payload shared as `Bytes`, never
//! copied per subscriber) into the subscriber's bounded outbox and wakes its task.

pub mod retained;
pub mod state;
pub mod trie;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::protocol::{Properties, QoS, SubscriptionOptions};
use crate::sys::Stats;
use retained::RetainedStore;
use state::{Delivery, Enqueued, SessionState};
use trie::{Subscriber, SubscriptionTrie};

/// An application message as the broker holds it: built once per PUBLISH and shared by every
/// subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5.0 properties to forward (None for 3.1.1 publishers).
    pub properties: Option<Box<Properties>>,
    /// Session id of the publisher (0: the broker itself, e.g. `$SYS` or a will).
    pub origin: u64,
}

impl Message {
    pub fn new(topic: Arc<str>, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Message {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            origin: 0,
        }
    }
}

/// Per-client bounds the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    pub max_queued_messages: usize,
}

/// The result of attaching a connection to a session.
#[derive(Debug)]
pub struct Attached {
    pub session: Arc<SessionState>,
    /// CONNACK "session present".
    pub present: bool,
    /// Identifies this connection's attachment, for [`Router::detach`].
    pub connection_id: u64,
    /// Cancelled when the connection must close (taken over, too slow, user deleted).
    pub kicked: CancellationToken,
}

#[derive(Debug)]
pub struct Router {
    subscriptions: RwLock<SubscriptionTrie>,
    retained: RwLock<RetainedStore>,
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionState>>>,
    next_id: AtomicU64,
    pub limits: RouterLimits,
    pub stats: Stats,
}

impl Router {
    pub fn new(limits: RouterLimits) -> Self {
        Router {
            subscriptions: RwLock::default(),
            retained: RwLock::default(),
            sessions: Mutex::default(),
            next_id: AtomicU64::new(1),
            limits,
            stats: Stats::default(),
        }
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches a new connection for `client_id`. An existing connection with the same id is closed
    /// (takeover). With `clean`, any stored session is discarded; otherwise a stored session is
    /// resumed (`present`).
    pub fn attach(&self, client_id: &str, clean: bool, username: Option<String>) -> Attached {
        let connection_id = self.new_id();
        let kicked = CancellationToken::new();
        let mut sessions = self.sessions.lock();
        if let Some(existing) = sessions.get(client_id).cloned() {
            let mut inner = existing.inner.lock();
            if let Some((_, old)) = inner.connection.take() {
                // Takeover: the old connection closes; its detach will find itself superseded.
                old.cancel();
                self.stats.client_disconnected();
            }
            if !clean && !inner.clean {
                inner.connection = Some((connection_id, kicked.clone()));
                inner.username = username;
                drop(inner);
                self.stats.client_connected();
                return Attached {
                    session: existing,
                    present: true,
                    connection_id,
                    kicked,
                };
            }
            let filters: Vec<String> = inner.subscriptions.drain().map(|(f, _)| f).collect();
            drop(inner);
            sessions.remove(client_id);
            self.remove_subscriptions(&existing, filters);
        }
        let session = Arc::new(SessionState::new(
            client_id.into(),
            self.new_id(),
            clean,
            username,
        ));
        session.inner.lock().connection = Some((connection_id, kicked.clone()));
        sessions.insert(session.client_id.clone(), session.clone());
        drop(sessions);
        self.stats.client_connected();
        Attached {
            session,
            present: false,
            connection_id,
            kicked,
        }
    }

    /// The connection `connection_id` of `session` has ended. A clean session is discarded; a
    /// persistent one stays, collecting QoS 1/2 messages until the client returns. Does nothing
    /// for a connection that was already taken over.
    pub fn detach(&self, session: &Arc<SessionState>, connection_id: u64) {
        let mut sessions = self.sessions.lock();
        let mut inner = session.inner.lock();
        if inner.connection.as_ref().map(|(id, _)| *id) != Some(connection_id) {
            return;
        }
        inner.connection = None;
        self.stats.client_disconnected();
        if !inner.clean {
            return;
        }
        let filters: Vec<String> = inner.subscriptions.drain().map(|(f, _)| f).collect();
        drop(inner);
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        drop(sessions);
        self.remove_subscriptions(session, filters);
    }

    fn remove_subscriptions(&self, session: &SessionState, filters: Vec<String>) {
        if filters.is_empty() {
            return;
        }
        let mut subs = self.subscriptions.write();
        for f in filters {
            subs.remove(&f, session.id);
        }
    }

    /// Subscribes `session` to `filter` (already validated and authorised). Returns whether the
    /// subscription already existed and the retained messages matching it.
    pub fn subscribe(
        &self,
        session: &Arc<SessionState>,
        filter: &str,
        options: SubscriptionOptions,
    ) -> (bool, Vec<Arc<Message>>) {
        session
            .inner
            .lock()
            .subscriptions
            .insert(filter.to_owned(), options);
        let existed = self.subscriptions.write().insert(filter, session, options);
        let retained = self.retained.read().matching(filter);
        (existed, retained)
    }

    /// Removes `session`'s subscription to `filter`; true if it existed.
    pub fn unsubscribe(&self, session: &Arc<SessionState>, filter: &str) -> bool {
        session.inner.lock().subscriptions.remove(filter);
        self.subscriptions.write().remove(filter, session.id)
    }

    /// Routes `msg` to every matching subscription (once per session, at the highest granted QoS)
    /// and stores it if retained. Returns the number of sessions it was offered to.
    pub fn publish(&self, msg: Arc<Message>) -> usize {
        if msg.retain {
            self.retained.write().set(msg.clone());
        }
        let subs = self.subscriptions.read();
        let mut targets: Vec<&Subscriber> = Vec::new();
        subs.for_each_match(&msg.topic, |s| targets.push(s));
        if targets.len() > 1 {
            // Overlapping subscriptions of one client deliver once, at the highest QoS granted.
            targets.sort_unstable_by(|a, b| {
                a.session
                    .id
                    .cmp(&b.session.id)
                    .then(b.options.qos.cmp(&a.options.qos))
            });
            targets.dedup_by_key(|s| s.session.id);
        }
        let mut offered = 0;
        for sub in targets {
            if sub.options.no_local && sub.session.id == msg.origin {
                continue;
            }
            let delivery = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(sub.options.qos),
                retain: sub.options.retain_as_published && msg.retain,
            };
            match sub
                .session
                .enqueue(delivery, self.limits.max_queued_messages)
            {
                Enqueued::Queued => {}
                Enqueued::DroppedQos0 | Enqueued::DroppedOldest => self.stats.dropped(),
            }
            offered += 1;
        }
        offered
    }

    /// Number of subscriptions, for `$SYS`.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Number of retained messages, for `$SYS`.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Number of sessions, connected or not (Mosquitto's `clients/total`).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Closes the connections of sessions whose user no longer passes `keep` (after a reload
    /// deleted the user). Returns how many were closed.
    pub fn kick_users(&self, keep: impl Fn(&str) -> bool) -> usize {
        let sessions = self.sessions.lock();
        let mut kicked = 0;
        for s in sessions.values() {
            let inner = s.inner.lock();
            if let (Some(user), Some((_, token))) = (&inner.username, &inner.connection) {
                if !keep(user) {
                    token.cancel();
                    kicked += 1;
                }
            }
        }
        kicked
    }
}
