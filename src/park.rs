//! Parking: idle connections (TCP, TLS, WebSocket, wss) without a task.
//!
//! Most MQTT clients are idle most of the time: a sensor publishes every few seconds or minutes
//! and otherwise only sends PINGREQ. A connection task costs about 2 KB (its future, sized for
//! the busiest state of the packet loop) and tokio's registration of the socket another 256
//! bytes, so an idle connection is *parked* instead (as Mosquitto keeps an idle client as a
//! context and a descriptor in its poll set):
//!
//! - its task hands the connection's state (a [`Parkable`]: `client::Idle`: the socket, the client's
//!   small state, its read buffer only if a packet is half-read) to the [`Parker`] and ends;
//! - the socket moves from tokio's reactor to the parker's own `epoll` set (through `mio`), which
//!   one thread watches for all parked connections;
//! - the session's [`Link`](crate::router::state::Link) gets the parked entry as its waker.
//!
//! A parked connection resumes, as a new task, when its socket becomes readable (a packet, or the
//! peer closing), when its outbox gains a message or it is kicked (the link's waker), when its
//! keep-alive deadline passes (a sweep every [`SWEEP`], run by the broker's timer service,
//! [`crate::timer`]: one timer for all parked connections, not one each), or at shutdown (all of
//! them). The packet loop (`client/run.rs`) parks a connection at its first wait after CONNACK,
//! and later once it has been quiet for `PARK_AFTER`, so busy connections keep their task.
//!
//! A connection resumed because its socket is readable takes its first steps on the watcher
//! thread itself ([`Parker::start`]), before the watcher looks at the next socket: parked
//! connections' packets take effect in the order they arrived, as in Mosquitto's one loop.
//!
//! TLS connections park too: the TLS session (keys, sequence numbers, a record still arriving)
//! goes with the socket, and the stream's buffers are dropped (see [`crate::transport::tls`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use slab::Slab;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::router::state::Link;
use crate::timer::Timer;

/// What a parked connection must offer the parker: its socket to watch, the link the router wakes
/// it through, and a way to carry on as a task. (`client::Idle` is the one implementation; the
/// parker knows nothing else of connections.)
pub trait Parkable: Send + Sized + 'static {
    fn socket(&self) -> &std::net::TcpStream;
    fn link(&self) -> &Link;
    /// Serves the connection on as a task; `deadline`: its keep-alive deadline, as parked;
    /// `readable`: it resumes because its socket has something to read.
    fn resume(
        self,
        deadline: Option<Instant>,
        readable: bool,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// Why a parked connection resumes, which decides where its first steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its socket is readable (the watcher thread saw it): its task is polled once right there,
    /// before the next socket's, then spawned. See [`Parker::start`].
    Readable,
    /// Its link was woken (a message, a kick), its keep alive ran out, or the broker shuts
    /// down: its task is spawned.
    Other,
}

/// How often parked connections are checked against their keep-alive deadline: a silent parked
/// client is closed at most this much later than 1.5 x its keep alive.
pub const SWEEP: Duration = Duration::from_millis(500);

/// The longest [`Parker::caught_up`] waits for the watcher's batch: it is usually done within
/// tens of microseconds, and a connection must not stall behind a storm of them.
const CATCH_UP_LIMIT: Duration = Duration::from_millis(2);

/// The parked connections of one broker, and the `epoll` set watching their sockets.
pub struct Parker<P: Parkable> {
    registry: mio::Registry,
    /// Taken by [`Parker::run`].
    poll: Mutex<Option<Poll>>,
    handle: tokio::runtime::Handle,
    /// Resumes connections whose keep-alive deadline passed.
    timer: Arc<Timer>,
    slots: Mutex<Slots<P>>,
    /// Counts the watcher's batches of socket events: odd while it is handling one (see
    /// [`Parker::caught_up`]).
    batch: AtomicU64,
}

impl<P: Parkable> std::fmt::Debug for Parker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("parked", &self.parked())
            .finish_non_exhaustive()
    }
}

struct Slots<P: Parkable> {
    slab: Slab<Arc<Slot<P>>>,
    /// Shut down: nothing parks any more.
    closed: bool,
}

/// One parked connection. Its `Arc` is the waker the connection's link holds meanwhile.
struct Slot<P: Parkable> {
    parker: Weak<Parker<P>>,
    key: u32,
    /// Keep-alive deadline (None: no keep alive).
    deadline: Option<Instant>,
    /// Taken by whoever resumes it first.
    idle: Mutex<Option<P>>,
}

impl<P: Parkable> Wake for Slot<P> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(parker) = self.parker.upgrade() {
            parker.resume(self.key as usize, Some(self), Cause::Other);
        }
    }
}

impl<P: Parkable> Parker<P> {
    /// A parker for connections served on the current tokio runtime.
    pub fn new(timer: Arc<Timer>) -> std::io::Result<Arc<Parker<P>>> {
        let poll = Poll::new()?;
        Ok(Arc::new(Parker {
            registry: poll.registry().try_clone()?,
            poll: Mutex::new(Some(poll)),
            handle: tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?,
            timer,
            slots: Mutex::new(Slots {
                slab: Slab::new(),
                closed: false,
            }),
            batch: AtomicU64::new(0),
        }))
    }

    /// How many connections are parked.
    pub fn parked(&self) -> usize {
        self.slots.lock().slab.len()
    }

    /// Parks `idle` (`deadline`: its keep-alive deadline); gives it back if the parker is shut
    /// down or its socket cannot be watched.
    #[allow(
        clippy::result_large_err,
        reason = "gives the connection back, by value, as it came"
    )]
    pub fn park(self: &Arc<Self>, idle: P, deadline: Option<Instant>) -> Result<(), P> {
        let fd = idle.socket().as_raw_fd();
        let link = idle.link().clone();
        let mut slots = self.slots.lock();
        if slots.closed {
            return Err(idle);
        }
        let entry = slots.slab.vacant_entry();
        let key = entry.key();
        let Ok(key32) = u32::try_from(key) else {
            return Err(idle);
        };
        let slot = Arc::new(Slot {
            parker: Arc::downgrade(self),
            key: key32,
            deadline,
            idle: Mutex::new(None),
        });
        // The link wakes the slot from now on. Registered before anything can resume the
        // connection (which needs `slots`), so it never replaces the resumed task's waker.
        link.register(&Waker::from(slot.clone()));
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
        {
            debug!("cannot park a connection: {e}");
            return Err(idle);
        }
        *slot.idle.lock() = Some(idle);
        entry.insert(slot.clone());
        drop(slots);
        // A kick or message that came before the link knew the slot resumes it now.
        if link.signalled() {
            self.resume(key, Some(&slot), Cause::Other);
        }
        Ok(())
    }

    /// Resumes the connection parked at `key` (if `expected` is given, only if it is still that
    /// one) as a new task. Does nothing if it was resumed already.
    fn resume(&self, key: usize, expected: Option<&Arc<Slot<P>>>, cause: Cause) {
        let slot = {
            let mut slots = self.slots.lock();
            match slots.slab.get(key) {
                Some(s) if expected.is_none_or(|e| Arc::ptr_eq(e, s)) => slots.slab.remove(key),
                _ => return,
            }
        };
        let Some(idle) = slot.idle.lock().take() else {
            return;
        };
        let fd = idle.socket().as_raw_fd();
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            debug!("deregistering a parked socket: {e}");
        }
        let task = idle.resume(slot.deadline, cause == Cause::Readable);
        match cause {
            Cause::Readable => self.start(task),
            Cause::Other => drop(self.handle.spawn(task)),
        }
    }

    /// Polls a resumed connection's task once on this (the watcher) thread, then spawns it
    /// unless it has already ended.
    ///
    /// So parked connections are served in the order their packets arrived, as Mosquitto's one
    /// loop serves its sockets: a parked client's SUBSCRIBE is in the router before the watcher
    /// looks at the next readable socket, and a parked client that has just sent SUBSCRIBE does
    /// not lose the race against a message published right after it on another connection
    /// (which a spawned task, queued behind others on a busy worker, could).
    ///
    /// The first poll handles the packets the connection read ahead and stops at its first
    /// wait (usually its first write, which waits for the reactor to report the newly
    /// registered socket writable). It runs with a waker that does nothing: the spawned task's
    /// first poll registers the real ones and finds anything that happened meanwhile. A panic
    /// ends that connection only, as it would end its task.
    fn start(&self, task: impl Future<Output = ()> + Send + 'static) {
        let _runtime = self.handle.enter();
        let mut task = Box::pin(task);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
        match polled {
            Ok(std::task::Poll::Pending) => drop(self.handle.spawn(task)),
            Ok(std::task::Poll::Ready(())) => {}
            Err(_) => error!("a resumed connection panicked; it is closed"),
        }
    }

    /// Waits (bounded by [`CATCH_UP_LIMIT`]) until the watcher has handled the batch of socket
    /// events it is handling now, if any: the packets of parked connections that arrived before
    /// whatever the caller is about to do (see `client::run`'s arrival order). Returns at once
    /// when the watcher is waiting for events, which is nearly always.
    pub async fn caught_up(&self) {
        let seen = self.batch.load(Ordering::Acquire);
        if seen.is_multiple_of(2) {
            return;
        }
        let give_up = Instant::now() + CATCH_UP_LIMIT;
        while self.batch.load(Ordering::Acquire) == seen && Instant::now() < give_up {
            tokio::task::yield_now().await;
        }
    }

    /// Resumes every parked connection whose keep-alive deadline has passed.
    fn sweep(&self) {
        let now = Instant::now();
        let due: Vec<Arc<Slot<P>>> = self
            .slots
            .lock()
            .slab
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(_, s)| s.clone())
            .collect();
        for slot in due {
            self.resume(slot.key as usize, Some(&slot), Cause::Other);
        }
    }

    /// Sweeps every [`SWEEP`] on the timer service, for as long as the parker exists and is open.
    fn schedule_sweep(self: &Arc<Self>) {
        let parker = Arc::downgrade(self);
        self.timer.schedule(Instant::now() + SWEEP, move || {
            if let Some(parker) = parker.upgrade() {
                if parker.slots.lock().closed {
                    return;
                }
                parker.sweep();
                parker.schedule_sweep();
            }
        });
    }

    /// Shutdown: nothing parks any more, and every parked connection resumes (to close).
    fn close(&self) {
        let keys: Vec<usize> = {
            let mut slots = self.slots.lock();
            slots.closed = true;
            slots.slab.iter().map(|(key, _)| key).collect()
        };
        for key in keys {
            self.resume(key, None, Cause::Other);
        }
    }

    /// Watches the parked sockets (on a thread of its own, blocking in `epoll_wait`) until
    /// `shutdown`, then resumes every parked connection.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(poll) = self.poll.lock().take() else {
            return;
        };
        self.schedule_sweep();
        let stop = Arc::new(AtomicBool::new(false));
        let waker = mio::Waker::new(poll.registry(), WAKE);
        let watcher = {
            let (parker, stop) = (Arc::downgrade(&self), stop.clone());
            std::thread::Builder::new()
                .name("mqttd-parker".into())
                .spawn(move || watch(poll, &parker, &stop))
        };
        match (waker, watcher) {
            (Ok(waker), Ok(_)) => {
                shutdown.cancelled().await;
                stop.store(true, Ordering::Release);
                let _ = waker.wake();
            }
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot watch parked connections: {e}; idle connections keep their task");
            }
        }
        self.close();
    }
}

/// The `epoll_wait` token of the watcher's waker (slab keys never get this high).
const WAKE: Token = Token(usize::MAX);

/// The watcher thread: resumes parked connections whose socket has an event. Ends at shutdown
/// (`stop`), or when the broker is gone.
fn watch<P: Parkable>(mut poll: Poll, parker: &Weak<Parker<P>>, stop: &AtomicBool) {
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            error!("watching parked connections failed: {e}; resuming them all");
            if let Some(parker) = parker.upgrade() {
                parker.close();
            }
            return;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(parker) = parker.upgrade() else {
            return;
        };
        let mut sockets = events.iter().filter(|e| e.token() != WAKE).peekable();
        if sockets.peek().is_none() {
            continue;
        }
        parker.batch.fetch_add(1, Ordering::AcqRel);
        for event in sockets {
            parker.resume(event.token().0, None, Cause::Readable);
        }
        parker.batch.fetch_add(1, Ordering::AcqRel);
    }
}

impl<P: Parkable> Drop for Parker<P> {
    /// Breaks the cycle slot -> idle connection -> link -> waker -> slot of connections still
    /// parked (only when the broker is dropped without shutting down).
    fn drop(&mut self) {
        for slot in self.slots.get_mut().slab.drain() {
            slot.idle.lock().take();
        }
    }
}
