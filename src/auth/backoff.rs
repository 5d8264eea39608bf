//! Brute-force protection: failed logins back off per client IP and per username.
//!
//! Exact behaviour (`max_failures` = N, `failure_window` = W, `backoff_max` = M):
//! - Every failed password check (unknown user, wrong or missing password) adds one failure to the
//!   client's IP address and one to the username.
//! - From the N-th failure on, that IP / username is blocked for 1s x 2^(failures - N), capped at
//!   M: 1s, 2s, 4s, ... Attempts while blocked are refused at once ("not authorized"), without
//!   running a hash and without adding failures, so they neither cost CPU nor stall other clients.
//! - A record is forgotten W after its last failure or the end of its block, whichever is later;
//!   so failures spread out more thinly than N per W never block anyone.
//! - A successful login clears the username's record (not the IP's: one valid account must not
//!   reset the counter of an address that is guessing others' passwords).
//! - Each map holds at most [`MAX_TRACKED`] keys; when full, forgotten records are pruned, then an
//!   arbitrary one is dropped, so memory stays bounded under a flood of addresses.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most IP addresses (and, separately, usernames) tracked at once.
pub const MAX_TRACKED: usize = 65_536;

const BASE_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

impl Record {
    fn forgotten(&self, now: Instant, window: Duration) -> bool {
        let since = self
            .blocked_until
            .map_or(self.last_failure, |b| b.max(self.last_failure));
        // An overflowing window (absurd config) just means "never forgotten" until pruned.
        since.checked_add(window).is_some_and(|end| now >= end)
    }
}

#[derive(Debug)]
pub(crate) struct Backoff {
    max_failures: u32,
    window: Duration,
    max_delay: Duration,
    ips: Mutex<HashMap<IpAddr, Record>>,
    users: Mutex<HashMap<String, Record>>,
}

fn blocked<K: Hash + Eq>(map: &Mutex<HashMap<K, Record>>, key: &K, now: Instant) -> bool {
    map.lock()
        .get(key)
        .and_then(|r| r.blocked_until)
        .is_some_and(|until| now < until)
}

impl Backoff {
    pub(crate) fn new(max_failures: u32, window: Duration, max_delay: Duration) -> Self {
        Backoff {
            max_failures: max_failures.max(1),
            window,
            max_delay,
            ips: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ip_blocked(&self, ip: IpAddr) -> bool {
        blocked(&self.ips, &ip, Instant::now())
    }

    pub(crate) fn user_blocked(&self, username: &str) -> bool {
        self.blocked_for(username, Instant::now()).is_some()
    }

    pub(crate) fn record_failure(&self, ip: IpAddr, username: &str) {
        self.record_failure_at(ip, username, Instant::now());
    }

    fn record_failure_at(&self, ip: IpAddr, username: &str, now: Instant) {
        self.bump(&self.ips, ip, now);
        self.bump(&self.users, username.to_owned(), now);
    }

    pub(crate) fn record_success(&self, username: &str) {
        self.users.lock().remove(username);
    }

    fn bump<K: Hash + Eq + Clone>(&self, map: &Mutex<HashMap<K, Record>>, key: K, now: Instant) {
        let mut map = map.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, r| !r.forgotten(now, self.window));
            if map.len() >= MAX_TRACKED
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        let record = map.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if record.forgotten(now, self.window) {
            record.failures = 0;
            record.blocked_until = None;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures >= self.max_failures {
            let doublings = (record.failures - self.max_failures).min(30);
            let delay = BASE_DELAY
                .saturating_mul(1u32 << doublings)
                .min(self.max_delay);
            record.blocked_until = Some(now.checked_add(delay).unwrap_or(now));
        }
    }

    fn blocked_for(&self, username: &str, now: Instant) -> Option<Duration> {
        self.users
            .lock()
            .get(username)
            .and_then(|r| r.blocked_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.ips.lock().len(), self.users.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn blocks_after_n_failures_with_doubling_capped_delay() {
        let b = Backoff::new(3, Duration::from_secs(60), Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure_at(IP, "u", t0);
        b.record_failure_at(IP, "u", t0);
        assert!(b.blocked_for("u", t0).is_none());
        b.record_failure_at(IP, "u", t0);
        assert_eq!(b.blocked_for("u", t0), Some(Duration::from_secs(1)));
        b.record_failure_at(IP, "u", t0);
        assert_eq!(b.blocked_for("u", t0), Some(Duration::from_secs(2)));
        b.record_failure_at(IP, "u", t0);
        assert_eq!(b.blocked_for("u", t0), Some(Duration::from_secs(4)));
        b.record_failure_at(IP, "u", t0);
        assert_eq!(
            b.blocked_for("u", t0),
            Some(Duration::from_secs(5)),
            "capped"
        );
        assert!(blocked(&b.ips, &IP, t0));
        assert!(!blocked(&b.ips, &IP, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn success_clears_the_username_only() {
        let b = Backoff::new(2, Duration::from_secs(60), Duration::from_secs(60));
        b.record_failure(IP, "u");
        b.record_failure(IP, "u");
        assert!(b.user_blocked("u") && b.ip_blocked(IP));
        b.record_success("u");
        assert!(!b.user_blocked("u"));
        assert!(b.ip_blocked(IP));
    }

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let b = Backoff::new(2, Duration::from_secs(10), Duration::from_secs(60));
        let t0 = Instant::now();
        b.record_failure_at(IP, "u", t0);
        b.record_failure_at(IP, "u", t0 + Duration::from_secs(11));
        assert!(b.blocked_for("u", t0 + Duration::from_secs(11)).is_none());
    }

    #[test]
    fn maps_stay_bounded() {
        let b = Backoff::new(5, Duration::from_secs(60), Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            b.record_failure_at(ip, &format!("u{i}"), now);
        }
        let (ips, users) = b.tracked();
        assert!(ips <= MAX_TRACKED && users <= MAX_TRACKED, "{ips} {users}");
    }
}
