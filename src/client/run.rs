//! The packet loop: races the socket, the outbox, keep alive, kicks and shutdown; reads are handled
//! in batches so their replies and deliveries leave in one write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::connection::{Connection, ReadError, Stream};
use crate::protocol::DisconnectReason;
use crate::protocol::{DecodeError, Packet};
use crate::router::clients::ConnCounters;
use crate::router::state::SessionState;
use crate::stats::Limit;

use super::Idle;
use super::exit::Exit;
use super::park::Start;
use super::{Client, Step};
use crate::park::Parker;
use crate::store::{Store, Ticket};

/// A connection quiet this long (nothing read, nothing to send) is parked (see [`crate::park`]).
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// A PUBLISH that ends a quiet spell this long lets packets that arrived before it on other
/// connections take effect first (see [`arrival_order`]). Long enough that a busy publisher
/// (whose client stalls for a millisecond now and then) never waits: at 1 ms the fan-in
/// benchmark lost 4%.
const QUIET: Duration = Duration::from_millis(10);

/// Packets handled from one read before the outbox gets its turn.
pub(super) const BATCH: usize = 256;

/// A token bucket: `rate` PUBLISHes per second, bursts of up to one second's worth.
pub(super) struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(super) fn new(rate: u32) -> Self {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// One PUBLISH arrived (the bucket may go negative: the debt is paid by pausing).
    pub(super) fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }

    /// How long to stop reading so the client is back within its rate.
    pub(super) fn pause(&mut self) -> Option<Duration> {
        self.refill();
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// Message bytes one batch routes at most (with [`BATCH`] packets): large messages reach their
/// subscribers, and congestion reaches their publishers, a few at a time.
const BATCH_BYTES: usize = 64 * 1024;

/// How long a publisher waits before looking again at the subscribers it congested.
const CONGESTION_PAUSE: Duration = Duration::from_millis(1);

/// What one read's packets leave to do after them: the messages they published, to hand to
/// subscribers through the ingress, and `$SYS` counts (shared by every connection: updated once
/// per batch).
#[derive(Default)]
pub(super) struct Batch {
    pub(super) ingress: crate::ingress::Batch,
    packets: u64,
    /// Subscribers to wait for (see [`Client::read_pause`]).
    waiting: Vec<Arc<SessionState>>,
    /// PUBACKs and PUBRECs waiting for the store (see [`super::acks`]). Here, with the packet
    /// loop, not in the client: a connection with acks waiting never parks, so a parked one
    /// pays nothing for them.
    pub(super) acks: super::acks::Waiting,
}

impl Client {
    /// How long to stop reading from this client: its publish rate, or the broker-wide queue
    /// budget. The budget pause is taken at most once per packet (`paused`: the previous turn
    /// paused): publishers are slowed while subscribers catch up, never stopped outright, since
    /// the subscribers holding the budget may themselves wait for these publishers.
    ///
    /// And, first of all, subscribers this client's messages congested (`waiting`: their queues
    /// went past their bound while they keep draining them, see `limits.slow_subscriber_timeout`):
    /// the client is not read again until they are back under half their bound, so QoS 0 is not
    /// lost to a subscriber that is reading as fast as it can.
    pub(super) fn read_pause(
        &mut self,
        paused: bool,
        waiting: &mut Vec<Arc<SessionState>>,
    ) -> Option<Duration> {
        if !waiting.is_empty() {
            let router = &self.ctx.router;
            waiting.retain(|s| router.congested(s));
            if !waiting.is_empty() {
                return Some(CONGESTION_PAUSE);
            }
        }
        if let Some(pause) = self.rate.as_mut().and_then(|r| r.pause()) {
            let rate = self.ctx.limits.max_publish_rate.unwrap_or_default();
            self.limit(
                Limit::PublishRate,
                &format!("more than {rate} PUBLISH/s; reading paused"),
            );
            return Some(pause);
        }
        if !paused && self.ctx.router.over_budget() {
            let detail = format!(
                "{} bytes queued broker-wide; slowing publishers",
                self.ctx.router.queued_bytes()
            );
            self.limit(Limit::QueuedBytes, &detail);
            return Some(Duration::from_millis(20));
        }
        None
    }

    /// Handles the packet just read and then every other one the same read brought in (at most
    /// [`BATCH`]), before anything is written, so the replies and deliveries they cause leave in
    /// one write, not one each; bounded, so one busy client cannot starve its own outbox. The
    /// messages they publish reach each subscriber at once, after the batch. `Some` ends the
    /// connection.
    pub(super) fn on_read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        first: Result<Option<Packet>, ReadError>,
        batch: &mut Batch,
    ) -> Option<Exit> {
        let mut exit = self.on_packet(conn, first, batch);
        for _ in 0..BATCH {
            if exit.is_some()
                || batch.ingress.bytes() >= BATCH_BYTES
                || self.read_pause(true, &mut batch.waiting).is_some()
            {
                break;
            }
            match conn.try_decode() {
                Ok(None) => break,
                res => exit = self.on_packet(conn, res.map_err(ReadError::from), batch),
            }
        }
        // Delivered (and counted) before any PUBACK for them is written.
        let stats = &self.ctx.router.stats;
        if let Some(info) = self.attached.link.info() {
            ConnCounters::add(&info.counters.packets_in, batch.packets);
        }
        stats
            .messages_received
            .fetch_add(std::mem::take(&mut batch.packets), Ordering::Relaxed);
        self.ctx.ingress.flush(&mut batch.ingress);
        batch.acks.seal(batch.ingress.take_ticket());
        for congested in batch.ingress.take_congested() {
            if !batch.waiting.iter().any(|s| Arc::ptr_eq(s, &congested)) {
                batch.waiting.push(congested);
            }
        }
        exit
    }

    /// Handles one packet read from the client; `Some` ends the connection.
    pub(super) fn on_packet<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        res: Result<Option<Packet>, ReadError>,
        batch: &mut Batch,
    ) -> Option<Exit> {
        match res {
            Ok(Some(packet)) => {
                batch.packets += 1;
                match self.handle(conn, packet, batch) {
                    Step::Exit(exit) => Some(exit),
                    Step::Continue => None,
                }
            }
            Ok(None) => {
                let why = "connection closed by client without DISCONNECT".into();
                Some(Exit::Abnormal { why, reason: None })
            }
            Err(ReadError::Decode(e)) => {
                if let DecodeError::TooLarge { .. } = e {
                    self.limit(Limit::PacketSize, &e.to_string());
                }
                Some(Exit::protocol(e.to_string(), e.reason_code()))
            }
            Err(e) => Some(Exit::Abnormal {
                why: e.to_string(),
                reason: None,
            }),
        }
    }

    /// The packet loop. Returns how the connection ended, or [`Exit::Idle`] when it has been
    /// quiet long enough to park: at the first wait after CONNACK (most clients are idle after
    /// connecting; one that is not costs one resume), otherwise after [`PARK_AFTER`] without a
    /// packet or a message. Only streams that can park ever get `Idle`.
    pub(super) async fn run<S: Stream>(&mut self, conn: &mut Connection<S>, start: Start) -> Exit {
        let keep_alive = (self.keep_alive != 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let now = Instant::now();
        let (mut deadline, mut resend, mut park_at) = match start {
            Start::Connected => (
                keep_alive.map(|k| now + k),
                self.attached.present,
                Some(now),
            ),
            Start::Resumed { deadline } => (deadline, false, Some(now + PARK_AFTER)),
            Start::Unparked { deadline } => (deadline, false, None),
        };
        if !S::PARKABLE || self.ctx.parker.is_none() {
            park_at = None;
        }
        let (mut seen_in, mut seen_out) = (conn.bytes_in, conn.bytes_out);
        let mut last_packet = now;
        let mut paused = false;
        let mut outgoing = Vec::new();
        let mut batch = Batch::default();
        let link = self.attached.link.clone();
        loop {
            // A QoS 2 message for this persistent session waits for the store (see
            // `router/persist.rs`): `held` is its ticket.
            let held = self
                .fill(conn, &mut outgoing, resend)
                .and_then(|t| Some((self.ctx.router.store()?.clone(), t)));
            resend = false;
            if conn.pending() > 0 {
                tokio::select! {
                    res = conn.flush() => if let Err(e) = res {
                        return Exit::Abnormal { why: format!("write failed: {e}"), reason: None };
                    },
                    _ = poll_fn(|cx| link.poll_kicked(cx)) => return self.kicked(),
                    _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                    // A client that stopped reading blocks this write, and we read nothing from
                    // it meanwhile: its keep alive runs out like any silent client's.
                    _ = sleep_until(deadline) => return self.keep_alive_expired(),
                }
            }
            let stats = &self.ctx.router.stats;
            stats
                .bytes_received
                .fetch_add(conn.bytes_in - seen_in, Ordering::Relaxed);
            stats
                .bytes_sent
                .fetch_add(conn.bytes_out - seen_out, Ordering::Relaxed);
            if let Some(info) = link.info() {
                let own = &info.counters;
                ConnCounters::add(&own.bytes_in, conn.bytes_in - seen_in);
                ConnCounters::add(&own.bytes_out, conn.bytes_out - seen_out);
            }
            (seen_in, seen_out) = (conn.bytes_in, conn.bytes_out);

            // Not reading is how a client is slowed down: TCP back-pressure does the rest. The
            // keep-alive clock stops meanwhile, since the client's PINGREQs go unread.
            let pause = self.read_pause(paused, &mut batch.waiting);
            paused = pause.is_some();
            // Not parked while acknowledgements or messages wait for the store.
            let awaited = self.awaited(&batch.acks);
            let park_now = if batch.acks.is_empty() && held.is_none() {
                park_at
            } else {
                None
            };
            let wake_at = match (deadline, park_now) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            let waited = AtomicBool::new(false);
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                _ = poll_fn(|cx| link.poll_kicked(cx)) => return self.kicked(),
                _ = committed(awaited.as_ref()), if awaited.is_some() => {
                    if let Some(exit) = self.release(conn, &mut batch.acks) {
                        return exit;
                    }
                }
                _ = committed(held.as_ref()), if held.is_some() => {}
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {
                    let now = Instant::now();
                    deadline = keep_alive.map(|k| now + k);
                    // The client was not quiet: we were not reading it.
                    last_packet = now;
                }
                res = noting_wait(conn.read_packet(), &waited), if pause.is_none() => {
                    let now = Instant::now();
                    deadline = keep_alive.map(|k| now + k);
                    park_at = park_at.map(|_| now + PARK_AFTER);
                    // A quiet spell: the read waited for the client, and long enough (a busy
                    // connection whose task waited for a worker is not quiet). Awaited here,
                    // after the select, where nothing can cancel it and lose the packet.
                    if waited.load(Ordering::Relaxed)
                        && matches!(res, Ok(Some(Packet::Publish(_))))
                        && now.saturating_duration_since(last_packet) >= QUIET
                    {
                        arrival_order(self.ctx.parker.as_deref()).await;
                    }
                    last_packet = now;
                    if let Some(exit) = self.on_read(conn, res, &mut batch) {
                        return exit;
                    }
                }
                _ = poll_fn(|cx| link.poll_outbox(cx)) => {
                    park_at = park_at.map(|_| Instant::now() + PARK_AFTER);
                }
                _ = sleep_until(wake_at), if pause.is_none() => {
                    if deadline.is_some_and(|d| d <= Instant::now()) {
                        return self.keep_alive_expired();
                    }
                    return Exit::Idle { deadline };
                }
            }
        }
    }

    pub(super) fn keep_alive_expired(&self) -> Exit {
        let why = format!("keep alive timeout ({}s x 1.5)", self.keep_alive);
        Exit::protocol(why, DisconnectReason::KeepAliveTimeout)
    }

    pub(super) fn kicked(&self) -> Exit {
        let reason = self
            .attached
            .link
            .reason()
            .unwrap_or(DisconnectReason::UnspecifiedError);
        let why = match reason {
            DisconnectReason::SessionTakenOver => {
                "session taken over by a new connection with the same client id"
            }
            DisconnectReason::QuotaExceeded => "outbox full: client too slow to read its messages",
            DisconnectReason::AdministrativeAction => "user removed from the password file",
            _ => "closed by the broker",
        };
        Exit::protocol(why, reason)
    }
}

/// `fut`, noting in `waited` whether it ever had to wait. (Cancel-safe when `fut` is.)
async fn noting_wait<F: Future>(fut: F, waited: &AtomicBool) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        let polled = fut.as_mut().poll(cx);
        if polled.is_pending() {
            waited.store(true, Ordering::Relaxed);
        }
        polled
    })
    .await
}

/// Until the store has committed (or failed) the awaited ticket.
async fn committed(awaited: Option<&(Arc<Store>, Ticket)>) {
    match awaited {
        Some((store, ticket)) => {
            let _ = store.committed(*ticket).await;
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// "What arrived first takes effect first", across connections, for a PUBLISH that ends a
/// quiet spell (as a test suite's or a person's messages do; a stream at full speed never
/// waits here). MQTT orders nothing across connections, but a client that sent SUBSCRIBE
/// just before another client's PUBLISH expects the message, and Mosquitto, serving all its
/// sockets from one loop, delivers it. Here connections run on several threads, so before
/// routing, this one
/// - yields once, so connections the reactor woke in the same turn (queued behind this one
///   by tokio's last-in-first-out slot) run first; and
/// - waits for the parker's watcher to finish the batch of parked connections' packets it is
///   handling (bounded; see [`crate::park::Parker::caught_up`]).
///
/// Costs one yield per quiet spell, nothing while busy.
async fn arrival_order(parker: Option<&Parker<Idle>>) {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    if let Some(parker) = parker {
        parker.caught_up().await;
    }
}
