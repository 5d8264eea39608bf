//! Sessions by client id: a connection attaches (new, resumed or taken over), detaches
//! (discarded, or kept until it expires), and a session ends (expiry, Clean Start, takeover by
//! a clean session), taking its subscriptions and will timers with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::state::{self, Delivery, Link, SessionState};
use super::{Fanout, Router};
use crate::protocol::DisconnectReason;
use crate::timer::{self, TimerKey};

/// The result of attaching a connection to a session.
#[derive(Debug)]
pub struct Attached {
    pub session: Arc<SessionState>,
    /// CONNACK "session present".
    pub present: bool,
    /// Identifies this connection's attachment; kicked when it must close.
    pub link: Link,
    /// The session's `attach_count` as this connection made it: delayed work (the will) compares
    /// against it to tell whether a newer connection has attached since, even by takeover.
    pub attach_count: u64,
}

impl Router {
    /// Attaches a new connection for `client_id`. An existing connection with the same id is closed
    /// (takeover, 5.0 reason 0x8E). With `clean_start`, any stored session is discarded; otherwise a
    /// stored session is resumed (`present`). `expiry` is the Session Expiry Interval (3.1.1: 0 for
    /// clean session, `u32::MAX` otherwise).
    pub fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
        username: Option<String>,
    ) -> Attached {
        let link = Link::new(self.new_id());
        let mut sessions = self.sessions.lock();
        if let Some(existing) = sessions.get(client_id).cloned() {
            let mut inner = existing.inner.lock();
            if let Some(old) = inner.connection.take() {
                // Takeover: the old connection closes; its detach will find itself superseded.
                old.kick(DisconnectReason::SessionTakenOver);
                self.stats.client_disconnected();
            }
            if !clean_start {
                self.cancel_timers(&mut inner);
                inner.connection = Some(link.clone());
                inner.expiry = expiry;
                inner.attach_count += 1;
                inner.username = username;
                let attach_count = inner.attach_count;
                drop(inner);
                existing.set_persist(self.store.as_ref().filter(|_| expiry > 0), true);
                self.stats.client_connected();
                return Attached {
                    session: existing,
                    present: true,
                    link,
                    attach_count,
                };
            }
            drop(inner);
            self.discard(&mut sessions, &existing);
        }
        let session = Arc::new(SessionState::new(
            client_id.into(),
            self.new_id(),
            expiry,
            username,
            self.queued_bytes.clone(),
        ));
        {
            let mut inner = session.inner.lock();
            inner.connection = Some(link.clone());
            inner.attach_count = 1;
            inner.queue.max_bytes = Some(self.limits.max_queued_bytes_per_client);
        }
        session.set_persist(self.store.as_ref().filter(|_| expiry > 0), true);
        sessions.insert(session.client_id.clone(), session.clone());
        // Counted before another attach can take this connection over (and count it gone).
        self.stats.client_connected();
        drop(sessions);
        Attached {
            session,
            present: false,
            link,
            attach_count: 1,
        }
    }

    /// The connection `link_id` of `session` has ended. A session with expiry 0 is discarded; any
    /// other stays, collecting QoS 1/2 messages until the client returns or it expires. Messages
    /// that came through shared subscriptions and were not acknowledged go to another member of
    /// their group. Does nothing for a connection that was already taken over.
    pub fn detach(self: &Arc<Self>, session: &Arc<SessionState>, link_id: u64) {
        let mut sessions = self.sessions.lock();
        let mut inner = session.inner.lock();
        if inner.connection.as_ref().map(Link::id) != Some(link_id) {
            return;
        }
        inner.connection = None;
        self.stats.client_disconnected();
        let (expiry, attach_count) = (inner.expiry, inner.attach_count);
        drop(inner);
        if expiry == 0 {
            self.discard(&mut sessions, session);
            return;
        }
        drop(sessions);
        self.redispatch_shared(session);
        let at =
            (expiry != u32::MAX).then(|| timer::wall_after(Duration::from_secs(u64::from(expiry))));
        session.detached(expiry, at);
        if let Some(at) = at {
            self.expire_at(session, at, attach_count);
        }
    }

    /// Records a connection's delayed will (`key`, due at `at`) so that the session's end makes it
    /// due at once (MQTT 5.0 section 3.1.3.2.2) and a returning client cancels it.
    pub fn set_will_timer(&self, session: &SessionState, at: SystemTime, key: TimerKey) {
        let mut inner = session.inner.lock();
        if inner.ended {
            self.timer.expedite(key);
            return;
        }
        let timers = inner.timers.get_or_insert_default();
        if let Some((_, old)) = timers.will.replace((at, key)) {
            self.timer.cancel(old);
        }
    }

    /// A client is back: its session no longer expires, and a delayed will is cancelled.
    pub(super) fn cancel_timers(&self, inner: &mut state::SessionInner) {
        if let Some(timers) = inner.timers.take() {
            for (_, key) in [timers.expiry, timers.will].into_iter().flatten() {
                self.timer.cancel(key);
            }
        }
    }

    /// The session has ended: no expiry to wait for, a delayed will is due now, and its
    /// subscriptions (returned, for the caller to take out of the trie) are gone. Under the
    /// session's lock at once, so a concurrent [`Router::subscribe`] either comes before (and its
    /// filter is returned here) or sees the session ended (and adds nothing).
    pub(super) fn end_session(&self, session: &SessionState) -> Vec<String> {
        session.set_persist(None, false);
        let mut inner = session.inner.lock();
        inner.ended = true;
        let filters = inner.subscriptions.drain().map(|(f, _)| f).collect();
        if let Some(timers) = inner.timers.take() {
            if let Some((_, key)) = timers.expiry {
                self.timer.cancel(key);
            }
            if let Some((_, key)) = timers.will {
                self.timer.expedite(key);
            }
        }
        filters
    }

    /// Ends `session` if the client has not come back since attach number `attach_count`.
    pub(super) fn expire(&self, session: &Arc<SessionState>, attach_count: u64) {
        let mut sessions = self.sessions.lock();
        let inner = session.inner.lock();
        if inner.connection.is_some() || inner.attach_count != attach_count {
            return;
        }
        drop(inner);
        self.discard(&mut sessions, session);
    }

    /// Removes a session that has no connection: from the map, and its subscriptions.
    pub(super) fn discard(
        &self,
        sessions: &mut HashMap<Arc<str>, Arc<SessionState>>,
        session: &Arc<SessionState>,
    ) {
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        self.tear_down(session);
    }

    pub(super) fn remove_subscriptions(&self, session: &SessionState, filters: Vec<String>) {
        if filters.is_empty() {
            return;
        }
        let mut subs = self.subscriptions.write();
        for f in filters {
            if subs.remove(&f, session.id) && session.observer {
                self.observer_subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A session ends (discarded, or its [`subscriber::SubscriberHandle`] dropped): its
    /// subscriptions go, and what it got through shared subscriptions goes to other members.
    pub(super) fn tear_down(&self, session: &Arc<SessionState>) {
        let filters = self.end_session(session);
        self.remove_subscriptions(session, filters);
        self.redispatch_shared(session);
    }

    /// Moves the unacknowledged and queued messages `session` got through shared subscriptions to
    /// other members of the same groups.
    pub(super) fn redispatch_shared(&self, session: &Arc<SessionState>) {
        let taken: Vec<Delivery> = {
            let mut inner = session.inner.lock();
            let mut taken = Vec::new();
            inner.inflight.retain(|(_, f)| {
                let shared =
                    f.delivery.shared.is_some() && f.state != state::OutState::AwaitPubComp;
                if shared {
                    taken.push(f.delivery.clone());
                }
                !shared
            });
            inner.queue.retain(|d| {
                if d.shared.is_some() {
                    taken.push(d.clone());
                }
                d.shared.is_none()
            });
            if let Some(mut kept) = inner.persist.as_mut().map(|p| p.kept()) {
                for d in &taken {
                    kept.dropped(d.clone());
                }
                inner.keep(session.id, kept);
            }
            taken
        };
        if taken.is_empty() {
            return;
        }
        let mut fanout = Fanout::default();
        {
            let subs = self.subscriptions.read();
            for d in taken {
                let Some(key) = &d.shared else { continue };
                let Some((key, group)) = subs.shared_group(key) else {
                    continue;
                };
                if let Some(member) = group.pick(session.id) {
                    let sub_ids = member.sub_id.into_iter().collect();
                    fanout.offer(member, d.msg.clone(), Some(key.clone()), sub_ids);
                }
            }
        }
        self.deliver(&mut fanout);
    }

    /// Ends `client_id`'s session now, connected or not (an operator's request): its connection
    /// closes (5.0: DISCONNECT with `reason`), its subscriptions and queue go, and the store
    /// forgets it. False when there is no such session.
    pub fn discard_session(&self, client_id: &str, reason: DisconnectReason) -> bool {
        let mut sessions = self.sessions.lock();
        let Some(existing) = sessions.get(client_id).cloned() else {
            return false;
        };
        let mut inner = existing.inner.lock();
        if let Some(link) = inner.connection.take() {
            // As in a takeover: the connection's detach will find itself gone.
            link.kick(reason);
            self.stats.client_disconnected();
        }
        drop(inner);
        self.discard(&mut sessions, &existing);
        true
    }

    /// Number of sessions, connected or not (Mosquitto's `clients/total`).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Closes the connections of sessions whose user no longer passes `keep` (after a reload
    /// deleted the user; 5.0 reason 0x98). Returns how many were closed.
    pub fn kick_users(&self, keep: impl Fn(&str) -> bool) -> usize {
        let sessions = self.sessions.lock();
        let mut kicked = 0;
        for s in sessions.values() {
            let inner = s.inner.lock();
            if let (Some(user), Some(link)) = (&inner.username, &inner.connection)
                && !keep(user)
            {
                link.kick(DisconnectReason::AdministrativeAction);
                kicked += 1;
            }
        }
        kicked
    }

    /// Ends `session` at `at` unless a client attaches first (attach number `attach_count`).
    pub(super) fn expire_at(
        self: &Arc<Self>,
        session: &Arc<SessionState>,
        at: SystemTime,
        attach_count: u64,
    ) {
        let (router, target) = (Arc::downgrade(self), session.clone());
        let key = self.timer.schedule(timer::instant_at(at), move || {
            if let Some(router) = router.upgrade() {
                router.expire(&target, attach_count);
            }
        });
        let mut inner = session.inner.lock();
        if inner.connection.is_some() || inner.ended {
            // Back (or gone) already: the timer is not needed.
            self.timer.cancel(key);
        } else {
            inner.timers.get_or_insert_default().expiry = Some((at, key));
        }
    }
}
