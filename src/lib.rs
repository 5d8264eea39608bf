//! # mqttd: a secure, fast MQTT broker
//!
//! Architecture map: a PUBLISH from socket to subscriber, one concern per file or folder.
//!
//! ```text
//!  listener.rs     accept loop per [[listener]]: max_connections permit, per-IP slot, TCP_NODELAY,
//!      |           one task per socket, where the front door runs: PROXY header (proxy.rs), TLS
//!      |           handshake (tls.rs, transport/tls.rs), WebSocket upgrade (transport/ws/).
//!      |           InMemory: the same without a socket (tests on paused time, embedding).
//!      v
//!  connection.rs   framed, cancel-safe reads and batched writes over any Stream (TCP, TLS, ws,
//!      |           wss, pipe)
//!      v
//!  client/         one MQTT connection:
//!      |             mod.rs      serve(): CONNECT within connect_timeout, then the loop
//!      |             admit.rs    client id, password login (auth/), attach, CONNACK
//!      |             enhanced.rs 5.0 AUTH exchanges (SCRAM) and re-authentication
//!      |             run.rs      the packet loop: socket | outbox | keep alive | kick | shutdown
//!      |             handlers.rs one handler per packet type (PUBLISH goes to the ingress)
//!      |             outbound.rs outbox -> PUBLISH / PUBREL, acks and replies
//!      |             acks.rs     PUBACK/PUBREC that wait for the store's commit
//!      |             alias.rs    5.0 topic aliases both ways
//!      |             exit.rs     why it ended, DISCONNECT, the will, detach
//!      |             park.rs     an idle connection (TCP, TLS, ws, wss) leaves its task (park.rs
//!      |                         holds it)
//!      |             context.rs  what all connections share; per-IP slots
//!      v
//!  ingress.rs      THE way in, for every source (MQTT, will, $SYS, HTTP, CoAP, bridges; next
//!      |           a cluster link): Publisher identity + Message -> topic checks, limits, ACL Write,
//!      |           statistics -> router; a typed Outcome back (PUBACK code, HTTP status, ...)
//!      v
//!  router/         subscriptions (trie.rs), retained messages (retained.rs), sessions by client
//!      |           id (sessions.rs), each session's queue, in-flight and QoS 2 state (state.rs),
//!      |           what leaves it for the client (outbox.rs), what the store keeps (persist.rs).
//!      |           Fan-out pushes an Arc<Message> into each matching subscriber's bounded queue
//!      |           and wakes it; it never awaits a socket.
//!      v
//!  subscribers     an MQTT connection's session (drained by client/outbound.rs), or a
//!                  router/subscriber.rs handle for everything else: the [MSG] logger (msglog.rs)
//!                  the message history (store/history/) and the dashboard's live view
//!                  (http/events.rs), CoAP observers and webhooks (gateway/). A bridge's local
//!                  side is a persistent session a gateway attaches and detaches
//!                  (router/attached.rs), so the store keeps its queue.
//! ```
//!
//! Where the next pieces plug in:
//! - **A new transport**: a [`connection::Stream`] made in the listener's task (as
//!   [`transport::ws`] is); `client/` never knows which transport it has. Parking needs
//!   [`connection::Stream::into_socket`] to give the socket and its [`transport::Framing`] back.
//! - **A new publisher** (like the HTTP API's, CoAP's, a bridge's; next a cluster link): an
//!   [`ingress::Publisher`] with its
//!   [`ingress::Source`], then [`ingress::Ingress::publish`]; map the [`ingress::Outcome`].
//! - **A new subscriber kind**: [`router::Router::subscriber`] gives a
//!   [`router::subscriber::SubscriberHandle`] (filters, bounded queue, acks, ACL identity);
//!   observers (history, live views) never count as matching subscribers nor slow publishers.
//! - **The store** ([`store`]): SQLite, one writer thread committing in groups. The router hands
//!   it each change to keep (`router/persist.rs`: retained messages, persistent sessions) and
//!   gets a [`store::Ticket`]; the acknowledgement that promises durability waits for it
//!   (`client/acks.rs`). Deadlines are wall-clock ([`timer::wall_now`]).
//! - **The message history** ([`store::history`], `[history]`): an observer that records what is
//!   routed into `history.db` from a thread of its own; `mqttd history` reads it.
//! - **Time**: [`timer`] runs every deadline (session expiry, will delay, parked keep-alive) on
//!   tokio's clock.
//!
//! The rest:
//! - [`protocol`]: our strict codec (3.1, 3.1.1, 5.0), packet model, topic rules, reason codes.
//! - [`config`]: the TOML file, safe defaults, validation with file:line errors.
//! - [`auth`]: password file and `mqtt-passwd`'s file handling, argon2 verification pool,
//!   credential cache, back-off, ACL, SCRAM-SHA-256 enhanced authentication, the auth state in
//!   force ([`auth::AuthCell`]).
//! - [`tls`]: PEM -> one shared rustls `ServerConfig` (aws-lc-rs), reloadable; record keys that
//!   give their memory back while parked ([`tls::keys`]).
//! - [`transport`]: the TLS stream (rustls' unbuffered connection, parkable), MQTT over WebSocket
//!   (frames unwrapped in the connection's own buffer);
//!   [`proxy`]: the PROXY protocol header and the `proxy_trusted` gate.
//! - [`stats`]: counters and limit hits (a leaf); [`sys`]: publishes them as `$SYS`.
//! - [`gateway`]: the other doors, each an ingress user and a router subscriber, each shown
//!   through one [`gateway::GatewayStatus`] (`$SYS`, `/metrics`, `GET /api/v1/gateways`): CoAP
//!   over UDP ([`gateway::coap`]: EMQX's URIs, observe, block-wise, rate and amplification
//!   limits), bridges to other MQTT brokers ([`gateway::bridge`]: Mosquitto's topic lines, a
//!   persistent local session, TCP/TLS to the remote, back-off), HTTP webhooks
//!   ([`gateway::webhook`]: an observer, a bounded buffer, retries, reqwest over rustls).
//! - [`server`]: binds listeners, runs until the shutdown token fires, drains; [`reload`]: what
//!   SIGHUP and `POST /api/v1/reload` re-read (password file, ACL, API keys, certificates).
//! - [`http`]: the HTTP API (`/api/v1`: stats, clients and sessions, subscriptions, topics,
//!   retained messages, listeners, reload, history, publish through the ingress as the caller),
//!   `/metrics` and `/healthz` on axum; Basic auth through [`auth`] (same pool, cache, back-off
//!   as MQTT), API keys ([`auth::apikeys`]), dashboard sessions with CSRF and Origin checks; the
//!   client list comes from [`router::clients`]; topic rates from an observer started on demand
//!   (`http/api/topics.rs`). Live views: a per-second rate sampler, and Server-Sent Events fed
//!   by the router's client events ([`router::clients::ClientEvents`]) and an observer per
//!   stream; the dashboard at `/` (`http/dashboard.rs`, its files embedded) and the OpenAPI
//!   description (`http/openapi.json`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod config;
pub mod connection;
pub mod gateway;
pub mod http;
pub mod ingress;
pub mod listener;
pub mod msglog;
pub mod park;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod stats;
pub mod store;
pub mod sys;
pub mod timer;
pub mod tls;
pub mod transport;
