//! Broker statistics: counters updated on the hot path with relaxed atomics, and the limits hit.
//! A leaf module: the router and the connection code count here; `sys` publishes them as `$SYS`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A configured limit that was hit; each is counted in `$SYS/broker/limits/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    ConnectionsPerIp,
    ConnectTimeout,
    HandshakeTimeout,
    PacketSize,
    ClientIdLength,
    TopicLength,
    TopicLevels,
    Subscriptions,
    QueuedMessages,
    QueuedBytes,
    PublishRate,
}

impl Limit {
    pub const ALL: [Limit; 12] = [
        Limit::MaxConnections,
        Limit::ConnectionsPerIp,
        Limit::ConnectTimeout,
        Limit::HandshakeTimeout,
        Limit::PacketSize,
        Limit::ClientIdLength,
        Limit::TopicLength,
        Limit::TopicLevels,
        Limit::Subscriptions,
        Limit::QueuedMessages,
        Limit::QueuedBytes,
        Limit::PublishRate,
    ];

    /// The config key's name, also the `$SYS/broker/limits/` topic.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::ConnectionsPerIp => "max_connections_per_ip",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::PacketSize => "max_packet_size",
            Limit::ClientIdLength => "max_client_id_length",
            Limit::TopicLength => "max_topic_length",
            Limit::TopicLevels => "max_topic_levels",
            Limit::Subscriptions => "max_subscriptions_per_client",
            Limit::QueuedMessages => "max_queued_messages",
            Limit::QueuedBytes => "max_queued_bytes",
            Limit::PublishRate => "max_publish_rate",
        }
    }
}

/// Why an MQTT login was refused (`mqttd_auth_failure{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown user or wrong password (CONNACK 0x86 / 0x04).
    BadCredentials,
    /// Anonymous where not allowed, backing off, or a failed enhanced authentication (0x87 /
    /// 0x05).
    NotAuthorized,
    /// The password verification pool was saturated (0x88 / 0x03).
    ServerBusy,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 3] = [
        AuthFailure::BadCredentials,
        AuthFailure::NotAuthorized,
        AuthFailure::ServerBusy,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_username_or_password",
            AuthFailure::NotAuthorized => "not_authorized",
            AuthFailure::ServerBusy => "server_busy",
        }
    }
}

/// What the ACL denied (`mqttd_authorization_deny{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    Publish,
    Subscribe,
    /// A delivery to a subscriber (retained messages included) left out.
    Deliver,
}

impl AclAction {
    pub const ALL: [AclAction; 3] = [AclAction::Publish, AclAction::Subscribe, AclAction::Deliver];

    pub fn name(self) -> &'static str {
        match self {
            AclAction::Publish => "publish",
            AclAction::Subscribe => "subscribe",
            AclAction::Deliver => "deliver",
        }
    }
}

/// Counters updated on the hot path with relaxed atomics (no locks).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub clients_connected: AtomicU64,
    pub clients_maximum: AtomicU64,
    /// Hits per [`Limit`], in `Limit::ALL` order.
    limits: [AtomicU64; 12],
    /// MQTT logins let in (password, anonymous, certificate, enhanced authentication).
    pub auth_success: AtomicU64,
    /// MQTT logins refused, per [`AuthFailure`] in `ALL` order.
    auth_failures: [AtomicU64; 3],
    /// ACL denials, per [`AclAction`] in `ALL` order.
    acl_denials: [AtomicU64; 3],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            messages_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            publish_received: AtomicU64::new(0),
            publish_sent: AtomicU64::new(0),
            publish_dropped: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            clients_connected: AtomicU64::new(0),
            clients_maximum: AtomicU64::new(0),
            limits: Default::default(),
            auth_success: AtomicU64::new(0),
            auth_failures: Default::default(),
            acl_denials: Default::default(),
        }
    }
}

impl Stats {
    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }
    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn dropped(&self) {
        self.publish_dropped.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a hit of `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        self.limits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// How often `limit` was hit.
    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limits[limit as usize].load(Ordering::Relaxed)
    }
    /// Counts an MQTT login let in.
    pub fn auth_succeeded(&self) {
        self.auth_success.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a refused MQTT login.
    pub fn auth_failed(&self, why: AuthFailure) {
        self.auth_failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn auth_failures(&self, why: AuthFailure) -> u64 {
        self.auth_failures[why as usize].load(Ordering::Relaxed)
    }
    /// Counts an ACL denial (only denials are counted: an allowed access costs nothing).
    pub fn acl_denied(&self, action: AclAction) {
        self.acl_denials[action as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn acl_denials(&self, action: AclAction) -> u64 {
        self.acl_denials[action as usize].load(Ordering::Relaxed)
    }
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
