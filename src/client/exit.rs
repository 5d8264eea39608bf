//! The end of a connection: why the packet loop ended ([`Exit`]), the 5.0 DISCONNECT that tells the
//! client, the will (now or after its Will Delay Interval) and detaching from the router.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::connection::Connection;
use crate::ingress::Source;
use crate::protocol::{Disconnect, DisconnectReason, LastWill, Packet, text};
use crate::router::Message;
use crate::router::clients::ClientEvent;
use crate::timer;

use super::{Client, reason_string};

/// How long a connection the broker closes reads what its client still sends (see
/// [`Connection::linger`]).
const LINGER: Duration = Duration::from_secs(1);

/// Why the packet loop ended.
#[derive(Debug)]
pub(super) enum Exit {
    /// The client sent DISCONNECT; `will`: with reason 0x04 ("disconnect with will message").
    Disconnected { will: bool },
    /// The broker is shutting down: no will (there is nobody left to receive it).
    Shutdown,
    /// Everything else publishes the will. `reason`: the 5.0 DISCONNECT reason to send, if the
    /// connection is still usable.
    Abnormal {
        why: String,
        reason: Option<DisconnectReason>,
    },
    /// Not an end: the connection is idle and may be parked (see [`crate::park`]).
    Idle { deadline: Option<Instant> },
}

impl Exit {
    pub(super) fn protocol(why: impl Into<String>, reason: DisconnectReason) -> Exit {
        Exit::Abnormal {
            why: why.into(),
            reason: Some(reason),
        }
    }
}

impl Client {
    /// After the loop: tell a 5.0 client why, publish the will unless the client said a normal
    /// DISCONNECT, and detach from the router.
    pub(super) async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        exit: Exit,
    ) {
        let (reason, why, publish_will) = exit_reason(&exit);
        if let (Some(reason), true) = (reason, self.v5) {
            let properties = Some(reason_string(&why));
            // Too large for the client even without its Reason String: it goes unsent, and
            // the connection closes all the same.
            let _ = conn.queue(&Packet::Disconnect(Disconnect { reason, properties }));
        }
        let closed = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
        self.end(&why, publish_will);
        // Closed by the broker (not at shutdown, which must not wait): the client may still be
        // sending; let it read the DISCONNECT before the socket goes.
        if matches!(exit, Exit::Abnormal { .. }) && matches!(closed, Ok(Ok(()))) {
            conn.linger(LINGER).await;
        }
    }

    /// The end of a connection whose socket is gone (see [`Client::end`]).
    pub(super) fn close(&mut self, exit: Exit) {
        let (_, why, publish_will) = exit_reason(&exit);
        self.end(&why, publish_will);
    }

    /// Logs why the connection ended, publishes the will unless the client said a normal
    /// DISCONNECT, and detaches from the router.
    pub(super) fn end(&mut self, why: &str, publish_will: bool) {
        info!(client_id = %text::cut(self.client_id()), "{why}");
        if let Some(info) = self.attached.link.info() {
            self.ctx.router.client_events.emit(|| ClientEvent {
                connected: false,
                client_id: self.attached.session.client_id.clone(),
                username: self.publisher.username.clone(),
                peer: info.peer,
                listener: info.listener.clone(),
                protocol: info.protocol,
                reason: Some(why.to_owned()),
                at: std::time::SystemTime::now(),
            });
        }
        let will = self.will.take().filter(|_| publish_will);
        match will {
            Some(will) => self.publish_will(*will),
            // Not due: the store forgets it (a persistent session keeps its will while
            // connected, so that a broker crash does not lose it).
            None => self
                .attached
                .session
                .will_due(self.attached.attach_count, None),
        }
        self.ctx
            .router
            .detach(&self.attached.session, self.attached.link.id());
    }

    /// Publishes the will through the ingress (as the client: its ACL applies) now, or after its
    /// Will Delay Interval (or when the session ends, if sooner: it expires or a Clean Start
    /// replaces it) unless the client has come back by then.
    pub(super) fn publish_will(&self, will: LastWill) {
        let (msg, delay) = Message::from_will(&will);
        let ingress = self.ctx.ingress.clone();
        let mut publisher = self.publisher.clone();
        publisher.source = Source::Will;
        let wait = delay.min(self.expiry);
        let session = self.attached.session.clone();
        let attach_count = self.attached.attach_count;
        if wait == 0 {
            session.will_due(attach_count, None);
            debug!(client_id = %text::cut(self.client_id()), topic = %text::cut(&msg.topic),
                "publishing will");
            ingress.publish_now(&mut publisher, msg);
            return;
        }
        // This connection's attach number, not the session's current one: after a takeover the
        // new connection has already attached, and must cancel the will too (MQTT-3.1.3-9).
        // Due when the delay runs out or the session ends, whichever is first (3.1.3.2.2): the
        // router makes it due at once if the session ends first.
        let at = timer::wall_after(Duration::from_secs(u64::from(wait)));
        session.will_due(attach_count, Some((&will, at)));
        let router = &self.ctx.router;
        let target = session.clone();
        let key = router.timer().schedule(timer::instant_at(at), move || {
            if target.attach_count() == attach_count {
                ingress.publish_now(&mut publisher, msg);
                target.will_due(attach_count, None);
            }
        });
        router.set_will_timer(&session, at, key);
    }
}

/// Start-up: schedules the will a persistent session's connection left when the broker stopped
/// (see [`crate::store::StoredWill`]), as `Client::publish_will` would have: due at its stored
/// deadline, or its delay after the restart if the connection was still there (the restart
/// ended it without a DISCONNECT), or when the session ends; cancelled if the client returns.
pub fn restore_will(
    ingress: &std::sync::Arc<crate::ingress::Ingress>,
    session: &std::sync::Arc<crate::router::state::SessionState>,
    will: crate::store::StoredWill,
) {
    let router = ingress.router();
    let (client_id, username) = (session.client_id.clone(), session.username());
    let mut publisher = ingress.publisher(client_id, username, Source::Will);
    publisher.session_id = session.id;
    let expiry = session.expiry();
    let at = will.at.unwrap_or_else(|| {
        timer::wall_after(Duration::from_secs(u64::from(will.delay.min(expiry))))
    });
    // Its Message Expiry Interval counts from now, as for a will of a live connection.
    let mut msg = will.message;
    let properties = msg.properties.take();
    let msg = msg.with_properties(properties);
    let attach_count = session.attach_count();
    let (ingress, target) = (ingress.clone(), session.clone());
    let key = router.timer().schedule(timer::instant_at(at), move || {
        if target.attach_count() == attach_count {
            ingress.publish_now(&mut publisher, msg);
            target.will_due(attach_count, None);
        }
    });
    router.set_will_timer(session, at, key);
}

/// The 5.0 DISCONNECT reason to send (if any), the log line, and whether the will is due.
pub(super) fn exit_reason(exit: &Exit) -> (Option<DisconnectReason>, String, bool) {
    match exit {
        Exit::Disconnected { will } => (None, "disconnected".to_owned(), *will),
        Exit::Shutdown => (
            Some(DisconnectReason::ServerShuttingDown),
            "broker shutting down".into(),
            false,
        ),
        Exit::Abnormal { why, reason } => (*reason, format!("connection lost: {why}"), true),
        Exit::Idle { .. } => (None, "idle".into(), false),
    }
}
