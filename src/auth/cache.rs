//! A short-lived memory of credentials that verified successfully, so reconnect storms do not
//! each pay for argon2.
//!
//! The password itself is never stored: an entry holds HMAC-SHA256 over the password, keyed with
//! 32 random bytes drawn when the cache is created (so a memory dump does not give an offline
//! guessing target that is cheaper than the real hash without also taking the key, and the key dies
//! with the process / the next reload). Entries are only inserted after a successful verification,
//! expire after the TTL, and the map never holds more than `capacity` usernames.

use std::collections::HashMap;
use std::fmt;
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
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_slice()).ok()?;
        // Length-prefix the username so (user, password) pairs cannot collide by shifting bytes.
        mac.update(&(username.len() as u64).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password);
        let out = mac.finalize().into_bytes();
        let mut tag = [0u8; 32];
        if out.len() != tag.len() {
            return None;
        }
        tag.copy_from_slice(&out);
        Some(tag)
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
}
