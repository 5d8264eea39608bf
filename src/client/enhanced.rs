//! MQTT 5.0 enhanced authentication (section 4.12): the exchange during CONNECT and
//! re-authentication of a connected client.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use bytes::Bytes;

use crate::auth::enhanced::{AuthExchange, AuthMethod, AuthStep};
use crate::auth::{Auth, AuthOutcome, LoginAttempt};
use crate::connection::{Connection, ReadError};
use crate::protocol::{
    Auth as AuthPacket, AuthReason, ConnAckReason, DisconnectReason, Packet, Properties, text,
};
use crate::stats::{AuthFailure, Limit};

use super::exit::Exit;
use super::{Client, Context, Peer, Step, refusal};

/// What a client whose re-authentication failed is told (the cause only goes to the log).
const REAUTH_FAILED: &str = "re-authentication failed";

/// Most AUTH round trips one enhanced login may take (SCRAM needs one).
pub(super) const MAX_AUTH_ROUNDS: usize = 4;

/// Runs an enhanced authentication exchange during CONNECT (MQTT 5.0 section 4.12): each
/// [`AuthStep::Continue`] goes out as AUTH 0x18 and the client must answer with AUTH 0x18 naming
/// the same method within `connect_timeout`. Anything else is a protocol error, answered with
/// CONNACK 0x82 (a DISCONNECT may not precede the CONNACK, MQTT-3.14.0-1). A failed exchange gets
/// CONNACK 0x87 whatever the cause (wrong proof, unknown user, malformed message, username
/// back-off), so the client learns nothing more than "no". The verdict goes through the password
/// back-off rules ([`crate::auth::LoginAttempt`]): it waits for a turn of the client's address
/// (0x88 if that would take longer than `backoff_max`) and is recorded.
///
/// `None`: refused or gone (CONNACK already written where one is due); else the authenticated
/// user and the Authentication Data for the CONNACK.
pub(super) async fn enhanced_login<S>(
    conn: &mut Connection<S>,
    method: &dyn AuthMethod,
    props: &Properties,
    peer: &Peer,
    ctx: &Context,
    auth: &Auth,
) -> Option<(String, Option<Vec<u8>>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ip = peer.addr.ip();
    let name = method.name();
    let not_authorised = refusal(true, ConnAckReason::NotAuthorized, "not authorised");
    let mut attempt = auth.login_attempt(ip);
    let mut exchange = method.start();
    let mut data = props.authentication_data.clone();
    let mut rounds = 0;
    loop {
        let step = exchange.step(data.as_deref());
        let claimed = exchange.username().unwrap_or_default();
        let verdict = !matches!(step, AuthStep::Continue(_)) || rounds == MAX_AUTH_ROUNDS;
        if verdict {
            let proceed = tokio::select! {
                _ = ctx.shutdown.cancelled() => return None,
                proceed = attempt.proceed(claimed) => proceed,
            };
            if let Err(outcome) = proceed {
                let packet = match outcome {
                    AuthOutcome::Unavailable => {
                        ctx.router.stats.auth_failed(AuthFailure::ServerBusy);
                        refusal(
                            true,
                            ConnAckReason::ServerUnavailable,
                            "server busy: retry later",
                        )
                    }
                    _ => {
                        ctx.router.stats.auth_failed(AuthFailure::NotAuthorized);
                        not_authorised
                    }
                };
                let _ = conn.write_packet(&packet).await;
                return None;
            }
        }
        match step {
            AuthStep::Success { username, data } => {
                attempt.succeeded(&username);
                ctx.router.stats.auth_succeeded();
                return Some((username, data));
            }
            AuthStep::Fail(why) => {
                attempt.failed(claimed);
                ctx.router.stats.auth_failed(AuthFailure::NotAuthorized);
                info!(%ip, method = name, user = %text::cut(claimed), "login failed: {why}");
                let _ = conn.write_packet(&not_authorised).await;
                return None;
            }
            AuthStep::Continue(_) if rounds == MAX_AUTH_ROUNDS => {
                attempt.failed(claimed);
                ctx.router.stats.auth_failed(AuthFailure::NotAuthorized);
                info!(%ip, method = name, user = %text::cut(claimed),
                    "login failed: too many AUTH rounds");
                let _ = conn.write_packet(&not_authorised).await;
                return None;
            }
            AuthStep::Continue(out) => {
                rounds += 1;
                let challenge = auth_packet(AuthReason::ContinueAuthentication, name, Some(out));
                let limit = ctx.limits.connect_timeout;
                match tokio::time::timeout(limit, conn.write_packet(&challenge)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(%ip, "AUTH write failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        debug!(%ip, "AUTH write stalled for {limit:?}; closing");
                        return None;
                    }
                }
                match read_auth(conn, name, ctx).await {
                    Ok(next) => data = next,
                    Err(AuthReadError::Gone(why)) => {
                        info!(%ip, method = name, "authentication abandoned: {why}");
                        return None;
                    }
                    Err(AuthReadError::Refuse(code, why)) => {
                        info!(%ip, method = name, "refused during authentication: {why}");
                        let _ = conn.write_packet(&refusal(true, code, &why)).await;
                        return None;
                    }
                }
            }
        }
    }
}

/// An AUTH packet (5.0) with this reason, method and data.
pub(super) fn auth_packet(reason: AuthReason, method: &str, data: Option<Vec<u8>>) -> Packet {
    Packet::Auth(AuthPacket {
        reason,
        properties: Some(Box::new(Properties {
            authentication_method: Some(method.to_owned()),
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        })),
    })
}

/// Why no usable AUTH arrived during CONNECT.
pub(super) enum AuthReadError {
    /// Closed, timed out, unreadable, or shutdown: nothing more to send.
    Gone(String),
    /// Answer with CONNACK carrying this reason code, then close.
    Refuse(ConnAckReason, String),
}

/// The client's next AUTH 0x18 with the same method, within `connect_timeout`; its data.
pub(super) async fn read_auth<S>(
    conn: &mut Connection<S>,
    method: &str,
    ctx: &Context,
) -> Result<Option<Bytes>, AuthReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = ctx.limits.connect_timeout;
    let read = tokio::select! {
        _ = ctx.shutdown.cancelled() => {
            return Err(AuthReadError::Gone("broker shutting down".into()));
        }
        res = tokio::time::timeout(limit, conn.read_packet()) => res,
    };
    let auth = match read {
        Err(_) => {
            ctx.router.stats.limit_hit(Limit::ConnectTimeout);
            let why = format!("no AUTH within {limit:?} (limits.connect_timeout)");
            return Err(AuthReadError::Gone(why));
        }
        Ok(Ok(None)) => return Err(AuthReadError::Gone("connection closed".into())),
        Ok(Err(ReadError::Decode(e))) => {
            return Err(AuthReadError::Refuse(e.connack_reason(), e.to_string()));
        }
        Ok(Err(e)) => return Err(AuthReadError::Gone(e.to_string())),
        Ok(Ok(Some(Packet::Auth(a)))) => a,
        Ok(Ok(Some(other))) => {
            let why = format!("{} before the authentication finished", other.name());
            return Err(AuthReadError::Refuse(ConnAckReason::ProtocolError, why));
        }
    };
    if auth.reason != AuthReason::ContinueAuthentication {
        let why = format!(
            "AUTH with reason {} during CONNECT; expected 0x18 (section 4.12)",
            auth.reason
        );
        return Err(AuthReadError::Refuse(ConnAckReason::ProtocolError, why));
    }
    let props = auth.properties.map(|p| *p).unwrap_or_default();
    if props.authentication_method.as_deref() != Some(method) {
        let why = "AUTH with another authentication method than CONNECT's (MQTT-4.12.0-5)";
        return Err(AuthReadError::Refuse(
            ConnAckReason::ProtocolError,
            why.into(),
        ));
    }
    Ok(props.authentication_data)
}

/// Re-authentication state of a client that logged in with enhanced authentication.
pub(super) struct Reauth {
    /// The method it logged in with, the only one it may re-authenticate with.
    pub(super) method: &'static str,
    /// The client's address, for the back-off accounting of re-authentications.
    pub(super) ip: std::net::IpAddr,
    /// An exchange in progress, and its AUTH round trips so far.
    pub(super) ongoing: Option<(Box<dyn AuthExchange>, usize)>,
}

impl Client {
    /// Re-authentication (MQTT 5.0 section 4.12.1): AUTH 0x19 with the CONNECT's method starts a
    /// new exchange, answered with AUTH 0x18 per step and AUTH 0x00 on success; the client keeps
    /// its old authentication meanwhile (its keep alive bounds a stalled exchange). It must prove
    /// the same identity: failure, or another user, ends the connection with DISCONNECT 0x87.
    /// The method is taken from the current `Auth`, so a reload's credentials apply.
    pub(super) fn on_auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        a: AuthPacket,
    ) -> Step {
        let Some(name) = self.reauth.as_ref().map(|r| r.method) else {
            let why = "AUTH without an authentication method in CONNECT (MQTT-4.12.0-1)";
            return Step::Exit(Exit::protocol(why, DisconnectReason::ProtocolError));
        };
        let props = a.properties.map(|p| *p).unwrap_or_default();
        if props.authentication_method.as_deref() != Some(name) {
            let why = "AUTH with another authentication method than CONNECT's (section 4.12.1)";
            return Step::Exit(Exit::protocol(why, DisconnectReason::ProtocolError));
        }
        let (mut exchange, rounds) = match (
            a.reason,
            self.reauth.as_mut().and_then(|r| r.ongoing.take()),
        ) {
            (AuthReason::ReAuthenticate, None) => match self.acl().enhanced(name) {
                Some(method) => (method.start(), 0),
                None => return self.reauth_failed("", "method no longer offered after a reload"),
            },
            (AuthReason::ContinueAuthentication, Some(ongoing)) => ongoing,
            (reason, _) => {
                let why = format!("AUTH with reason {reason} out of sequence");
                return Step::Exit(Exit::protocol(why, DisconnectReason::ProtocolError));
            }
        };
        let step = exchange.step(props.authentication_data.as_deref());
        let claimed = exchange.username().unwrap_or_default().to_owned();
        let verdict = !matches!(step, AuthStep::Continue(_)) || rounds == MAX_AUTH_ROUNDS;
        // No waiting for the address's turn here (this runs inside the packet loop): a
        // re-authentication needs a connection that already logged in, each failure closes it,
        // and every client learns the same "re-authentication failed" (see `reauth_failed`).
        if verdict
            && self
                .login_attempt()
                .is_some_and(|a| a.may_proceed_now(&claimed).is_err())
        {
            let why = format!(
                "re-authentication failed: \"{}\" is backing off",
                text::cut(&claimed)
            );
            info!(client_id = %text::cut(self.client_id()), "{why}");
            return Step::Exit(Exit::protocol(
                REAUTH_FAILED,
                DisconnectReason::NotAuthorized,
            ));
        }
        match step {
            AuthStep::Continue(_) if rounds == MAX_AUTH_ROUNDS => {
                self.reauth_failed(&claimed, "too many AUTH rounds")
            }
            AuthStep::Continue(out) => {
                let packet = auth_packet(AuthReason::ContinueAuthentication, name, Some(out));
                self.reply(conn, packet);
                if let Some(r) = self.reauth.as_mut() {
                    r.ongoing = Some((exchange, rounds + 1));
                }
                Step::Continue
            }
            AuthStep::Success { username, .. }
                if Some(&username) != self.publisher.username.as_ref() =>
            {
                self.reauth_failed(&username, "proved another identity than the connection's")
            }
            AuthStep::Success { username, data } => {
                if let Some(attempt) = self.login_attempt() {
                    attempt.succeeded(&username);
                }
                debug!(client_id = %text::cut(self.client_id()), user = %text::cut(&username),
                    "re-authenticated");
                self.reply(conn, auth_packet(AuthReason::Success, name, data));
                Step::Continue
            }
            AuthStep::Fail(why) => self.reauth_failed(&claimed, why),
        }
    }

    /// Counts a failed re-authentication for the back-off and ends the connection (DISCONNECT
    /// 0x87, section 4.12.1). The client is told only [`REAUTH_FAILED`], whatever the cause: a
    /// different text for "right proof, another identity" would tell it whether a guessed
    /// password for that other user was right. The cause is logged.
    pub(super) fn reauth_failed(&mut self, claimed: &str, why: &str) -> Step {
        info!(client_id = %text::cut(self.client_id()), user = %text::cut(claimed),
            "re-authentication failed: {why}");
        if let Some(attempt) = self.login_attempt() {
            attempt.failed(claimed);
        }
        Step::Exit(Exit::protocol(
            REAUTH_FAILED,
            DisconnectReason::NotAuthorized,
        ))
    }

    /// A back-off handle for this client's address under the current `Auth`.
    /// (`None` for a client that did not log in with enhanced authentication.)
    fn login_attempt(&mut self) -> Option<LoginAttempt> {
        let ip = self.reauth.as_ref()?.ip;
        // `acl()` refreshes the snapshot after a reload.
        Some(self.acl().login_attempt(ip))
    }
}
