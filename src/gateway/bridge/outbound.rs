//! Local -> remote: what the bridge's local session hands out becomes PUBLISH (or PUBREL) on
//! the remote connection, under the remote topic; the remote's PUBACK / PUBREC / PUBCOMP
//! complete the local session's in-flight messages (its packet identifiers are used on the
//! wire as they are, so no mapping table is needed and a resend after a reconnection carries
//! the same identifier with DUP).

use std::sync::atomic::Ordering;

use crate::auth::{Access, AuthSnapshot};
use crate::protocol::{Packet, Properties, PubResp, PublishView, QoS};
use crate::router::state::{Delivery, Outgoing};

use super::link::LinkParts;
use super::remote::RemoteConn;
use super::status::Status;
use super::topics::Topics;

/// What the remote said it accepts (CONNACK), for the messages we send it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteLimits {
    pub v5: bool,
    /// Receive Maximum, capped by `max_inflight`.
    pub max_inflight: usize,
    /// Maximum QoS (5.0): higher QoS messages go out at this one.
    pub max_qos: QoS,
    /// Retain Available (5.0): false -> the retain flag is cleared.
    pub retain: bool,
}

/// The local identity the ACL checks deliveries (`Read`) against.
pub struct Reader<'a> {
    pub auth: &'a crate::auth::AuthCell,
    pub snapshot: &'a mut AuthSnapshot,
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// Moves what the local session allows into `conn`'s write buffer. Returns the store's ticket
/// a QoS 2 message waits for (see [`crate::router::attached::SessionLink::take`]).
pub fn fill(
    parts: &mut LinkParts<'_>,
    conn: &mut RemoteConn,
    limits: RemoteLimits,
    resend: bool,
    scratch: &mut Vec<Outgoing>,
) -> Option<crate::store::Ticket> {
    let (session, topics, status) = (&*parts.session, parts.topics, parts.status);
    let reader = &mut parts.reader;
    let held = session.take(scratch, limits.max_inflight, resend);
    let mut now = None;
    for out in scratch.drain(..) {
        match out {
            Outgoing::Publish {
                delivery,
                packet_id,
                dup,
            } => {
                let sent = send(
                    &delivery, packet_id, dup, conn, topics, limits, reader, &mut now,
                );
                match sent {
                    Some(qos) => {
                        Status::count(&status.sent);
                        // Sent below the QoS it was queued at (the remote's Maximum QoS): no
                        // acknowledgement will come for the higher one.
                        if packet_id != 0 && qos == QoS::AtMostOnce {
                            session.puback(packet_id);
                        }
                    }
                    None => {
                        Status::count(&status.skipped);
                        if packet_id != 0 {
                            session.puback(packet_id);
                        }
                    }
                }
            }
            Outgoing::PubRel { packet_id } => {
                // Four bytes: nothing the remote accepts is smaller.
                let _ = conn.queue(&Packet::PubRel(PubResp::new(packet_id)));
            }
        }
    }
    status
        .queued
        .store(session.queued() as u64, Ordering::Relaxed);
    held
}

/// Queues one PUBLISH; returns the QoS it went out at, or None if it was skipped (no route, the
/// ACL, over the remote's Maximum Packet Size).
#[allow(clippy::too_many_arguments)]
fn send(
    d: &Delivery,
    packet_id: u16,
    dup: bool,
    conn: &mut RemoteConn,
    topics: &Topics,
    limits: RemoteLimits,
    reader: &mut Reader<'_>,
    now: &mut Option<std::time::SystemTime>,
) -> Option<QoS> {
    let msg = &d.msg;
    let (topic, _) = topics.to_remote(&msg.topic)?;
    let allowed = reader.auth.allowed(
        reader.snapshot,
        reader.username,
        reader.client_id,
        &msg.topic,
        Access::Read,
    );
    if !allowed {
        return None;
    }
    let qos = d.qos.min(limits.max_qos);
    let properties = properties(d, limits.v5, now);
    let publish = PublishView {
        dup: dup && qos != QoS::AtMostOnce,
        qos,
        retain: d.retain && limits.retain,
        topic: &topic,
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: &msg.payload,
        properties: properties.as_deref(),
    };
    conn.queue_publish(&publish).ok()?;
    Some(qos)
}

/// 5.0: the message's properties, with the Message Expiry Interval left; never subscription
/// identifiers (they are ours) nor a topic alias.
fn properties(
    d: &Delivery,
    v5: bool,
    now: &mut Option<std::time::SystemTime>,
) -> Option<Box<Properties>> {
    let msg = &d.msg;
    if !v5 || msg.properties.is_none() && msg.expires_at.is_none() {
        return None;
    }
    let mut p = msg.properties.clone().unwrap_or_default();
    p.subscription_identifiers.clear();
    p.topic_alias = None;
    if msg.expires_at.is_some() {
        let now = *now.get_or_insert_with(crate::timer::wall_now);
        p.message_expiry_interval = msg.remaining_expiry(now);
    }
    Some(p)
}
