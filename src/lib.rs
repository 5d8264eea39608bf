//! # mqttd: a secure, fast MQTT broker
//!
//! Architecture map (each concern lives in one file or folder):
//!
//! ```text
//!  listener.rs   accept loop per [[listener]]: max_connections permit, per-IP slot, TCP_NODELAY,
//!      |         accept back-off, one task per socket (the TLS handshake runs in that task under
//!      |         handshake_timeout: tls.rs)
//!      v
//!  session.rs    one task per connection, generic over AsyncRead + AsyncWrite (TCP and TLS alike):
//!      |         CONNECT within connect_timeout -> auth/ (before anything reaches the router)
//!      |         -> router attaches the session (takeover, resume) -> CONNACK
//!      |         -> loop: socket | outbox | keep alive x1.5 | kick | shutdown, writes batched;
//!      |         MQTT 5.0 per-connection state (aliases, receive maximum, expiry) and limits.
//!      |         An idle plain-TCP connection parks: its task ends, its socket moves to
//!      |         park.rs's epoll set, and it resumes as a new task when something happens
//!      v
//!  router/       shared broker state, called directly from session tasks (no router task to
//!                serialise through): subscription trie with shared groups (trie.rs), retained
//!                trie (retained.rs), sessions by client id, and each session's outbox, in-flight
//!                and QoS 2 state (state.rs). Fan-out pushes an Arc<Message> into each matching
//!                session's bounded outbox and wakes its task; it never awaits a socket.
//! ```
//!
//! - [`protocol`]: our strict codec (3.1, 3.1.1, 5.0), packet model, topic rules, reason codes.
//! - [`connection`]: framed, cancel-safe reads and batched, cancel-safe writes over any stream.
//! - [`config`]: the TOML file, safe defaults, validation with file:line errors.
//! - [`auth`]: password file and `mqtt-passwd`'s file handling, argon2 verification pool,
//!   credential cache, back-off, ACL, SCRAM-SHA-256 enhanced authentication (MQTT 5.0 AUTH).
//! - [`tls`]: PEM -> one shared rustls `ServerConfig` (aws-lc-rs), reloadable.
//! - [`sys`]: statistics, limit counters and `$SYS`; [`msglog`]: the `[MSG]` message logger.
//! - [`server`]: binds listeners, runs until the shutdown token fires, drains; SIGHUP reloads.

pub mod auth;
pub mod client;
pub mod config;
pub mod connection;
pub mod ingress;
pub mod listener;
pub mod msglog;
pub mod park;
pub mod protocol;
pub mod router;
pub mod server;
pub mod stats;
pub mod sys;
pub mod timer;
pub mod tls;
