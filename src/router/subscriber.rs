//! Router subscribers that are not MQTT connections: the message logger and the message history
//! today; the dashboard's live view, CoAP observers, bridges, webhooks and cluster links next.
//!
//! A [`SubscriberHandle`] is the same thing the router gives an MQTT connection, without the
//! socket: a session of its own (never in the client-id map), a filter set in the subscription
//! trie, a bounded queue with the MQTT slow-consumer policy, and deliveries to acknowledge.
//! (The shape is rumqttd's local link: one way to subscribe, whoever you are.)
//!
//! - Fan-out treats it like any session: it never waits for the handle, it pushes into the queue
//!   and wakes whoever polls the handle (a task, or a thread through its own waker).
//! - Queue full: QoS 0 is dropped and counted; QoS 1/2 drops the oldest and closes the handle
//!   (`recv` then returns `None`), as an MQTT client that stops reading is disconnected.
//! - An *observer* (the logger, a history recorder, a live view) watches without taking part:
//!   it does not count as a matching subscriber (5.0 "no matching subscribers" stays true), its
//!   subscriptions are not in `$SYS/broker/subscriptions/count`, its queue has its own byte bound
//!   instead of using the broker-wide `max_queued_bytes` budget (so it can never slow
//!   publishers), and what it drops is its own count, not `$SYS/broker/publish/messages/dropped`.
//! - ACL: with an identity, each subscription is checked for `Subscribe` and each delivery for
//!   `Read`, exactly as for an MQTT client with that username and client id.
//!
//! Dropping the handle removes its subscriptions.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};

use super::state::{Link, OutState, Outgoing, SessionState};
use super::{Message, Router};
use crate::auth::{Access, AuthCell, AuthSnapshot};
use crate::protocol::topic::subscription_filter;
use crate::protocol::{QoS, SubscriptionOptions};

/// How a subscriber is set up.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    /// Its name: the client id the ACL's `%c` and the logs see (e.g. `$logger`).
    pub name: Arc<str>,
    /// The username the ACL checks (None: anonymous).
    pub username: Option<String>,
    /// Messages that may wait in its queue.
    pub max_queued: usize,
    /// QoS 1/2 deliveries handed out and not yet acknowledged.
    pub max_inflight: usize,
    /// Watches without taking part (see the module doc).
    pub observer: bool,
    /// For an observer: the bytes its queue may hold (see the module doc).
    pub max_queued_bytes: usize,
}

impl SubscriberOptions {
    /// An observer named `name` with room for `max_queued` messages and `max_queued_bytes`.
    pub fn observer(name: &str, max_queued: usize, max_queued_bytes: usize) -> Self {
        SubscriberOptions {
            name: name.into(),
            username: None,
            max_queued,
            max_inflight: 1,
            observer: true,
            max_queued_bytes,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("invalid topic filter: {0}")]
    InvalidFilter(&'static str),
    #[error("not authorised to subscribe to this filter")]
    NotAuthorized,
}

/// One message handed to the subscriber.
#[derive(Debug)]
pub struct Received {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS).
    pub qos: QoS,
    pub retain: bool,
    /// For QoS 1/2: pass to [`SubscriberHandle::ack`] once handled (0 for QoS 0).
    pub id: u16,
}

/// A router subscriber (see the module doc).
#[derive(Debug)]
pub struct SubscriberHandle {
    router: Arc<Router>,
    session: Arc<SessionState>,
    /// Wakes whoever polls the handle; kicked when the slow-consumer rule closes it.
    link: Link,
    /// The ACL in force and this subscriber's snapshot of it; None: no ACL (the broker's own).
    acl: Option<(Arc<AuthCell>, AuthSnapshot)>,
    username: Option<String>,
    max_inflight: usize,
    /// Taken from the queue, not yet returned by `recv`.
    pending: std::collections::VecDeque<Outgoing>,
    scratch: Vec<Outgoing>,
}

/// Counts what a subscriber dropped; can be kept after the handle moved elsewhere.
#[derive(Debug, Clone)]
pub struct DropCounter(Arc<SessionState>);

impl DropCounter {
    pub fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Router {
    /// A new subscriber with no subscriptions yet. `acl`: the auth state whose ACL applies to it
    /// under `options.username` / `options.name` (None: unrestricted, for the broker's own).
    pub fn subscriber(
        self: &Arc<Self>,
        options: SubscriberOptions,
        acl: Option<Arc<AuthCell>>,
    ) -> SubscriberHandle {
        let id = self.new_id();
        let link = Link::new(id);
        let session = Arc::new(SessionState::local(
            options.name.clone(),
            id,
            link.clone(),
            &options,
            self.queued_bytes.clone(),
        ));
        SubscriberHandle {
            router: self.clone(),
            session,
            link,
            acl: acl.map(|cell| {
                let snapshot = cell.snapshot();
                (cell, snapshot)
            }),
            username: options.username,
            max_inflight: options.max_inflight.clamp(1, usize::from(u16::MAX)),
            pending: Default::default(),
            scratch: Vec::new(),
        }
    }
}

impl SubscriberHandle {
    fn allowed(&mut self, topic: &str, access: Access) -> bool {
        let Some((cell, snapshot)) = &mut self.acl else {
            return true;
        };
        let (username, client_id) = (self.username.as_deref(), &self.session.client_id);
        let allowed = cell.allowed(snapshot, username, client_id, topic, access);
        if !allowed {
            self.router.stats.acl_denied(access.action());
        }
        allowed
    }

    /// Subscribes to `filter` at `qos` (`$share/G/F` joins a shared group). Returns the retained
    /// messages matching it (not queued: the caller decides what to do with them).
    pub fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> Result<Vec<Arc<Message>>, SubscribeError> {
        let (_, inner) = subscription_filter(filter).map_err(SubscribeError::InvalidFilter)?;
        if !self.allowed(inner, Access::Subscribe) {
            return Err(SubscribeError::NotAuthorized);
        }
        let options = SubscriptionOptions::new(qos);
        let retained = self
            .router
            .subscribe(&self.session, filter, options, None)
            .retained;
        Ok(retained)
    }

    /// Removes the subscription to `filter`; true if it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.router.unsubscribe(&self.session, filter)
    }

    /// The next delivery: `Ready(Some)`, `Pending` (the waker is called when one arrives), or
    /// `Ready(None)` once the handle was closed (its queue overflowed with QoS 1/2 messages).
    /// Deliveries the ACL does not let it read are skipped (and count as acknowledged).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        loop {
            if let Some(r) = self.try_recv() {
                return Poll::Ready(Some(r));
            }
            if self.closed() {
                return Poll::Ready(None);
            }
            // Registered, then looked at again: a delivery between the two wakes the waker.
            if self.link.poll_outbox(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Waits for the next delivery (see [`SubscriberHandle::poll_recv`]).
    pub async fn recv(&mut self) -> Option<Received> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next delivery if one is waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            if self.pending.is_empty() {
                self.session
                    .take_outgoing(&mut self.scratch, self.max_inflight, false, usize::MAX);
                self.pending.extend(self.scratch.drain(..));
            }
            let Outgoing::Publish {
                delivery,
                packet_id,
                ..
            } = self.pending.pop_front()?
            else {
                continue; // PUBREL: local subscribers acknowledge QoS 2 in one step
            };
            if !self.allowed(&delivery.msg.topic, Access::Read) {
                if packet_id != 0 {
                    self.ack(packet_id);
                }
                continue;
            }
            return Some(Received {
                msg: delivery.msg,
                qos: delivery.qos,
                retain: delivery.retain,
                id: packet_id,
            });
        }
    }

    /// Acknowledges a QoS 1/2 delivery, making room for the next.
    pub fn ack(&self, id: u16) {
        if !self.session.complete(id, OutState::AwaitPubAck) {
            self.session.complete(id, OutState::AwaitPubRec);
        }
    }

    /// Messages this subscriber dropped (queue full).
    pub fn dropped(&self) -> u64 {
        self.session.dropped.load(Ordering::Relaxed)
    }

    /// A counter of [`SubscriberHandle::dropped`] that outlives moving the handle.
    pub fn drop_counter(&self) -> DropCounter {
        DropCounter(self.session.clone())
    }

    /// Closed by the slow-consumer rule.
    pub fn closed(&self) -> bool {
        self.link.kicked()
    }
}

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.router.tear_down(&self.session);
    }
}

/// A waker that unparks the calling thread: for a subscriber served by a thread of its own
/// (the `[MSG]` logger, the history's recorder), which parks while its handle's queue is empty.
pub fn thread_waker() -> Waker {
    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    Waker::from(Arc::new(Unpark(std::thread::current())))
}
