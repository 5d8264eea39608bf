//! One connected link: SUBSCRIBE to the `in` topics, then race the remote's packets, the local
//! session's deliveries, keep alive and shutdown until one of them ends it.
//!
//! Reads are cancel-safe ([`crate::connection::Connection::read_packet`] keeps its buffer), so
//! the `select!` can drop a half-read packet; writes happen in the arm bodies.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::Context;
use crate::ingress::Publisher;
use crate::protocol::RetainHandling;
use crate::protocol::{
    ConnAck, Disconnect, DisconnectReason, Packet, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions, text,
};
use crate::router::attached::SessionLink;

use super::inbound::Inbound;
use super::outbound::{self, Reader, RemoteLimits};
use super::remote::{LinkError, RemoteConn};
use super::status::Status;
use super::topics::Topics;

/// What a link needs besides its connection.
pub struct LinkParts<'a> {
    pub ctx: &'a Arc<Context>,
    pub session: &'a mut SessionLink,
    pub topics: &'a Topics,
    pub status: &'a Status,
    pub inbound: &'a mut Inbound,
    pub publisher: &'a mut Publisher,
    pub reader: Reader<'a>,
    pub max_inflight: u16,
    pub keepalive: u16,
}

/// How a link ended without an error.
pub enum Ended {
    Shutdown,
}

/// Runs the link until it fails or `shutdown` fires.
pub async fn run(
    conn: &mut RemoteConn,
    connack: &ConnAck,
    parts: &mut LinkParts<'_>,
    shutdown: &CancellationToken,
) -> Result<Ended, LinkError> {
    let v5 = conn.version.is_v5();
    let props = connack.properties.as_deref();
    let limits = RemoteLimits {
        v5,
        max_inflight: usize::from(
            props
                .and_then(|p| p.receive_maximum)
                .unwrap_or(u16::MAX)
                .min(parts.max_inflight),
        ),
        max_qos: props
            .and_then(|p| p.maximum_qos)
            .and_then(QoS::from_u8)
            .unwrap_or(QoS::ExactlyOnce),
        retain: props.and_then(|p| p.retain_available) != Some(0),
    };
    let keepalive = props
        .and_then(|p| p.server_keep_alive)
        .unwrap_or(parts.keepalive);
    // 0 (a remote that turns keep alive off): still ping now and then, to notice a dead link.
    let ping_every = Duration::from_secs(u64::from(if keepalive == 0 { 60 } else { keepalive }));
    let silence_limit = ping_every.mul_f32(1.5);

    subscribe_remote(conn, parts, v5)?;
    conn.flush().await?;

    let store = parts.ctx.router.store().cloned();
    let mut scratch = Vec::new();
    let mut resend = true;
    let mut held: Option<crate::store::Ticket> = None;
    let mut last_read = Instant::now();
    let mut last_write = Instant::now();
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    loop {
        if held.is_none() {
            held = outbound::fill(
                parts,
                conn,
                limits,
                std::mem::take(&mut resend),
                &mut scratch,
            );
        }
        if conn.pending() > 0 {
            conn.flush().await?;
            last_write = Instant::now();
        }
        if parts.session.kicked() {
            return Err(LinkError::Kicked);
        }
        let ping_at = last_write + ping_every;
        let dead_at = last_read + silence_limit;
        tokio::select! {
            _ = shutdown.cancelled() => {
                let bye = Packet::Disconnect(Disconnect {
                    reason: DisconnectReason::NormalDisconnection,
                    properties: None,
                });
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = conn.write_packet(&bye).await;
                    let _ = conn.shutdown().await;
                })
                .await;
                return Ok(Ended::Shutdown);
            }
            read = conn.read_packet() => {
                last_read = Instant::now();
                match read? {
                    Some(packet) => handle(packet, conn, parts, &store).await?,
                    None => return Err(LinkError::Closed(String::new())),
                }
                // The rest of what that read brought (a burst of PUBACKs): handled before the
                // next fill, so the freed window goes out in one write, not one per ack.
                while let Some(packet) = conn
                    .try_decode()
                    .map_err(crate::connection::ReadError::from)?
                {
                    handle(packet, conn, parts, &store).await?;
                }
            }
            _ = poll_fn(|cx| parts.session.poll_ready(cx)) => {}
            done = wait(&store, held) => {
                if !done {
                    warn!(bridge = %parts.status.name,
                        "the store could not commit an outbound QoS 2 message's state");
                }
                held = None;
            }
            _ = tokio::time::sleep_until(ping_at.min(dead_at)) => {
                if Instant::now() >= dead_at {
                    return Err(LinkError::Timeout("waiting for the remote (keep alive)"));
                }
                conn.queue(&Packet::PingReq).map_err(|e| LinkError::Protocol(e.to_string()))?;
            }
            _ = gauges.tick() => {
                update_gauges(parts);
            }
        }
    }
}

/// Waits for `ticket`'s commit (forever without one). False: it failed.
async fn wait(
    store: &Option<Arc<crate::store::Store>>,
    ticket: Option<crate::store::Ticket>,
) -> bool {
    match (store, ticket) {
        (Some(store), Some(ticket)) => store.committed(ticket).await.is_ok(),
        _ => std::future::pending().await,
    }
}

pub fn update_gauges(parts: &LinkParts<'_>) {
    use std::sync::atomic::Ordering;
    let s = parts.status;
    s.queued
        .store(parts.session.queued() as u64, Ordering::Relaxed);
    s.queue_dropped
        .store(parts.session.dropped(), Ordering::Relaxed);
}

/// One SUBSCRIBE with every `in` topic: 5.0 with No Local and Retain As Published, 3.1.1 as
/// a marked bridge (the remote gives it the same treatment).
fn subscribe_remote(
    conn: &mut RemoteConn,
    parts: &LinkParts<'_>,
    v5: bool,
) -> Result<(), LinkError> {
    let filters: Vec<SubscribeFilter> = parts
        .topics
        .remote_filters()
        .into_iter()
        .map(|(filter, qos)| SubscribeFilter {
            filter,
            options: SubscriptionOptions {
                qos,
                no_local: v5,
                retain_as_published: v5,
                retain_handling: RetainHandling::SendOnSubscribe,
            },
        })
        .collect();
    if filters.is_empty() {
        return Ok(());
    }
    // An identifier the session does not have in flight (the remote may still hold those).
    let busy = parts.session.inflight_ids();
    let packet_id = (1..=u16::MAX)
        .rev()
        .find(|id| !busy.contains(id))
        .unwrap_or(u16::MAX);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id,
        filters,
        properties: None,
    });
    conn.queue(&subscribe)
        .map_err(|e| LinkError::Protocol(format!("cannot send SUBSCRIBE: {e}")))
}

async fn handle(
    packet: Packet,
    conn: &mut RemoteConn,
    parts: &mut LinkParts<'_>,
    store: &Option<Arc<crate::store::Store>>,
) -> Result<(), LinkError> {
    match packet {
        Packet::Publish(p) => {
            parts
                .inbound
                .publish(
                    p,
                    conn,
                    parts.ctx,
                    parts.publisher,
                    parts.topics,
                    parts.status,
                )
                .await?;
        }
        Packet::PubRel(r) => parts.inbound.release(r.packet_id, conn),
        Packet::PubAck(r) => {
            if !parts.session.puback(r.packet_id) {
                debug!(bridge = %parts.status.name, id = r.packet_id, "PUBACK for an unknown id");
            }
        }
        Packet::PubRec(r) => {
            if r.reason.is_error() {
                // The remote refused it: the exchange ends here (MQTT 5.0 section 4.3.3).
                info!(bridge = %parts.status.name, "the remote refused a message: {}", r.reason);
                parts.session.puback(r.packet_id);
                return Ok(());
            }
            let (known, ticket) = parts.session.pubrec(r.packet_id);
            if let Some(ticket) = ticket {
                let _ = wait(store, Some(ticket)).await;
            }
            if known {
                let rel = Packet::PubRel(crate::protocol::PubResp::new(r.packet_id));
                let _ = conn.queue(&rel);
            }
        }
        Packet::PubComp(r) => {
            parts.session.pubcomp(r.packet_id);
        }
        Packet::SubAck(ack) => {
            let filters = parts.topics.remote_filters();
            for (code, (filter, _)) in ack.return_codes.iter().zip(filters) {
                if code.is_error() {
                    warn!(bridge = %parts.status.name, filter = %text::cut(&filter),
                        "the remote refused the subscription: {code}");
                }
            }
        }
        Packet::PingResp | Packet::UnsubAck(_) => {}
        Packet::Disconnect(d) => {
            return Err(LinkError::Closed(format!(" (DISCONNECT: {})", d.reason)));
        }
        other => {
            return Err(LinkError::Protocol(format!(
                "unexpected {} from the remote",
                other.name()
            )));
        }
    }
    Ok(())
}
