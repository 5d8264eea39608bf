//! Flood and amplification defences, and duplicate detection:
//!
//! - [`RateLimiter`]: a token bucket per source IP (`request_rate`, `request_burst`); requests
//!   past it are dropped unanswered (answering a flood would be the flood's amplifier).
//! - [`Echo`]: RFC 9175's Echo option. A response to an address that has not proven it receives
//!   what we send is at most [`AMPLIFICATION`] times the request (section 2.4); a larger body is
//!   sent block-wise in blocks that fit, carrying an Echo value. A request that returns a fresh
//!   Echo value (an HMAC of its address and the time) has proven its address, which then gets
//!   full-size blocks for [`VERIFIED_FOR`].
//! - [`Dedup`]: RFC 7252 section 4.5: a confirmable request repeated (same source, same message
//!   id) within EXCHANGE_LIFETIME gets the same response again, and is not published twice.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

/// RFC 9175 section 2.4: at most this factor between an unverified request and its response.
pub const AMPLIFICATION: usize = 3;
/// How long an Echo value is accepted after it was issued.
const ECHO_FRESH: Duration = Duration::from_secs(300);
/// How long an address stays verified after a good Echo.
pub const VERIFIED_FOR: Duration = Duration::from_secs(600);
/// Addresses remembered as verified, or with a bucket: bounded so that a spoofed-source flood
/// cannot grow the maps (past it, the oldest half is forgotten).
const MAX_TRACKED: usize = 65_536;

/// A token bucket per source IP.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip`; false: over its rate.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.tidy(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled (they would start full again anyway).
    pub fn tidy(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
        });
        if self.buckets.len() >= MAX_TRACKED {
            self.buckets.clear();
        }
    }
}

/// RFC 9175 Echo values and the addresses they verified.
#[derive(Debug)]
pub struct Echo {
    key: [u8; 32],
    epoch: Instant,
    verified: HashMap<SocketAddr, Instant>,
}

/// The Echo option's number.
pub const ECHO_OPTION: u16 = 252;

impl Echo {
    pub fn new(now: Instant) -> Self {
        Echo {
            key: rand::random(),
            epoch: now,
            verified: HashMap::new(),
        }
    }

    fn mac(&self, peer: SocketAddr, stamp: u32) -> [u8; 8] {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&stamp.to_be_bytes());
        match peer.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag[..8]);
        out
    }

    /// A fresh Echo value for `peer`: a time stamp (seconds since start) and its MAC.
    pub fn issue(&self, peer: SocketAddr, now: Instant) -> Vec<u8> {
        let stamp = now.saturating_duration_since(self.epoch).as_secs() as u32;
        let mut v = stamp.to_be_bytes().to_vec();
        v.extend_from_slice(&self.mac(peer, stamp));
        v
    }

    /// Checks an Echo value `peer` sent back; a good one verifies the address.
    pub fn check(&mut self, peer: SocketAddr, value: &[u8], now: Instant) -> bool {
        let Ok(value) = <[u8; 12]>::try_from(value) else {
            return false;
        };
        let stamp = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        let age = now.saturating_duration_since(self.epoch).as_secs();
        let fresh = age >= u64::from(stamp) && age - u64::from(stamp) <= ECHO_FRESH.as_secs();
        let good =
            fresh && subtle::ConstantTimeEq::ct_eq(&self.mac(peer, stamp)[..], &value[4..]).into();
        if good {
            if self.verified.len() >= MAX_TRACKED {
                self.tidy(now);
            }
            self.verified.insert(peer, now);
        }
        good
    }

    pub fn verified(&self, peer: SocketAddr, now: Instant) -> bool {
        self.verified
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < VERIFIED_FOR)
    }

    pub fn tidy(&mut self, now: Instant) {
        self.verified
            .retain(|_, at| now.saturating_duration_since(*at) < VERIFIED_FOR);
        if self.verified.len() >= MAX_TRACKED {
            self.verified.clear();
        }
    }
}

/// Responses to recent confirmable requests, by source and message id.
#[derive(Debug)]
pub struct Dedup {
    /// None: still being handled (a duplicate is ignored: the response follows).
    responses: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    order: VecDeque<(Instant, SocketAddr, u16)>,
    lifetime: Duration,
    max: usize,
}

/// What to do with a confirmable request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Handled already: send this again.
    Answered(Vec<u8>),
    /// Being handled: drop the duplicate.
    InProgress,
}

impl Dedup {
    pub fn new(lifetime: Duration, max: usize) -> Self {
        Dedup {
            responses: HashMap::new(),
            order: VecDeque::new(),
            lifetime,
            max,
        }
    }

    /// Records a request (if new) and says what to do with it.
    pub fn seen(&mut self, peer: SocketAddr, mid: u16, now: Instant) -> Seen {
        self.expire(now);
        match self.responses.get(&(peer, mid)) {
            Some(Some(bytes)) => return Seen::Answered(bytes.clone()),
            Some(None) => return Seen::InProgress,
            None => {}
        }
        while self.order.len() >= self.max {
            if let Some((_, p, m)) = self.order.pop_front() {
                self.responses.remove(&(p, m));
            }
        }
        self.responses.insert((peer, mid), None);
        self.order.push_back((now, peer, mid));
        Seen::New
    }

    /// The response to a recorded request.
    pub fn answered(&mut self, peer: SocketAddr, mid: u16, bytes: &[u8]) {
        if let Some(slot) = self.responses.get_mut(&(peer, mid)) {
            *slot = Some(bytes.to_vec());
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, p, m)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.lifetime {
                break;
            }
            self.order.pop_front();
            self.responses.remove(&(p, m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut r = RateLimiter::new(10, 3);
        assert!((0..3).all(|_| r.allow(ip, now)));
        assert!(!r.allow(ip, now));
        assert!(
            r.allow("10.0.0.2".parse().unwrap(), now),
            "another source is not affected"
        );
        assert!(r.allow(ip, now + Duration::from_millis(110)));
        assert!(!r.allow(ip, now + Duration::from_millis(110)));
    }

    #[test]
    fn echo_verifies_only_its_own_address_while_fresh() {
        let now = Instant::now();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        let mut e = Echo::new(now);
        let v = e.issue(a, now);
        assert!(!e.verified(a, now));
        assert!(!e.check(b, &v, now));
        assert!(!e.check(a, &v[..11], now));
        assert!(e.check(a, &v, now + Duration::from_secs(10)));
        assert!(e.verified(a, now + Duration::from_secs(10)));
        assert!(!e.check(a, &v, now + Duration::from_secs(400)), "stale");
    }

    #[test]
    fn duplicates_get_the_same_answer() {
        let now = Instant::now();
        let p: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut d = Dedup::new(Duration::from_secs(10), 2);
        assert_eq!(d.seen(p, 1, now), Seen::New);
        assert_eq!(d.seen(p, 1, now), Seen::InProgress);
        d.answered(p, 1, b"ack");
        assert_eq!(d.seen(p, 1, now), Seen::Answered(b"ack".to_vec()));
        assert_eq!(d.seen(p, 2, now), Seen::New);
        assert_eq!(d.seen(p, 3, now), Seen::New);
        assert_eq!(d.seen(p, 1, now), Seen::New, "evicted by the bound");
        assert_eq!(d.seen(p, 4, now + Duration::from_secs(11)), Seen::New);
        assert_eq!(d.responses.len(), 1, "expired");
    }
}
