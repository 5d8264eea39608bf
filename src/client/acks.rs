//! Acknowledgements that wait for the store (see [`crate::store`]): the PUBACK or PUBREC of a
//! message the store keeps (retained, or queued for a persistent session) is sent once the store
//! has committed it, and every later PUBACK, PUBREC or SUBACK waits behind it, so they still
//! leave in the order of their packets (MQTT-4.6.0-2, MQTT-4.6.0-3). A persistent session's
//! SUBACK waits for its subscription's commit, and the retained messages it brings follow it.
//! A change the store could not commit is refused: 5.0 with reason 0x80 in the ack, 3.1.1
//! (whose acks carry no failure) by closing the connection, so the client sends it again; a
//! SUBACK that cannot be kept closes the connection too.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Connection;
use crate::protocol::{Packet, PubAckReason};
use crate::router::state::Delivery;
use crate::store::{NotCommitted, Store, Ticket};

use super::Client;
use super::exit::Exit;

/// Acks not sent yet, in order.
#[derive(Debug, Default)]
pub(super) struct Waiting(VecDeque<Pending>);

#[derive(Debug)]
struct Pending {
    /// What it waits for (None: only for the acks before it).
    ticket: Option<Ticket>,
    /// It waits for its batch's ticket too, not known before the batch is flushed (see
    /// [`Waiting::seal`]).
    batch: bool,
    ack: Packet,
    /// Queued for the client once the ack is sent (a SUBACK's retained messages).
    then: Vec<Delivery>,
}

impl Waiting {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The batch was flushed: the acks that wait for its ticket now know it.
    pub(super) fn seal(&mut self, ticket: Option<Ticket>) {
        for p in self.0.iter_mut().filter(|p| p.batch) {
            p.batch = false;
            p.ticket = p.ticket.max(ticket);
        }
    }
}

impl Client {
    /// Sends `ack` (a PUBACK or PUBREC) now, or once `commit` (and, with `batch`, the batch's
    /// ticket) and every ack before it are done.
    pub(super) fn acknowledge<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        ack: Packet,
        (commit, batch): (Option<Ticket>, bool),
        waiting: &mut Waiting,
    ) {
        self.acknowledge_then(conn, ack, (commit, batch), Vec::new(), waiting);
    }

    /// As [`Client::acknowledge`], then queues `then` for the client.
    pub(super) fn acknowledge_then<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        ack: Packet,
        (ticket, batch): (Option<Ticket>, bool),
        then: Vec<Delivery>,
        waiting: &mut Waiting,
    ) {
        if ticket.is_none() && !batch && waiting.is_empty() {
            self.reply(conn, ack);
            self.queue_all(then);
        } else {
            waiting.0.push_back(Pending {
                ticket,
                batch,
                ack,
                then,
            });
        }
    }

    fn queue_all(&self, then: Vec<Delivery>) {
        for d in then {
            self.ctx.router.enqueue(self.session(), d);
        }
    }

    /// The store and the ticket the first waiting ack waits for, if any.
    pub(super) fn awaited(&self, waiting: &Waiting) -> Option<(Arc<Store>, Ticket)> {
        let ticket = waiting.0.iter().find_map(|p| p.ticket)?;
        let store = self.ctx.router.store()?.clone();
        Some((store, ticket))
    }

    /// Sends every waiting ack whose change is committed, in order, up to the first one still
    /// waiting. `Some`: the connection must close (a 3.1.1 client's change was not committed).
    pub(super) fn release<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        waiting: &mut Waiting,
    ) -> Option<Exit> {
        let store = self.ctx.router.store().cloned();
        while let Some(front) = waiting.0.front() {
            if front.batch {
                break;
            }
            let outcome = match (front.ticket, &store) {
                (None, _) | (_, None) => Ok(()),
                (Some(t), Some(store)) => match store.outcome(t) {
                    Some(outcome) => outcome,
                    None => break,
                },
            };
            let Some(Pending { ack, then, .. }) = waiting.0.pop_front() else {
                break;
            };
            match outcome {
                Ok(()) => {
                    self.reply(conn, ack);
                    self.queue_all(then);
                }
                Err(NotCommitted) => {
                    if let Some(exit) = self.not_committed(conn, ack) {
                        return Some(exit);
                    }
                }
            }
        }
        None
    }

    /// Refuses the message `ack` would have acknowledged.
    fn not_committed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        ack: Packet,
    ) -> Option<Exit> {
        const WHY: &str = "the broker could not store the message";
        match ack {
            Packet::SubAck(_) => {
                return Some(Exit::Abnormal {
                    why: "the broker could not store the subscription; closing so that the client subscribes again".into(),
                    reason: Some(crate::protocol::DisconnectReason::UnspecifiedError),
                });
            }
            Packet::PubRel(_) => {
                return Some(Exit::Abnormal {
                    why: "the broker could not store the delivery's state; closing".into(),
                    reason: Some(crate::protocol::DisconnectReason::UnspecifiedError),
                });
            }
            _ => {}
        }
        if !self.v5 {
            return Some(Exit::Abnormal {
                why: format!("{WHY}; closing so that the client sends it again"),
                reason: None,
            });
        }
        let refused = match ack {
            Packet::PubAck(a) => {
                Packet::PubAck(self.ack(a.packet_id, PubAckReason::UnspecifiedError, WHY))
            }
            Packet::PubRec(a) => {
                // A PUBREC with an error code ends the exchange: no PUBREL will come.
                if self.session().qos2_remove(a.packet_id) {
                    self.awaiting_pubrel = self.awaiting_pubrel.saturating_sub(1);
                }
                Packet::PubRec(self.ack(a.packet_id, PubAckReason::UnspecifiedError, WHY))
            }
            other => other,
        };
        self.reply(conn, refused);
        None
    }
}
