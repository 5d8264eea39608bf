//! The one connection handler every listener feeds, generic over the stream (TCP and TLS alike).
//!
//! 1. The first packet must be CONNECT and must arrive within `connect_timeout`.
//! 2. Credentials go to [`crate::auth`] before anything reaches the router; a refusal is answered
//!    with the CONNACK code, then the connection closes.
//! 3. The router attaches the session (taking over an older connection with the same client id)
//!    and the CONNACK is written.
//! 4. The packet loop races the socket, the session's outbox, the keep-alive deadline (1.5 x the
//!    client's keep alive), a kick (takeover, slow consumer, deleted user) and broker shutdown.
//!    Reads are cancel-safe (the buffer lives in `Connection`); writes happen in the loop body.
//! 5. On the way out the will is published unless the client sent DISCONNECT, and the router
//!    detaches the session (a clean one is discarded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Access, Auth, AuthOutcome, Credentials};
use crate::config::Limits;
use crate::connection::{Connection, ReadError};
use crate::msglog::MessageLogger;
use crate::protocol::reason::{v3, v5};
use crate::protocol::topic::validate_topic_filter;
use crate::protocol::{
    ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, ProtocolVersion, PubResp, Publish,
    QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::router::state::{Delivery, OutState, Outgoing, SessionState};
use crate::router::{Attached, Message, Router};

/// Everything a connection task needs, shared by all of them.
#[derive(Debug)]
pub struct Context {
    pub router: Arc<Router>,
    /// Swapped whole on reload; connections pick up the new one via `auth_generation`.
    pub auth: RwLock<Arc<Auth>>,
    pub auth_generation: AtomicU64,
    pub limits: Limits,
    pub msglog: Option<MessageLogger>,
    pub shutdown: CancellationToken,
}

impl Context {
    pub fn current_auth(&self) -> Arc<Auth> {
        self.auth.read().clone()
    }

    /// Installs a newly loaded `Auth` for new connections and for the ACL checks of existing ones.
    pub fn set_auth(&self, auth: Auth) {
        *self.auth.write() = Arc::new(auth);
        self.auth_generation.fetch_add(1, Ordering::Release);
    }
}

/// Who is on the other end, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub listener: Arc<str>,
    /// The listener's effective `allow_anonymous`.
    pub allow_anonymous: bool,
    /// Verified client certificate CN, when the listener uses it as the username.
    pub cert_identity: Option<String>,
}

/// Why the packet loop ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT: no will.
    Disconnected,
    /// The broker is shutting down: no will (there is nobody left to receive it).
    Shutdown,
    /// The client broke the protocol; a 5.0 client is told this reason code. Publishes the will.
    Violation(u8, String),
    /// Everything else publishes the will.
    Abnormal(String),
}

/// Serves one client connection to the end. Never panics on input; every way out is logged.
pub async fn serve<S>(stream: S, peer: Peer, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(stream, ctx.limits.max_packet_size);
    let connect = match tokio::time::timeout(ctx.limits.connect_timeout, conn.read_packet()).await {
        Err(_) => {
            info!(peer = %peer.addr, listener = %peer.listener, "no CONNECT within {:?}; closing", ctx.limits.connect_timeout);
            return;
        }
        Ok(Ok(Some(Packet::Connect(c)))) => c,
        Ok(Ok(Some(other))) => {
            info!(peer = %peer.addr, "first packet was {}, not CONNECT (MQTT-3.1.0-1); closing", other.name());
            return;
        }
        Ok(Ok(None)) => {
            debug!(peer = %peer.addr, "closed before CONNECT");
            return;
        }
        Ok(Err(ReadError::Decode(e @ DecodeError::UnsupportedProtocol { .. }))) => {
            info!(peer = %peer.addr, "refused: {e}");
            let code = ConnAck {
                session_present: false,
                code: v3::UNACCEPTABLE_PROTOCOL_VERSION,
                properties: None,
            };
            let _ = conn.write_packet(&Packet::ConnAck(code)).await;
            let _ = conn.shutdown().await;
            return;
        }
        Ok(Err(e)) => {
            info!(peer = %peer.addr, "bad CONNECT: {e}; closing");
            return;
        }
    };
    conn.version = connect.protocol;
    let mut client = match admit(&mut conn, *connect, &peer, &ctx).await {
        Some(client) => client,
        None => {
            let _ = conn.shutdown().await;
            return;
        }
    };
    let exit = client.run(&mut conn).await;
    client.finish(&mut conn, exit).await;
}

/// CONNECT -> client id -> auth -> attach -> CONNACK. `None`: refused (CONNACK already written).
async fn admit<S>(
    conn: &mut Connection<S>,
    connect: Connect,
    peer: &Peer,
    ctx: &Arc<Context>,
) -> Option<Client>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let v5 = connect.protocol.is_v5();
    let refuse = |code3: u8, code5: u8| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: if v5 { code5 } else { code3 },
            properties: None,
        })
    };
    let mut client_id = connect.client_id.clone();
    if client_id.is_empty() {
        if !connect.clean_start && !v5 {
            info!(peer = %peer.addr, "refused: empty client id without clean session (MQTT-3.1.3-8)");
            let _ = conn
                .write_packet(&refuse(
                    v3::IDENTIFIER_REJECTED,
                    v5::CLIENT_IDENTIFIER_NOT_VALID,
                ))
                .await;
            return None;
        }
        client_id = format!("auto-{:016x}", rand::random::<u64>());
    }
    let auth = ctx.current_auth();
    let creds = Credentials {
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_ref(),
        peer: peer.addr,
        allow_anonymous: peer.allow_anonymous,
        cert_identity: peer.cert_identity.as_deref(),
    };
    let username = match auth.authenticate(&creds).await {
        AuthOutcome::Allowed { username } => username,
        outcome => {
            let (code3, code5, why) = match outcome {
                AuthOutcome::BadCredentials => (
                    v3::BAD_USERNAME_OR_PASSWORD,
                    v5::BAD_USERNAME_OR_PASSWORD,
                    "bad username or password",
                ),
                AuthOutcome::Unavailable => (
                    v3::SERVER_UNAVAILABLE,
                    v5::SERVER_UNAVAILABLE,
                    "server busy verifying passwords",
                ),
                _ => (v3::NOT_AUTHORIZED, v5::NOT_AUTHORIZED, "not authorised"),
            };
            warn!(client_id = %client_id, peer = %peer.addr, user = ?connect.username, "refused: {why}");
            let _ = conn.write_packet(&refuse(code3, code5)).await;
            return None;
        }
    };
    let attached = ctx
        .router
        .attach(&client_id, connect.clean_start, username.clone());
    let ack = ConnAck {
        session_present: attached.present,
        code: 0,
        properties: None,
    };
    if let Err(e) = conn.write_packet(&Packet::ConnAck(ack)).await {
        debug!(client_id = %client_id, "CONNACK write failed: {e}");
        ctx.router.detach(&attached.session, attached.connection_id);
        return None;
    }
    info!(client_id = %client_id, peer = %peer.addr, listener = %peer.listener, user = ?username,
        version = ?connect.protocol, clean = connect.clean_start, resumed = attached.present, "connected");
    let generation = ctx.auth_generation.load(Ordering::Acquire);
    Some(Client {
        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
        will: connect.will,
        client_id: client_id.into(),
        username,
        attached,
        auth: (generation, auth),
        ctx: ctx.clone(),
        outgoing: Vec::new(),
    })
}

/// A connected client's loop state.
struct Client {
    client_id: Arc<str>,
    username: Option<String>,
    keep_alive: Duration,
    will: Option<LastWill>,
    attached: Attached,
    /// Snapshot of the auth state, refreshed when a reload bumps the generation.
    auth: (u64, Arc<Auth>),
    ctx: Arc<Context>,
    /// Reused buffer for deliveries taken from the outbox.
    outgoing: Vec<Outgoing>,
}

/// What handling one packet asks of the loop.
enum Step {
    Continue,
    Exit(Exit),
}

impl Client {
    fn session(&self) -> &Arc<SessionState> {
        &self.attached.session
    }

    fn acl(&mut self) -> &Auth {
        let generation = self.ctx.auth_generation.load(Ordering::Acquire);
        if generation != self.auth.0 {
            self.auth = (generation, self.ctx.current_auth());
        }
        &self.auth.1
    }

    fn allowed(&mut self, topic: &str, access: Access) -> bool {
        let (user, id) = (self.username.clone(), self.client_id.clone());
        let auth = self.acl();
        !auth.has_acl() || auth.check(user.as_deref(), &id, topic, access)
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Exit {
        let keep_alive = (!self.keep_alive.is_zero()).then(|| self.keep_alive.mul_f32(1.5));
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        let mut resend = self.attached.present;
        let (mut seen_in, mut seen_out) = (0, 0);
        loop {
            self.fill(conn, resend);
            resend = false;
            if conn.pending() > 0 {
                tokio::select! {
                    res = conn.flush() => if let Err(e) = res {
                        return Exit::Abnormal(format!("write failed: {e}"));
                    },
                    _ = self.attached.kicked.cancelled() => return self.kicked(),
                    _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                }
            }
            let stats = &self.ctx.router.stats;
            stats
                .bytes_received
                .fetch_add(conn.bytes_in - seen_in, Ordering::Relaxed);
            stats
                .bytes_sent
                .fetch_add(conn.bytes_out - seen_out, Ordering::Relaxed);
            (seen_in, seen_out) = (conn.bytes_in, conn.bytes_out);

            let session = self.attached.session.clone();
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                _ = self.attached.kicked.cancelled() => return self.kicked(),
                res = conn.read_packet() => match res {
                    Ok(Some(packet)) => {
                        deadline = keep_alive.map(|k| Instant::now() + k);
                        self.ctx.router.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                        if let Step::Exit(exit) = self.handle(conn, packet) {
                            return exit;
                        }
                    }
                    Ok(None) => return Exit::Abnormal("connection closed by client without DISCONNECT".into()),
                    // `finish` sends the DISCONNECT: only one may be sent (MQTT-3.14.4-1).
                    Err(ReadError::Decode(e)) => return Exit::Violation(e.reason_code(), e.to_string()),
                    Err(e) => return Exit::Abnormal(e.to_string()),
                },
                _ = session.notify.notified() => {}
                _ = sleep_until(deadline) => {
                    return Exit::Abnormal(format!("keep alive timeout ({}s x 1.5)", self.keep_alive.as_secs()));
                }
            }
        }
    }

    fn kicked(&self) -> Exit {
        let current = self
            .session()
            .inner
            .lock()
            .connection
            .as_ref()
            .map(|(id, _)| *id);
        if current == Some(self.attached.connection_id) {
            Exit::Abnormal(
                "closed by the broker (outbox full: client too slow, or user removed)".into(),
            )
        } else {
            Exit::Abnormal("session taken over by a new connection with the same client id".into())
        }
    }

    /// Moves what the outbox allows into the connection's write buffer.
    fn fill<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>, resend: bool) {
        let mut outgoing = std::mem::take(&mut self.outgoing);
        self.session()
            .take_outgoing(&mut outgoing, self.ctx.limits.max_inflight, resend);
        let ctx = self.ctx.clone();
        let stats = &ctx.router.stats;
        for out in outgoing.drain(..) {
            match out {
                Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup,
                } => {
                    if !self.allowed(&delivery.msg.topic, Access::Read) {
                        // Not readable: acknowledge it ourselves so the window moves on.
                        if packet_id != 0 {
                            let state = if delivery.qos == QoS::AtLeastOnce {
                                OutState::AwaitPubAck
                            } else {
                                OutState::AwaitPubRec
                            };
                            let _ = self.session().complete(packet_id, state);
                        }
                        continue;
                    }
                    conn.queue(&Packet::Publish(publish_packet(&delivery, packet_id, dup)));
                    stats.publish_sent.fetch_add(1, Ordering::Relaxed);
                }
                Outgoing::PubRel { packet_id } => {
                    conn.queue(&Packet::PubRel(PubResp::new(packet_id)))
                }
            }
            stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        self.outgoing = outgoing;
    }

    fn reply<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Connection<S>, packet: Packet) {
        conn.queue(&packet);
        self.ctx
            .router
            .stats
            .messages_sent
            .fetch_add(1, Ordering::Relaxed);
    }

    fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        packet: Packet,
    ) -> Step {
        match packet {
            Packet::Publish(p) => return self.on_publish(conn, p),
            Packet::PubAck(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubAck);
            }
            Packet::PubRec(r) => {
                self.session().received(r.packet_id);
                self.reply(conn, Packet::PubRel(PubResp::new(r.packet_id)));
            }
            Packet::PubRel(r) => {
                self.session()
                    .inner
                    .lock()
                    .inbound_qos2
                    .remove(&r.packet_id);
                self.reply(conn, Packet::PubComp(PubResp::new(r.packet_id)));
            }
            Packet::PubComp(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubComp);
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
            Packet::PingReq => self.reply(conn, Packet::PingResp),
            Packet::Disconnect(_) => return Step::Exit(Exit::Disconnected),
            Packet::Connect(_) => {
                return Step::Exit(Exit::Abnormal("second CONNECT (MQTT-3.1.0-2)".into()));
            }
            other => {
                return Step::Exit(Exit::Abnormal(format!(
                    "{} is not sent by clients",
                    other.name()
                )));
            }
        }
        Step::Continue
    }

    fn on_publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        p: Publish,
    ) -> Step {
        // We grant no topic aliases (CONNACK carries no Topic Alias Maximum, so it is 0): an alias
        // is a protocol error (MQTT-3.3.2-9), and routing its PUBLISH would send subscribers an
        // empty topic and the publisher's alias.
        if p.properties
            .as_ref()
            .is_some_and(|p| p.topic_alias.is_some())
        {
            return Step::Exit(Exit::Violation(
                v5::TOPIC_ALIAS_INVALID,
                "Topic Alias sent, but Topic Alias Maximum is 0 (MQTT-3.3.2-9)".into(),
            ));
        }
        let stats = &self.ctx.router.stats;
        stats.publish_received.fetch_add(1, Ordering::Relaxed);
        let packet_id = p.packet_id;
        let qos = p.qos;
        let route = match qos {
            QoS::ExactlyOnce => self.session().inner.lock().inbound_qos2.insert(packet_id),
            _ => true,
        };
        if route {
            if self.allowed(&p.topic, Access::Write) {
                if let Some(log) = &self.ctx.msglog {
                    log.log(&p.topic, &p.payload);
                }
                let mut msg = Message::new(p.topic, p.payload, qos, p.retain);
                msg.origin = self.session().id;
                msg.properties = p.properties;
                self.ctx.router.publish(Arc::new(msg));
            } else {
                info!(client_id = %self.client_id, topic = %p.topic, "PUBLISH denied by ACL; dropped");
            }
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.reply(conn, Packet::PubAck(PubResp::new(packet_id))),
            QoS::ExactlyOnce => self.reply(conn, Packet::PubRec(PubResp::new(packet_id))),
        }
        Step::Continue
    }

    fn on_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        s: Subscribe,
    ) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            let valid =
                validate_topic_filter(&f.filter).is_ok() && !f.filter.starts_with("$share/");
            if !valid {
                info!(client_id = %self.client_id, filter = %f.filter, "invalid topic filter; SUBACK 0x80");
                codes.push(v3::SUBACK_FAILURE);
                continue;
            }
            if !self.allowed(&f.filter, Access::Subscribe) {
                info!(client_id = %self.client_id, filter = %f.filter, "SUBSCRIBE denied by ACL; SUBACK 0x80");
                codes.push(if conn.version.is_v5() {
                    v5::NOT_AUTHORIZED
                } else {
                    v3::SUBACK_FAILURE
                });
                continue;
            }
            let (_existed, msgs) = self
                .ctx
                .router
                .subscribe(self.session(), &f.filter, f.options);
            codes.push(f.options.qos as u8);
            retained.extend(msgs.into_iter().map(|m| (m, f.options.qos)));
        }
        self.reply(
            conn,
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                return_codes: codes,
                properties: None,
            }),
        );
        for (msg, granted) in retained {
            let qos = msg.qos.min(granted);
            let delivery = Delivery {
                msg,
                qos,
                retain: true,
            };
            if self
                .session()
                .enqueue(delivery, self.ctx.router.limits.max_queued_messages)
                != crate::router::state::Enqueued::Queued
            {
                self.ctx.router.stats.dropped();
            }
        }
    }

    fn on_unsubscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        u: Unsubscribe,
    ) {
        let mut reasons = Vec::new();
        for f in &u.filters {
            let existed = self.ctx.router.unsubscribe(self.session(), f);
            if conn.version.is_v5() {
                reasons.push(if existed {
                    v5::SUCCESS
                } else {
                    v5::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        self.reply(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons,
                properties: None,
            }),
        );
    }

    /// After the loop: tell the client why (5.0), publish the will unless the client said
    /// DISCONNECT, and detach from the router.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        exit: Exit,
    ) {
        let reason = match &exit {
            Exit::Disconnected => {
                info!(client_id = %self.client_id, "disconnected");
                None
            }
            Exit::Shutdown => {
                info!(client_id = %self.client_id, "closing: broker shutting down");
                Some(v5::SERVER_SHUTTING_DOWN)
            }
            Exit::Violation(code, why) => {
                info!(client_id = %self.client_id, "closing: protocol violation: {why}");
                Some(*code)
            }
            Exit::Abnormal(why) => {
                info!(client_id = %self.client_id, "connection lost: {why}");
                Some(if why.contains("taken over") {
                    v5::SESSION_TAKEN_OVER
                } else if why.contains("keep alive") {
                    v5::KEEP_ALIVE_TIMEOUT
                } else {
                    v5::UNSPECIFIED_ERROR
                })
            }
        };
        if let (Some(reason), true) = (reason, conn.version == ProtocolVersion::V5) {
            conn.queue(&Packet::Disconnect(Disconnect {
                reason,
                properties: None,
            }));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
        if let (Exit::Abnormal(_) | Exit::Violation(..), Some(will)) = (&exit, self.will.take()) {
            if self.allowed(&will.topic, Access::Write) {
                debug!(client_id = %self.client_id, topic = %will.topic, "publishing will");
                let mut msg = Message::new(will.topic, will.payload, will.qos, will.retain);
                msg.properties = will.properties;
                self.ctx.router.publish(Arc::new(msg));
            }
        }
        self.ctx
            .router
            .detach(&self.attached.session, self.attached.connection_id);
    }
}

fn publish_packet(d: &Delivery, packet_id: u16, dup: bool) -> Publish {
    Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: d.msg.topic.clone(),
        packet_id,
        payload: d.msg.payload.clone(),
        properties: d.msg.properties.clone(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
