//! The link between a session and the connection (or subscriber handle) serving it: how the
//! router wakes it and tells it to close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::protocol::DisconnectReason;

/// The link between a session and the connection serving it. The router uses it to wake that
/// connection: when its outbox goes from empty to non-empty, and when it must close (kicked:
/// takeover, slow consumer, deleted user, shutdown), recording why so the connection can tell the
/// client (5.0 DISCONNECT reason code) and the log.
///
/// One small allocation per connection, with a single waker slot: the connection's task while it
/// runs, or its parked entry (see [`crate::park`]) while it is idle.
#[derive(Debug, Clone)]
pub struct Link(Arc<LinkShared>);

#[derive(Debug)]
struct LinkShared {
    id: u64,
    /// Why the link was kicked; 0 while it was not.
    reason: AtomicU8,
    /// The outbox gained a message since the connection last looked.
    outbox: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// What the connection told about itself after CONNACK (None for subscriber handles).
    /// Inline rather than boxed: a separate small allocation per connection, made at CONNACK
    /// among the task's short-lived ones, cost idle connections ~300 bytes of resident memory
    /// each (glibc keeps the pages the freed ones leave around it).
    info: std::sync::OnceLock<super::clients::ConnInfo>,
}

impl Link {
    pub fn new(id: u64) -> Self {
        Link(Arc::new(LinkShared {
            id,
            reason: AtomicU8::new(0),
            outbox: AtomicBool::new(false),
            waker: Mutex::new(None),
            info: std::sync::OnceLock::new(),
        }))
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Records what the connection is (once; later calls are ignored).
    pub fn describe(&self, info: super::clients::ConnInfo) {
        let _ = self.0.info.set(info);
    }

    /// What the connection told about itself, and its traffic counters.
    pub fn info(&self) -> Option<&super::clients::ConnInfo> {
        self.0.info.get()
    }

    /// Closes the connection with a 5.0 reason code (0x8E taken over, 0x97 quota, 0x98 admin,
    /// 0x8B shutdown). The first reason given is the one reported; a normal disconnection (0)
    /// is reported as an unspecified error, 0 being "not kicked".
    pub fn kick(&self, reason: DisconnectReason) {
        let code = match reason {
            DisconnectReason::NormalDisconnection => DisconnectReason::UnspecifiedError.into(),
            reason => reason.into(),
        };
        let _ = self
            .0
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    /// Why the link was kicked (`None` if it was not).
    pub fn reason(&self) -> Option<DisconnectReason> {
        match self.0.reason.load(Ordering::Acquire) {
            0 => None,
            code => DisconnectReason::try_from(code).ok(),
        }
    }

    /// Whether the link was kicked.
    pub fn kicked(&self) -> bool {
        self.0.reason.load(Ordering::Acquire) != 0
    }

    /// The outbox went from empty to non-empty: wake the connection.
    pub fn notify(&self) {
        self.0.outbox.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        let waker = self.0.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes `waker` at the next kick or outbox notification (replacing any earlier waker).
    pub fn register(&self, waker: &Waker) {
        let mut slot = self.0.waker.lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Ready once the link is kicked.
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.register(cx.waker());
        if self.kicked() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Ready when the outbox gained a message since the last time this returned Ready.
    pub fn poll_outbox(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.register(cx.waker());
        if self.0.outbox.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Was anything signalled (a kick, or an outbox notification not yet taken)?
    pub fn signalled(&self) -> bool {
        self.kicked() || self.0.outbox.load(Ordering::Acquire)
    }
}
