//! The one way into the router: every message, whatever its source, enters through
//! [`Ingress::publish`] with the publisher's identity.
//!
//! Sources: an MQTT connection (TCP, TLS, WebSocket), a will, the broker itself (`$SYS`), and next
//! an HTTP publish, a CoAP request, a bridge or a cluster link. Each front end turns its input into
//! a [`Message`], hands it in with its [`Publisher`], and maps the typed [`Outcome`] to its own
//! answer (PUBACK reason code, HTTP status, CoAP code). The ingress applies, in this order:
//!
//! 1. topic checks: a valid topic name (front ends whose codec has not checked it already), the
//!    `limits.max_topic_length` / `max_topic_levels` bounds, and the message size against
//!    `limits.max_packet_size` (front ends without MQTT framing);
//! 2. a payload that promises UTF-8 (5.0 Payload Format Indicator 1) must be UTF-8;
//! 3. the ACL (`Write` for the publisher's username and client id), with the publisher's own
//!    snapshot of the auth state (one atomic load per message, see [`crate::auth::AuthCell`]);
//! 4. statistics (`$SYS/broker/publish/messages/received`), counted once per [`Batch`];
//! 5. routing: retained handling and fan-out ([`Router::publish_to`]); the message logger and
//!    every other observer are router subscribers, so they see exactly what was routed.
//!
//! Hot path: nothing here allocates, takes a shared lock or touches a shared counter per message;
//! deliveries and counts are collected in a [`Batch`] and handed over by [`Ingress::flush`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::auth::{Access, Auth, AuthCell, AuthSnapshot};
use crate::protocol::topic::validate_topic_name;
use crate::protocol::{PubAckReason, text};
use crate::router::{Fanout, Message, PublishedBy, Router};
use crate::stats::Limit;

/// What kind of front end a message came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An MQTT connection (TCP, TLS, WebSocket): its codec has validated the topic and the size.
    Mqtt,
    /// A client's will, published by the broker on the client's behalf (its ACL applies).
    Will,
    /// The broker itself (`$SYS`): trusted, not counted as received.
    Broker,
    Http,
    Coap,
    Bridge,
    Cluster,
}

impl Source {
    /// Whether a message from this source arrived from outside (counted as received).
    fn counted(self) -> bool {
        !matches!(self, Source::Will | Source::Broker)
    }

    /// Whether this source's codec has already checked the topic name and the message size.
    fn prechecked(self) -> bool {
        matches!(self, Source::Mqtt | Source::Will | Source::Broker)
    }
}

/// The listener or gateway a publisher came through, and its address.
#[derive(Debug, Clone)]
pub struct Origin {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
}

/// Who publishes: the identity the ACL, the logs and `No Local` see.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub client_id: Arc<str>,
    /// The authenticated user (None: anonymous).
    pub username: Option<String>,
    pub source: Source,
    /// Where it came from, for front ends whose logs need it here (an MQTT connection logs its
    /// peer itself, and keeps its per-connection state small: see `client::Client`).
    pub origin: Option<Box<Origin>>,
    /// The publisher's session id, so its own No Local subscriptions skip the message (0: none).
    pub session_id: u64,
    auth: AuthSnapshot,
    /// Which limits were already logged for this publisher (bit per [`Limit`]): each once.
    limits_logged: u32,
    /// `client_id` and `username` as messages carry them, made on the first message that
    /// needs them (see [`Ingress::record_publishers`]).
    published_by: Option<Arc<PublishedBy>>,
}

impl Publisher {
    /// A publisher identity; `auth`: a snapshot from the broker's [`AuthCell`].
    pub fn new(
        client_id: Arc<str>,
        username: Option<String>,
        source: Source,
        auth: AuthSnapshot,
    ) -> Self {
        Publisher {
            client_id,
            username,
            source,
            origin: None,
            session_id: 0,
            auth,
            limits_logged: 0,
            published_by: None,
        }
    }

    /// The identity its messages carry (see [`Message::published_by`]).
    fn published_by(&mut self) -> &Arc<PublishedBy> {
        self.published_by.get_or_insert_with(|| {
            Arc::new(PublishedBy {
                client_id: self.client_id.clone(),
                username: self.username.as_deref().map(Arc::from),
            })
        })
    }

    pub fn with_origin(mut self, listener: Arc<str>, peer: SocketAddr) -> Self {
        self.origin = Some(Box::new(Origin { listener, peer }));
        self
    }

    /// Counts a limit hit, and logs it the first time for this publisher.
    pub fn limit(&mut self, stats: &crate::stats::Stats, limit: Limit, detail: &str) {
        stats.limit_hit(limit);
        let bit = 1u32 << (limit as u32);
        if self.limits_logged & bit == 0 {
            self.limits_logged |= bit;
            warn!(client_id = %self.client_id, "limits.{} reached: {detail}", limit.name());
        }
    }
}

/// Why a message was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid topic name (empty, wildcards, NUL).
    TopicInvalid(&'static str),
    /// Over `limits.max_topic_length` or `max_topic_levels`.
    TopicLimit,
    /// Over `limits.max_packet_size`.
    TooLarge,
    /// The payload is not UTF-8 though its Payload Format Indicator says so.
    PayloadFormatInvalid,
    /// The ACL does not let this publisher write to the topic.
    NotAuthorized,
}

impl Refusal {
    /// The MQTT 5.0 PUBACK / PUBREC reason code.
    ///
    /// "Packet too large" is not a PUBACK code: a PUBLISH over the broker's maximum closes the
    /// connection in the decoder, so `TooLarge` only meets other publishers (HTTP, bridges) and
    /// is answered with "Quota exceeded" should it ever reach an acknowledgement.
    pub fn reason_code(self) -> PubAckReason {
        match self {
            Refusal::TopicInvalid(_) | Refusal::TopicLimit => PubAckReason::TopicNameInvalid,
            Refusal::TooLarge => PubAckReason::QuotaExceeded,
            Refusal::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
            Refusal::NotAuthorized => PubAckReason::NotAuthorized,
        }
    }

    /// A reason string for the client.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::TopicInvalid(why) => why,
            Refusal::TopicLimit => "topic exceeds the broker's length or level limit",
            Refusal::TooLarge => "message exceeds the broker's maximum packet size",
            Refusal::PayloadFormatInvalid => "payload is not UTF-8 as its format indicator says",
            Refusal::NotAuthorized => "not authorised to publish to this topic",
        }
    }
}

/// What became of a message handed to the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Routed (and stored, if retained) to this many subscribers (0: 5.0 "no matching
    /// subscribers", which is still a success).
    Routed {
        subscribers: usize,
        /// The store's ticket when the message is one the store keeps (a retained message,
        /// with persistence on): an acknowledgement that promises durability waits for it.
        commit: Option<crate::store::Ticket>,
        /// It goes to a persistent session at QoS 1/2: the acknowledgement waits, too, for
        /// the batch's ticket, known after [`Ingress::flush`] ([`Batch::take_ticket`]).
        /// ([`Ingress::publish_now`] folds that into `commit`.)
        durable: bool,
    },
    Refused(Refusal),
}

/// Deliveries and counts collected over several messages (a connection's batch of PUBLISHes), so
/// each subscriber's lock and each shared counter is taken once per batch, not per message.
#[derive(Debug, Default)]
pub struct Batch {
    fanout: Fanout,
    received: u64,
    /// Payload and topic bytes routed into this batch so far.
    bytes: usize,
}

impl Batch {
    /// Payload and topic bytes routed into this batch so far: a front end ends its batch after
    /// some, so subscribers' queues (and their congestion signal) keep up with large messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// After [`Ingress::flush`]: the subscribers this batch congested (their queues went past
    /// their bound while they keep draining them), whom the publisher should wait for before
    /// sending more (see [`Router::congested`]).
    pub fn take_congested(&mut self) -> Vec<Arc<crate::router::state::SessionState>> {
        std::mem::take(&mut self.fanout.congested)
    }

    /// After [`Ingress::flush`]: the store's ticket for what this batch queued for persistent
    /// sessions (see [`Outcome::Routed`]'s `durable`).
    pub fn take_ticket(&mut self) -> Option<crate::store::Ticket> {
        self.fanout.ticket.take()
    }
}

/// Topic and size bounds the ingress enforces.
#[derive(Debug, Clone, Copy)]
pub struct IngressLimits {
    pub max_topic_length: usize,
    pub max_topic_levels: usize,
    pub max_packet_size: usize,
}

impl From<&crate::config::Limits> for IngressLimits {
    /// The ingress's part of `[limits]`.
    fn from(l: &crate::config::Limits) -> Self {
        IngressLimits {
            max_topic_length: l.max_topic_length,
            max_topic_levels: l.max_topic_levels,
            max_packet_size: l.max_packet_size,
        }
    }
}

#[derive(Debug)]
pub struct Ingress {
    router: Arc<Router>,
    auth: Arc<AuthCell>,
    limits: IngressLimits,
    /// Messages carry their publisher's identity (an observer records it).
    record_publishers: bool,
}

impl Ingress {
    pub fn new(router: Arc<Router>, auth: Arc<AuthCell>, limits: IngressLimits) -> Self {
        Ingress {
            router,
            auth,
            limits,
            record_publishers: false,
        }
    }

    /// Messages routed from now on carry their publisher's client id and username
    /// ([`Message::published_by`]), for the message history. Off, the hot path does not pay
    /// for it; on, it costs an `Arc` clone per message.
    pub fn record_publishers(mut self, on: bool) -> Self {
        self.record_publishers = on;
        self
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn auth(&self) -> &Arc<AuthCell> {
        &self.auth
    }

    /// A publisher identity with a fresh auth snapshot.
    pub fn publisher(
        &self,
        client_id: Arc<str>,
        username: Option<String>,
        source: Source,
    ) -> Publisher {
        Publisher::new(client_id, username, source, self.auth.snapshot())
    }

    /// The broker itself, as the publisher of `$SYS`.
    pub fn broker(&self) -> Publisher {
        self.publisher("$broker".into(), None, Source::Broker)
    }

    /// The auth state in force for `from` (its snapshot, refreshed after a reload).
    pub fn current_auth<'a>(&self, from: &'a mut Publisher) -> &'a Arc<Auth> {
        self.auth.refresh(&mut from.auth)
    }

    /// Whether `from` may use `topic` as `access` under the ACL in force.
    pub fn allowed(&self, from: &mut Publisher, topic: &str, access: Access) -> bool {
        let (username, client_id) = (from.username.as_deref(), &from.client_id);
        let allowed = self
            .auth
            .allowed(&mut from.auth, username, client_id, topic, access);
        if !allowed {
            self.router.stats.acl_denied(access.action());
        }
        allowed
    }

    /// Checks a topic name or filter against `max_topic_length` and `max_topic_levels`,
    /// counting and logging (once per publisher) a limit hit.
    pub fn topic_within_limits(&self, from: &mut Publisher, topic: &str) -> bool {
        let (max_len, max_levels) = (self.limits.max_topic_length, self.limits.max_topic_levels);
        if topic.len() > max_len {
            let detail = format!("topic of {} bytes (max {max_len})", topic.len());
            from.limit(&self.router.stats, Limit::TopicLength, &detail);
            return false;
        }
        let levels = topic.split('/').count();
        if levels > max_levels {
            let detail = format!("topic of {levels} levels (max {max_levels})");
            from.limit(&self.router.stats, Limit::TopicLevels, &detail);
            return false;
        }
        true
    }

    /// Applies the ingress policy to `msg` from `from` and, if it passes, routes it into `batch`
    /// (delivered to subscribers by [`Ingress::flush`]).
    pub fn publish(&self, from: &mut Publisher, mut msg: Message, batch: &mut Batch) -> Outcome {
        if from.source.counted() {
            batch.received += 1;
        }
        if let Err(refusal) = self.check(from, &msg) {
            if refusal == Refusal::NotAuthorized {
                info!(client_id = %text::cut(&from.client_id), topic = %text::cut(&msg.topic),
                    source = ?from.source,
                    "PUBLISH denied by ACL; dropped");
            }
            return Outcome::Refused(refusal);
        }
        msg.origin = from.session_id;
        if self.record_publishers && from.source != Source::Broker {
            msg.published_by = Some(from.published_by().clone());
        }
        batch.bytes += msg.payload.len() + msg.topic.len();
        let (subscribers, commit, durable) =
            self.router.publish_to(Arc::new(msg), &mut batch.fanout);
        Outcome::Routed {
            subscribers,
            commit,
            durable,
        }
    }

    fn check(&self, from: &mut Publisher, msg: &Message) -> Result<(), Refusal> {
        if from.source == Source::Broker {
            return Ok(());
        }
        if !from.source.prechecked() {
            validate_topic_name(&msg.topic).map_err(Refusal::TopicInvalid)?;
            if msg.topic.len() + msg.payload.len() > self.limits.max_packet_size {
                return Err(Refusal::TooLarge);
            }
        }
        if !self.topic_within_limits(from, &msg.topic) {
            return Err(Refusal::TopicLimit);
        }
        let utf8_promised = msg
            .properties
            .as_ref()
            .and_then(|p| p.payload_format_indicator)
            == Some(1);
        if utf8_promised && std::str::from_utf8(&msg.payload).is_err() {
            return Err(Refusal::PayloadFormatInvalid);
        }
        if !self.allowed(from, &msg.topic, Access::Write) {
            return Err(Refusal::NotAuthorized);
        }
        Ok(())
    }

    /// Hands the batch's deliveries to their subscribers and adds its counts to the statistics.
    pub fn flush(&self, batch: &mut Batch) {
        batch.bytes = 0;
        if batch.received > 0 {
            let received = std::mem::take(&mut batch.received);
            self.router
                .stats
                .publish_received
                .fetch_add(received, Ordering::Relaxed);
        }
        if !batch.fanout.is_empty() {
            self.router.deliver(&mut batch.fanout);
        }
    }

    /// [`Ingress::publish`] and [`Ingress::flush`] for one message.
    pub fn publish_now(&self, from: &mut Publisher, msg: Message) -> Outcome {
        let mut batch = Batch::default();
        let outcome = self.publish(from, msg, &mut batch);
        self.flush(&mut batch);
        match outcome {
            Outcome::Routed {
                subscribers,
                commit,
                durable: true,
            } => Outcome::Routed {
                subscribers,
                commit: commit.max(batch.take_ticket()),
                durable: false,
            },
            other => other,
        }
    }
}
