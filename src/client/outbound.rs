//! What goes to the client: deliveries from the session's outbox, acks and replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::auth::Access;
use crate::connection::Connection;
use crate::protocol::{
    EncodeError, Packet, Properties, PubResp, PublishView, QoS, ReasonCode, text,
};
use crate::router::clients::ConnCounters;
use crate::router::state::{Delivery, OutState, Outgoing};

use super::{Client, reason_string};

/// About how many bytes of messages one turn of the loop moves from the outbox into the write
/// buffer (then it writes them): a client that stops reading pins its queue, not a copy of it.
const FILL_BYTES: usize = 256 * 1024;

impl Client {
    /// Moves what the outbox allows into the connection's write buffer.
    /// `outgoing`: an empty buffer, kept by the caller for reuse.
    pub(super) fn fill<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        outgoing: &mut Vec<Outgoing>,
        resend: bool,
    ) -> Option<crate::store::Ticket> {
        let held = self.session().take_outgoing(
            outgoing,
            usize::from(self.max_inflight),
            resend,
            FILL_BYTES,
        );
        let (mut sent, mut publishes) = (0, 0);
        let mut now = None;
        for out in outgoing.drain(..) {
            match out {
                Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup,
                } => {
                    let mut properties = self.publish_properties(&delivery, &mut now);
                    let msg = &delivery.msg;
                    let publish = PublishView {
                        dup,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        topic: &msg.topic,
                        packet_id,
                        payload: &msg.payload,
                        properties: None,
                    };
                    // Not for this client (the ACL, or over its Maximum Packet Size): treat it
                    // as delivered so the window moves on (MQTT-3.1.2-25).
                    let skip = !self.allowed(&msg.topic, Access::Read)
                        || self
                            .queue_publish(conn, publish, &msg.topic, properties.as_deref_mut())
                            .is_err();
                    if skip {
                        if packet_id != 0 {
                            let state = match delivery.qos {
                                QoS::AtLeastOnce => OutState::AwaitPubAck,
                                _ => OutState::AwaitPubRec,
                            };
                            self.session().complete(packet_id, state);
                        }
                        continue;
                    }
                    publishes += 1;
                }
                Outgoing::PubRel { packet_id } => {
                    // Four bytes: only a broken Maximum Packet Size below that refuses it.
                    if let Err(e) = conn.queue(&Packet::PubRel(PubResp::new(packet_id))) {
                        debug!(client_id = %text::cut(self.client_id()), "PUBREL not sent: {e}");
                        continue;
                    }
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
            if let Some(info) = self.attached.link.info() {
                ConnCounters::add(&info.counters.packets_out, sent);
            }
        }
        held
    }

    /// Queues `publish` (of `topic`, with `properties`), with a topic alias if the client takes
    /// them. `Err`: nothing was queued.
    fn queue_publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        publish: PublishView<'_>,
        topic: &Arc<str>,
        properties: Option<&mut Properties>,
    ) -> Result<(), EncodeError> {
        match self
            .aliases
            .as_deref_mut()
            .and_then(|a| a.to_client.as_mut())
        {
            Some(aliases) => aliases.queue(conn, publish, topic, properties),
            None => conn.queue_publish(&PublishView {
                properties: properties.as_deref(),
                ..publish
            }),
        }
    }

    /// The 5.0 properties of the PUBLISH for one delivery: as published, plus this subscriber's
    /// subscription identifiers and the remaining message expiry (`now`: read once per batch,
    /// when first needed). None for 3.1.1 clients and for messages without any.
    pub(super) fn publish_properties(
        &self,
        d: &Delivery,
        now: &mut Option<std::time::SystemTime>,
    ) -> Option<Box<Properties>> {
        let msg = &d.msg;
        if !self.v5 || (msg.properties.is_none() && d.sub_ids.is_empty()) {
            return None;
        }
        let mut p = msg.properties.clone().unwrap_or_default();
        p.subscription_identifiers.clone_from(&d.sub_ids);
        if msg.expires_at.is_some() {
            let now = *now.get_or_insert_with(crate::timer::wall_now);
            p.message_expiry_interval = msg.remaining_expiry(now);
        }
        Some(p)
    }

    pub(super) fn reply<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Connection<S>,
        packet: Packet,
    ) {
        // Over the client's Maximum Packet Size even without its Reason String and User
        // Properties: not sent (MQTT-3.1.2-25); for an ack, the client's retry says the rest.
        if let Err(e) = conn.queue(&packet) {
            debug!(client_id = %text::cut(self.client_id()), "{} not sent: {e}", packet.name());
            return;
        }
        self.ctx
            .router
            .stats
            .messages_sent
            .fetch_add(1, Ordering::Relaxed);
        if let Some(info) = self.attached.link.info() {
            ConnCounters::add(&info.counters.packets_out, 1);
        }
    }

    /// An ack with a 5.0 reason code (and, if the client allows, a reason string).
    pub(super) fn ack<R: ReasonCode + Default>(
        &self,
        packet_id: u16,
        reason: R,
        why: &str,
    ) -> PubResp<R> {
        let properties =
            (self.v5 && self.problem_info && reason.is_error()).then(|| reason_string(why));
        PubResp {
            packet_id,
            reason: if self.v5 { reason } else { R::default() },
            properties,
        }
    }
}
