//! CONNECT -> client id -> authentication -> attach -> CONNACK.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use bytes::Bytes;

use crate::auth::{Auth, AuthOutcome, Credentials};
use crate::connection::Connection;
use crate::ingress::{Publisher, Source};
use crate::protocol::{ConnAck, ConnAckReason, Connect, Packet, Properties, text};
use crate::router::clients::ClientEvent;
use crate::stats::{AuthFailure, Limit};

use super::alias::Aliases;
use super::enhanced::{Reauth, enhanced_login};
use super::run::RateLimit;
use super::{Client, Context, Peer, refusal};

/// The largest Maximum Packet Size the encoding allows (MQTT 5.0 section 3.2.2.3.6).
pub(super) const MAX_ANNOUNCED_PACKET_SIZE: usize = 268_435_455;

/// CONNECT -> client id -> auth -> attach -> CONNACK. `None`: refused (CONNACK already written).
pub(super) async fn admit<S>(
    conn: &mut Connection<S>,
    connect: Connect,
    peer: &Peer,
    ctx: &Arc<Context>,
) -> Option<Client>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let v5 = connect.protocol.is_v5();
    let props = connect.properties.as_deref().cloned().unwrap_or_default();
    // Everything from the CONNACK on fits the client's Maximum Packet Size, or is not sent
    // (MQTT-3.1.2-24, MQTT-3.1.2-25).
    conn.set_peer_max_packet_size(props.maximum_packet_size);
    // Generation and auth together: a reload from here on is picked up at the first ACL check.
    let snapshot = ctx.auth.snapshot();
    let auth = snapshot.auth().clone();
    // Enhanced authentication (5.0 only: 3.1.1 has no properties). Not on listeners that take
    // the identity from the client certificate, which would override the authenticated name.
    let method = match props.authentication_method.as_deref() {
        None => None,
        Some(name) => match auth.enhanced(name).filter(|_| peer.cert_identity.is_none()) {
            Some(method) => Some(method),
            None => {
                let why = format!(
                    "authentication method \"{}\" is not supported",
                    text::cut(name)
                );
                info!(peer = %peer.addr, client_id = %text::cut(&connect.client_id),
                    "refused: {why}");
                let packet = refusal(v5, ConnAckReason::BadAuthenticationMethod, &why);
                let _ = conn.write_packet(&packet).await;
                return None;
            }
        },
    };
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        if !connect.clean_start && !v5 {
            let why = "empty client id without clean session (MQTT-3.1.3-8)";
            info!(peer = %peer.addr, "refused: {why}");
            let packet = refusal(v5, ConnAckReason::ClientIdentifierNotValid, why);
            let _ = conn.write_packet(&packet).await;
            return None;
        }
        client_id = format!("auto-{:016x}", rand::random::<u64>());
    }
    if client_id.len() > ctx.limits.max_client_id_length {
        ctx.router.stats.limit_hit(Limit::ClientIdLength);
        let why = format!(
            "client id of {} bytes exceeds limits.max_client_id_length ({})",
            client_id.len(),
            ctx.limits.max_client_id_length
        );
        info!(peer = %peer.addr, "refused: {why}");
        let packet = refusal(v5, ConnAckReason::ClientIdentifierNotValid, &why);
        let _ = conn.write_packet(&packet).await;
        return None;
    }
    if client_id.starts_with("$bridge/") {
        // A bridge's local session (gateway/bridge): a client taking it over would receive
        // what is bridged out.
        let why = "client ids beginning with $bridge/ are reserved for bridges";
        info!(peer = %peer.addr, client_id = %text::cut(&client_id), "refused: {why}");
        let packet = refusal(v5, ConnAckReason::ClientIdentifierNotValid, why);
        let _ = conn.write_packet(&packet).await;
        return None;
    }
    // With an Authentication Method, the exchange decides and User Name / Password are ignored.
    let (username, mut enhanced) = match &method {
        Some(method) => {
            let (user, data) =
                enhanced_login(conn, method.as_ref(), &props, peer, ctx, &auth).await?;
            (Some(user), Some((method.name(), data)))
        }
        None => (
            password_login(conn, &connect, &client_id, peer, ctx, &auth).await?,
            None,
        ),
    };

    // Session Expiry Interval: 3.1.1 clean session = 0 / persistent = forever.
    let expiry = match (v5, connect.clean_start) {
        (true, _) => props.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => u32::MAX,
    };
    let max_keepalive = ctx.limits.max_keepalive;
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if v5 && max_keepalive < u16::MAX && (keep_alive == 0 || keep_alive > max_keepalive) {
        keep_alive = max_keepalive;
        server_keep_alive = Some(max_keepalive);
    }
    let attached = ctx
        .router
        .attach(&client_id, connect.clean_start, expiry, username.clone());
    attached.link.describe(crate::router::clients::ConnInfo {
        peer: peer.addr,
        listener: peer.listener.clone(),
        protocol: connect.protocol.level(),
        keep_alive,
        clean_start: connect.clean_start,
        connected_at: std::time::SystemTime::now(),
        counters: Default::default(),
    });
    attached
        .session
        .keep_will(attached.attach_count, connect.will.as_ref());
    if deleted_meanwhile(ctx, snapshot.generation(), username.as_deref(), peer) {
        ctx.router.detach(&attached.session, attached.link.id());
        let why = "user deleted by a reload during the login";
        info!(client_id = %text::cut(&client_id), peer = %peer.addr,
            user = ?username.as_deref().map(text::cut), "refused: {why}");
        let packet = refusal(v5, ConnAckReason::NotAuthorized, "not authorised");
        let _ = conn.write_packet(&packet).await;
        return None;
    }
    let properties = v5.then(|| {
        let response_information = (props.request_response_information == Some(1))
            .then(|| format!("mqttd/response/{client_id}"));
        let max_packet = ctx.limits.max_packet_size.min(MAX_ANNOUNCED_PACKET_SIZE);
        Box::new(Properties {
            assigned_client_identifier: assigned.then(|| client_id.clone()),
            topic_alias_maximum: Some(ctx.limits.max_topic_alias),
            // 65535 is what its absence means.
            receive_maximum: Some(ctx.limits.max_inflight_in).filter(|&m| m != u16::MAX),
            maximum_packet_size: u32::try_from(max_packet).ok(),
            server_keep_alive,
            response_information,
            authentication_method: enhanced.as_ref().map(|(m, _)| (*m).to_owned()),
            authentication_data: enhanced
                .as_mut()
                .and_then(|(_, d)| d.take())
                .map(Bytes::from),
            ..Properties::default()
        })
    });
    let ack = ConnAck {
        session_present: attached.present,
        code: ConnAckReason::Success,
        properties,
    };
    if let Err(e) = conn.write_packet(&Packet::ConnAck(ack)).await {
        debug!(client_id = %text::cut(&client_id), "CONNACK write failed: {e}");
        ctx.router.detach(&attached.session, attached.link.id());
        return None;
    }
    info!(client_id = %text::cut(&client_id), peer = %peer.addr, listener = %peer.listener,
        user = ?username.as_deref().map(text::cut),
        version = ?connect.protocol, clean = connect.clean_start, resumed = attached.present,
        "connected");
    ctx.router.client_events.emit(|| ClientEvent {
        connected: true,
        client_id: attached.session.client_id.clone(),
        username: username.clone(),
        peer: peer.addr,
        listener: peer.listener.clone(),
        protocol: connect.protocol.level(),
        reason: None,
        at: std::time::SystemTime::now(),
    });
    let mut publisher = Publisher::new(
        attached.session.client_id.clone(),
        username,
        Source::Mqtt,
        snapshot,
    );
    publisher.session_id = attached.session.id;
    let receive_maximum = props
        .receive_maximum
        .map_or(usize::from(u16::MAX), usize::from);
    Some(Client {
        keep_alive,
        will: connect.will.map(Box::new),
        publisher,
        attached,
        ctx: ctx.clone(),
        v5,
        max_inflight: u16::try_from(ctx.limits.max_inflight.min(receive_maximum))
            .unwrap_or(u16::MAX),
        problem_info: props.request_problem_information != Some(0),
        aliases: Aliases::for_connection(
            props.topic_alias_maximum.unwrap_or(0),
            ctx.limits.outbound_topic_aliases,
        ),
        awaiting_pubrel: 0,
        expiry,
        rate: ctx
            .limits
            .max_publish_rate
            .map(|rate| Box::new(RateLimit::new(rate))),
        reauth: enhanced.map(|(method, _)| {
            Box::new(Reauth {
                method,
                ip: peer.addr.ip(),
                ongoing: None,
            })
        }),
    })
}

/// Did a reload delete `username` after this login took its auth snapshot (at `generation`)?
/// Checked after attaching: a reload installs the new password file, then kicks the deleted
/// users' sessions, so a login that attached after that kick sees the new generation here (the
/// router's lock orders the two) and must not stay. Certificate identities are not password users.
fn deleted_meanwhile(ctx: &Context, generation: u64, username: Option<&str>, peer: &Peer) -> bool {
    let Some(name) = username.filter(|_| peer.cert_identity.is_none()) else {
        return false;
    };
    ctx.auth.generation() != generation && !ctx.current_auth().keeps_user(name)
}

/// The CONNECT's User Name / Password (or certificate identity) checked by [`Auth::authenticate`].
/// `None`: refused (CONNACK already written); `Some(user)`: let in as `user` (None: anonymous).
pub(super) async fn password_login<S>(
    conn: &mut Connection<S>,
    connect: &Connect,
    client_id: &str,
    peer: &Peer,
    ctx: &Context,
    auth: &Auth,
) -> Option<Option<String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let v5 = connect.protocol.is_v5();
    let creds = Credentials {
        client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_ref(),
        peer: peer.addr,
        allow_anonymous: peer.allow_anonymous,
        cert_identity: peer.cert_identity.as_deref(),
    };
    // A login may wait up to `backoff_max` for its address's turn: not past shutdown.
    let outcome = tokio::select! {
        _ = ctx.shutdown.cancelled() => AuthOutcome::Unavailable,
        outcome = auth.authenticate(&creds) => outcome,
    };
    let stats = &ctx.router.stats;
    match outcome {
        AuthOutcome::Allowed { username } => {
            stats.auth_succeeded();
            Some(username)
        }
        outcome => {
            let (code, why, failure) = match outcome {
                AuthOutcome::BadCredentials => (
                    ConnAckReason::BadUsernameOrPassword,
                    "bad username or password",
                    AuthFailure::BadCredentials,
                ),
                AuthOutcome::Unavailable => (
                    ConnAckReason::ServerUnavailable,
                    "server busy: retry later",
                    AuthFailure::ServerBusy,
                ),
                _ => (
                    ConnAckReason::NotAuthorized,
                    "not authorised",
                    AuthFailure::NotAuthorized,
                ),
            };
            stats.auth_failed(failure);
            warn!(client_id = %text::cut(client_id), peer = %peer.addr,
                user = ?connect.username.as_deref().map(text::cut), "refused: {why}");
            let _ = conn.write_packet(&refusal(v5, code, why)).await;
            None
        }
    }
}
