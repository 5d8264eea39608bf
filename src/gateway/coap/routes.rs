//! What each resource does, once the request's identity is known:
//!
//! | method + URI                     | does                                    | answers |
//! |----------------------------------|-----------------------------------------|---------|
//! | `POST /ps/{topic}`               | publish (`?qos=`, `?retain=`)           | 2.01    |
//! | `PUT /ps/{topic}`                | the same                                | 2.04    |
//! | `GET /ps/{filter}` + Observe 0   | observe (`+`, `#` allowed)              | 2.05, then notifications |
//! | `GET /ps/{topic}` + Observe 1    | stop observing, then as without Observe | 2.05 / 4.04 |
//! | `GET /ps/{topic}`                | the retained message (block-wise)       | 2.05 / 4.04 |
//! | `POST/PUT/DELETE /mqtt/connection` | connection mode (`identity.rs`)       | 2.01 / 2.04 / 2.02 |
//! | `GET /.well-known/core`          | the resources in link format            | 2.05    |
//!
//! A confirmable publish is QoS 1 (`?qos=` may say 0 or 2), a non-confirmable one QoS 0 unless
//! `?qos=` says more; either is answered once the ingress took the message and, when the store
//! gives a commit ticket (a retained message with persistence on), once it is on disk.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use coap_lite::{CoapOption, ResponseType};

use super::block::{self, Block};
use super::engine::{Engine, Event};
use super::identity::Identity;
use super::limits::{AMPLIFICATION, ECHO_OPTION};
use super::observe::{Notification, Outcome};
use super::reply::{Exchange, Response, uint};
use super::request::{Method, Request, Route};
use super::status::{Reason, Status};
use crate::auth::Access;
use crate::ingress::{Outcome as Routed, Refusal, Source};
use crate::protocol::QoS;
use crate::protocol::topic::validate_topic_name;
use crate::router::Message;
use crate::router::subscriber::{SubscribeError, SubscriberOptions};

/// `/.well-known/core` (RFC 6690 link format).
const LINKS: &str = "</ps>;rt=\"core.ps\";title=\"publish/observe: /ps/{topic}\",\
</mqtt/connection>;title=\"connection mode\"";
/// Content-Format: text/plain, application/link-format.
const TEXT: u32 = 0;
const LINK_FORMAT: u32 = 40;

impl Engine {
    pub(super) fn dispatch(
        &mut self,
        ex: Exchange,
        req: Request,
        body: Vec<u8>,
        id: Identity,
        now: Instant,
    ) {
        // Sessions are keyed by client id: a request from a new address under the same identity
        // (a NAT rebinding) moves the session's notifications there.
        if let Some(s) = self.observers.sessions.get_mut(&id.client_id)
            && s.username == id.username
        {
            s.peer = ex.peer;
        }
        match (&req.route, req.method) {
            (Route::WellKnownCore, Method::Get) => {
                self.content(&ex, req.block2, LINKS.as_bytes(), LINK_FORMAT, None, now);
            }
            (Route::Connection, method) => self.connection(&ex, method, id, now),
            (Route::PubSub(topic), Method::Post | Method::Put) => {
                let topic = topic.clone();
                self.publish(ex, &req, topic, body, id);
            }
            (Route::PubSub(topic), Method::Get) => {
                let topic = topic.clone();
                match req.observe {
                    Some(0) => self.observe(&ex, &req, topic, id, now),
                    Some(1) => {
                        self.observers
                            .cancel(&id.client_id, &ex.token, Some(&topic));
                        self.gauges();
                        self.retained(&ex, &req, &topic, id, now);
                    }
                    _ => self.retained(&ex, &req, &topic, id, now),
                }
            }
            _ => {
                self.status.refused(Reason::NotFound);
                self.respond(
                    &ex,
                    Response::why(ResponseType::MethodNotAllowed, "method not allowed here"),
                );
            }
        }
    }

    fn publish(&mut self, ex: Exchange, req: &Request, topic: String, body: Vec<u8>, id: Identity) {
        let ctx = self.ctx.clone();
        if ctx.shutdown.is_cancelled() || ctx.router.over_budget() {
            return self.overloaded(&ex, "the broker cannot take messages now");
        }
        let default = if ex.confirmable {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let qos = req.query.qos.unwrap_or(default);
        let msg = Message::new(topic.into(), Bytes::from(body), qos, req.query.retain);
        let mut publisher = ctx
            .ingress
            .publisher(id.client_id, id.username, Source::Coap)
            .with_origin(self.settings.name.clone(), ex.peer);
        let code = match req.method {
            Method::Post => ResponseType::Created,
            _ => ResponseType::Changed,
        };
        match ctx.ingress.publish_now(&mut publisher, msg) {
            Routed::Routed { commit, .. } => {
                Status::count(&self.status.published);
                match (commit, ctx.router.store()) {
                    (Some(ticket), Some(store)) => {
                        if self.pending >= self.settings.max_pending {
                            return self
                                .overloaded(&ex, "too many publishes waiting for the store");
                        }
                        self.pending += 1;
                        let (store, events) = (store.clone(), self.events.clone());
                        tokio::spawn(async move {
                            let r = match store.committed(ticket).await {
                                Ok(_) => Response::new(code),
                                Err(_) => Response::why(
                                    ResponseType::ServiceUnavailable,
                                    "the store could not keep the message",
                                ),
                            };
                            let _ = events.send(Event::Reply(ex, r));
                        });
                    }
                    _ => self.respond(&ex, Response::new(code)),
                }
            }
            Routed::Refused(refusal) => {
                let (code, reason) = match refusal {
                    Refusal::NotAuthorized => (ResponseType::Forbidden, Reason::Forbidden),
                    Refusal::TooLarge => (ResponseType::RequestEntityTooLarge, Reason::TooLarge),
                    _ => (ResponseType::BadRequest, Reason::BadRequest),
                };
                self.status.refused(reason);
                self.respond(&ex, Response::why(code, refusal.why()));
            }
        }
    }

    /// `GET` without Observe: the retained message of `topic`.
    fn retained(&mut self, ex: &Exchange, req: &Request, topic: &str, id: Identity, now: Instant) {
        if let Err(why) = validate_topic_name(topic) {
            self.status.refused(Reason::BadRequest);
            return self.respond(ex, Response::why(ResponseType::BadRequest, why));
        }
        let mut reader = self
            .ctx
            .ingress
            .publisher(id.client_id, id.username, Source::Coap);
        if !self.ctx.ingress.allowed(&mut reader, topic, Access::Read) {
            self.status.refused(Reason::Forbidden);
            return self.respond(
                ex,
                Response::why(ResponseType::Forbidden, "not authorised to read this topic"),
            );
        }
        match self.ctx.router.retained_message(topic) {
            Some(msg) => self.content(ex, req.block2, &msg.payload.clone(), TEXT, None, now),
            None => self.respond(
                ex,
                Response::why(ResponseType::NotFound, "no retained message"),
            ),
        }
    }

    /// `GET` with Observe 0: a subscription through the session's router handle.
    fn observe(
        &mut self,
        ex: &Exchange,
        req: &Request,
        filter: String,
        id: Identity,
        now: Instant,
    ) {
        let s = &self.settings;
        let (per_client, total, sessions) =
            (s.max_observers_per_client, s.max_observers, s.max_sessions);
        // A new identity under this client id takes the session over, as an MQTT CONNECT would.
        if let Some(old) = self.observers.sessions.get(&id.client_id)
            && old.username != id.username
        {
            if let Some((token, _)) = &old.token {
                self.tokens.remove(token);
            }
            self.observers.remove(&id.client_id);
        }
        if !self.observers.sessions.contains_key(&id.client_id)
            && self.observers.sessions.len() >= sessions
        {
            return self.overloaded(ex, "coap.max_sessions reached");
        }
        let existing = self.observers.sessions.get(&id.client_id).map_or(0, |s| {
            s.observations
                .iter()
                .filter(|o| o.token != ex.token)
                .count()
        });
        let renewing = self
            .observers
            .sessions
            .get(&id.client_id)
            .is_some_and(|s| s.observations.iter().any(|o| o.token == ex.token));
        if existing >= per_client {
            return self.overloaded(ex, "coap.max_observers_per_client reached");
        }
        if !renewing && self.observers.observations >= total {
            return self.overloaded(ex, "coap.max_observers reached");
        }
        let default = if ex.confirmable {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let qos = req.query.qos.unwrap_or(default);
        let (ctx, max_queued) = (self.ctx.clone(), self.settings.max_queued);
        if !self.observers.sessions.contains_key(&id.client_id) {
            self.observers
                .create(id.client_id.clone(), id.username.clone(), ex.peer, now);
        }
        let Some(session) = self.observers.sessions.get_mut(&id.client_id) else {
            return;
        };
        session.peer = ex.peer;
        let handle = session.handle.get_or_insert_with(|| {
            let options = SubscriberOptions {
                name: id.client_id.clone(),
                username: id.username.clone(),
                max_queued,
                max_inflight: 1,
                observer: false,
                max_queued_bytes: 0,
            };
            ctx.router.subscriber(options, Some(ctx.auth.clone()))
        });
        let retained = match handle.subscribe(&filter, qos) {
            Ok(retained) => retained,
            Err(e) => {
                let (code, reason) = match e {
                    SubscribeError::InvalidFilter(_) => {
                        (ResponseType::BadRequest, Reason::BadRequest)
                    }
                    SubscribeError::NotAuthorized => (ResponseType::Forbidden, Reason::Forbidden),
                };
                if session.observations.is_empty() {
                    session.handle = None;
                    if session.token.is_none() {
                        self.observers.remove(&id.client_id);
                    }
                }
                self.status.refused(reason);
                return self.respond(ex, Response::why(code, &e.to_string()));
            }
        };
        match session
            .observations
            .iter_mut()
            .find(|o| o.token == ex.token)
        {
            Some(o) => {
                o.filter = filter;
                o.qos = qos;
            }
            None => {
                session.observations.push(super::observe::Observation {
                    token: ex.token.clone(),
                    filter,
                    qos,
                    seq: 1,
                });
                self.observers.observations += 1;
            }
        }
        self.gauges();
        let r = Response::new(ResponseType::Content).option(CoapOption::Observe, uint(1));
        self.respond(ex, r);
        // The retained messages that match follow as notifications, then live deliveries.
        let mut out = Outcome::default();
        let client_id: Arc<str> = id.client_id;
        let mut sent = 0;
        for msg in retained {
            let n = Notification {
                payload: &msg.payload,
                qos: msg.qos,
                topic: &msg.topic,
                delivery: None,
            };
            let mids = &mut self.next_mid;
            let mut next_mid = || {
                *mids = mids.wrapping_add(1);
                *mids
            };
            sent += self
                .observers
                .notify(&client_id, &n, now, &mut next_mid, &mut out);
        }
        Status::count_n(&self.status.notifications, sent);
        self.outcome(out);
        self.observers.ready.push(client_id);
    }

    /// A body as 2.05, block-wise when it is over the block size the client asked for, ours,
    /// or what an unverified address may get (three times its request, RFC 9175 section 2.4).
    pub(super) fn content(
        &mut self,
        ex: &Exchange,
        asked: Option<Block>,
        body: &[u8],
        format: u32,
        observe: Option<u32>,
        now: Instant,
    ) {
        let verified = self.echo.verified(ex.peer, now);
        let mut szx = block::szx_for(self.settings.block_size);
        if let Some(b) = asked {
            szx = szx.min(b.szx);
        }
        let offset = asked.and_then(|b| b.offset()).unwrap_or(0);
        let cap = ex.size.saturating_mul(AMPLIFICATION);
        let echo = (!verified).then(|| self.echo.issue(ex.peer, now));
        // Cut: lean (no Size2), with the Echo value, in smaller blocks until it fits.
        let mut capped = false;
        loop {
            let size = 16usize << szx;
            let whole = asked.is_none() && body.len() <= size;
            let mut r = Response::new(ResponseType::Content)
                .option(CoapOption::ContentFormat, uint(format));
            if let Some(o) = observe {
                r = r.option(CoapOption::Observe, uint(o));
            }
            if whole {
                r.payload = body.to_vec();
            } else {
                let b = Block {
                    num: (offset / size) as u32,
                    more: false,
                    szx,
                };
                let Some((slice, b)) = block::slice(body, b) else {
                    self.status.refused(Reason::BadRequest);
                    return self.respond(
                        ex,
                        Response::why(ResponseType::BadOption, "block past the end"),
                    );
                };
                // The ETag always (a client that sees it appear mid-transfer starts over).
                r = r
                    .option(CoapOption::Block2, b.encode())
                    .option(CoapOption::ETag, etag(body));
                if !capped {
                    r = r.option(CoapOption::Size2, uint(body.len() as u32));
                }
                r.payload = slice.to_vec();
            }
            if let (true, Some(e)) = (capped, &echo) {
                r = r.option(CoapOption::Unknown(ECHO_OPTION), e.clone());
            }
            if echo.is_some() && r.encode(ex, 0).len() > cap {
                if !capped {
                    capped = true;
                } else if szx > 0 {
                    szx -= 1;
                } else {
                    // Not even 16 bytes fit: the client proves its address first (RFC 9175
                    // section 2.4), then gets full blocks.
                    Status::count(&self.status.amplification_capped);
                    let e = echo.unwrap_or_default();
                    let r = Response::new(ResponseType::Unauthorized)
                        .option(CoapOption::Unknown(ECHO_OPTION), e);
                    return self.respond(ex, r);
                }
                continue;
            }
            if capped {
                Status::count(&self.status.amplification_capped);
            }
            return self.respond(ex, r);
        }
    }
}

/// A short tag of a body, so a client fetching it block-wise sees when it changed.
fn etag(body: &[u8]) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish().to_be_bytes()[..4].to_vec()
}
