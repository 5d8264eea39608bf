//! One timer service for the whole broker, on tokio's clock: session expiry, will delay, the
//! keep-alive deadline of parked connections. (The pattern is mini-redis's purge task: an ordered
//! set of `(deadline, key)` and one task sleeping until the first.)
//!
//! - [`Timer::schedule`] registers an action to run at an [`Instant`]; [`Timer::cancel`] forgets
//!   it; [`Timer::expedite`] makes it due now (a session that ends makes its delayed will due).
//! - Actions run on the timer task, one after the other: they must be short and must not block
//!   (publishing through the ingress, detaching a session, spawning a resumed connection).
//!   An action that panics is logged; the others still run.
//! - On tokio's clock, so every timer can be tested on paused time.
//!
//! Deadlines that must survive a restart (session expiry, message expiry, will delay) are kept as
//! wall-clock time ([`SystemTime`]) and converted at the edge: [`wall_now`] reads the wall clock
//! *through tokio's clock* (wall time at start + tokio time elapsed since), so paused time moves it
//! too, and [`instant_at`] turns a wall-clock deadline into an [`Instant`] for the timer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Identifies a scheduled action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey(u64);

type Action = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: BTreeSet<(Instant, u64)>,
    actions: HashMap<u64, (Instant, Action)>,
    next_key: u64,
}

#[derive(Default)]
pub struct Timer {
    state: Mutex<State>,
    /// Wakes the task when an earlier deadline arrives.
    wake: Notify,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Timer {
    pub fn new() -> Arc<Timer> {
        Arc::default()
    }

    /// Runs `action` on the timer task at `at` (at once if `at` has passed).
    pub fn schedule(&self, at: Instant, action: impl FnOnce() + Send + 'static) -> TimerKey {
        let mut state = self.state.lock();
        let key = state.next_key;
        state.next_key += 1;
        let earliest = state.queue.first().is_none_or(|(first, _)| at < *first);
        state.queue.insert((at, key));
        state.actions.insert(key, (at, Box::new(action)));
        drop(state);
        if earliest {
            self.wake.notify_one();
        }
        TimerKey(key)
    }

    /// Forgets a scheduled action; false if it already ran (or was cancelled).
    pub fn cancel(&self, key: TimerKey) -> bool {
        let mut state = self.state.lock();
        match state.actions.remove(&key.0) {
            Some((at, _)) => {
                state.queue.remove(&(at, key.0));
                true
            }
            None => false,
        }
    }

    /// Makes a scheduled action due now; false if it already ran (or was cancelled).
    pub fn expedite(&self, key: TimerKey) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        let Some((at, _)) = state.actions.get_mut(&key.0) else {
            return false;
        };
        let old = std::mem::replace(at, now);
        state.queue.remove(&(old, key.0));
        state.queue.insert((now, key.0));
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Actions waiting to run.
    pub fn pending(&self) -> usize {
        self.state.lock().actions.len()
    }

    /// Moves the actions due at `now` into `due`; returns the next deadline.
    fn take_due(&self, now: Instant, due: &mut Vec<Action>) -> Option<Instant> {
        let mut state = self.state.lock();
        while let Some(&(at, key)) = state.queue.first() {
            if at > now {
                return Some(at);
            }
            state.queue.pop_first();
            if let Some((_, action)) = state.actions.remove(&key) {
                due.push(action);
            }
        }
        None
    }

    /// The timer task: runs due actions until `shutdown` (pending actions are then dropped: the
    /// broker is stopping).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut due = Vec::new();
        loop {
            let next = self.take_due(Instant::now(), &mut due);
            for action in due.drain(..) {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action));
                if ran.is_err() {
                    tracing::error!("a timer action panicked (a bug); the timer carries on");
                }
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }
}

/// Wall-clock time read through tokio's clock (see the module doc).
pub fn wall_now() -> SystemTime {
    static BASE: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
    let (wall, mono) = *BASE.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    wall + Instant::now().into_std().saturating_duration_since(mono)
}

/// Milliseconds since the process started (std's clock, wrapping after 49 days; never 0), for
/// compact timestamps where a few milliseconds do not matter.
pub fn coarse_millis() -> u32 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    (start.elapsed().as_millis() as u32).max(1)
}

/// The wall-clock time `after` from now.
pub fn wall_after(after: Duration) -> SystemTime {
    wall_now() + after
}

/// The [`Instant`] at which the wall clock reads `at` (now, if that has passed).
pub fn instant_at(at: SystemTime) -> Instant {
    let left = at.duration_since(wall_now()).unwrap_or_default();
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Box<dyn FnOnce() + Send>) {
        let n = Arc::new(AtomicUsize::new(0));
        let make = {
            let n = n.clone();
            move || -> Box<dyn FnOnce() + Send> {
                let n = n.clone();
                Box::new(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                })
            }
        };
        (n, make)
    }

    #[tokio::test(start_paused = true)]
    async fn actions_run_at_their_time_in_order_and_cancelled_ones_never() {
        let timer = Timer::new();
        let shutdown = CancellationToken::new();
        tokio::spawn(timer.clone().run(shutdown.clone()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        for (secs, name) in [(3, "c"), (1, "a"), (2, "b"), (4, "cancelled")] {
            let order = order.clone();
            let key = timer.schedule(now + Duration::from_secs(secs), move || {
                order.lock().push(name);
            });
            if name == "cancelled" {
                assert!(timer.cancel(key));
                assert!(!timer.cancel(key));
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(*order.lock(), ["a"]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*order.lock(), ["a", "b", "c"]);
        assert_eq!(timer.pending(), 0);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_expedited_action_runs_now_and_a_panic_does_not_stop_the_timer() {
        let timer = Timer::new();
        let shutdown = CancellationToken::new();
        tokio::spawn(timer.clone().run(shutdown.clone()));
        let (n, make) = counter();
        let key = timer.schedule(Instant::now() + Duration::from_secs(3600), make());
        timer.schedule(Instant::now(), || panic!("a buggy action"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert!(timer.expedite(key));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!timer.expedite(key));
        timer.schedule(Instant::now() + Duration::from_secs(1), make());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(n.load(Ordering::SeqCst), 2);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_wall_clock_moves_with_tokio_time() {
        let before = wall_now();
        tokio::time::sleep(Duration::from_secs(100)).await;
        let elapsed = wall_now().duration_since(before).unwrap();
        assert!(elapsed >= Duration::from_secs(100), "{elapsed:?}");
        let at = wall_after(Duration::from_secs(30));
        let instant = instant_at(at);
        let left = instant - Instant::now();
        assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(29));
    }
}
