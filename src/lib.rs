//! # mqttd: a secure, fast MQTT broker
//!
//! Architecture map (each concern lives in one file or folder):
//!
//! ```text
//!  listener.rs   accept loop per [[listener]]: connection permit, accept back-off, spawn per socket
//!      |         (TLS handshake happens inside the spawned task, under a timeout: tls.rs)
//!      v
//!  session.rs    one task per connection, generic over AsyncRead + AsyncWrite (TCP and TLS alike):
//!      |         first packet must be CONNECT (connect_timeout) -> auth/ -> router admits the session
//!      |         -> CONNACK -> packet loop (select over socket, outbox notification, keep-alive, shutdown)
//!      v
//!  router/       shared broker state, called directly from session tasks (no router task to serialise
//!                through): subscription trie, retained trie, sessions by client id. Fan-out pushes into
//!                each subscriber's bounded outbox and wakes its task; it never awaits a socket.
//! ```
//!
//! - [`protocol`]: our strict codec (3.1, 3.1.1, 5.0), packet model, topic rules.
//! - [`connection`]: framed, cancel-safe reads and batched writes over any stream.
//! - [`config`]: the TOML file, defaults, validation.
//! - [`auth`]: password file, argon2 verification pool, credential cache, ACL, SCRAM-SHA-256
//!   enhanced authentication.
//! - [`sys`]: `$SYS` statistics; [`msglog`]: the `[MSG]` message logger.
//! - [`server`]: binds listeners and runs everything until the shutdown token fires.

pub mod auth;
pub mod config;
pub mod connection;
pub mod listener;
pub mod msglog;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod sys;
pub mod tls;
