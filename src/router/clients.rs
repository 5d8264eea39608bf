//! The sessions as an operator sees them (the HTTP API's clients list), and disconnecting one.
//!
//! A connection describes itself once, after CONNACK ([`ConnInfo`], kept by its
//! [`super::state::Link`]), and counts its packets and bytes there as it already counts them for
//! the broker's totals (once per batch, relaxed atomics on a line only its own task writes).
//! Listing takes the sessions' lock and each session's lock briefly, one at a time, in the
//! router's lock order; it never waits for a connection.
//!
//! [`ClientEvents`]: connections coming and going, for live views (the HTTP API's Server-Sent
//! Events). A tokio broadcast channel: sending never blocks (a receiver that falls behind loses
//! the oldest events and is told how many), and with nobody listening an event is not even made
//! (one atomic load decides, see [`ClientEvents::emit`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::Router;
use crate::protocol::{DisconnectReason, QoS};

/// What a connection tells about itself (set once, after CONNACK).
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// As agreed in CONNECT / CONNACK (0: none).
    pub keep_alive: u16,
    pub clean_start: bool,
    pub connected_at: SystemTime,
    pub counters: ConnCounters,
}

/// A connection's own traffic counters (what `$SYS` counts for the whole broker), from CONNACK
/// on, as `$SYS` counts them.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl ConnCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A connection came or went.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    pub connected: bool,
    pub client_id: Arc<str>,
    pub username: Option<String>,
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Why it went (None for a connection), as the broker's log says it.
    pub reason: Option<String>,
    pub at: SystemTime,
}

/// Events kept for a listener that falls behind, before it loses the oldest.
const EVENTS_KEPT: usize = 1024;

/// Where connections announce themselves (see the module doc).
#[derive(Debug)]
pub struct ClientEvents {
    tx: broadcast::Sender<Arc<ClientEvent>>,
    /// Live [`ClientEvents::subscribe`] receivers (kept here so that [`ClientEvents::emit`] need
    /// not take the channel's lock to learn there are none).
    listeners: Arc<AtomicUsize>,
}

impl Default for ClientEvents {
    fn default() -> Self {
        ClientEvents {
            tx: broadcast::channel(EVENTS_KEPT).0,
            listeners: Arc::default(),
        }
    }
}

/// A [`ClientEvents`] receiver; counted while it lives.
#[derive(Debug)]
pub struct ClientEventReceiver {
    pub rx: broadcast::Receiver<Arc<ClientEvent>>,
    listeners: Arc<AtomicUsize>,
}

impl Drop for ClientEventReceiver {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientEvents {
    /// Sends the event `make` builds, if anyone listens; never blocks.
    pub fn emit(&self, make: impl FnOnce() -> ClientEvent) {
        if self.listeners.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(make()));
    }

    /// Events from now on.
    pub fn subscribe(&self) -> ClientEventReceiver {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        ClientEventReceiver {
            rx: self.tx.subscribe(),
            listeners: self.listeners.clone(),
        }
    }
}

/// One session, as listed.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub client_id: Arc<str>,
    pub username: Option<String>,
    pub connected: bool,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// Filter and granted QoS, sorted by filter.
    pub subscriptions: Vec<(String, QoS)>,
    pub inflight: usize,
    pub queued: usize,
    /// Messages dropped for this session (queue full, QoS 0 while backed up).
    pub dropped: u64,
    /// The connection serving it now (None: offline).
    pub connection: Option<ConnView>,
}

/// The connection part of a [`ClientView`].
#[derive(Debug, Clone)]
pub struct ConnView {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub protocol: u8,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub connected_at: SystemTime,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ConnView {
    fn of(info: &ConnInfo) -> Self {
        let c = &info.counters;
        ConnView {
            peer: info.peer,
            listener: info.listener.clone(),
            protocol: info.protocol,
            keep_alive: info.keep_alive,
            clean_start: info.clean_start,
            connected_at: info.connected_at,
            packets_in: c.packets_in.load(Ordering::Relaxed),
            packets_out: c.packets_out.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// `session` as listed, if `keep` accepts it (subscriptions filled in only then).
fn view_of(
    session: &super::state::SessionState,
    keep: &mut impl FnMut(&ClientView) -> bool,
) -> Option<ClientView> {
    let inner = session.inner.lock();
    let mut view = ClientView {
        client_id: session.client_id.clone(),
        username: inner.username.clone(),
        connected: inner.connection.is_some(),
        expiry: inner.expiry,
        subscriptions: Vec::new(),
        inflight: inner.inflight.len(),
        queued: inner.queue.len(),
        dropped: session.dropped.load(Ordering::Relaxed),
        connection: inner
            .connection
            .as_ref()
            .and_then(|l| l.info())
            .map(ConnView::of),
    };
    if inner.ended || !keep(&view) {
        return None;
    }
    view.subscriptions = inner
        .subscriptions
        .iter()
        .map(|(filter, (options, _))| (filter.clone(), options.qos))
        .collect();
    drop(inner);
    view.subscriptions.sort();
    Some(view)
}

impl Router {
    /// Every session that `keep` accepts, sorted by client id. `keep` sees the view before its
    /// subscriptions are filled in (they are listed only for the sessions kept).
    pub fn clients(&self, mut keep: impl FnMut(&ClientView) -> bool) -> Vec<ClientView> {
        // Cloned out first: the sessions' lock is not held while each session's is taken.
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        let mut out: Vec<_> = sessions
            .iter()
            .filter_map(|s| view_of(s, &mut keep))
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// One session by client id.
    pub fn client(&self, client_id: &str) -> Option<ClientView> {
        let session = self.sessions.lock().get(client_id).cloned()?;
        view_of(&session, &mut |_| true)
    }

    /// Closes `client_id`'s connection with `reason` (5.0: DISCONNECT with that code). Returns
    /// false when no connection serves that client id; its session, if any, stays.
    pub fn disconnect_client(&self, client_id: &str, reason: DisconnectReason) -> bool {
        let Some(session) = self.sessions.lock().get(client_id).cloned() else {
            return false;
        };
        let inner = session.inner.lock();
        match &inner.connection {
            Some(link) => {
                link.kick(reason);
                true
            }
            None => false,
        }
    }

    /// Open connections per listener (for `/metrics`), sorted by listener name.
    pub fn connections_by_listener(&self) -> Vec<(Arc<str>, u64)> {
        let mut counts: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            let inner = session.inner.lock();
            if let Some(info) = inner.connection.as_ref().and_then(|l| l.info()) {
                *counts.entry(info.listener.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }
}

/// One subscription of one session, as listed (`GET /api/v1/subscriptions`).
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub client_id: Arc<str>,
    pub filter: String,
    pub options: crate::protocol::SubscriptionOptions,
}

impl Router {
    /// Every subscription of every session (observers are not sessions) that `keep` accepts,
    /// sorted by client id, then filter. Locks as [`Router::clients`] does.
    pub fn subscriptions_list(
        &self,
        mut keep: impl FnMut(&str, &str) -> bool,
    ) -> Vec<SubscriptionView> {
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        let mut out = Vec::new();
        for session in sessions {
            let inner = session.inner.lock();
            if inner.ended {
                continue;
            }
            for (filter, (options, _)) in &inner.subscriptions {
                if keep(&session.client_id, filter) {
                    out.push(SubscriptionView {
                        client_id: session.client_id.clone(),
                        filter: filter.clone(),
                        options: *options,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        out
    }

    /// Subscriptions a message on `topic` would match now: plain ones of sessions (observers
    /// left out), and each shared group once.
    pub fn matching_subscriptions(&self, topic: &str) -> usize {
        let mut n = 0;
        self.subscriptions
            .read()
            .for_each_match(topic, |m| match m {
                super::trie::Match::Plain(s) => n += usize::from(!s.observer),
                super::trie::Match::Shared(..) => n += 1,
            });
        n
    }
}
