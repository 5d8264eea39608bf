//! Acknowledgements that wait for the store (see [`crate::store`]): the PUBACK or PUBREC of a
//! message the store keeps is sent once the store has committed it, and every later PUBACK or
//! PUBREC waits behind it, so they still leave in the order of their PUBLISHes (MQTT-4.6.0-2,
//! MQTT-4.6.0-3). A change the store could not commit is refused: 5.0 with reason 0x80 in the
//! ack, 3.1.1 (whose acks carry no failure) by closing the connection, so the client sends it
//! again.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Connection;
use crate::protocol::{Packet, PubAckReason};
use crate::store::{NotCommitted, Store, Ticket};

use super::Client;
use super::exit::Exit;

/// Acks not sent yet, in order; `None`: one that waits only for those before it.
#[derive(Debug, Default)]
pub(super) struct Waiting(VecDeque<(Option<Ticket>, Packet)>);

impl Waiting {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Client {
    /// Sends `ack` (a PUBACK or PUBREC) now, or once `commit` and every ack before it are done.
    pub(super) fn acknowledge<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        ack: Packet,
        commit: Option<Ticket>,
        waiting: &mut Waiting,
    ) {
        if commit.is_none() && waiting.is_empty() {
            self.reply(conn, ack);
        } else {
            waiting.0.push_back((commit, ack));
        }
    }

    /// The store and the ticket the first waiting ack waits for, if any.
    pub(super) fn awaited(&self, waiting: &Waiting) -> Option<(Arc<Store>, Ticket)> {
        let ticket = waiting.0.iter().find_map(|(t, _)| *t)?;
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
        while let Some((ticket, _)) = waiting.0.front() {
            let outcome = match (ticket, &store) {
                (None, _) | (_, None) => Ok(()),
                (Some(t), Some(store)) => match store.outcome(*t) {
                    Some(outcome) => outcome,
                    None => break,
                },
            };
            let Some((_, ack)) = waiting.0.pop_front() else {
                break;
            };
            match outcome {
                Ok(()) => self.reply(conn, ack),
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
