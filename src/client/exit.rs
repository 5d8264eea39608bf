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
        let will = self.will.take().filter(|_| publish_will);
        if let Some(will) = will {
            self.publish_will(*will);
        }
        self.ctx
            .router
            .detach(&self.attached.session, self.attached.link.id());
    }

    /// Publishes the will through the ingress (as the client: its ACL applies) now, or after its
    /// Will Delay Interval (or when the session ends, if sooner: it expires or a Clean Start
    /// replaces it) unless the client has come back by then.
    pub(super) fn publish_will(&self, will: LastWill) {
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.will_delay_interval)
            .unwrap_or(0);
        let mut msg = Message::new(will.topic, will.payload, will.qos, will.retain)
            .with_properties(will.properties);
        if let Some(p) = msg.properties.as_deref_mut() {
            p.will_delay_interval = None;
        }
        let ingress = self.ctx.ingress.clone();
        let mut publisher = self.publisher.clone();
        publisher.source = Source::Will;
        let wait = delay.min(self.expiry);
        if wait == 0 {
            debug!(client_id = %text::cut(self.client_id()), topic = %text::cut(&msg.topic),
                "publishing will");
            ingress.publish_now(&mut publisher, msg);
            return;
        }
        let session = self.attached.session.clone();
        // This connection's attach number, not the session's current one: after a takeover the
        // new connection has already attached, and must cancel the will too (MQTT-3.1.3-9).
        let attach_count = self.attached.attach_count;
        // Due when the delay runs out or the session ends, whichever is first (3.1.3.2.2): the
        // router makes it due at once if the session ends first.
        let at = timer::wall_after(Duration::from_secs(u64::from(wait)));
        let router = &self.ctx.router;
        let target = session.clone();
        let key = router.timer().schedule(timer::instant_at(at), move || {
            if target.attach_count() == attach_count {
                ingress.publish_now(&mut publisher, msg);
            }
        });
        router.set_will_timer(&session, at, key);
    }
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
