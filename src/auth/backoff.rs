//! Brute-force protection that slows guessing down without locking anyone out.
//!
//! One address is often many devices (a NAT, a carrier-grade NAT, a corporate proxy, a load
//! balancer), so failures from an address never refuse a login outright: they make that address's
//! logins take turns, and its turns come more slowly. Exact behaviour (`max_failures` = N,
//! `failure_window` = W, `backoff_max` = M):
//!
//! - A failed login (unknown user, wrong password) adds one failure to the client's IP address
//!   and one to the username. A login without a password, and a repeat of credentials that already
//!   failed from the same address within W (see [`Auth::authenticate`](super::Auth::authenticate)),
//!   are refused without a hash and are not counted: they guess nothing.
//! - **Per address, turns:** a password is only checked (and an enhanced-authentication verdict
//!   only given) during one of its address's turns. An address with f failures has N - f turns
//!   (at least one): at most N guesses can be in flight before the first failure counts, and from
//!   N - 1 failures on the address's logins run one at a time, first come first served.
//! - **Per address, delays:** from the N-th failure on, each failure makes the address's next turn
//!   wait 1 s x 2^(f - N), capped at M: 1 s, 2 s, 4 s, ... A correct password waits for its turn
//!   but is never refused because of the address's failures, and its success delays nobody. A
//!   login whose turn would not come within M is answered "server unavailable" (retry later).
//!   Parallel connections gain nothing: one address gets at most one wrong guess per delay.
//! - **Per username:** from the N-th failure on, the username is refused at once ("not
//!   authorised") for 1 s x 2^(f - N), capped at M, without a hash and without counting, from any
//!   address, so guessing one account from many addresses is as slow as from one. Credentials in
//!   the credential cache (verified within `cache_ttl`) and client-certificate identities are let
//!   in regardless, so the account's own devices keep working while it is under attack. A success
//!   clears the username's failures (not the address's: one valid account must not reset the
//!   count of an address that guesses others' passwords).
//! - A record is forgotten W after its last failure or the end of its delay, whichever is later;
//!   failures spread more thinly than N per W never slow anyone. Each map holds at most
//!   [`MAX_TRACKED`] keys; when full, forgotten and idle records are pruned first, then an
//!   arbitrary one, so memory stays bounded under a flood of addresses.
//!
//! Time is tokio's clock, so tests can run the delays on paused time.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most IP addresses (and, separately, usernames) tracked at once.
pub const MAX_TRACKED: usize = 65_536;

const BASE_DELAY: Duration = Duration::from_secs(1);

/// The three settings, as configured.
#[derive(Debug, Clone, Copy)]
struct Rules {
    max_failures: u32,
    window: Duration,
    max_delay: Duration,
}

impl Rules {
    /// The delay after the `failures`-th failure, if it is N or more.
    fn delay(&self, failures: u32) -> Option<Duration> {
        let doublings = failures.checked_sub(self.max_failures)?.min(30);
        Some(
            BASE_DELAY
                .saturating_mul(1u32 << doublings)
                .min(self.max_delay),
        )
    }

    /// Turns an address with `failures` failures has.
    fn turns(&self, failures: u32) -> u32 {
        self.max_failures.saturating_sub(failures).max(1)
    }
}

/// Failures of one address or username.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// Address: its next turn starts no earlier. Username: refused until then.
    delayed_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            last_failure: now,
            delayed_until: None,
        }
    }

    fn forgotten(&self, now: Instant, window: Duration) -> bool {
        let since = self
            .delayed_until
            .map_or(self.last_failure, |d| d.max(self.last_failure));
        // An overflowing window (absurd config) just means "never forgotten" until pruned.
        since.checked_add(window).is_some_and(|end| now >= end)
    }

    fn fail(&mut self, now: Instant, rules: &Rules) {
        if self.forgotten(now, rules.window) {
            *self = Record::new(now);
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        if let Some(delay) = rules.delay(self.failures) {
            self.delayed_until = Some(now.checked_add(delay).unwrap_or(now));
        }
    }

    fn delayed(&self, now: Instant) -> Option<Instant> {
        self.delayed_until.filter(|&until| now < until)
    }
}

/// One client address: its turns and its failures.
#[derive(Debug)]
struct Address {
    /// `AddressState::turns` permits; fair, so waiting logins are served in arrival order.
    turns: Arc<Semaphore>,
    state: Mutex<AddressState>,
}

#[derive(Debug)]
struct AddressState {
    record: Record,
    /// Permits the semaphore holds in all (taken or not).
    turns: u32,
    /// Turns to take away as soon as one is given back (a failure counted while all were taken).
    owed: u32,
}

impl Address {
    fn new(now: Instant, rules: &Rules) -> Address {
        let turns = rules.turns(0);
        Address {
            turns: Arc::new(Semaphore::new(turns as usize)),
            state: Mutex::new(AddressState {
                record: Record::new(now),
                turns,
                owed: 0,
            }),
        }
    }

    /// Forgets failures older than the window, giving the turns back.
    fn refresh(&self, now: Instant, rules: &Rules) {
        let mut state = self.state.lock();
        if state.record.failures > 0 && state.record.forgotten(now, rules.window) {
            state.record = Record::new(now);
            let all = rules.turns(0);
            self.turns.add_permits((all - state.turns) as usize);
            state.turns = all;
            state.owed = 0;
        }
    }

    /// Gives a turn back, unless a failure is owed one.
    fn release(&self, permit: OwnedSemaphorePermit) {
        let mut state = self.state.lock();
        if state.owed > 0 {
            state.owed -= 1;
            state.turns -= 1;
            permit.forget();
        }
    }

    /// Idle and without failures that still matter: safe to drop from the map.
    fn disposable(self: &Arc<Self>, now: Instant, rules: &Rules) -> bool {
        // The map's own reference only: nobody holds or awaits a turn.
        Arc::strong_count(self) == 1 && {
            let state = self.state.lock();
            state.record.failures == 0 || state.record.forgotten(now, rules.window)
        }
    }
}

/// Why no turn came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

#[derive(Debug)]
pub(crate) struct Backoff {
    rules: Rules,
    addresses: Mutex<HashMap<IpAddr, Arc<Address>>>,
    users: Mutex<HashMap<String, Record>>,
}

/// An address's turn, held while a password is checked or a verdict is given. Dropping it without
/// an outcome (the client went away, the pool was busy) gives the turn back uncounted.
#[derive(Debug)]
pub(crate) struct Turn {
    backoff: Arc<Backoff>,
    ip: IpAddr,
    address: Arc<Address>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Backoff {
    pub(crate) fn new(max_failures: u32, window: Duration, max_delay: Duration) -> Self {
        Backoff {
            rules: Rules {
                max_failures: max_failures.max(1),
                window,
                max_delay,
            },
            addresses: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a turn of `ip` (see the module doc); `Busy` if it would not come within
    /// `backoff_max`. Cancel-safe: dropping the future leaves the queue.
    pub(crate) async fn turn(self: &Arc<Self>, ip: IpAddr) -> Result<Turn, Busy> {
        let start = Instant::now();
        let deadline = start.checked_add(self.rules.max_delay).unwrap_or(start);
        let address = self.address(ip, start);
        let permit =
            match tokio::time::timeout_at(deadline, Arc::clone(&address.turns).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                _ => return Err(Busy),
            };
        let turn = Turn {
            backoff: Arc::clone(self),
            ip,
            address,
            permit: Some(permit),
        };
        let delayed = turn.address.state.lock().record.delayed(Instant::now());
        if let Some(until) = delayed {
            if until > deadline {
                return Err(Busy);
            }
            tokio::time::sleep_until(until).await;
        }
        Ok(turn)
    }

    /// Is `username` refused for now (username rule)?
    pub(crate) fn user_blocked(&self, username: &str) -> bool {
        let now = Instant::now();
        self.users
            .lock()
            .get(username)
            .is_some_and(|r| r.delayed(now).is_some())
    }

    /// A failure of `username` from `ip` decided without a turn (re-authentication): counted
    /// the same, shrinking the address's turns if one is free.
    pub(crate) fn record_failure(&self, ip: IpAddr, username: &str) {
        let now = Instant::now();
        let address = self.address(ip, now);
        self.address_failed(&address, None, now);
        self.user_failed(username, now);
    }

    pub(crate) fn record_success(&self, username: &str) {
        self.users.lock().remove(username);
    }

    /// The record of `ip`, created if needed, with stale failures forgotten.
    fn address(&self, ip: IpAddr, now: Instant) -> Arc<Address> {
        let mut map = self.addresses.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, a| !a.disposable(now, &self.rules));
            evict_one(&mut map);
        }
        let address = map
            .entry(ip)
            .or_insert_with(|| Arc::new(Address::new(now, &self.rules)));
        address.refresh(now, &self.rules);
        Arc::clone(address)
    }

    fn address_failed(
        &self,
        address: &Address,
        permit: Option<OwnedSemaphorePermit>,
        now: Instant,
    ) {
        let mut state = address.state.lock();
        state.record.fail(now, &self.rules);
        if state.turns - state.owed > self.rules.turns(state.record.failures) {
            // One failure takes one turn away: this one's if it has it, else a free one, else
            // the next one given back.
            let taken = match permit {
                Some(permit) => {
                    permit.forget();
                    1
                }
                None => address.turns.forget_permits(1),
            };
            if taken == 1 {
                state.turns -= 1;
            } else {
                state.owed += 1;
            }
        } else if let Some(permit) = permit {
            drop(state);
            address.release(permit);
        }
    }

    fn user_failed(&self, username: &str, now: Instant) {
        let mut users = self.users.lock();
        if users.len() >= MAX_TRACKED && !users.contains_key(username) {
            users.retain(|_, r| !r.forgotten(now, self.rules.window));
            evict_one(&mut users);
        }
        users
            .entry(username.to_owned())
            .or_insert_with(|| Record::new(now))
            .fail(now, &self.rules);
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.addresses.lock().len(), self.users.lock().len())
    }
}

/// Still full after pruning: forget an arbitrary key (it only costs that key its history).
fn evict_one<K: Hash + Eq + Clone, V>(map: &mut HashMap<K, V>) {
    if map.len() >= MAX_TRACKED
        && let Some(victim) = map.keys().next().cloned()
    {
        map.remove(&victim);
    }
}

impl Turn {
    pub(crate) fn succeeded(self, username: &str) {
        self.backoff.record_success(username);
    }

    pub(crate) fn failed(mut self, username: &str) {
        let now = Instant::now();
        let permit = self.permit.take();
        self.backoff.address_failed(&self.address, permit, now);
        self.backoff.user_failed(username, now);
    }
}

impl Drop for Turn {
    /// Gives the turn back, and drops the address's record if it has nothing worth keeping, so
    /// a healthy broker does not accumulate one entry per client address ever seen.
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.address.release(permit);
        }
        let mut map = self.backoff.addresses.lock();
        if let Some(address) = map.get(&self.ip)
            && Arc::ptr_eq(address, &self.address)
            // The map's reference and ours: nobody else holds or awaits a turn.
            && Arc::strong_count(address) == 2
            && self.address.state.lock().record.failures == 0
        {
            map.remove(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests;
