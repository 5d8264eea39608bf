//! What leaves a session for its client: the outbox taken onto the wire in order, within the
//! client's in-flight window, and the acknowledgements that end each exchange (PUBACK, PUBREC,
//! PUBCOMP). A persistent session tells the store of each step (see `persist.rs`).

use super::state::{Inflight, OutState, Outgoing, SessionInner, SessionState};
use crate::protocol::QoS;

impl SessionState {
    /// Moves what may be sent now into `out`: first the in-flight messages a fresh connection
    /// (`resend`) must get again (PUBLISH with DUP, or PUBREL), as far as the window allows; then
    /// queued messages while the window allows, and until about `max_bytes` were taken (at least
    /// one message: what a connection copies into its write buffer at once stays bounded, so a
    /// client that stops reading pins little more than its queue). Expired messages (5.0 Message
    /// Expiry Interval) are dropped on the way. Returns the store's ticket a QoS 2 delivery
    /// waits for (see `held`): call again once it is committed.
    pub fn take_outgoing(
        &self,
        out: &mut Vec<Outgoing>,
        max_inflight: usize,
        resend: bool,
        max_bytes: usize,
    ) -> Option<crate::store::Ticket> {
        let mut inner = self.inner.lock();
        let mut now = None;
        let mut freed = 0;
        inner.resend_next = if resend {
            0
        } else {
            inner.resend_next.min(inner.inflight.len())
        };
        if let Some(p) = inner.persist.as_mut()
            && let Some(ticket) = p.held
        {
            if !p.store.is_done(ticket) {
                return Some(ticket);
            }
            p.held = None;
        }
        // After the wait above: what it carries (acknowledged deliveries) must reach the store.
        let mut kept = inner.persist.as_mut().map(|p| p.kept());
        while inner.resend_next < inner.inflight.len().min(max_inflight) {
            let i = inner.resend_next;
            let (packet_id, f) = &mut inner.inflight[i];
            out.push(match f.state {
                OutState::AwaitPubComp => Outgoing::PubRel {
                    packet_id: *packet_id,
                },
                _ => Outgoing::Publish {
                    delivery: f.delivery.clone(),
                    packet_id: *packet_id,
                    dup: std::mem::replace(&mut f.sent, true),
                },
            });
            inner.resend_next += 1;
        }
        // Once a delivery waits for its packet id's commit, those after it wait too (in order).
        let mut holding = false;
        while let Some(front) = inner.queue.front() {
            if freed >= max_bytes {
                // More is waiting: the connection comes back for it once this is written.
                if let Some(link) = &inner.connection {
                    link.notify();
                }
                break;
            }
            // Expired messages (5.0 Message Expiry Interval) are dropped on the way out.
            if front.msg.expires_at.is_some()
                && front
                    .msg
                    .expired(*now.get_or_insert_with(crate::timer::wall_now))
            {
                let expired = inner.queue.pop_front_deferred(&mut freed);
                if let (Some(kept), Some(d)) = (&mut kept, expired) {
                    kept.dropped(d);
                }
                continue;
            }
            let qos = front.qos;
            if holding && qos == QoS::AtMostOnce {
                break;
            }
            if qos != QoS::AtMostOnce && inner.inflight.len() >= max_inflight {
                break;
            }
            let packet_id = match qos {
                QoS::AtMostOnce => 0,
                _ => match inner.free_packet_id() {
                    Some(id) => id,
                    None => break,
                },
            };
            let Some(delivery) = inner.queue.pop_front_deferred(&mut freed) else {
                break;
            };
            inner.taken = inner.taken.wrapping_add(1);
            if packet_id == 0 {
                out.push(Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup: false,
                });
                continue;
            }
            let state = if delivery.qos == QoS::AtLeastOnce {
                OutState::AwaitPubAck
            } else {
                OutState::AwaitPubRec
            };
            // A persistent session's QoS 2 message goes out once its packet id is committed:
            // a crash before would send it again after the restart under another id, which
            // the client would take for a new message.
            let kept_seq = kept.as_ref().map(|_| delivery.seq).filter(|&s| s != 0);
            holding |= kept_seq.is_some() && qos == QoS::ExactlyOnce;
            if let (Some(kept), Some(seq)) = (&mut kept, kept_seq) {
                kept.sent(seq, packet_id);
            }
            let sent = !holding;
            if sent {
                out.push(Outgoing::Publish {
                    delivery: delivery.clone(),
                    packet_id,
                    dup: false,
                });
            }
            inner.inflight.push_back((
                packet_id,
                Inflight {
                    delivery,
                    state,
                    sent,
                },
            ));
            if sent {
                // Only reached with every earlier in-flight message on the wire.
                inner.resend_next = inner.inflight.len();
            }
        }
        inner.queue.settle(freed);
        let ticket = kept.and_then(|kept| inner.keep(self.id, kept));
        if let (true, Some(p)) = (holding, inner.persist.as_mut()) {
            p.held = ticket;
            return ticket;
        }
        None
    }

    /// A PUBACK (or PUBCOMP) arrived: forget the message. False if the id was not in flight in the
    /// expected state.
    pub fn complete(&self, packet_id: u16, expected: OutState) -> bool {
        let mut inner = self.inner.lock();
        match inner
            .inflight
            .iter()
            .position(|(id, f)| *id == packet_id && f.state == expected)
        {
            Some(pos) => {
                let done = inner.inflight.remove(pos);
                if pos < inner.resend_next {
                    inner.resend_next -= 1;
                }
                if let Some((_, f)) = done {
                    inner.done_with(f.delivery);
                }
                true
            }
            None => false,
        }
    }

    /// A PUBREC arrived: the message moves to "PUBREL sent". False if unknown. For a
    /// persistent session, with the store's ticket the PUBREL waits for: a crash before that
    /// commit would send the PUBLISH again after the restart, and a client that has released
    /// the packet id takes it for a new message.
    pub fn received(&self, packet_id: u16) -> (bool, Option<crate::store::Ticket>) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        for (id, f) in inner.inflight.iter_mut() {
            if *id == packet_id && f.state != OutState::AwaitPubAck {
                f.state = OutState::AwaitPubComp;
                let mut ticket = None;
                if let Some(p) = inner.persist.as_mut()
                    && f.delivery.seq != 0
                {
                    ticket = Some(p.store.submit(crate::store::Op::Released {
                        id: self.id,
                        seq: f.delivery.seq,
                    }));
                    // Nor is this PUBREL re-sent (by a new connection) before.
                    p.held = p.held.max(ticket);
                }
                return (true, ticket);
            }
        }
        (false, None)
    }
}

impl SessionInner {
    /// The next packet id not currently in flight.
    pub(super) fn free_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|(used, _)| *used == id) {
                return Some(id);
            }
        }
        None
    }
}
