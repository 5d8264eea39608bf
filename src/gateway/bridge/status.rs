//! What a bridge shows of itself: its state word and counters, all atomics (read once a second
//! by `$SYS` and on every `/metrics` scrape).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::gateway::{GatewayStatus, Kind, Metric};

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Resolving, connecting, TLS handshake, CONNECT sent.
    Connecting = 0,
    /// CONNACK accepted: messages flow.
    Connected = 1,
    /// Waiting before the next attempt (after a failure or a refusal).
    Backoff = 2,
    /// Shut down.
    Stopped = 3,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
pub struct Status {
    pub name: String,
    pub address: String,
    state: AtomicU8,
    /// Messages sent to the remote (PUBLISHes written, resends included).
    pub sent: AtomicU64,
    /// Messages received from the remote and published locally.
    pub received: AtomicU64,
    /// Successful connections after the first.
    pub reconnects: AtomicU64,
    /// Outbound messages the local session dropped (its queue full), and ones the remote could
    /// not take (over its Maximum Packet Size) or the ACL did not let out.
    pub skipped: AtomicU64,
    /// The local session's queue length (updated by the bridge task, at least once a second).
    pub queued: AtomicU64,
    /// Dropped by the local session's queue (updated by the bridge task).
    pub queue_dropped: AtomicU64,
}

impl Status {
    pub fn new(name: String, address: String) -> Self {
        Status {
            name,
            address,
            state: AtomicU8::new(State::Connecting as u8),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue_dropped: AtomicU64::new(0),
        }
    }

    pub fn set(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Connecting,
            1 => State::Connected,
            2 => State::Backoff,
            _ => State::Stopped,
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl GatewayStatus for Status {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> String {
        self.address.clone()
    }
    fn state(&self) -> &'static str {
        self.get().word()
    }
    fn metrics(&self) -> Vec<Metric> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Metric::counter(
                "sent",
                "Messages sent to the remote broker",
                get(&self.sent),
            ),
            Metric::counter(
                "received",
                "Messages received from the remote broker and published locally",
                get(&self.received),
            ),
            Metric::gauge(
                "queued",
                "Outbound messages waiting for the remote broker",
                get(&self.queued),
            ),
            Metric::counter(
                "dropped",
                "Outbound messages dropped (queue full, too large for the remote, ACL)",
                get(&self.queue_dropped) + get(&self.skipped),
            ),
            Metric::counter(
                "reconnects",
                "Connections to the remote broker after the first",
                get(&self.reconnects),
            ),
            Metric::gauge(
                "connected",
                "1 while connected to the remote broker, 0 otherwise",
                u64::from(self.get() == State::Connected),
            ),
        ]
    }
}
