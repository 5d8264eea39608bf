//! Observers (RFC 7641) and their sessions.
//!
//! A session is a client's state here, keyed by its client id (or its connection token's client
//! id), never by its UDP address: the address is only where notifications go now, and a request
//! from a new address under the same client id (a NAT rebinding) moves them there.
//!
//! Each observing session holds one router [`SubscriberHandle`] with the client's identity (so
//! the ACL's `Subscribe` and `Read` rules apply as to an MQTT client), one subscription per
//! observed filter, and one observation per token. A delivery becomes a notification for every
//! observation whose filter matches: confirmable for QoS 1/2 (retransmitted after `ack_timeout`
//! x random(1, `ack_random_factor`), doubling, `max_retransmit` times, then the session's
//! observers are dropped: RFC 7641 section 4.5), non-confirmable for QoS 0, except that every
//! [`CON_EVERY`]th notification, or the first after [`CON_AFTER`], is confirmable so that an
//! observer that went away without a Reset is noticed even on QoS 0 (section 4.5). The handle's
//! in-flight window is RFC 7252's NSTART = 1: the next QoS 1/2 delivery waits for the ACK.
//!
//! The handles wake the gateway's task through [`Ready`]: a waker per session that queues the
//! session's id and notifies the task, which then drains that handle only.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use tokio::sync::Notify;

use crate::protocol::QoS;
use crate::protocol::topic::matches;
use crate::router::subscriber::{Received, SubscriberHandle};

/// A QoS 0 observer gets a confirmable notification after this many non-confirmable ones...
pub const CON_EVERY: u32 = 100;
/// ... or after this long without one (RFC 7641 section 4.5 says at least every 24 hours).
pub const CON_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Sessions whose handle has something for us (or was closed).
#[derive(Debug, Default)]
pub struct Ready {
    ids: parking_lot::Mutex<Vec<Arc<str>>>,
    pub notify: Notify,
}

impl Ready {
    pub fn take(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.ids.lock())
    }

    pub fn push(&self, id: Arc<str>) {
        self.ids.lock().push(id);
        self.notify.notify_one();
    }
}

struct SessionWaker {
    id: Arc<str>,
    ready: Arc<Ready>,
}

impl Wake for SessionWaker {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.id.clone());
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.id.clone());
    }
}

/// One `GET` with Observe 0.
#[derive(Debug)]
pub struct Observation {
    pub token: Vec<u8>,
    pub filter: String,
    pub qos: QoS,
    /// The last Observe sequence number sent (24 bits).
    pub seq: u32,
}

/// A confirmable notification waiting for its ACK.
#[derive(Debug)]
struct Inflight {
    bytes: Vec<u8>,
    token: Vec<u8>,
    /// The handle's delivery id to acknowledge once every notification of it is acknowledged.
    delivery: Option<u16>,
    retransmits: u32,
    timeout: Duration,
}

/// A client's state here.
pub struct Session {
    pub client_id: Arc<str>,
    pub username: Option<String>,
    /// Where notifications go: the address of its latest request.
    pub peer: SocketAddr,
    pub handle: Option<SubscriberHandle>,
    pub observations: Vec<Observation>,
    inflight: HashMap<u16, Inflight>,
    /// Recent non-confirmable notifications (message id, token), so a Reset to one ends it.
    recent_non: VecDeque<(u16, Vec<u8>)>,
    waker: Waker,
    /// A connection-mode session's token and when it expires (None: not connection mode).
    pub token: Option<(String, Instant)>,
    /// Non-confirmable notifications since the last confirmable one, and when that was.
    non_since_con: u32,
    last_con: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.client_id)
            .field("peer", &self.peer)
            .field("observations", &self.observations)
            .finish_non_exhaustive()
    }
}

/// What a notification is built from.
pub struct Notification<'a> {
    pub payload: &'a [u8],
    pub qos: QoS,
    pub topic: &'a str,
    pub delivery: Option<u16>,
}

/// Transmission parameters (RFC 7252 section 4.8).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ack_timeout: Duration,
    pub random_factor: f64,
    pub max_retransmit: u32,
}

/// All sessions, the notifications in flight and their deadlines.
#[derive(Debug)]
pub struct Observers {
    pub sessions: HashMap<Arc<str>, Session>,
    pub ready: Arc<Ready>,
    /// Our message id -> the session that sent it (confirmable and recent non-confirmable).
    owners: HashMap<u16, Arc<str>>,
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u16)>>,
    pub observations: usize,
    timing: Timing,
}

/// What became of an ACK, a Reset or a deadline.
#[derive(Debug, Default)]
pub struct Outcome {
    pub send: Vec<(SocketAddr, Vec<u8>)>,
    pub retransmitted: u64,
    /// Sessions whose observers were dropped (client id, peer, why).
    pub dropped: Vec<(Arc<str>, SocketAddr, &'static str)>,
}

impl Observers {
    pub fn new(timing: Timing) -> Self {
        Observers {
            sessions: HashMap::new(),
            ready: Arc::default(),
            owners: HashMap::new(),
            deadlines: BinaryHeap::new(),
            observations: 0,
            timing,
        }
    }

    /// A new session (the caller checked the bound and that none exists).
    pub fn create(
        &mut self,
        client_id: Arc<str>,
        username: Option<String>,
        peer: SocketAddr,
        now: Instant,
    ) -> &mut Session {
        let waker = Waker::from(Arc::new(SessionWaker {
            id: client_id.clone(),
            ready: self.ready.clone(),
        }));
        self.sessions.entry(client_id.clone()).or_insert(Session {
            client_id,
            username,
            peer,
            handle: None,
            observations: Vec::new(),
            inflight: HashMap::new(),
            recent_non: VecDeque::new(),
            waker,
            token: None,
            non_since_con: 0,
            last_con: now,
        })
    }

    /// Ends a session: its handle (and so its subscriptions) goes.
    pub fn remove(&mut self, client_id: &str) -> Option<Session> {
        let s = self.sessions.remove(client_id)?;
        self.observations -= s.observations.len();
        for mid in s.inflight.keys().chain(s.recent_non.iter().map(|(m, _)| m)) {
            self.owners.remove(mid);
        }
        Some(s)
    }

    /// Removes the observation with `token` (or, with no token match, on `filter`) of a session,
    /// unsubscribing its filter if no other observation uses it. The session goes too when
    /// nothing is left in it.
    pub fn cancel(&mut self, client_id: &str, token: &[u8], filter: Option<&str>) -> bool {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return false;
        };
        let i = s
            .observations
            .iter()
            .position(|o| o.token == token)
            .or_else(|| filter.and_then(|f| s.observations.iter().position(|o| o.filter == f)));
        let Some(i) = i else {
            return false;
        };
        let o = s.observations.remove(i);
        self.observations -= 1;
        // Its notifications still waiting for an ACK are not sent again.
        let owners = &mut self.owners;
        s.inflight.retain(|mid, f| {
            let keep = f.token != o.token;
            if !keep {
                owners.remove(mid);
            }
            keep
        });
        if !s.observations.iter().any(|x| x.filter == o.filter)
            && let Some(h) = &mut s.handle
        {
            h.unsubscribe(&o.filter);
        }
        if s.observations.is_empty() {
            s.handle = None;
            if s.token.is_none() {
                self.remove(client_id);
            }
        }
        true
    }

    /// Drains one session's handle (up to `budget` deliveries) into notifications; `next_mid`
    /// gives message ids. Returns what to send; a session whose handle was closed (its queue
    /// overflowed) loses its observers.
    pub fn drain(
        &mut self,
        client_id: &Arc<str>,
        budget: usize,
        now: Instant,
        next_mid: &mut impl FnMut() -> u16,
        out: &mut Outcome,
    ) -> usize {
        let mut sent = 0;
        for _ in 0..budget {
            let Some(s) = self.sessions.get_mut(client_id) else {
                return sent;
            };
            let Some(h) = &mut s.handle else {
                return sent;
            };
            let mut cx = std::task::Context::from_waker(&s.waker);
            match h.poll_recv(&mut cx) {
                Poll::Pending => return sent,
                Poll::Ready(None) => {
                    let peer = s.peer;
                    self.drop_observers(client_id);
                    out.dropped
                        .push((client_id.clone(), peer, "its queue overflowed"));
                    return sent;
                }
                Poll::Ready(Some(Received { msg, qos, id, .. })) => {
                    let n = Notification {
                        payload: &msg.payload,
                        qos,
                        topic: &msg.topic,
                        delivery: (id != 0).then_some(id),
                    };
                    sent += self.notify(client_id, &n, now, next_mid, out);
                }
            }
        }
        self.ready.push(client_id.clone()); // more may be waiting: another turn later
        sent
    }

    /// Sends `n` to each of the session's observations that match its topic.
    pub fn notify(
        &mut self,
        client_id: &Arc<str>,
        n: &Notification<'_>,
        now: Instant,
        next_mid: &mut impl FnMut() -> u16,
        out: &mut Outcome,
    ) -> usize {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return 0;
        };
        let mut sent = 0;
        for o in s
            .observations
            .iter_mut()
            .filter(|o| matches(&o.filter, n.topic))
        {
            o.seq = (o.seq + 1) & 0xFF_FFFF;
            let qos = n.qos.min(o.qos);
            let probe = s.non_since_con >= CON_EVERY
                || now.saturating_duration_since(s.last_con) >= CON_AFTER;
            let confirmable = qos != QoS::AtMostOnce || probe;
            if confirmable {
                s.non_since_con = 0;
                s.last_con = now;
            } else {
                s.non_since_con += 1;
            }
            let mid = next_mid();
            let bytes = notification(mid, &o.token, o.seq, confirmable, n.payload);
            out.send.push((s.peer, bytes.clone()));
            sent += 1;
            self.owners.insert(mid, client_id.clone());
            if confirmable {
                let timeout = first_timeout(&self.timing);
                s.inflight.insert(
                    mid,
                    Inflight {
                        bytes,
                        token: o.token.clone(),
                        delivery: n.delivery,
                        retransmits: 0,
                        timeout,
                    },
                );
                self.deadlines.push(std::cmp::Reverse((now + timeout, mid)));
            } else {
                s.recent_non.push_back((mid, o.token.clone()));
                if s.recent_non.len() > 16
                    && let Some((old, _)) = s.recent_non.pop_front()
                {
                    self.owners.remove(&old);
                }
            }
        }
        // A delivery that became no confirmable notification is done with at once.
        if let (Some(id), Some(h)) = (n.delivery, &s.handle)
            && !s.inflight.values().any(|i| i.delivery == Some(id))
        {
            h.ack(id);
        }
        sent
    }

    /// An ACK for one of our messages: the notification is done.
    pub fn on_ack(&mut self, mid: u16) -> bool {
        let Some(id) = self.owners.remove(&mid) else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some(done) = s.inflight.remove(&mid) else {
            return true; // an ACK to a non-confirmable notification: harmless
        };
        if let (Some(d), Some(h)) = (done.delivery, &s.handle)
            && !s.inflight.values().any(|i| i.delivery == Some(d))
        {
            h.ack(d);
        }
        true
    }

    /// A Reset to one of our notifications: that observation ends (RFC 7641 section 3.6).
    pub fn on_reset(&mut self, mid: u16) -> Option<Arc<str>> {
        let id = self.owners.remove(&mid)?;
        let s = self.sessions.get_mut(&id)?;
        let token = match s.inflight.remove(&mid) {
            Some(i) => i.token,
            None => {
                let i = s.recent_non.iter().position(|(m, _)| *m == mid)?;
                s.recent_non.remove(i)?.1
            }
        };
        self.cancel(&id, &token, None);
        Some(id)
    }

    /// The next retransmission deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|r| r.0.0)
    }

    /// Retransmits what is due; a notification out of retransmissions drops its session's
    /// observers.
    pub fn on_deadline(&mut self, now: Instant, out: &mut Outcome) {
        while let Some(std::cmp::Reverse((at, mid))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(id) = self.owners.get(&mid).cloned() else {
                continue; // acknowledged meanwhile
            };
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Some(i) = s.inflight.get_mut(&mid) else {
                continue;
            };
            if i.retransmits >= self.timing.max_retransmit {
                let peer = s.peer;
                self.drop_observers(&id);
                out.dropped
                    .push((id, peer, "it did not acknowledge a notification"));
                continue;
            }
            i.retransmits += 1;
            i.timeout *= 2;
            out.send.push((s.peer, i.bytes.clone()));
            out.retransmitted += 1;
            self.deadlines
                .push(std::cmp::Reverse((now + i.timeout, mid)));
        }
    }

    /// Ends every observation of a session (it stays if it holds a connection token).
    pub fn drop_observers(&mut self, client_id: &str) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        if s.token.is_some() {
            self.observations -= s.observations.len();
            s.observations.clear();
            s.handle = None;
            for mid in s.inflight.drain().map(|(m, _)| m) {
                self.owners.remove(&mid);
            }
        } else {
            self.remove(client_id);
        }
    }
}

/// The first wait for an ACK: `ack_timeout` x random(1, `random_factor`).
fn first_timeout(t: &Timing) -> Duration {
    let f = 1.0 + rand::random::<f64>() * (t.random_factor - 1.0);
    t.ack_timeout.mul_f64(f)
}

/// A 2.05 notification with its Observe number.
fn notification(mid: u16, token: &[u8], seq: u32, confirmable: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(if confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    });
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p.add_option(CoapOption::Observe, super::reply::uint(seq));
    p.payload = payload.to_vec();
    p.to_bytes_unlimited().unwrap_or_default()
}
