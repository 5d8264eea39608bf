//! Remote -> local: a PUBLISH from the remote is renamed to its local topic and published
//! through the ingress as the bridge ([`Source::Bridge`], client id `$bridge/<name>`, the
//! configured `local_username`), so the ACL, limits, statistics, the logger and the history
//! apply. The publisher carries the bridge's local session id, and the bridge's local
//! subscriptions have No Local: nothing that came in goes back out.
//!
//! Acknowledgements: QoS 1 PUBACK once the ingress took the message (and, with persistence on,
//! once the store committed what it must keep); QoS 2 PUBREC at the same point, then
//! PUBREL -> PUBCOMP. QoS 2 packet identifiers between PUBREC and PUBREL are remembered so a
//! resent PUBLISH (DUP) is not published twice.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::{debug, info};

use crate::client::Context;
use crate::ingress::{Outcome, Publisher};
use crate::protocol::{Packet, PubAckReason, PubResp, Publish, QoS, text};
use crate::router::Message;

use super::remote::{LinkError, RemoteConn};
use super::status::Status;
use super::topics::Topics;

/// Inbound state of one bridge (kept across reconnections: the remote may resend a QoS 2
/// PUBLISH or a PUBREL after one).
#[derive(Debug, Default)]
pub struct Inbound {
    /// QoS 2 packet identifiers PUBREC'd and not yet released.
    qos2: HashSet<u16>,
}

impl Inbound {
    /// Publishes `p` locally and queues its acknowledgement.
    pub async fn publish(
        &mut self,
        p: Publish,
        conn: &mut RemoteConn,
        ctx: &Arc<Context>,
        publisher: &mut Publisher,
        topics: &Topics,
        status: &Status,
    ) -> Result<(), LinkError> {
        if p.topic.is_empty() {
            // We never allow topic aliases (Topic Alias Maximum 0).
            return Err(LinkError::Protocol("PUBLISH with a topic alias".into()));
        }
        if p.qos == QoS::ExactlyOnce && !self.qos2.insert(p.packet_id) {
            // A resend of one we have: acknowledge again, do not publish again.
            let _ = conn.queue(&Packet::PubRec(PubResp::new(p.packet_id)));
            return Ok(());
        }
        let reason = match topics.to_local(&p.topic) {
            Some(local) => {
                let reason = self.route(&p, local, ctx, publisher).await;
                if reason == PubAckReason::Success {
                    Status::count(&status.received);
                }
                reason
            }
            None => {
                debug!(bridge = %status.name, topic = %text::cut(&p.topic),
                    "message on a topic no `in` line maps; not published");
                PubAckReason::Success
            }
        };
        let ack = PubResp {
            packet_id: p.packet_id,
            reason,
            properties: None,
        };
        let _ = match p.qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => conn.queue(&Packet::PubAck(ack)),
            QoS::ExactlyOnce => conn.queue(&Packet::PubRec(ack)),
        };
        if p.qos == QoS::ExactlyOnce && reason != PubAckReason::Success {
            // An error PUBREC ends the exchange (MQTT 5.0 section 4.3.3).
            self.qos2.remove(&p.packet_id);
        }
        Ok(())
    }

    /// Through the ingress; the PUBACK/PUBREC reason (5.0; 3.1.1 only has success).
    async fn route(
        &mut self,
        p: &Publish,
        topic: String,
        ctx: &Arc<Context>,
        publisher: &mut Publisher,
    ) -> PubAckReason {
        let mut properties = p.properties.clone();
        if let Some(props) = properties.as_deref_mut() {
            props.topic_alias = None;
            props.subscription_identifiers.clear();
        }
        let msg = Message::new(topic.into(), p.payload.clone(), p.qos, p.retain)
            .with_properties(properties);
        match ctx.ingress.publish_now(publisher, msg) {
            Outcome::Routed { commit, .. } => {
                if let (Some(ticket), Some(store), true) =
                    (commit, ctx.router.store(), p.qos != QoS::AtMostOnce)
                    && store.committed(ticket).await.is_err()
                {
                    return PubAckReason::UnspecifiedError;
                }
                PubAckReason::Success
            }
            Outcome::Refused(refusal) => {
                info!(bridge = %publisher.client_id, topic = %text::cut(&p.topic),
                    "message from the remote refused: {}", refusal.why());
                refusal.reason_code()
            }
        }
    }

    /// PUBREL from the remote: the exchange ends (PUBCOMP), known identifier or not.
    pub fn release(&mut self, packet_id: u16, conn: &mut RemoteConn) {
        self.qos2.remove(&packet_id);
        let _ = conn.queue(&Packet::PubComp(PubResp::new(packet_id)));
    }
}
