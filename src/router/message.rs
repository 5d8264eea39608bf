//! The message as the broker holds it: built once per PUBLISH, shared by every subscriber.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::protocol::{Properties, QoS};
use crate::timer;

/// An application message as the broker holds it: built once per PUBLISH and shared by every
/// subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5.0 properties to forward (None for 3.1.1 publishers). Topic Alias and Subscription
    /// Identifiers are never stored here: they are per connection.
    pub properties: Option<Box<Properties>>,
    /// Session id of the publisher (0: the broker itself, e.g. `$SYS` or a will).
    pub origin: u64,
    /// Who published it, for observers that record it (the message history). Set by the
    /// ingress only while one needs it (an `Arc` clone per message then, nothing otherwise);
    /// None for the broker's own messages.
    pub published_by: Option<Arc<PublishedBy>>,
    /// From the 5.0 Message Expiry Interval: not delivered after this (wall-clock, see
    /// [`crate::timer::wall_now`]).
    pub expires_at: Option<SystemTime>,
    /// Its row in the store's `messages` table once a persistent session queued it (0: none
    /// yet). Set by the store's writer thread only, which stores the payload once however many
    /// sessions it is queued for.
    pub store_id: AtomicU64,
}

/// The identity a message was published under: a client's (also for its will), or another
/// front end's.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishedBy {
    pub client_id: Arc<str>,
    /// The authenticated user (None: anonymous).
    pub username: Option<Arc<str>>,
}

impl Message {
    pub fn new(topic: Arc<str>, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Message {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            origin: 0,
            published_by: None,
            expires_at: None,
            store_id: AtomicU64::new(0),
        }
    }

    /// Sets `properties`, and the expiry time from their Message Expiry Interval.
    pub fn with_properties(mut self, properties: Option<Box<Properties>>) -> Self {
        self.expires_at = properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| timer::wall_after(Duration::from_secs(u64::from(secs))));
        self.properties = properties;
        self
    }

    /// The message a will becomes, and its Will Delay Interval (taken out of its properties:
    /// it is not forwarded). Its expiry counts from now.
    pub fn from_will(will: &crate::protocol::LastWill) -> (Message, u32) {
        let mut properties = will.properties.clone();
        let delay = properties
            .as_deref_mut()
            .and_then(|p| p.will_delay_interval.take())
            .unwrap_or(0);
        let msg = Message::new(
            will.topic.clone(),
            will.payload.clone(),
            will.qos,
            will.retain,
        )
        .with_properties(properties);
        (msg, delay)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds left of the Message Expiry Interval, as forwarded to subscribers.
    /// Rounded up, as whole seconds elapsed are subtracted: a message forwarded at once keeps
    /// its interval (as Mosquitto does), and one about to expire says 1, never 0.
    pub fn remaining_expiry(&self, now: SystemTime) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at
                .duration_since(now)
                .unwrap_or_default()
                .as_millis()
                .div_ceil(1000)
                .max(1);
            u32::try_from(left).unwrap_or(u32::MAX)
        })
    }
}
