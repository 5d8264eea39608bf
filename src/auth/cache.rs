//! Short-lived memories of credentials: those that verified successfully
//! ([`CredentialCache`]), so reconnect storms do not each pay for argon2, and those that failed
//! from one address ([`FailedLogins`]), so a device retrying a stale password is answered without
//! a hash and is not counted as guessing again.
//!
//! The password itself is never stored: an entry holds HMAC-SHA256 over the password, keyed with
//! 32 random bytes drawn when the cache is created (so a memory dump does not give an offline
//! guessing target that is cheaper than the real hash without also taking the key, and the key dies
//! with the process / the next reload). Entries are only inserted after a verification, expire
//! after their TTL, and neither map ever holds more than its capacity.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type Tag = [u8; 32];

pub(crate) struct CredentialCache {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Tag, Instant)>>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("len", &self.entries.lock().len())
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 under `key` over `parts`, each length-prefixed so that no two different
/// sequences of parts (say user and password) can collide by shifting bytes between them.
fn tag(key: &[u8; 32], parts: &[&[u8]]) -> Option<Tag> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    let out = mac.finalize().into_bytes();
    let mut tag = [0u8; 32];
    if out.len() != tag.len() {
        return None;
    }
    tag.copy_from_slice(&out);
    Some(tag)
}

impl CredentialCache {
    /// A zero `ttl` disables the cache.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        CredentialCache {
            key: Zeroizing::new(rand::random()),
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, username: &str, password: &[u8]) -> Option<Tag> {
        tag(&self.key, &[username.as_bytes(), password])
    }

    /// Was this exact username/password verified within the TTL?
    pub(crate) fn hit(&self, username: &str, password: &[u8]) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let Some(tag) = self.tag(username, password) else {
            return false;
        };
        let mut entries = self.entries.lock();
        match entries.get(username) {
            Some((_, expires)) if *expires <= Instant::now() => {
                entries.remove(username);
                false
            }
            Some((stored, _)) => bool::from(stored.ct_eq(&tag)),
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, username: &str, password: &[u8]) {
        if self.ttl.is_zero() {
            return;
        }
        let Some(tag) = self.tag(username, password) else {
            return;
        };
        let now = Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(username) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                // Still full of live entries: forget an arbitrary one (it only costs a re-verify).
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(username.to_owned(), (tag, expires));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Credentials that failed, per address, for `failure_window`: a repeat of the same username and
/// password from the same address is known to be wrong without a hash. Keyed by address too, so a
/// client learns nothing about what failed elsewhere. The time is tokio's, like the back-off's.
pub(crate) struct FailedLogins {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Tag, tokio::time::Instant>>,
}

impl fmt::Debug for FailedLogins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedLogins")
            .field("ttl", &self.ttl)
            .field("len", &self.entries.lock().len())
            .finish_non_exhaustive()
    }
}

impl FailedLogins {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        FailedLogins {
            key: Zeroizing::new(rand::random()),
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, ip: IpAddr, username: &str, password: &[u8]) -> Option<Tag> {
        let ip = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        tag(&self.key, &[&ip, username.as_bytes(), password])
    }

    /// Did exactly these credentials fail from `ip` within the TTL?
    pub(crate) fn contains(&self, ip: IpAddr, username: &str, password: &[u8]) -> bool {
        let Some(tag) = self.tag(ip, username, password) else {
            return false;
        };
        let now = tokio::time::Instant::now();
        let mut entries = self.entries.lock();
        match entries.get(&tag) {
            Some(expires) if *expires <= now => {
                entries.remove(&tag);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Remembers a failed verification.
    pub(crate) fn insert(&self, ip: IpAddr, username: &str, password: &[u8]) {
        let Some(tag) = self.tag(ip, username, password) else {
            return;
        };
        let now = tokio::time::Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&tag) {
            entries.retain(|_, expires| *expires > now);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(tag, expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_only_for_the_same_password_and_within_ttl() {
        let c = CredentialCache::new(Duration::from_millis(200), 10);
        assert!(!c.hit("u", b"pw"));
        c.insert("u", b"pw");
        assert!(c.hit("u", b"pw"));
        assert!(!c.hit("u", b"pw2"));
        assert!(!c.hit("v", b"pw"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!c.hit("u", b"pw"));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn bounded_and_disabled_by_zero_ttl() {
        let c = CredentialCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            c.insert(&format!("u{i}"), b"pw");
        }
        assert_eq!(c.len(), 3);
        assert!(c.hit("u9", b"pw"));
        let off = CredentialCache::new(Duration::ZERO, 3);
        off.insert("u", b"pw");
        assert!(!off.hit("u", b"pw"));
    }

    #[test]
    fn debug_shows_no_key_or_tags() {
        let c = CredentialCache::new(Duration::from_secs(1), 3);
        c.insert("alice", b"pw");
        let d = format!("{c:?}");
        assert!(!d.contains("alice") && !d.contains("key"), "{d}");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_logins_match_address_user_and_password_within_ttl() {
        let ip = IpAddr::from([192, 0, 2, 1]);
        let other = IpAddr::from([192, 0, 2, 2]);
        let f = FailedLogins::new(Duration::from_secs(60), 10);
        f.insert(ip, "u", b"pw");
        assert!(f.contains(ip, "u", b"pw"));
        assert!(!f.contains(other, "u", b"pw"), "per address");
        assert!(!f.contains(ip, "u", b"pw2") && !f.contains(ip, "v", b"pw"));
        // The same bytes split differently are different credentials.
        f.insert(ip, "ab", b"c");
        assert!(!f.contains(ip, "a", b"bc"));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(!f.contains(ip, "u", b"pw"));
        for i in 0..20 {
            f.insert(ip, &format!("u{i}"), b"x");
        }
        assert!(f.entries.lock().len() <= 10);
    }
}
