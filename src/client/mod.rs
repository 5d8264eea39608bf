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

mod acks;
mod admit;
mod alias;
mod context;
mod enhanced;
mod exit;
mod handlers;
mod outbound;
mod park;
mod run;

pub use context::{Context, Guard, IpSlot, Peer};
pub use exit::restore_will;
pub use park::Idle;

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::auth::{Access, Auth};
use crate::connection::{Connection, ReadError, Stream};
use crate::ingress::Publisher;
use crate::protocol::{ConnAck, ConnAckReason, DecodeError, LastWill, Packet, Properties};
use crate::router::Attached;
use crate::router::state::SessionState;
use crate::stats::Limit;
use admit::admit;
use alias::Aliases;
use enhanced::Reauth;
use exit::Exit;
use park::{Start, drive};
use run::RateLimit;

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
            // Written in the 3.1.1 form (0x01): the connection's version is not known.
            let ack = ConnAck {
                session_present: false,
                code: ConnAckReason::UnsupportedProtocolVersion,
                properties: None,
            };
            let _ = conn.write_packet(&Packet::ConnAck(ack)).await;
            let _ = conn.shutdown().await;
            return;
        }
        // Load balancers' health checks connect and reset: routine, not worth a log line each.
        Ok(Err(ReadError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            debug!(peer = %peer.addr, "reset before CONNECT");
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

/// A refusal CONNACK, with a reason string for 5.0 (3.1.1 gets the return code the encoder maps
/// `code` to, see [`ConnAckReason::v3`]).
fn refusal(v5: bool, code: ConnAckReason, why: &str) -> Packet {
    let properties = v5.then(|| reason_string(why));
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties,
    })
}

/// 5.0 properties carrying only a Reason String.
fn reason_string(why: &str) -> Box<Properties> {
    Box::new(Properties {
        reason_string: Some(why.to_owned()),
        ..Properties::default()
    })
}

/// A connected client's loop state.
///
/// Kept small: while the client is idle, this is most of what a parked connection holds (see
/// [`crate::park`]). What few clients use is boxed.
struct Client {
    /// Who this client is to the ingress and the ACL (client id, username, auth snapshot).
    publisher: Publisher,
    /// Keep alive in seconds, as agreed in CONNECT / CONNACK (0: none).
    keep_alive: u16,
    will: Option<Box<LastWill>>,
    attached: Attached,
    ctx: Arc<Context>,
    v5: bool,
    /// Outbound QoS 1/2 window: min(limits.max_inflight, the client's Receive Maximum).
    max_inflight: u16,
    /// Request Problem Information (5.0): reason strings on acks only when true.
    problem_info: bool,
    /// Topic aliases (5.0): the client's, and the broker's towards it (see [`alias`]). `None`
    /// until the client sets one up, unless it allows the broker's.
    aliases: Option<Box<Aliases>>,
    /// Inbound QoS 2 PUBLISHes on this connection awaiting PUBREL, against the Receive Maximum
    /// announced to a 5.0 client (`limits.max_inflight_in`). Per connection, as the client's send
    /// quota is (MQTT 5.0 section 4.9): every PUBREL for a known packet id counts down, even
    /// one for a PUBLISH from an earlier connection.
    awaiting_pubrel: u16,
    /// Session Expiry Interval in force (may be changed by DISCONNECT).
    expiry: u32,
    /// `limits.max_publish_rate` for this client.
    rate: Option<Box<RateLimit>>,
    /// Set for a client that logged in with enhanced authentication (5.0): it may
    /// re-authenticate; `None`: a client AUTH is a protocol error.
    reauth: Option<Box<Reauth>>,
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

    /// The auth state in force (this client's snapshot, refreshed after a reload).
    fn acl(&mut self) -> &Auth {
        self.ctx.ingress.current_auth(&mut self.publisher)
    }

    /// Counts a limit hit, and logs it the first time for this client.
    fn limit(&mut self, limit: Limit, detail: &str) {
        self.publisher.limit(&self.ctx.router.stats, limit, detail);
    }

    /// Checks a topic name or filter against `max_topic_length` and `max_topic_levels`.
    fn topic_within_limits(&mut self, topic: &str) -> bool {
        self.ctx
            .ingress
            .topic_within_limits(&mut self.publisher, topic)
    }

    fn allowed(&mut self, topic: &str, access: Access) -> bool {
        self.ctx.ingress.allowed(&mut self.publisher, topic, access)
    }
}
