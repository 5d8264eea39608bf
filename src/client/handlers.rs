//! One handler per packet type a client sends.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use crate::auth::Access;
use crate::connection::Connection;
use crate::ingress::Outcome;
use crate::protocol::topic::subscription_filter;
use crate::protocol::{
    Disconnect, DisconnectReason, Packet, Properties, PubAckReason, PubRelReason, Publish, QoS,
    RetainHandling, SubAck, SubAckReason, Subscribe, UnsubAck, UnsubAckReason, Unsubscribe, text,
};
use crate::router::Message;
use crate::router::state::{Delivery, OutState};
use crate::stats::Limit;

use super::exit::Exit;
use super::run::Batch;
use super::{Client, Step};

impl Client {
    pub(super) fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        packet: Packet,
        batch: &mut Batch,
    ) -> Step {
        match packet {
            Packet::Publish(p) => return self.on_publish(conn, p, batch),
            Packet::PubAck(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubAck);
            }
            Packet::PubRec(r) => {
                // A 5.0 PUBREC with a failure code ends the exchange (no PUBREL).
                if r.reason.is_error() {
                    self.session().complete(r.packet_id, OutState::AwaitPubRec);
                } else {
                    let (known, commit) = self.session().received(r.packet_id);
                    let reason = if known {
                        PubRelReason::Success
                    } else {
                        PubRelReason::PacketIdentifierNotFound
                    };
                    let rel = self.ack(r.packet_id, reason, "unknown packet identifier");
                    self.acknowledge(conn, Packet::PubRel(rel), (commit, false), &mut batch.acks);
                }
            }
            Packet::PubRel(r) => {
                let known = self.session().qos2_remove(r.packet_id);
                if known {
                    self.awaiting_pubrel = self.awaiting_pubrel.saturating_sub(1);
                }
                let reason = if known {
                    PubRelReason::Success
                } else {
                    PubRelReason::PacketIdentifierNotFound
                };
                let comp = self.ack(r.packet_id, reason, "unknown packet identifier");
                self.reply(conn, Packet::PubComp(comp));
            }
            Packet::PubComp(r) => {
                self.session().complete(r.packet_id, OutState::AwaitPubComp);
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, s, batch),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
            Packet::PingReq => self.reply(conn, Packet::PingResp),
            Packet::Disconnect(d) => return self.on_disconnect(d),
            Packet::Connect(_) => {
                return Step::Exit(Exit::protocol(
                    "second CONNECT (MQTT-3.1.0-2)",
                    DisconnectReason::ProtocolError,
                ));
            }
            Packet::Auth(a) => return self.on_auth(conn, a),
            other => {
                let why = format!("{} is not sent by clients", other.name());
                return Step::Exit(Exit::protocol(why, DisconnectReason::ProtocolError));
            }
        }
        Step::Continue
    }

    pub(super) fn on_disconnect(&mut self, d: Disconnect) -> Step {
        if let Some(expiry) = d
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
        {
            if self.expiry == 0 && expiry != 0 {
                let why = "DISCONNECT sets a session expiry after CONNECT had 0 (MQTT-3.14.2-2)";
                return Step::Exit(Exit::protocol(why, DisconnectReason::ProtocolError));
            }
            self.expiry = expiry;
            self.session().set_expiry(expiry);
        }
        Step::Exit(Exit::Disconnected {
            will: d.reason == DisconnectReason::DisconnectWithWillMessage,
        })
    }

    /// 5.0 topic alias resolution on an incoming PUBLISH. Err: the connection must close.
    pub(super) fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), Exit> {
        let Some(props) = p.properties.as_deref_mut() else {
            return Ok(());
        };
        if !props.subscription_identifiers.is_empty() {
            let why = "PUBLISH from a client carries a Subscription Identifier (MQTT-3.3.4-6)";
            return Err(Exit::protocol(why, DisconnectReason::ProtocolError));
        }
        let Some(alias) = props.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.ctx.limits.max_topic_alias {
            let why = format!(
                "topic alias {alias} outside 1..={}",
                self.ctx.limits.max_topic_alias
            );
            return Err(Exit::protocol(why, DisconnectReason::TopicAliasInvalid));
        }
        let now_empty = *props == Properties::default();
        if p.topic.is_empty() {
            match self
                .aliases
                .as_ref()
                .and_then(|a| a.from_client.get(&alias))
            {
                Some(topic) => p.topic = topic.clone(),
                None => {
                    let why = format!("unknown topic alias {alias} (MQTT-3.3.4-7)");
                    return Err(Exit::protocol(why, DisconnectReason::ProtocolError));
                }
            }
        } else {
            self.aliases
                .get_or_insert_default()
                .from_client
                .insert(alias, p.topic.clone());
        }
        if now_empty {
            p.properties = None;
        }
        Ok(())
    }

    pub(super) fn on_publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        mut p: Publish,
        batch: &mut Batch,
    ) -> Step {
        if let Some(rate) = &mut self.rate {
            rate.take();
        }
        if self.v5
            && let Err(exit) = self.resolve_alias(&mut p)
        {
            return Step::Exit(exit);
        }
        let (packet_id, qos) = (p.packet_id, p.qos);
        let (fresh, mut commit) = match qos {
            QoS::ExactlyOnce => self.session().qos2_insert(packet_id),
            _ => (true, None),
        };
        // A re-sent PUBLISH (its id awaits PUBREL already) is not a new one.
        if fresh && qos == QoS::ExactlyOnce && self.v5 {
            let max = self.ctx.limits.max_inflight_in;
            if self.awaiting_pubrel >= max {
                self.session().qos2_remove(packet_id);
                let why = format!(
                    "more than {max} QoS 2 PUBLISHes awaiting PUBREL (Receive Maximum, MQTT-3.3.4-7)"
                );
                return Step::Exit(Exit::protocol(
                    why,
                    DisconnectReason::ReceiveMaximumExceeded,
                ));
            }
        }
        let mut reason = (PubAckReason::Success, "");
        let mut durable = false;
        if fresh {
            let msg = Message::new(p.topic, p.payload, qos, p.retain).with_properties(p.properties);
            match self
                .ctx
                .ingress
                .publish(&mut self.publisher, msg, &mut batch.ingress)
            {
                Outcome::Routed {
                    subscribers,
                    commit: ticket,
                    durable: d,
                } => {
                    commit = commit.max(ticket);
                    durable = d;
                    if subscribers == 0 {
                        reason = (PubAckReason::NoMatchingSubscribers, "");
                    }
                }
                Outcome::Refused(refusal) => reason = (refusal.reason_code(), refusal.why()),
            }
            if qos == QoS::ExactlyOnce {
                // A PUBREC with an error code ends the exchange (and gives the quota back).
                if reason.0.is_error() {
                    self.session().qos2_remove(packet_id);
                } else {
                    self.awaiting_pubrel = self.awaiting_pubrel.saturating_add(1);
                }
            }
        }
        let ack = match qos {
            QoS::AtMostOnce => return Step::Continue,
            QoS::AtLeastOnce => Packet::PubAck(self.ack(packet_id, reason.0, reason.1)),
            QoS::ExactlyOnce => Packet::PubRec(self.ack(packet_id, reason.0, reason.1)),
        };
        self.acknowledge(conn, ack, (commit, durable), &mut batch.acks);
        Step::Continue
    }

    pub(super) fn on_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        s: Subscribe,
        batch: &mut Batch,
    ) {
        let sub_id = s
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied());
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut commit = None;
        for f in &s.filters {
            let Ok((shared, inner)) = subscription_filter(&f.filter) else {
                info!(client_id = %text::cut(self.client_id()), filter = %text::cut(&f.filter),
                    "invalid topic filter");
                // 3.1.1 gets every refusal as 0x80 (the encoder's doing).
                codes.push(SubAckReason::TopicFilterInvalid);
                continue;
            };
            if !self.topic_within_limits(inner) {
                codes.push(SubAckReason::TopicFilterInvalid);
                continue;
            }
            let max_subs = self.ctx.limits.max_subscriptions_per_client;
            if !self.session().has_room_for(&f.filter, max_subs) {
                self.limit(
                    Limit::Subscriptions,
                    &format!("{max_subs} subscriptions held"),
                );
                codes.push(SubAckReason::QuotaExceeded);
                continue;
            }
            if !self.allowed(inner, Access::Subscribe) {
                info!(client_id = %text::cut(self.client_id()), filter = %text::cut(&f.filter),
                    "SUBSCRIBE denied by ACL");
                codes.push(SubAckReason::NotAuthorized);
                continue;
            }
            let subscribed =
                self.ctx
                    .router
                    .subscribe(self.session(), &f.filter, f.options, sub_id);
            codes.push(f.options.qos.into());
            commit = commit.max(subscribed.ticket);
            let send = match f.options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !subscribed.existed,
                RetainHandling::DoNotSend => false,
            };
            if send && !shared {
                let granted = f.options.qos;
                retained.extend(subscribed.retained.into_iter().map(|msg| {
                    let qos = msg.qos.min(granted);
                    let mut delivery = Delivery::new(msg, qos, true);
                    delivery.sub_ids.extend(sub_id);
                    delivery
                }));
            }
        }
        let ack = SubAck {
            packet_id: s.packet_id,
            return_codes: codes,
            properties: None,
        };
        self.acknowledge_then(
            conn,
            Packet::SubAck(ack),
            (commit, false),
            retained,
            &mut batch.acks,
        );
    }

    pub(super) fn on_unsubscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        u: Unsubscribe,
    ) {
        let mut reasons = Vec::new();
        for f in &u.filters {
            let existed = self.ctx.router.unsubscribe(self.session(), f);
            if self.v5 {
                reasons.push(if existed {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
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
}
