//! A persistent session owned by a gateway instead of an MQTT connection: a bridge's local side.
//!
//! Unlike a [`super::subscriber::SubscriberHandle`] (a session of its own, gone with the
//! handle), this is an ordinary session in the client-id map, so everything the router and the
//! store already do for a persistent MQTT session applies to it: its subscriptions and its
//! QoS 1/2 queue are kept (and stored, with persistence on) while it is offline, the queue is
//! bounded with the oldest dropped and counted, and in-flight messages are handed out again, in
//! order, when it comes back. The gateway attaches it while its own peer is reachable and
//! detaches it while not, exactly as a client connects and disconnects; acknowledgements
//! ([`SessionLink::puback`], ...) are the peer's, so nothing leaves the queue before the far
//! end has it.
//!
//! Its packet identifiers are the session's own, so a gateway speaking MQTT to its peer can use
//! them on the wire as they are.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::Router;
use super::state::{Link, OutState, Outgoing, SessionState};
use super::subscriber::SubscribeError;
use crate::protocol::SubscriptionOptions;
use crate::protocol::topic::subscription_filter;

/// A gateway's persistent session (see the module doc). Detached when dropped.
#[derive(Debug)]
pub struct SessionLink {
    router: Arc<Router>,
    session: Arc<SessionState>,
    /// The current attachment, None while detached.
    link: Option<Link>,
    username: Option<String>,
    /// The bounds and subscriptions it is meant to have: given again to a new session should
    /// an operator discard this one (`DELETE /api/v1/sessions/...`).
    max_queued: u32,
    max_queued_bytes: usize,
    wanted: Vec<(String, SubscriptionOptions)>,
}

impl Router {
    /// The persistent session `client_id` (resumed if the router or the store has it, made
    /// otherwise), with at most `max_queued` messages queued and `max_queued_bytes` of them,
    /// detached. It never expires: remove it with [`Router::discard_session`].
    pub fn session_link(
        self: &Arc<Self>,
        client_id: &str,
        username: Option<String>,
        max_queued: usize,
        max_queued_bytes: usize,
    ) -> SessionLink {
        let attached = self.attach(client_id, false, u32::MAX, username.clone());
        let mut link = SessionLink {
            router: self.clone(),
            session: attached.session,
            link: Some(attached.link),
            username,
            max_queued: u32::try_from(max_queued.max(1)).unwrap_or(u32::MAX),
            max_queued_bytes,
            wanted: Vec::new(),
        };
        link.bound();
        link.detach();
        link
    }
}

impl SessionLink {
    /// Identifies the session: messages published with it as their origin skip its No Local
    /// subscriptions.
    pub fn session_id(&self) -> u64 {
        self.session.id
    }

    pub fn client_id(&self) -> &Arc<str> {
        &self.session.client_id
    }

    /// Online: deliveries queue for [`SessionLink::take`] and wake [`SessionLink::poll_ready`].
    /// The next `take` should `resend` what is still in flight.
    pub fn attach(&mut self) {
        if self.link.is_some() {
            return;
        }
        let attached = self.router.attach(
            &self.session.client_id,
            false,
            u32::MAX,
            self.username.clone(),
        );
        if !Arc::ptr_eq(&attached.session, &self.session) {
            // The session was discarded meanwhile (an operator's request): go on with a new one.
            self.session = attached.session;
            self.bound();
            for (filter, options) in &self.wanted {
                self.router.subscribe(&self.session, filter, *options, None);
            }
        }
        self.link = Some(attached.link);
    }

    fn bound(&self) {
        let session = &self.session;
        session.max_queued.store(self.max_queued, Ordering::Relaxed);
        session.inner.lock().queue.max_bytes = Some(self.max_queued_bytes);
    }

    /// Offline: QoS 1/2 messages queue (up to the bound), QoS 0 ones are dropped.
    pub fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            self.router.detach(&self.session, link.id());
        }
    }

    /// Whether the router closed this attachment (queue overflow while attached, or a takeover):
    /// detach, and attach again when ready.
    pub fn kicked(&self) -> bool {
        self.link.as_ref().is_some_and(Link::kicked)
    }

    /// Ready when something may be waiting for [`SessionLink::take`], or the link was kicked.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.link {
            Some(link) => {
                if link.kicked() {
                    return Poll::Ready(());
                }
                link.poll_outbox(cx)
            }
            None => Poll::Pending,
        }
    }

    /// The filters it is subscribed to.
    pub fn filters(&self) -> Vec<String> {
        self.session
            .inner
            .lock()
            .subscriptions
            .keys()
            .cloned()
            .collect()
    }

    /// Subscribes (or updates the options of) `filter`. The ACL is the caller's to check.
    pub fn subscribe(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
    ) -> Result<(), SubscribeError> {
        subscription_filter(filter).map_err(SubscribeError::InvalidFilter)?;
        self.router.subscribe(&self.session, filter, options, None);
        self.wanted.retain(|(f, _)| f != filter);
        self.wanted.push((filter.to_owned(), options));
        Ok(())
    }

    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.wanted.retain(|(f, _)| f != filter);
        self.router.unsubscribe(&self.session, filter)
    }

    /// What may go out now, within `max_inflight` (see [`SessionState::take_outgoing`];
    /// `resend` on the first call after [`SessionLink::attach`]). `Some(ticket)`: a QoS 2
    /// message waits for the store; call again once it is committed.
    pub fn take(
        &self,
        out: &mut Vec<Outgoing>,
        max_inflight: usize,
        resend: bool,
    ) -> Option<crate::store::Ticket> {
        let max_inflight = max_inflight.clamp(1, usize::from(u16::MAX));
        self.session
            .take_outgoing(out, max_inflight, resend, 256 * 1024)
    }

    /// A PUBACK arrived, or the message was not sent (skipped, or sent at a QoS the peer
    /// caps lower): it is done. False if unknown.
    pub fn puback(&self, packet_id: u16) -> bool {
        self.session.complete(packet_id, OutState::AwaitPubAck)
            || self.session.complete(packet_id, OutState::AwaitPubRec)
    }

    /// The packet identifiers in flight (the peer may still hold them).
    pub fn inflight_ids(&self) -> Vec<u16> {
        self.session
            .inner
            .lock()
            .inflight
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// A PUBREC arrived: a PUBREL goes out (after the ticket's commit, if any).
    pub fn pubrec(&self, packet_id: u16) -> (bool, Option<crate::store::Ticket>) {
        self.session.received(packet_id)
    }

    /// A PUBCOMP arrived.
    pub fn pubcomp(&self, packet_id: u16) -> bool {
        self.session.complete(packet_id, OutState::AwaitPubComp)
    }

    /// Messages waiting in its queue (not yet handed out).
    pub fn queued(&self) -> usize {
        self.session.inner.lock().queue.len()
    }

    /// Messages it dropped (queue full, QoS 0 while offline).
    pub fn dropped(&self) -> u64 {
        self.session.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        self.detach();
    }
}
