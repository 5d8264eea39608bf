//! The gateway's state and what each datagram does to it. Owned by one task (`socket.rs`):
//! no locks. What must wait (a password check that misses the cache, the store's commit) runs
//! in a task of its own and comes back as an [`Event`]; everything else is answered at once.
//!
//! A datagram is, in order: parsed (a malformed one gets 4.00 if its header can be answered, a
//! Reset if it is confirmable, else nothing; counted, logged sparsely), rate-limited per source
//! (requests only: ACKs and Resets are answers to us), de-duplicated (a repeated confirmable
//! request gets its first response again), read as a request (`request.rs`), its Block1 body
//! assembled, its credentials checked (`identity.rs`), then routed (`routes.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use tokio::sync::mpsc;
use tracing::info;

use super::block::{Assembled, Assembler, BlockError};
use super::limits::{Dedup, Echo, RateLimiter, Seen};
use super::observe::{Observers, Outcome, Timing};
use super::reply::{Exchange, Response, empty, uint};
use super::request::{self, Refused};
use super::status::{Reason, Status};
use crate::auth::AuthOutcome;
use crate::client::Context;
use crate::config::{CoapConfig, Config};
use crate::protocol::text;

/// RFC 7252 EXCHANGE_LIFETIME with the default parameters (about 247 s): how long a response is
/// kept for a repeated request, and a Block1 transfer may take.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Responses kept for repeated requests.
const MAX_DEDUP: usize = 16_384;
/// Block1 transfers under way at once.
const MAX_TRANSFERS: usize = 256;

/// The configuration the engine works with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: Arc<str>,
    pub anonymous: bool,
    pub block_size: usize,
    pub max_packet_size: usize,
    pub max_observers_per_client: usize,
    pub max_observers: usize,
    pub max_sessions: usize,
    pub heartbeat: Duration,
    pub max_pending: usize,
    pub max_queued: usize,
}

impl Settings {
    pub fn new(c: &CoapConfig, config: &Config) -> Self {
        Settings {
            name: c.name.as_str().into(),
            anonymous: config.coap_allows_anonymous(c),
            block_size: c.block_size,
            max_packet_size: config.limits.max_packet_size,
            max_observers_per_client: c.max_observers_per_client,
            max_observers: c.max_observers,
            max_sessions: c.max_sessions,
            heartbeat: c.heartbeat,
            max_pending: c.max_pending,
            max_queued: config.limits.max_queued_messages,
        }
    }
}

/// Work that waited, back in the gateway's task.
#[derive(Debug)]
pub enum Event {
    /// A password check finished: carry on with the request.
    Authenticated(Box<super::identity::Waiting>, AuthOutcome),
    /// A publish is durable (or the store failed): send its response.
    Reply(Exchange, Response),
}

pub struct Engine {
    pub(super) ctx: Arc<Context>,
    pub(super) settings: Settings,
    pub(super) status: Arc<Status>,
    /// Datagrams to send, in order.
    pub out: Vec<(SocketAddr, Vec<u8>)>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    /// Tasks under way that will send an [`Event`].
    pub(super) pending: usize,
    limiter: RateLimiter,
    pub(super) echo: Echo,
    dedup: Dedup,
    blocks: Assembler,
    pub(super) observers: Observers,
    /// Connection-mode tokens -> client id (its session holds the expiry).
    pub(super) tokens: std::collections::HashMap<String, Arc<str>>,
    pub(super) next_mid: u16,
}

impl Engine {
    pub fn new(
        ctx: Arc<Context>,
        cfg: &CoapConfig,
        config: &Config,
        status: Arc<Status>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let now = Instant::now();
        let settings = Settings::new(cfg, config);
        Engine {
            blocks: Assembler::new(settings.max_packet_size, MAX_TRANSFERS, EXCHANGE_LIFETIME),
            settings,
            ctx,
            status,
            out: Vec::new(),
            events,
            pending: 0,
            limiter: RateLimiter::new(cfg.request_rate, cfg.request_burst),
            echo: Echo::new(now),
            dedup: Dedup::new(EXCHANGE_LIFETIME, MAX_DEDUP),
            observers: Observers::new(Timing {
                ack_timeout: cfg.ack_timeout,
                random_factor: cfg.ack_random_factor,
                max_retransmit: cfg.max_retransmit,
            }),
            tokens: Default::default(),
            next_mid: rand::random(),
        }
    }

    pub(super) fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// One datagram from `peer`.
    pub fn on_datagram(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        let packet = match Packet::from_bytes(data) {
            Ok(p) if p.header.get_version() == 1 => p,
            Ok(_) => return self.malformed(peer, data, "not CoAP version 1", None),
            Err(e) => return self.malformed(peer, data, &e.to_string(), Some(data)),
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement, _) => {
                self.observers.on_ack(mid);
            }
            (MessageType::Reset, _) => {
                if let Some(id) = self.observers.on_reset(mid) {
                    tracing::debug!(client_id = %text::cut(&id), %peer, "CoAP observation ended by a Reset");
                    self.gauges();
                }
            }
            (MessageType::Confirmable, MessageClass::Empty) => {
                // CoAP ping (RFC 7252 section 4.3): answered with a Reset.
                self.out.push((peer, empty(MessageType::Reset, mid)));
            }
            (t, MessageClass::Request(method)) => {
                let confirmable = t == MessageType::Confirmable;
                self.on_request(peer, packet, method, confirmable, data.len(), now);
            }
            (MessageType::Confirmable, _) => {
                self.out.push((peer, empty(MessageType::Reset, mid)));
            }
            _ => {}
        }
    }

    /// A datagram we cannot read: 4.00 if its header and token can be answered, a Reset if it
    /// is confirmable, else nothing. Logged for the 1st, 2nd, 4th, 8th... one (a flood of them
    /// must not flood the log).
    fn malformed(&mut self, peer: SocketAddr, data: &[u8], why: &str, raw: Option<&[u8]>) {
        Status::count(&self.status.malformed);
        let n = Status::get(&self.status.malformed);
        if n.is_power_of_two() {
            let head = String::from_utf8_lossy(&data[..data.len().min(32)]);
            info!(gateway = %self.settings.name, %peer, count = n,
                "malformed CoAP datagram ({why}): {:?}", text::cut(&head));
        }
        let Some(raw) = raw.filter(|r| r.len() >= 4 && r[0] >> 6 == 1) else {
            return;
        };
        let (kind, tkl, code) = ((raw[0] >> 4) & 3, usize::from(raw[0] & 0x0F), raw[1]);
        let mid = u16::from_be_bytes([raw[2], raw[3]]);
        let is_request = (1..32).contains(&code);
        if is_request && tkl <= 8 && raw.len() >= 4 + tkl && kind <= 1 {
            let ex = Exchange {
                peer,
                mid,
                token: raw[4..4 + tkl].to_vec(),
                confirmable: kind == 0,
                size: raw.len(),
                block1: None,
            };
            self.status.refused(Reason::BadRequest);
            let r = Response::why(ResponseType::BadRequest, "malformed CoAP message");
            self.respond(&ex, r);
        } else if kind == 0 {
            self.out.push((peer, empty(MessageType::Reset, mid)));
        }
    }

    fn on_request(
        &mut self,
        peer: SocketAddr,
        mut packet: Packet,
        method: coap_lite::RequestType,
        confirmable: bool,
        size: usize,
        now: Instant,
    ) {
        if !self.limiter.allow(peer.ip(), now) {
            Status::count(&self.status.rate_limited);
            return;
        }
        Status::count(&self.status.requests);
        let mut ex = Exchange {
            peer,
            mid: packet.header.message_id,
            token: packet.get_token().to_vec(),
            confirmable,
            size,
            block1: None,
        };
        if confirmable {
            match self.dedup.seen(peer, ex.mid, now) {
                Seen::New => {}
                Seen::Answered(bytes) => {
                    Status::count(&self.status.duplicates);
                    self.out.push((peer, bytes));
                    return;
                }
                Seen::InProgress => {
                    Status::count(&self.status.duplicates);
                    return;
                }
            }
        }
        if let Some(v) = packet.get_first_option(CoapOption::Unknown(super::limits::ECHO_OPTION)) {
            self.echo.check(peer, v, now);
        }
        let req = match request::parse(&packet, method) {
            Ok(r) => r,
            Err(refused) => return self.refuse(&ex, refused),
        };
        let mut body = std::mem::take(&mut packet.payload);
        let max = self.settings.max_packet_size;
        if let Some(b1) = req.block1 {
            if req.size1.is_some_and(|s| s > max) {
                return self.too_large(&ex);
            }
            match self.blocks.add(peer, &req.uri, b1, &body, now) {
                Ok(Assembled::Continue(b)) => {
                    let r = Response::new(ResponseType::Continue)
                        .option(CoapOption::Block1, b.encode());
                    return self.respond(&ex, r);
                }
                Ok(Assembled::Done(all)) => {
                    body = all;
                    ex.block1 = Some(b1);
                }
                Err(BlockError::TooLarge) => return self.too_large(&ex),
                Err(BlockError::Incomplete) => {
                    let r = Response::why(
                        ResponseType::RequestEntityIncomplete,
                        "block out of order or not started",
                    );
                    self.status.refused(Reason::BadRequest);
                    return self.respond(&ex, r);
                }
                Err(BlockError::Busy) => {
                    return self.overloaded(&ex, "too many block-wise transfers");
                }
            }
        } else if body.len() > max {
            return self.too_large(&ex);
        }
        self.identify(ex, req, body, now);
    }

    fn too_large(&mut self, ex: &Exchange) {
        self.status.refused(Reason::TooLarge);
        let max = u32::try_from(self.settings.max_packet_size).unwrap_or(u32::MAX);
        let r = Response::why(
            ResponseType::RequestEntityTooLarge,
            "over limits.max_packet_size",
        )
        .option(CoapOption::Size1, uint(max));
        self.respond(ex, r);
    }

    /// 5.03 with Max-Age: come back in a few seconds.
    pub(super) fn overloaded(&mut self, ex: &Exchange, why: &str) {
        self.status.refused(Reason::Overloaded);
        let r = Response::why(ResponseType::ServiceUnavailable, why)
            .option(CoapOption::MaxAge, uint(5));
        self.respond(ex, r);
    }

    /// The response for a request that cannot be served.
    pub(super) fn refuse(&mut self, ex: &Exchange, refused: Refused) {
        let (code, why, reason) = match &refused {
            Refused::BadRequest(why) => {
                (ResponseType::BadRequest, why.as_str(), Reason::BadRequest)
            }
            Refused::BadOption(_) => (
                ResponseType::BadOption,
                "unrecognised critical option",
                Reason::NotFound,
            ),
            Refused::NotFound => (ResponseType::NotFound, "no such resource", Reason::NotFound),
            Refused::MethodNotAllowed => (
                ResponseType::MethodNotAllowed,
                "method not allowed here",
                Reason::NotFound,
            ),
            Refused::ProxyingNotSupported => (
                ResponseType::ProxyingNotSupported,
                "not a proxy",
                Reason::NotFound,
            ),
        };
        self.status.refused(reason);
        let r = Response::why(code, why);
        self.respond(ex, r);
    }

    /// Encodes and queues a response (and keeps it for a repeated confirmable request).
    pub(super) fn respond(&mut self, ex: &Exchange, r: Response) {
        let mid = self.mid();
        let bytes = r.encode(ex, mid);
        if ex.confirmable {
            self.dedup.answered(ex.peer, ex.mid, &bytes);
        }
        self.out.push((ex.peer, bytes));
    }

    /// Work that waited.
    pub fn on_event(&mut self, event: Event, now: Instant) {
        self.pending = self.pending.saturating_sub(1);
        match event {
            Event::Authenticated(waiting, outcome) => self.authenticated(*waiting, outcome, now),
            Event::Reply(ex, r) => self.respond(&ex, r),
        }
    }

    /// Observer handles with deliveries.
    pub fn on_ready(&mut self, now: Instant) {
        let mut out = Outcome::default();
        for id in self.observers.ready.take() {
            let mids = &mut self.next_mid;
            let mut next_mid = || {
                *mids = mids.wrapping_add(1);
                *mids
            };
            let sent = self.observers.drain(&id, 64, now, &mut next_mid, &mut out);
            Status::count_n(&self.status.notifications, sent);
        }
        self.outcome(out);
    }

    /// Retransmissions due, expired tokens and transfers.
    pub fn on_tick(&mut self, now: Instant) {
        let mut out = Outcome::default();
        self.observers.on_deadline(now, &mut out);
        self.outcome(out);
    }

    /// Once a second or so: expired tokens, transfers, buckets.
    pub fn housekeeping(&mut self, now: Instant) {
        self.blocks.expire(now);
        self.limiter.tidy(now);
        self.echo.tidy(now);
        let expired: Vec<Arc<str>> = self
            .observers
            .sessions
            .values()
            .filter(|s| s.token.as_ref().is_some_and(|(_, at)| *at <= now))
            .map(|s| s.client_id.clone())
            .collect();
        for id in expired {
            if let Some(s) = self.observers.remove(&id) {
                if let Some((token, _)) = &s.token {
                    self.tokens.remove(token);
                }
                info!(gateway = %self.settings.name, client_id = %text::cut(&id),
                    "CoAP connection token expired (no heartbeat within coap.heartbeat)");
            }
        }
        self.gauges();
    }

    pub(super) fn outcome(&mut self, out: Outcome) {
        self.out.extend(out.send);
        if out.retransmitted > 0 {
            self.status
                .retransmissions
                .fetch_add(out.retransmitted, std::sync::atomic::Ordering::Relaxed);
        }
        for (id, peer, why) in &out.dropped {
            Status::count(&self.status.observers_dropped);
            info!(gateway = %self.settings.name, client_id = %text::cut(id), %peer,
                "CoAP observer dropped: {why}");
        }
        self.gauges();
    }

    /// The observer and session gauges.
    pub(super) fn gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.status
            .observers
            .store(self.observers.observations as u64, Relaxed);
        self.status
            .sessions
            .store(self.observers.sessions.len() as u64, Relaxed);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.observers.next_deadline()
    }

    pub fn ready(&self) -> Arc<super::observe::Ready> {
        self.observers.ready.clone()
    }

    /// Pending tasks and datagrams that would be answered: for the fuzz target and tests.
    pub fn pending(&self) -> usize {
        self.pending
    }
}
