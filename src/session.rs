//! The one connection handler every listener feeds, generic over the stream (TCP and TLS alike).
//!
//! 1. The first packet must be CONNECT and must arrive within `connect_timeout`.
//! 2. Credentials go to [`crate::auth`] before anything reaches the router; a refusal is answered
//!    with the CONNACK code, then the connection closes. A 5.0 CONNECT naming an Authentication
//!    Method runs that enhanced authentication exchange instead (AUTH packets, each read under
//!    `connect_timeout`; see `enhanced_login`), and a client logged in that way may re-authenticate
//!    later (`Client::on_auth`).
//! 3. The router attaches the session (taking over an older connection with the same client id)
//!    and the CONNACK is written (5.0: with the broker's limits as properties).
//! 4. The packet loop races the socket, the session's outbox, the keep-alive deadline (1.5 x the
//!    keep alive), a kick (takeover, slow consumer, deleted user) and broker shutdown. Reads are
//!    cancel-safe (the buffer lives in `Connection`); writes happen in the loop body.
//! 5. On the way out: a 5.0 client is told why (DISCONNECT reason code), the will is published
//!    unless the client sent a normal DISCONNECT (after the Will Delay Interval, unless the client
//!    returns first), and the router detaches the session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use bytes::Bytes;

use crate::auth::enhanced::{AuthExchange, AuthMethod, AuthStep};
use crate::auth::{Access, Auth, AuthOutcome, Credentials};
use crate::config::Limits;
use crate::connection::{Connection, ReadError, Stream};
use crate::msglog::MessageLogger;
use crate::park::Parker;
use crate::protocol::reason::{v3, v5};
use crate::protocol::topic::{split_shared, validate_topic_filter};
use crate::protocol::{
    Auth as AuthPacket, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Properties,
    PubResp, Publish, PublishView, QoS, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::router::state::{Delivery, OutState, Outgoing, SessionState};
use crate::router::{Attached, Fanout, Message, Router};
use crate::sys::Limit;
use std::future::poll_fn;

/// A connection quiet this long (nothing read, nothing to send) is parked (see [`crate::park`]).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Packets handled from one read before the outbox gets its turn.
const BATCH: usize = 256;

/// The largest Maximum Packet Size the encoding allows (MQTT 5.0 section 3.2.2.3.6).
const MAX_ANNOUNCED_PACKET_SIZE: usize = 268_435_455;

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
    /// Where idle connections park; `None`: they keep their task.
    pub parker: Option<Arc<Parker>>,
    /// Open connections per client IP, for `limits.max_connections_per_ip`.
    pub connections_per_ip: parking_lot::Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One open connection counted against its IP; gives the slot back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    ctx: Arc<Context>,
    ip: std::net::IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.ctx.connections_per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Context {
    /// Takes a connection slot for `ip`, or `None` if `limits.max_connections_per_ip` is reached.
    pub fn ip_slot(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut map = self.connections_per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if self
            .limits
            .max_connections_per_ip
            .is_some_and(|max| *n >= max)
        {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ctx: self.clone(),
            ip,
        })
    }

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
    /// The client sent DISCONNECT; `will`: with reason 0x04 ("disconnect with will message").
    Disconnected { will: bool },
    /// The broker is shutting down: no will (there is nobody left to receive it).
    Shutdown,
    /// Everything else publishes the will. `reason`: the 5.0 DISCONNECT reason to send, if the
    /// connection is still usable.
    Abnormal { why: String, reason: Option<u8> },
    /// Not an end: the connection is idle and may be parked (see [`crate::park`]).
    Idle { deadline: Option<Instant> },
}

impl Exit {
    fn protocol(why: impl Into<String>, reason: u8) -> Exit {
        Exit::Abnormal {
            why: why.into(),
            reason: Some(reason),
        }
    }
}

/// What a connection holds for its whole life, parked or not; dropping it gives it all back.
#[derive(Debug)]
pub struct Guard {
    /// The listener's `max_connections` permit.
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub ip_slot: IpSlot,
    /// Keeps the broker's shutdown drain waiting for this connection.
    pub tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// Serves one client connection to the end. Never panics on input; every way out is logged.
pub async fn serve<S: Stream>(stream: S, peer: Peer, ctx: Arc<Context>, guard: Guard) {
    let mut conn = Connection::new(stream, ctx.limits.max_packet_size);
    // Shutdown does not wait out connect_timeout, or the drain would stall on silent sockets.
    let first = tokio::select! {
        _ = ctx.shutdown.cancelled() => {
            debug!(peer = %peer.addr, "shutdown before CONNECT; closing");
            return;
        }
        res = tokio::time::timeout(ctx.limits.connect_timeout, conn.read_packet()) => res,
    };
    let connect = match first {
        Err(_) => {
            ctx.router.stats.limit_hit(Limit::ConnectTimeout);
            info!(peer = %peer.addr, listener = %peer.listener,
                "no CONNECT within {:?} (limits.connect_timeout); closing", ctx.limits.connect_timeout);
            return;
        }
        Ok(Ok(Some(Packet::Connect(c)))) => *c,
        Ok(Ok(Some(other))) => {
            info!(peer = %peer.addr, "first packet was {}, not CONNECT (MQTT-3.1.0-1); closing",
                other.name());
            return;
        }
        Ok(Ok(None)) => {
            debug!(peer = %peer.addr, "closed before CONNECT");
            return;
        }
        Ok(Err(ReadError::Decode(e @ DecodeError::UnsupportedProtocol { .. }))) => {
            info!(peer = %peer.addr, "refused: {e}");
            let code = v3::UNACCEPTABLE_PROTOCOL_VERSION;
            let ack = ConnAck {
                session_present: false,
                code,
                properties: None,
            };
            let _ = conn.write_packet(&Packet::ConnAck(ack)).await;
            let _ = conn.shutdown().await;
            return;
        }
        Ok(Err(e)) => {
            if let ReadError::Decode(DecodeError::TooLarge { .. }) = e {
                ctx.router.stats.limit_hit(Limit::PacketSize);
            }
            info!(peer = %peer.addr, "bad CONNECT: {e}; closing");
            return;
        }
    };
    conn.version = connect.protocol;
    // Boxed: CONNECT handling (authentication, enhanced auth) needs far more state than the packet
    // loop, and an unboxed future would carry that size for the connection's whole life.
    let Some(client) = Box::pin(admit(&mut conn, connect, &peer, &ctx)).await else {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
        return;
    };
    drop(peer);
    drive(conn, client, guard, Start::Connected).await;
}

/// Where the packet loop starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Just after CONNACK: in-flight messages of a resumed session are re-sent, and the
    /// connection parks at its first wait (most clients are idle after connecting).
    Connected,
    /// Resumed from parking: the keep-alive deadline carries on.
    Resumed { deadline: Option<Instant> },
    /// Parking failed: serve on as a task.
    Unparked { deadline: Option<Instant> },
}

/// Runs the packet loop until the connection ends or parks.
async fn drive<S: Stream>(mut conn: Connection<S>, mut client: Client, guard: Guard, start: Start) {
    let (mut guard, mut start) = (guard, start);
    loop {
        let exit = client.run(&mut conn, start).await;
        let Exit::Idle { deadline } = exit else {
            Box::pin(client.finish(&mut conn, exit)).await;
            drop(guard);
            return;
        };
        start = Start::Unparked { deadline };
        let Some(parker) = client.ctx.parker.clone() else {
            continue;
        };
        let max_packet_size = client.ctx.limits.max_packet_size;
        let (stream, parked) = conn.park();
        let socket = match stream.into_socket() {
            Ok(Ok(socket)) => socket,
            Err(stream) => {
                conn = Connection::unpark(stream, parked, max_packet_size);
                continue;
            }
            Ok(Err(e)) => {
                let why = format!("cannot park the connection: {e}");
                client.close(Exit::Abnormal { why, reason: None });
                return;
            }
        };
        let idle = Idle {
            socket,
            conn: parked,
            client,
            guard,
        };
        let Err(idle) = parker.park(idle, deadline) else {
            return;
        };
        // Not parked (the broker is shutting down): back into tokio's reactor, on as a task.
        match idle.unpark::<S>() {
            Some((c, cl, g)) => (conn, client, guard) = (c, cl, g),
            None => return,
        }
    }
}

/// A parked connection (see [`crate::park`]): what its task held, without the task.
pub struct Idle {
    socket: std::net::TcpStream,
    conn: crate::connection::Parked,
    client: Client,
    guard: Guard,
}

impl Idle {
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    pub fn link(&self) -> &crate::router::state::Link {
        &self.client.attached.link
    }

    /// Serves the connection on as a task (spawned by the parker when something happened);
    /// `deadline`: its keep-alive deadline, as parked.
    pub async fn resume(self, deadline: Option<Instant>) {
        if let Some((conn, client, guard)) = self.unpark::<tokio::net::TcpStream>() {
            drive(conn, client, guard, Start::Resumed { deadline }).await;
        }
    }

    /// The socket back in tokio's reactor, as a connection again. `None`: that failed, and the
    /// connection has ended (will published, session detached).
    fn unpark<S: Stream>(self) -> Option<(Connection<S>, Client, Guard)> {
        let Idle {
            socket,
            conn,
            mut client,
            guard,
        } = self;
        match S::from_socket(socket) {
            Ok(stream) => {
                let conn = Connection::unpark(stream, conn, client.ctx.limits.max_packet_size);
                Some((conn, client, guard))
            }
            Err(e) => {
                let why = format!("cannot unpark the connection: {e}");
                client.close(Exit::Abnormal { why, reason: None });
                None
            }
        }
    }
}

/// 5.0 properties carrying only a Reason String.
fn reason_string(why: &str) -> Box<Properties> {
    Box::new(Properties {
        reason_string: Some(why.to_owned()),
        ..Properties::default()
    })
}

/// A refusal CONNACK in the connection's protocol version, with a reason string for 5.0.
fn refusal(v5: bool, code3: u8, code5: u8, why: &str) -> Packet {
    let properties = v5.then(|| reason_string(why));
    let code = if v5 { code5 } else { code3 };
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties,
    })
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
    let props = connect.properties.as_deref().cloned().unwrap_or_default();
    let auth = ctx.current_auth();
    // Enhanced authentication (5.0 only: 3.1.1 has no properties). Not on listeners that take
    // the identity from the client certificate, which would override the authenticated name.
    let method = match props.authentication_method.as_deref() {
        None => None,
        Some(name) => match auth.enhanced(name).filter(|_| peer.cert_identity.is_none()) {
            Some(method) => Some(method),
            None => {
                let why = format!("authentication method {name:?} is not supported");
                info!(peer = %peer.addr, client_id = %connect.client_id, "refused: {why}");
                let packet = refusal(v5, v3::NOT_AUTHORIZED, v5::BAD_AUTHENTICATION_METHOD, &why);
                let _ = conn.write_packet(&packet).await;
                return None;
            }
        },
    };
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        if !connect.clean_start && !v5 {
            let why = "empty client id without clean session (MQTT-3.1.3-8)";
            info!(peer = %peer.addr, "refused: {why}");
            let packet = refusal(
                v5,
                v3::IDENTIFIER_REJECTED,
                v5::CLIENT_IDENTIFIER_NOT_VALID,
                why,
            );
            let _ = conn.write_packet(&packet).await;
            return None;
        }
        client_id = format!("auto-{:016x}", rand::random::<u64>());
    }
    if client_id.len() > ctx.limits.max_client_id_length {
        ctx.router.stats.limit_hit(Limit::ClientIdLength);
        let why = format!(
            "client id of {} bytes exceeds limits.max_client_id_length ({})",
            client_id.len(),
            ctx.limits.max_client_id_length
        );
        info!(peer = %peer.addr, "refused: {why}");
        let packet = refusal(
            v5,
            v3::IDENTIFIER_REJECTED,
            v5::CLIENT_IDENTIFIER_NOT_VALID,
            &why,
        );
        let _ = conn.write_packet(&packet).await;
        return None;
    }
    // With an Authentication Method, the exchange decides and User Name / Password are ignored.
    let (username, mut enhanced) = match &method {
        Some(method) => {
            let (user, data) =
                enhanced_login(conn, method.as_ref(), &props, peer, ctx, &auth).await?;
            (Some(user), Some((method.name(), data)))
        }
        None => (
            password_login(conn, &connect, &client_id, peer, &auth).await?,
            None,
        ),
    };

    // Session Expiry Interval: 3.1.1 clean session = 0 / persistent = forever.
    let expiry = match (v5, connect.clean_start) {
        (true, _) => props.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => u32::MAX,
    };
    let max_keepalive = ctx.limits.max_keepalive;
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if v5 && max_keepalive < u16::MAX && (keep_alive == 0 || keep_alive > max_keepalive) {
        keep_alive = max_keepalive;
        server_keep_alive = Some(max_keepalive);
    }
    let attached = ctx
        .router
        .attach(&client_id, connect.clean_start, expiry, username.clone());
    let properties = v5.then(|| {
        let response_information = (props.request_response_information == Some(1))
            .then(|| format!("mqttd/response/{client_id}"));
        let max_packet = ctx.limits.max_packet_size.min(MAX_ANNOUNCED_PACKET_SIZE);
        Box::new(Properties {
            assigned_client_identifier: assigned.then(|| client_id.clone()),
            topic_alias_maximum: Some(ctx.limits.max_topic_alias),
            maximum_packet_size: u32::try_from(max_packet).ok(),
            server_keep_alive,
            response_information,
            authentication_method: enhanced.as_ref().map(|(m, _)| (*m).to_owned()),
            authentication_data: enhanced
                .as_mut()
                .and_then(|(_, d)| d.take())
                .map(Bytes::from),
            ..Properties::default()
        })
    });
    let ack = ConnAck {
        session_present: attached.present,
        code: 0,
        properties,
    };
    if let Err(e) = conn.write_packet(&Packet::ConnAck(ack)).await {
        debug!(client_id = %client_id, "CONNACK write failed: {e}");
        ctx.router.detach(&attached.session, attached.link.id());
        return None;
    }
    info!(client_id = %client_id, peer = %peer.addr, listener = %peer.listener, user = ?username,
        version = ?connect.protocol, clean = connect.clean_start, resumed = attached.present,
        "connected");
    let generation = ctx.auth_generation.load(Ordering::Acquire);
    let receive_maximum = props
        .receive_maximum
        .map_or(usize::from(u16::MAX), usize::from);
    Some(Client {
        keep_alive,
        will: connect.will.map(Box::new),
        username,
        attached,
        auth: (generation, auth),
        ctx: ctx.clone(),
        v5,
        max_inflight: u16::try_from(ctx.limits.max_inflight.min(receive_maximum))
            .unwrap_or(u16::MAX),
        max_packet_out: props.maximum_packet_size,
        problem_info: props.request_problem_information != Some(0),
        aliases: None,
        expiry,
        rate: ctx
            .limits
            .max_publish_rate
            .map(|rate| Box::new(RateLimit::new(rate))),
        limits_logged: 0,
        reauth: enhanced.map(|(method, _)| {
            Box::new(Reauth {
                method,
                ip: peer.addr.ip(),
                ongoing: None,
            })
        }),
    })
}

/// The CONNECT's User Name / Password (or certificate identity) checked by [`Auth::authenticate`].
/// `None`: refused (CONNACK already written); `Some(user)`: let in as `user` (None: anonymous).
async fn password_login<S>(
    conn: &mut Connection<S>,
    connect: &Connect,
    client_id: &str,
    peer: &Peer,
    auth: &Auth,
) -> Option<Option<String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let v5 = connect.protocol.is_v5();
    let creds = Credentials {
        client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_ref(),
        peer: peer.addr,
        allow_anonymous: peer.allow_anonymous,
        cert_identity: peer.cert_identity.as_deref(),
    };
    match auth.authenticate(&creds).await {
        AuthOutcome::Allowed { username } => Some(username),
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
            warn!(client_id = %client_id, peer = %peer.addr, user = ?connect.username,
                "refused: {why}");
            let _ = conn.write_packet(&refusal(v5, code3, code5, why)).await;
            None
        }
    }
}

/// Most AUTH round trips one enhanced login may take (SCRAM needs one).
const MAX_AUTH_ROUNDS: usize = 4;

/// Runs an enhanced authentication exchange during CONNECT (MQTT 5.0 section 4.12): each
/// [`AuthStep::Continue`] goes out as AUTH 0x18 and the client must answer with AUTH 0x18 naming
/// the same method within `connect_timeout`. Anything else is a protocol error, answered with
/// CONNACK 0x82 (a DISCONNECT may not precede the CONNACK, MQTT-3.14.0-1). A failed exchange gets
/// CONNACK 0x87 whatever the cause (wrong proof, unknown user, malformed message, back-off), so
/// the client learns nothing more than "no". Outcomes feed the password back-off counters.
///
/// `None`: refused or gone (CONNACK already written where one is due); else the authenticated
/// user and the Authentication Data for the CONNACK.
async fn enhanced_login<S>(
    conn: &mut Connection<S>,
    method: &dyn AuthMethod,
    props: &Properties,
    peer: &Peer,
    ctx: &Context,
    auth: &Auth,
) -> Option<(String, Option<Vec<u8>>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ip = peer.addr.ip();
    let name = method.name();
    let not_authorised = refusal(
        true,
        v3::NOT_AUTHORIZED,
        v5::NOT_AUTHORIZED,
        "not authorised",
    );
    if auth.ip_backing_off(ip) {
        info!(%ip, method = name, "login refused: address is backing off");
        let _ = conn.write_packet(&not_authorised).await;
        return None;
    }
    let mut exchange = method.start();
    let mut data = props.authentication_data.clone();
    let mut rounds = 0;
    loop {
        let step = exchange.step(data.as_deref());
        let claimed = exchange.username().unwrap_or_default();
        if matches!(step, AuthStep::Success { .. } | AuthStep::Fail(_))
            && auth.user_backing_off(claimed)
        {
            info!(%ip, method = name, user = claimed, "login refused: username is backing off");
            let _ = conn.write_packet(&not_authorised).await;
            return None;
        }
        match step {
            AuthStep::Success { username, data } => {
                auth.record_login(ip, &username, true);
                return Some((username, data));
            }
            AuthStep::Fail(why) => {
                auth.record_login(ip, claimed, false);
                info!(%ip, method = name, user = claimed, "login failed: {why}");
                let _ = conn.write_packet(&not_authorised).await;
                return None;
            }
            AuthStep::Continue(_) if rounds == MAX_AUTH_ROUNDS => {
                auth.record_login(ip, claimed, false);
                info!(%ip, method = name, user = claimed, "login failed: too many AUTH rounds");
                let _ = conn.write_packet(&not_authorised).await;
                return None;
            }
            AuthStep::Continue(out) => {
                rounds += 1;
                let challenge = auth_packet(v5::CONTINUE_AUTHENTICATION, name, Some(out));
                let limit = ctx.limits.connect_timeout;
                match tokio::time::timeout(limit, conn.write_packet(&challenge)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(%ip, "AUTH write failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        debug!(%ip, "AUTH write stalled for {limit:?}; closing");
                        return None;
                    }
                }
                match read_auth(conn, name, ctx).await {
                    Ok(next) => data = next,
                    Err(AuthReadError::Gone(why)) => {
                        info!(%ip, method = name, "authentication abandoned: {why}");
                        return None;
                    }
                    Err(AuthReadError::Refuse(code, why)) => {
                        info!(%ip, method = name, "refused during authentication: {why}");
                        let _ = conn.write_packet(&refusal(true, 0, code, &why)).await;
                        return None;
                    }
                }
            }
        }
    }
}

/// An AUTH packet (5.0) with this reason, method and data.
fn auth_packet(reason: u8, method: &str, data: Option<Vec<u8>>) -> Packet {
    Packet::Auth(AuthPacket {
        reason,
        properties: Some(Box::new(Properties {
            authentication_method: Some(method.to_owned()),
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        })),
    })
}

/// Why no usable AUTH arrived during CONNECT.
enum AuthReadError {
    /// Closed, timed out, unreadable, or shutdown: nothing more to send.
    Gone(String),
    /// Answer with CONNACK carrying this reason code, then close.
    Refuse(u8, String),
}

/// The client's next AUTH 0x18 with the same method, within `connect_timeout`; its data.
async fn read_auth<S>(
    conn: &mut Connection<S>,
    method: &str,
    ctx: &Context,
) -> Result<Option<Bytes>, AuthReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = ctx.limits.connect_timeout;
    let read = tokio::select! {
        _ = ctx.shutdown.cancelled() => {
            return Err(AuthReadError::Gone("broker shutting down".into()));
        }
        res = tokio::time::timeout(limit, conn.read_packet()) => res,
    };
    let auth = match read {
        Err(_) => {
            ctx.router.stats.limit_hit(Limit::ConnectTimeout);
            let why = format!("no AUTH within {limit:?} (limits.connect_timeout)");
            return Err(AuthReadError::Gone(why));
        }
        Ok(Ok(None)) => return Err(AuthReadError::Gone("connection closed".into())),
        Ok(Err(ReadError::Decode(e))) => {
            return Err(AuthReadError::Refuse(e.reason_code(), e.to_string()));
        }
        Ok(Err(e)) => return Err(AuthReadError::Gone(e.to_string())),
        Ok(Ok(Some(Packet::Auth(a)))) => a,
        Ok(Ok(Some(other))) => {
            let why = format!("{} before the authentication finished", other.name());
            return Err(AuthReadError::Refuse(v5::PROTOCOL_ERROR, why));
        }
    };
    if auth.reason != v5::CONTINUE_AUTHENTICATION {
        let why = format!(
            "AUTH with reason 0x{:02X} during CONNECT; expected 0x18 (section 4.12)",
            auth.reason
        );
        return Err(AuthReadError::Refuse(v5::PROTOCOL_ERROR, why));
    }
    let props = auth.properties.map(|p| *p).unwrap_or_default();
    if props.authentication_method.as_deref() != Some(method) {
        let why = "AUTH with another authentication method than CONNECT's (MQTT-4.12.0-5)";
        return Err(AuthReadError::Refuse(v5::PROTOCOL_ERROR, why.into()));
    }
    Ok(props.authentication_data)
}

/// A connected client's loop state.
///
/// Kept small: while the client is idle, this is most of what a parked connection holds (see
/// [`crate::park`]). What few clients use is boxed.
struct Client {
    username: Option<String>,
    /// Keep alive in seconds, as agreed in CONNECT / CONNACK (0: none).
    keep_alive: u16,
    will: Option<Box<LastWill>>,
    attached: Attached,
    /// Snapshot of the auth state, refreshed when a reload bumps the generation.
    auth: (u64, Arc<Auth>),
    ctx: Arc<Context>,
    v5: bool,
    /// Outbound QoS 1/2 window: min(limits.max_inflight, the client's Receive Maximum).
    max_inflight: u16,
    /// The client's Maximum Packet Size (5.0): larger messages are not sent to it.
    max_packet_out: Option<u32>,
    /// Request Problem Information (5.0): reason strings on acks only when true.
    problem_info: bool,
    /// Topic aliases the client set up (5.0), alias -> topic.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes per client instead of 48 while unused"
    )]
    aliases: Option<Box<HashMap<u16, Arc<str>>>>,
    /// Session Expiry Interval in force (may be changed by DISCONNECT).
    expiry: u32,
    /// `limits.max_publish_rate` for this client.
    rate: Option<Box<RateLimit>>,
    /// Which limits were already logged for this client (bit per `Limit`): each is logged once.
    limits_logged: u32,
    /// Set for a client that logged in with enhanced authentication (5.0): it may
    /// re-authenticate; `None`: a client AUTH is a protocol error.
    reauth: Option<Box<Reauth>>,
}

/// Re-authentication state of a client that logged in with enhanced authentication.
struct Reauth {
    /// The method it logged in with, the only one it may re-authenticate with.
    method: &'static str,
    /// The client's address, for the back-off accounting of re-authentications.
    ip: std::net::IpAddr,
    /// An exchange in progress, and its AUTH round trips so far.
    ongoing: Option<(Box<dyn AuthExchange>, usize)>,
}

/// A token bucket: `rate` PUBLISHes per second, bursts of up to one second's worth.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// One PUBLISH arrived (the bucket may go negative: the debt is paid by pausing).
    fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }

    /// How long to stop reading so the client is back within its rate.
    fn pause(&mut self) -> Option<Duration> {
        self.refill();
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// What one read's packets leave to do after them: the messages they published, to hand to
/// subscribers, and `$SYS` counts (shared by every connection: updated once per batch).
#[derive(Default)]
struct Batch {
    fanout: Fanout,
    packets: u64,
    publishes: u64,
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

    fn client_id(&self) -> &str {
        &self.attached.session.client_id
    }

    fn acl(&mut self) -> &Auth {
        let generation = self.ctx.auth_generation.load(Ordering::Acquire);
        if generation != self.auth.0 {
            self.auth = (generation, self.ctx.current_auth());
        }
        &self.auth.1
    }

    /// Counts a limit hit, and logs it the first time for this client.
    fn limit(&mut self, limit: Limit, detail: &str) {
        self.ctx.router.stats.limit_hit(limit);
        let bit = 1u32 << (limit as u32);
        if self.limits_logged & bit == 0 {
            self.limits_logged |= bit;
            warn!(client_id = %self.client_id(), "limits.{} reached: {detail}", limit.name());
        }
    }

    /// Checks a topic name or filter against `max_topic_length` and `max_topic_levels`.
    fn topic_within_limits(&mut self, topic: &str) -> bool {
        let limits = &self.ctx.limits;
        let (max_len, max_levels) = (limits.max_topic_length, limits.max_topic_levels);
        if topic.len() > max_len {
            self.limit(
                Limit::TopicLength,
                &format!("topic of {} bytes (max {max_len})", topic.len()),
            );
            return false;
        }
        let levels = topic.split('/').count();
        if levels > max_levels {
            self.limit(
                Limit::TopicLevels,
                &format!("topic of {levels} levels (max {max_levels})"),
            );
            return false;
        }
        true
    }

    /// How long to stop reading from this client: its publish rate, or the broker-wide queue
    /// budget. The budget pause is taken at most once per packet (`paused`: the previous turn
    /// paused): publishers are slowed while subscribers catch up, never stopped outright, since
    /// the subscribers holding the budget may themselves wait for these publishers.
    fn read_pause(&mut self, paused: bool) -> Option<Duration> {
        if let Some(pause) = self.rate.as_mut().and_then(|r| r.pause()) {
            let rate = self.ctx.limits.max_publish_rate.unwrap_or_default();
            self.limit(
                Limit::PublishRate,
                &format!("more than {rate} PUBLISH/s; reading paused"),
            );
            return Some(pause);
        }
        if !paused && self.ctx.router.over_budget() {
            let detail = format!(
                "{} bytes queued broker-wide; slowing publishers",
                self.ctx.router.queued_bytes()
            );
            self.limit(Limit::QueuedBytes, &detail);
            return Some(Duration::from_millis(20));
        }
        None
    }

    fn allowed(&mut self, topic: &str, access: Access) -> bool {
        self.acl(); // refreshes the snapshot after a reload
        let auth = &self.auth.1;
        !auth.has_acl() || auth.check(self.username.as_deref(), self.client_id(), topic, access)
    }

    /// Handles the packet just read and then every other one the same read brought in (at most
    /// [`BATCH`]), before anything is written, so the replies and deliveries they cause leave in
    /// one write, not one each; bounded, so one busy client cannot starve its own outbox. The
    /// messages they publish reach each subscriber at once, after the batch. `Some` ends the
    /// connection.
    fn on_read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        first: Result<Option<Packet>, ReadError>,
        batch: &mut Batch,
    ) -> Option<Exit> {
        let mut exit = self.on_packet(conn, first, batch);
        for _ in 0..BATCH {
            if exit.is_some() || self.read_pause(true).is_some() {
                break;
            }
            match conn.try_decode() {
                Ok(None) => break,
                res => exit = self.on_packet(conn, res.map_err(ReadError::from), batch),
            }
        }
        // Delivered (and counted) before any PUBACK for them is written.
        let stats = &self.ctx.router.stats;
        stats
            .messages_received
            .fetch_add(std::mem::take(&mut batch.packets), Ordering::Relaxed);
        stats
            .publish_received
            .fetch_add(std::mem::take(&mut batch.publishes), Ordering::Relaxed);
        if !batch.fanout.is_empty() {
            self.ctx.router.deliver(&mut batch.fanout);
        }
        exit
    }

    /// Handles one packet read from the client; `Some` ends the connection.
    fn on_packet<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        res: Result<Option<Packet>, ReadError>,
        batch: &mut Batch,
    ) -> Option<Exit> {
        match res {
            Ok(Some(packet)) => {
                batch.packets += 1;
                if let Packet::Publish(_) = packet {
                    batch.publishes += 1;
                }
                match self.handle(conn, packet, &mut batch.fanout) {
                    Step::Exit(exit) => Some(exit),
                    Step::Continue => None,
                }
            }
            Ok(None) => {
                let why = "connection closed by client without DISCONNECT".into();
                Some(Exit::Abnormal { why, reason: None })
            }
            Err(ReadError::Decode(e)) => {
                if let DecodeError::TooLarge { .. } = e {
                    self.limit(Limit::PacketSize, &e.to_string());
                }
                Some(Exit::protocol(e.to_string(), e.reason_code()))
            }
            Err(e) => Some(Exit::Abnormal {
                why: e.to_string(),
                reason: None,
            }),
        }
    }

    /// The packet loop. Returns how the connection ended, or [`Exit::Idle`] when it has been
    /// quiet long enough to park: at the first wait after CONNACK (most clients are idle after
    /// connecting; one that is not costs one resume), otherwise after [`PARK_AFTER`] without a
    /// packet or a message. Only streams that can park ever get `Idle`.
    async fn run<S: Stream>(&mut self, conn: &mut Connection<S>, start: Start) -> Exit {
        let keep_alive = (self.keep_alive != 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let now = Instant::now();
        let (mut deadline, mut resend, mut park_at) = match start {
            Start::Connected => (
                keep_alive.map(|k| now + k),
                self.attached.present,
                Some(now),
            ),
            Start::Resumed { deadline } => (deadline, false, Some(now + PARK_AFTER)),
            Start::Unparked { deadline } => (deadline, false, None),
        };
        if !S::PARKABLE || self.ctx.parker.is_none() {
            park_at = None;
        }
        let (mut seen_in, mut seen_out) = (conn.bytes_in, conn.bytes_out);
        let mut paused = false;
        let mut outgoing = Vec::new();
        let mut batch = Batch::default();
        let link = self.attached.link.clone();
        loop {
            self.fill(conn, &mut outgoing, resend);
            resend = false;
            if conn.pending() > 0 {
                tokio::select! {
                    res = conn.flush() => if let Err(e) = res {
                        return Exit::Abnormal { why: format!("write failed: {e}"), reason: None };
                    },
                    _ = poll_fn(|cx| link.poll_kicked(cx)) => return self.kicked(),
                    _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                    // A client that stopped reading blocks this write, and we read nothing from
                    // it meanwhile: its keep alive runs out like any silent client's.
                    _ = sleep_until(deadline) => return self.keep_alive_expired(),
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

            // Not reading is how a client is slowed down: TCP back-pressure does the rest. The
            // keep-alive clock stops meanwhile, since the client's PINGREQs go unread.
            let pause = self.read_pause(paused);
            paused = pause.is_some();
            let wake_at = match (deadline, park_at) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                _ = poll_fn(|cx| link.poll_kicked(cx)) => return self.kicked(),
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {
                    deadline = keep_alive.map(|k| Instant::now() + k);
                }
                res = conn.read_packet(), if pause.is_none() => {
                    deadline = keep_alive.map(|k| Instant::now() + k);
                    park_at = park_at.map(|_| Instant::now() + PARK_AFTER);
                    if let Some(exit) = self.on_read(conn, res, &mut batch) {
                        return exit;
                    }
                }
                _ = poll_fn(|cx| link.poll_outbox(cx)) => {
                    park_at = park_at.map(|_| Instant::now() + PARK_AFTER);
                }
                _ = sleep_until(wake_at), if pause.is_none() => {
                    if deadline.is_some_and(|d| d <= Instant::now()) {
                        return self.keep_alive_expired();
                    }
                    return Exit::Idle { deadline };
                }
            }
        }
    }

    fn keep_alive_expired(&self) -> Exit {
        let why = format!("keep alive timeout ({}s x 1.5)", self.keep_alive);
        Exit::protocol(why, v5::KEEP_ALIVE_TIMEOUT)
    }

    fn kicked(&self) -> Exit {
        let reason = self.attached.link.reason();
        let why = match reason {
            v5::SESSION_TAKEN_OVER => {
                "session taken over by a new connection with the same client id"
            }
            v5::QUOTA_EXCEEDED => "outbox full: client too slow to read its messages",
            v5::ADMINISTRATIVE_ACTION => "user removed from the password file",
            _ => "closed by the broker",
        };
        Exit::protocol(
            why,
            if reason == 0 {
                v5::UNSPECIFIED_ERROR
            } else {
                reason
            },
        )
    }

    /// Moves what the outbox allows into the connection's write buffer.
    /// `outgoing`: an empty buffer, kept by the caller for reuse.
    fn fill<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        outgoing: &mut Vec<Outgoing>,
        resend: bool,
    ) {
        self.session()
            .take_outgoing(outgoing, usize::from(self.max_inflight), resend);
        let (mut sent, mut publishes) = (0, 0);
        let mut now = None;
        for out in outgoing.drain(..) {
            match out {
                Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup,
                } => {
                    let properties = self.publish_properties(&delivery, &mut now);
                    let msg = &delivery.msg;
                    let publish = PublishView {
                        dup,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        topic: &msg.topic,
                        packet_id,
                        payload: &msg.payload,
                        properties: properties.as_deref(),
                    };
                    let too_big = self
                        .max_packet_out
                        .is_some_and(|max| publish.encoded_len(conn.version) > max as usize);
                    if too_big || !self.allowed(&msg.topic, Access::Read) {
                        // Not for this client: treat it as delivered so the window moves on
                        // (MQTT-3.1.2-25 for messages over the client's Maximum Packet Size).
                        if packet_id != 0 {
                            let state = match delivery.qos {
                                QoS::AtLeastOnce => OutState::AwaitPubAck,
                                _ => OutState::AwaitPubRec,
                            };
                            self.session().complete(packet_id, state);
                        }
                        continue;
                    }
                    conn.queue_publish(&publish);
                    publishes += 1;
                }
                Outgoing::PubRel { packet_id } => {
                    conn.queue(&Packet::PubRel(PubResp::new(packet_id)));
                }
            }
            sent += 1;
        }
        // Counted once per batch: these counters are shared by every connection's task.
        let stats = &self.ctx.router.stats;
        if publishes > 0 {
            stats.publish_sent.fetch_add(publishes, Ordering::Relaxed);
        }
        if sent > 0 {
            stats.messages_sent.fetch_add(sent, Ordering::Relaxed);
        }
    }

    /// The 5.0 properties of the PUBLISH for one delivery: as published, plus this subscriber's
    /// subscription identifiers and the remaining message expiry (`now`: read once per batch,
    /// when first needed). None for 3.1.1 clients and for messages without any.
    fn publish_properties(
        &self,
        d: &Delivery,
        now: &mut Option<std::time::Instant>,
    ) -> Option<Box<Properties>> {
        let msg = &d.msg;
        if !self.v5 || (msg.properties.is_none() && d.sub_ids.is_empty()) {
            return None;
        }
        let mut p = msg.properties.clone().unwrap_or_default();
        p.subscription_identifiers.clone_from(&d.sub_ids);
        if msg.expires_at.is_some() {
            let now = *now.get_or_insert_with(std::time::Instant::now);
            p.message_expiry_interval = msg.remaining_expiry(now);
        }
        Some(p)
    }

    fn reply<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Connection<S>, packet: Packet) {
        conn.queue(&packet);
        self.ctx
            .router
            .stats
            .messages_sent
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An ack with a 5.0 reason code (and, if the client allows, a reason string).
    fn ack(&self, packet_id: u16, reason: u8, why: &str) -> PubResp {
        let properties =
            (self.v5 && self.problem_info && reason >= 0x80).then(|| reason_string(why));
        PubResp {
            packet_id,
            reason: if self.v5 { reason } else { 0 },
            properties,
        }
    }

    fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        packet: Packet,
        fanout: &mut Fanout,
    ) -> Step {
        match packet {
            Packet::Publish(p) => return self.on_publish(conn, p, fanout),
            Packet::PubAck(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubAck);
            }
            Packet::PubRec(r) => {
                // A 5.0 PUBREC with a failure code ends the exchange (no PUBREL).
                if r.reason >= 0x80 {
                    self.session().complete(r.packet_id, OutState::AwaitPubRec);
                } else {
                    let known = self.session().received(r.packet_id);
                    let reason = if known {
                        0
                    } else {
                        v5::PACKET_IDENTIFIER_NOT_FOUND
                    };
                    let rel = self.ack(r.packet_id, reason, "unknown packet identifier");
                    self.reply(conn, Packet::PubRel(rel));
                }
            }
            Packet::PubRel(r) => {
                let known = self.session().inner.lock().qos2_remove(r.packet_id);
                let reason = if known {
                    0
                } else {
                    v5::PACKET_IDENTIFIER_NOT_FOUND
                };
                let comp = self.ack(r.packet_id, reason, "unknown packet identifier");
                self.reply(conn, Packet::PubComp(comp));
            }
            Packet::PubComp(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubComp);
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
            Packet::PingReq => self.reply(conn, Packet::PingResp),
            Packet::Disconnect(d) => return self.on_disconnect(d),
            Packet::Connect(_) => {
                return Step::Exit(Exit::protocol(
                    "second CONNECT (MQTT-3.1.0-2)",
                    v5::PROTOCOL_ERROR,
                ));
            }
            Packet::Auth(a) => return self.on_auth(conn, a),
            other => {
                let why = format!("{} is not sent by clients", other.name());
                return Step::Exit(Exit::protocol(why, v5::PROTOCOL_ERROR));
            }
        }
        Step::Continue
    }

    /// Re-authentication (MQTT 5.0 section 4.12.1): AUTH 0x19 with the CONNECT's method starts a
    /// new exchange, answered with AUTH 0x18 per step and AUTH 0x00 on success; the client keeps
    /// its old authentication meanwhile (its keep alive bounds a stalled exchange). It must prove
    /// the same identity: failure, or another user, ends the connection with DISCONNECT 0x87.
    /// The method is taken from the current `Auth`, so a reload's credentials apply.
    fn on_auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        a: AuthPacket,
    ) -> Step {
        let Some(name) = self.reauth.as_ref().map(|r| r.method) else {
            let why = "AUTH without an authentication method in CONNECT (MQTT-4.12.0-1)";
            return Step::Exit(Exit::protocol(why, v5::PROTOCOL_ERROR));
        };
        let props = a.properties.map(|p| *p).unwrap_or_default();
        if props.authentication_method.as_deref() != Some(name) {
            let why = "AUTH with another authentication method than CONNECT's (section 4.12.1)";
            return Step::Exit(Exit::protocol(why, v5::PROTOCOL_ERROR));
        }
        let (mut exchange, rounds) = match (
            a.reason,
            self.reauth.as_mut().and_then(|r| r.ongoing.take()),
        ) {
            (v5::REAUTHENTICATE, None) => match self.acl().enhanced(name) {
                Some(method) => (method.start(), 0),
                None => return self.reauth_failed("", "method no longer offered after a reload"),
            },
            (v5::CONTINUE_AUTHENTICATION, Some(ongoing)) => ongoing,
            (reason, _) => {
                let why = format!("AUTH with reason 0x{reason:02X} out of sequence");
                return Step::Exit(Exit::protocol(why, v5::PROTOCOL_ERROR));
            }
        };
        let step = exchange.step(props.authentication_data.as_deref());
        let claimed = exchange.username().unwrap_or_default().to_owned();
        self.acl(); // refreshes the snapshot after a reload
        let auth = Arc::clone(&self.auth.1);
        if !matches!(step, AuthStep::Continue(_)) && auth.user_backing_off(&claimed) {
            return self.reauth_failed(&claimed, "username is backing off");
        }
        match step {
            AuthStep::Continue(_) if rounds == MAX_AUTH_ROUNDS => {
                self.reauth_failed(&claimed, "too many AUTH rounds")
            }
            AuthStep::Continue(out) => {
                let packet = auth_packet(v5::CONTINUE_AUTHENTICATION, name, Some(out));
                self.reply(conn, packet);
                if let Some(r) = self.reauth.as_mut() {
                    r.ongoing = Some((exchange, rounds + 1));
                }
                Step::Continue
            }
            AuthStep::Success { username, .. } if Some(&username) != self.username.as_ref() => {
                self.reauth_failed(&username, "proved another identity than the connection's")
            }
            AuthStep::Success { username, data } => {
                if let Some(r) = &self.reauth {
                    auth.record_login(r.ip, &username, true);
                }
                debug!(client_id = %self.client_id(), user = %username, "re-authenticated");
                self.reply(conn, auth_packet(v5::SUCCESS, name, data));
                Step::Continue
            }
            AuthStep::Fail(why) => self.reauth_failed(&claimed, why),
        }
    }

    /// Counts a failed re-authentication for the back-off and ends the connection (DISCONNECT
    /// 0x87, section 4.12.1).
    fn reauth_failed(&mut self, claimed: &str, why: &str) -> Step {
        let ip = self.reauth.as_ref().map(|r| r.ip);
        let auth = self.acl();
        if let (Some(ip), false) = (ip, auth.user_backing_off(claimed)) {
            auth.record_login(ip, claimed, false);
        }
        let why = format!("re-authentication failed: {why}");
        Step::Exit(Exit::protocol(why, v5::NOT_AUTHORIZED))
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Step {
        if let Some(expiry) = d
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
        {
            if self.expiry == 0 && expiry != 0 {
                let why = "DISCONNECT sets a session expiry after CONNECT had 0 (MQTT-3.14.2-2)";
                return Step::Exit(Exit::protocol(why, v5::PROTOCOL_ERROR));
            }
            self.expiry = expiry;
            self.session().inner.lock().expiry = expiry;
        }
        Step::Exit(Exit::Disconnected {
            will: d.reason == v5::DISCONNECT_WITH_WILL,
        })
    }

    /// 5.0 topic alias resolution on an incoming PUBLISH. Err: the connection must close.
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), Exit> {
        let Some(props) = p.properties.as_deref_mut() else {
            return Ok(());
        };
        if !props.subscription_identifiers.is_empty() {
            let why = "PUBLISH from a client carries a Subscription Identifier (MQTT-3.3.4-6)";
            return Err(Exit::protocol(why, v5::PROTOCOL_ERROR));
        }
        let Some(alias) = props.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.ctx.limits.max_topic_alias {
            let why = format!(
                "topic alias {alias} outside 1..={}",
                self.ctx.limits.max_topic_alias
            );
            return Err(Exit::protocol(why, v5::TOPIC_ALIAS_INVALID));
        }
        let now_empty = *props == Properties::default();
        if p.topic.is_empty() {
            match self.aliases.as_ref().and_then(|a| a.get(&alias)) {
                Some(topic) => p.topic = topic.clone(),
                None => {
                    let why = format!("unknown topic alias {alias} (MQTT-3.3.4-7)");
                    return Err(Exit::protocol(why, v5::PROTOCOL_ERROR));
                }
            }
        } else {
            self.aliases
                .get_or_insert_default()
                .insert(alias, p.topic.clone());
        }
        if now_empty {
            p.properties = None;
        }
        Ok(())
    }

    fn on_publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        mut p: Publish,
        fanout: &mut Fanout,
    ) -> Step {
        if let Some(rate) = &mut self.rate {
            rate.take();
        }
        if self.v5 {
            if let Err(exit) = self.resolve_alias(&mut p) {
                return Step::Exit(exit);
            }
        }
        let (packet_id, qos) = (p.packet_id, p.qos);
        let fresh = match qos {
            QoS::ExactlyOnce => self.session().inner.lock().qos2_insert(packet_id),
            _ => true,
        };
        let mut reason = (v5::SUCCESS, "");
        if fresh {
            let utf8_promised = p
                .properties
                .as_ref()
                .and_then(|pr| pr.payload_format_indicator)
                == Some(1);
            if !self.topic_within_limits(&p.topic) {
                reason = (
                    v5::TOPIC_NAME_INVALID,
                    "topic exceeds the broker's length or level limit",
                );
            } else if utf8_promised && std::str::from_utf8(&p.payload).is_err() {
                reason = (
                    v5::PAYLOAD_FORMAT_INVALID,
                    "payload is not UTF-8 as its format indicator says",
                );
            } else if !self.allowed(&p.topic, Access::Write) {
                info!(client_id = %self.client_id(), topic = %p.topic, "PUBLISH denied by ACL; dropped");
                reason = (
                    v5::NOT_AUTHORIZED,
                    "not authorised to publish to this topic",
                );
            } else {
                if let Some(log) = &self.ctx.msglog {
                    log.log(&p.topic, &p.payload);
                }
                let mut msg =
                    Message::new(p.topic, p.payload, qos, p.retain).with_properties(p.properties);
                msg.origin = self.session().id;
                if self.ctx.router.publish_to(Arc::new(msg), fanout) == 0 {
                    reason = (v5::NO_MATCHING_SUBSCRIBERS, "");
                }
            }
            if reason.0 >= 0x80 && qos == QoS::ExactlyOnce {
                self.session().inner.lock().qos2_remove(packet_id);
            }
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.reply(
                conn,
                Packet::PubAck(self.ack(packet_id, reason.0, reason.1)),
            ),
            QoS::ExactlyOnce => self.reply(
                conn,
                Packet::PubRec(self.ack(packet_id, reason.0, reason.1)),
            ),
        }
        Step::Continue
    }

    fn on_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        s: Subscribe,
    ) {
        let sub_id = s
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied());
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            let (shared, inner) = match split_shared(&f.filter) {
                Some((_, inner)) => (true, Some(inner)),
                None if f.filter.starts_with("$share/") => (true, None),
                None => (false, Some(f.filter.as_str())),
            };
            let Some(inner) = inner.filter(|i| validate_topic_filter(i).is_ok()) else {
                info!(client_id = %self.client_id(), filter = %f.filter, "invalid topic filter");
                codes.push(if self.v5 {
                    v5::TOPIC_FILTER_INVALID
                } else {
                    v3::SUBACK_FAILURE
                });
                continue;
            };
            if !self.topic_within_limits(inner) {
                codes.push(if self.v5 {
                    v5::TOPIC_FILTER_INVALID
                } else {
                    v3::SUBACK_FAILURE
                });
                continue;
            }
            let max_subs = self.ctx.limits.max_subscriptions_per_client;
            let full = {
                let inner = self.session().inner.lock();
                inner.subscriptions.len() >= max_subs
                    && !inner.subscriptions.contains_key(&f.filter)
            };
            if full {
                self.limit(
                    Limit::Subscriptions,
                    &format!("{max_subs} subscriptions held"),
                );
                codes.push(if self.v5 {
                    v5::QUOTA_EXCEEDED
                } else {
                    v3::SUBACK_FAILURE
                });
                continue;
            }
            if !self.allowed(inner, Access::Subscribe) {
                info!(client_id = %self.client_id(), filter = %f.filter, "SUBSCRIBE denied by ACL");
                codes.push(if self.v5 {
                    v5::NOT_AUTHORIZED
                } else {
                    v3::SUBACK_FAILURE
                });
                continue;
            }
            let (existed, msgs) =
                self.ctx
                    .router
                    .subscribe(self.session(), &f.filter, f.options, sub_id);
            codes.push(f.options.qos as u8);
            let send = match f.options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if send && !shared {
                retained.extend(msgs.into_iter().map(|m| (m, f.options.qos)));
            }
        }
        let ack = SubAck {
            packet_id: s.packet_id,
            return_codes: codes,
            properties: None,
        };
        self.reply(conn, Packet::SubAck(ack));
        for (msg, granted) in retained {
            let qos = msg.qos.min(granted);
            let mut delivery = Delivery::new(msg, qos, true);
            delivery.sub_ids.extend(sub_id);
            self.ctx.router.enqueue(self.session(), delivery);
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
            if self.v5 {
                reasons.push(if existed {
                    v5::SUCCESS
                } else {
                    v5::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        let ack = UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: None,
        };
        self.reply(conn, Packet::UnsubAck(ack));
    }

    /// After the loop: tell a 5.0 client why, publish the will unless the client said a normal
    /// DISCONNECT, and detach from the router.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        exit: Exit,
    ) {
        let (reason, why, publish_will) = exit_reason(&exit);
        if let (Some(reason), true) = (reason, self.v5) {
            let properties = Some(reason_string(&why));
            conn.queue(&Packet::Disconnect(Disconnect { reason, properties }));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
        self.end(&why, publish_will);
    }

    /// The end of a connection whose socket is gone (see [`Client::end`]).
    fn close(&mut self, exit: Exit) {
        let (_, why, publish_will) = exit_reason(&exit);
        self.end(&why, publish_will);
    }

    /// Logs why the connection ended, publishes the will unless the client said a normal
    /// DISCONNECT, and detaches from the router.
    fn end(&mut self, why: &str, publish_will: bool) {
        info!(client_id = %self.client_id(), "{why}");
        let will = self.will.take().filter(|_| publish_will);
        if let Some(will) = will {
            if self.allowed(&will.topic, Access::Write) {
                self.publish_will(*will);
            }
        }
        self.ctx
            .router
            .detach(&self.attached.session, self.attached.link.id());
    }

    /// Publishes the will now, or after its Will Delay Interval (or when the session ends, if
    /// sooner: it expires or a Clean Start replaces it) unless the client has come back by then.
    fn publish_will(&self, will: LastWill) {
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.will_delay_interval)
            .unwrap_or(0);
        let mut msg = Message::new(will.topic, will.payload, will.qos, will.retain)
            .with_properties(will.properties);
        if let Some(p) = msg.properties.as_deref_mut() {
            p.will_delay_interval = None;
        }
        let router = self.ctx.router.clone();
        let wait = delay.min(self.expiry);
        if wait == 0 {
            debug!(client_id = %self.client_id(), topic = %msg.topic, "publishing will");
            router.publish(Arc::new(msg));
            return;
        }
        let session = self.attached.session.clone();
        // This connection's attach number, not the session's current one: after a takeover the
        // new connection has already attached, and must cancel the will too (MQTT-3.1.3-9).
        let attach_count = self.attached.attach_count;
        tokio::spawn(async move {
            // Due when the delay runs out or the session ends, whichever is first (3.1.3.2.2).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(wait))) => {}
                _ = session.ended().cancelled_owned() => {}
            }
            if session.inner.lock().attach_count == attach_count {
                router.publish(Arc::new(msg));
            }
        });
    }
}

/// The 5.0 DISCONNECT reason to send (if any), the log line, and whether the will is due.
fn exit_reason(exit: &Exit) -> (Option<u8>, String, bool) {
    match exit {
        Exit::Disconnected { will } => (None, "disconnected".to_owned(), *will),
        Exit::Shutdown => (
            Some(v5::SERVER_SHUTTING_DOWN),
            "broker shutting down".into(),
            false,
        ),
        Exit::Abnormal { why, reason } => (*reason, format!("connection lost: {why}"), true),
        Exit::Idle { .. } => (None, "idle".into(), false),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
