//! `GET /api/v1/events[?filter=F&filter=G]`: Server-Sent Events for the dashboard (viewer role).
//!
//! - `event: stats` every second: the `GET /api/v1/stats` body plus `"sample"`, the newest
//!   sample of `rates.rs` (whose tick makes this body once for every open stream).
//! - `event: client` when a connection comes (after its CONNACK) or goes:
//!   `{"event": "connected"|"disconnected", "clientid", "username", "ip_address", "listener",
//!   "proto_ver", "reason" (disconnected only), "at"}`, from the router's
//!   [`crate::router::clients::ClientEvents`] (a broadcast that costs nothing while no stream
//!   is open; a stream that falls more than 1024 events behind skips the oldest).
//! - With filters, `event: message` for each message routed to them, through a router
//!   *observer* (it never counts as a subscriber nor slows a publisher; its queue has its own
//!   bound and what it drops is counted). The observer has the caller's username, so the ACL
//!   applies as to an MQTT client of that name: a filter under which the caller may read
//!   nothing is refused (403) before the stream starts, and each message is checked for Read.
//!   Payloads over [`MAX_PAYLOAD`] bytes are cut (`"truncated": true`, `"size"`: the whole);
//!   valid UTF-8 is sent as text, anything else as base64. At most [`MAX_MESSAGES_PER_S`] a
//!   second per stream; the rest (and what the observer's queue dropped) are reported once a
//!   second as `event: dropped` `{"count"}`.
//! - A `: ping` comment every [`PING`] (proxies and the listener's 60 s idle timeout see
//!   traffic even if stats stopped).
//! - At most [`MAX_STREAMS`] open at once (503 beyond); every stream ends when the broker
//!   shuts down, so the graceful shutdown never waits for one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::api::rfc3339;
use super::auth::{Caller, Need};
use super::error::ApiError;
use crate::protocol::QoS;
use crate::router::clients::{ClientEvent, ClientEventReceiver};
use crate::router::subscriber::{Received, SubscribeError, SubscriberHandle, SubscriberOptions};

/// Streams open at once.
pub const MAX_STREAMS: usize = 64;
/// Filters one stream may ask for.
pub const MAX_FILTERS: usize = 16;
/// Payload bytes sent of each message.
pub const MAX_PAYLOAD: usize = 1024;
/// Messages sent per second per stream.
pub const MAX_MESSAGES_PER_S: u32 = 100;
/// Keep-alive comment interval.
pub const PING: Duration = Duration::from_secs(15);
/// Messages and bytes the live view's observer queue holds before it drops.
const QUEUED: usize = 1000;
const QUEUED_BYTES: usize = 4 << 20;

/// `GET /api/v1/events`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    let Query(pairs) = query?;
    let mut filters = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "filter" => filters.push(value),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {:?} (only filter)",
                    crate::protocol::text::cut(&key)
                )));
            }
        }
    }
    if filters.len() > MAX_FILTERS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_FILTERS} filters"
        )));
    }
    let ctx = &state.ctx;
    if ctx.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("the broker is shutting down"));
    }
    let permit = state.web.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!("{MAX_STREAMS} event streams are open already"))
    })?;
    let messages = match filters.is_empty() {
        true => None,
        false => Some(observe(&state, &caller, &filters)?),
    };
    let mut ping = tokio::time::interval_at(Instant::now() + PING, PING);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let live = Live {
        caller: Recheck {
            state: state.clone(),
            token: super::auth::token_of(&state, &caller, &headers),
            caller,
        },
        shutdown: ctx.shutdown.clone(),
        stats: state.web.rates.watch_stats(),
        clients: ctx.router.client_events.subscribe(),
        messages,
        ping,
        window: Instant::now(),
        sent: 0,
        dropped: 0,
        observer_dropped: 0,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        let chunk = live.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), live))
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // nginx: pass each event on at once instead of buffering the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The observer for `filters`, as the caller (see the module doc).
fn observe(
    state: &AppState,
    caller: &Caller,
    filters: &[String],
) -> Result<SubscriberHandle, ApiError> {
    let ctx = &state.ctx;
    let name = caller
        .name
        .as_deref()
        .map_or_else(|| "http".to_owned(), |n| format!("http:{n}"));
    let options = SubscriberOptions {
        username: caller.name.as_deref().map(str::to_owned),
        ..SubscriberOptions::observer(&name, QUEUED, QUEUED_BYTES)
    };
    let mut handle = ctx.router.subscriber(options, Some(ctx.auth.clone()));
    for filter in filters {
        let shown = crate::protocol::text::cut(filter);
        if filter.starts_with("$share/") {
            // A member of a shared group takes messages away from the others: a live view
            // must only watch.
            return Err(ApiError::bad_request(format!(
                "filter {shown:?}: shared subscriptions cannot be watched (use the filter \
                 without $share/GROUP/)"
            )));
        }
        match handle.subscribe(filter, QoS::AtMostOnce) {
            Ok(_retained) => {}
            Err(SubscribeError::InvalidFilter(why)) => {
                return Err(ApiError::bad_request(format!("filter {shown:?}: {why}")));
            }
            Err(SubscribeError::NotAuthorized) => {
                return Err(ApiError::forbidden(format!(
                    "the ACL lets this caller read nothing under {shown:?}"
                )));
            }
        }
    }
    Ok(handle)
}

/// Whether the caller may still watch: checked each second, so a logout, or a reload that
/// removes the user, ends the stream as it ends other requests.
struct Recheck {
    state: Arc<AppState>,
    caller: Caller,
    /// The session cookie's token, or the API key (see [`super::auth::token_of`]).
    token: Option<zeroize::Zeroizing<String>>,
}

impl Recheck {
    fn still_allowed(&self) -> bool {
        super::auth::still_allowed(
            &self.state,
            &self.caller,
            self.token.as_deref().map(|t| t.as_str()),
        )
    }
}

/// One open stream.
struct Live {
    caller: Recheck,
    shutdown: CancellationToken,
    stats: watch::Receiver<Option<Arc<str>>>,
    clients: ClientEventReceiver,
    messages: Option<SubscriberHandle>,
    ping: Interval,
    /// The current second of the message rate limit, and what was sent in it.
    window: Instant,
    sent: u32,
    /// Messages left out since the last `dropped` event (rate limit, observer queue).
    dropped: u64,
    /// The observer's own drop count when last looked at.
    observer_dropped: u64,
    _permit: OwnedSemaphorePermit,
}

impl Live {
    /// The next chunk of the stream; None: it ends (shutdown).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                changed = self.stats.changed() => {
                    changed.ok()?;
                    if !self.caller.still_allowed() {
                        return None;
                    }
                    let data = self.stats.borrow_and_update().clone();
                    if let Some(data) = data {
                        let mut out = self.dropped_event();
                        out.push_str(&event("stats", &data));
                        return Some(out.into());
                    }
                }
                received = self.clients.rx.recv() => match received {
                    Ok(e) => return Some(client_event(&e).into()),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                received = recv(&mut self.messages) => match received {
                    Some(r) => {
                        if let Some(chunk) = self.message(&r) {
                            return Some(chunk.into());
                        }
                    }
                    None => self.messages = None,
                },
                _ = self.ping.tick() => return Some(Bytes::from_static(b": ping\n\n")),
            }
        }
    }

    /// The message's event, or None when over this second's allowance (counted).
    fn message(&mut self, r: &Received) -> Option<String> {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.sent = 0;
        }
        if self.sent >= MAX_MESSAGES_PER_S {
            self.dropped += 1;
            return None;
        }
        self.sent += 1;
        let msg = &r.msg;
        let (payload, payload_encoding, truncated) = payload_view(&msg.payload);
        let data = MessageData {
            topic: &msg.topic,
            payload,
            payload_encoding,
            size: msg.payload.len(),
            truncated,
            qos: r.qos as u8,
            retain: r.retain,
            at: rfc3339(SystemTime::now()),
        };
        Some(event("message", &serde_json::to_string(&data).ok()?))
    }

    /// `event: dropped` if anything was left out since the last one, else nothing.
    fn dropped_event(&mut self) -> String {
        if let Some(h) = &self.messages {
            let total = h.dropped();
            self.dropped += total.saturating_sub(self.observer_dropped);
            self.observer_dropped = total;
        }
        if self.dropped == 0 {
            return String::new();
        }
        let count = std::mem::take(&mut self.dropped);
        event("dropped", &format!("{{\"count\":{count}}}"))
    }
}

async fn recv(handle: &mut Option<SubscriberHandle>) -> Option<Received> {
    match handle {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// One SSE event (`data` is compact JSON: no line breaks).
fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[derive(Serialize)]
struct ClientData<'a> {
    event: &'static str,
    clientid: &'a str,
    username: Option<&'a str>,
    ip_address: String,
    listener: &'a str,
    proto_ver: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    at: String,
}

fn client_event(e: &ClientEvent) -> String {
    let data = ClientData {
        event: if e.connected {
            "connected"
        } else {
            "disconnected"
        },
        clientid: &e.client_id,
        username: e.username.as_deref(),
        ip_address: e.peer.ip().to_string(),
        listener: &e.listener,
        proto_ver: e.protocol,
        reason: e.reason.as_deref(),
        at: rfc3339(e.at),
    };
    event("client", &serde_json::to_string(&data).unwrap_or_default())
}

#[derive(Serialize)]
struct MessageData<'a> {
    topic: &'a str,
    payload: String,
    payload_encoding: &'static str,
    size: usize,
    truncated: bool,
    qos: u8,
    retain: bool,
    at: String,
}

/// The first [`MAX_PAYLOAD`] bytes as text (`plain`, cut at a character boundary) when the
/// payload is UTF-8, else as base64; and whether it was cut.
pub fn payload_view(payload: &[u8]) -> (String, &'static str, bool) {
    let truncated = payload.len() > MAX_PAYLOAD;
    let shown = &payload[..payload.len().min(MAX_PAYLOAD)];
    match std::str::from_utf8(shown) {
        Ok(text) => (text.to_owned(), "plain", truncated),
        // Cut inside a character, and UTF-8 up to there: text, shortened to the boundary.
        Err(e) if truncated && e.error_len().is_none() => (
            String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned(),
            "plain",
            true,
        ),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(shown),
            "base64",
            truncated,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_cut_at_a_character_boundary_or_sent_as_base64() {
        assert_eq!(payload_view(b"hi"), ("hi".into(), "plain", false));
        let long = "é".repeat(600); // 1200 bytes; byte 1024 is a character boundary
        let (text, enc, cut) = payload_view(long.as_bytes());
        assert_eq!((text.len(), enc, cut), (1024, "plain", true));
        let odd = format!("a{long}"); // byte 1024 falls inside a character
        let (text, enc, cut) = payload_view(odd.as_bytes());
        assert_eq!((text.len(), enc, cut), (1023, "plain", true));
        let (b64, enc, cut) = payload_view(&[0xff, 0, 1]);
        assert_eq!((b64.as_str(), enc, cut), ("/wAB", "base64", false));
    }
}
