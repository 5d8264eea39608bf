//! The HTTP listener: the API (`/api/v1`), Prometheus `/metrics` and `/healthz`, on axum.
//!
//! - `mod.rs`: binding (the default run's listener steps aside if its port is taken), the
//!   router and its layers, serving until the broker's shutdown token fires (graceful: open
//!   requests finish, keep-alive connections are told to close).
//! - `auth.rs`: who is calling (Basic, API key, dashboard session, open on loopback) and what
//!   their role allows; `session.rs`: the dashboard's sessions; `login.rs`: log in and out;
//!   `security.rs`: CSRF, Origin and Host checks (its doc explains them), security headers.
//! - `rates.rs`: the per-second sampler (the last hour of rates); `events.rs`: Server-Sent
//!   Events (stats each second, clients coming and going, live messages).
//! - `api/`: one file per group of endpoints; handlers only translate between JSON and the
//!   broker's own API (router, ingress). `metrics.rs`: `/metrics`. `error.rs`: JSON errors.
//! - `dashboard.rs`: the single-page dashboard at `/` (files in `dashboard/`, embedded).
//! - `tls.rs`: HTTPS with the `[http] tls` certificate (handshakes in their own tasks);
//!   `guard.rs`: a bound on open connections and an idle timeout (slowloris).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub(crate) mod guard;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod rates;
pub mod security;
pub mod session;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::apikeys::ApiKeys;
use crate::client::Context;
use crate::config::{Config, TrustedNet};
use crate::router::subscriber::DropCounter;
use crate::server::StartError;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The broker: router (sessions, statistics), ingress (publishing), auth (password file,
    /// ACL), limits, shutdown.
    pub ctx: Arc<Context>,
    pub api_keys: Arc<ApiKeys>,
    /// `[http] admins` / `viewers`: password-file users and their role.
    pub admins: Vec<String>,
    pub viewers: Vec<String>,
    pub trusted_proxies: Vec<TrustedNet>,
    /// `/metrics` without credentials.
    pub metrics_public: bool,
    /// For `/metrics`: what the message logger and the history recorder dropped.
    pub msglog_drops: Option<DropCounter>,
    pub history_drops: Option<DropCounter>,
    /// `GET /api/v1/listeners`: the MQTT listeners, then this one.
    pub listeners: Vec<api::listeners::ListenerInfo>,
    /// `POST /api/v1/reload`: SIGHUP's reload (None: nothing to reload, as when embedded).
    pub reloader: Option<crate::server::Reloader>,
    /// `GET /api/v1/history` (None: `[history]` is off).
    pub history: Option<crate::store::history::HistoryAccess>,
    /// `GET /api/v1/topics`: the traffic tracker, idle until asked.
    pub topics: api::topics::Tracker,
    /// Dashboard sessions, CSRF, rates, event streams.
    pub web: Web,
    /// CoAP gateways, bridges and webhooks: `/metrics`, `GET /api/v1/gateways`.
    pub gateways: crate::gateway::Statuses,
}

impl AppState {
    /// The state for `config`'s `[http]` (the fields after `msglog_drops` are left empty for the
    /// caller to fill in).
    pub fn new(config: &Config, ctx: Arc<Context>, api_keys: Arc<ApiKeys>) -> AppState {
        let http = config.http.as_ref();
        AppState {
            api_keys,
            admins: http.map(|h| h.admins.clone()).unwrap_or_default(),
            viewers: http.map(|h| h.viewers.clone()).unwrap_or_default(),
            trusted_proxies: http.map(|h| h.trusted_proxies.clone()).unwrap_or_default(),
            metrics_public: http.is_some_and(|h| h.metrics_public),
            msglog_drops: ctx
                .msglog
                .as_ref()
                .map(crate::msglog::MessageLogger::drop_counter),
            history_drops: None,
            listeners: Vec::new(),
            reloader: None,
            history: None,
            topics: api::topics::Tracker::default(),
            ctx,
            web: Web::new(config),
            gateways: Arc::new([]),
        }
    }
}

/// What the dashboard's side of the API keeps (sessions, rates, event streams).
#[derive(Debug)]
pub struct Web {
    pub sessions: session::Sessions,
    /// The CSRF token of local-only (open) mode: random per process, given by
    /// `GET /api/v1/session` (see `security.rs`).
    pub open_csrf: Arc<str>,
    pub rates: rates::Rates,
    /// Server-Sent Events streams open at once (see `events.rs`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Served over https (`[http] tls`): cookies get `Secure`, origins are `https://`.
    pub https: bool,
    /// `[http] bind`: a `Host` naming its address is local (see `security.rs`).
    pub bind: SocketAddr,
}

impl Web {
    /// For `config.http` (defaults without one).
    pub fn new(config: &Config) -> Self {
        let http = config
            .http
            .clone()
            .unwrap_or_else(crate::config::HttpConfig::local);
        Web {
            sessions: session::Sessions::new(http.session_ttl),
            open_csrf: session::random_token().into(),
            rates: rates::Rates::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(events::MAX_STREAMS)),
            https: http.tls.is_some(),
            bind: http.bind,
        }
    }
}

/// A bound HTTP listener, not serving yet.
pub struct HttpServer {
    tcp: TcpListener,
    local: SocketAddr,
    tls: Option<crate::tls::Tls>,
    state: Arc<AppState>,
    /// Its connection slots (see `guard.rs`); `GET /api/v1/listeners` counts the taken ones.
    slots: Arc<tokio::sync::Semaphore>,
}

impl HttpServer {
    /// Binds `config.http` (None when there is none, or when the default run's port is taken:
    /// then a warning says so). `tls`: its certificate, loaded by `server::Resources`.
    pub fn bind(
        config: &Config,
        tls: Option<crate::tls::Tls>,
        mut state: AppState,
    ) -> Result<Option<HttpServer>, StartError> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        let bind_error = |error| StartError::Bind {
            at: config.locate("http.bind"),
            name: "http".into(),
            addr: http.bind,
            error,
        };
        let tcp = match crate::server::bind_tcp(http.bind) {
            Ok(tcp) => tcp,
            Err(e) if http.optional && e.kind() == std::io::ErrorKind::AddrInUse => {
                warn!(
                    "HTTP API not started: {} is in use (another broker?); configure [http] to \
                     choose another port",
                    http.bind
                );
                return Ok(None);
            }
            Err(e) => return Err(bind_error(e)),
        };
        let local = tcp.local_addr().map_err(bind_error)?;
        let slots = guard::slots();
        state.listeners.push(api::listeners::ListenerInfo::http(
            local,
            tls.clone(),
            slots.clone(),
        ));
        if !local.ip().is_loopback() && tls.is_none() {
            warn!(
                "HTTP API on {local} is reachable beyond loopback without TLS: passwords and API \
                 keys cross the network in clear text (set [http] tls, or terminate TLS in a proxy)"
            );
        }
        for user in state.admins.iter().chain(&state.viewers) {
            if !state.ctx.auth.current().has_user(user) {
                warn!(
                    "{}: http user {user:?} is not in the password file (yet)",
                    config.locate("http")
                );
            }
        }
        Ok(Some(HttpServer {
            tcp,
            local,
            tls,
            state: Arc::new(state),
            slots,
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` fires; then open requests finish and connections close.
    pub async fn run(self, shutdown: CancellationToken) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        info!("HTTP API on {scheme}://{}/api/v1", self.local);
        let sampler = rates::run(self.state.clone(), shutdown.clone());
        let app = app(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone().cancelled_owned();
        // `tap_io` gives the peer address as connect info for any listener.
        use axum::serve::ListenerExt as _;
        let serve = async {
            match self.tls {
                None => {
                    let listener = guard::Guarded::new(self.tcp, self.slots).tap_io(|_| {});
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                Some(tls) => {
                    let listener = tls::TlsListener::start(self.tcp, tls, shutdown.clone());
                    let listener = guard::Guarded::new(listener, self.slots).tap_io(|_| {});
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }
            }
        };
        let (served, ()) = tokio::join!(serve, sampler);
        if let Err(e) = served {
            warn!("HTTP API stopped: {e}");
        }
    }
}

/// Requests larger than this are refused (413) before they are read whole: a publish of the
/// largest message the broker takes, base64-encoded (4/3), with room for its JSON.
fn body_limit(max_packet_size: usize) -> usize {
    max_packet_size.saturating_mul(4) / 3 + 64 * 1024
}

/// The routes and their layers.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = body_limit(state.ctx.limits.max_packet_size);
    let protected = Router::new()
        .route("/api/v1/stats", get(api::stats::get))
        .route("/api/v1/clients", get(api::clients::list))
        .route(
            "/api/v1/clients/{id}",
            get(api::clients::get).delete(api::clients::disconnect),
        )
        .route("/api/v1/publish", post(api::publish::publish))
        .route("/api/v1/publish/bulk", post(api::bulk::publish))
        .route("/api/v1/sessions/{id}", delete(api::sessions::discard))
        .route("/api/v1/subscriptions", get(api::subscriptions::list))
        .route("/api/v1/topics", get(api::topics::list))
        .route("/api/v1/retained", get(api::retained::list))
        .route(
            "/api/v1/retained/{*topic}",
            get(api::retained::get).delete(api::retained::delete),
        )
        .route("/api/v1/listeners", get(api::listeners::list))
        .route("/api/v1/gateways", get(api::gateways::list))
        .route("/api/v1/reload", post(api::reload::reload))
        .route("/api/v1/history", get(api::history::query))
        .route("/api/v1/stats/series", get(rates::series))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/session", get(login::session))
        .route("/api/v1/logout", post(login::logout));
    let protected = if state.metrics_public {
        protected
    } else {
        protected.route("/metrics", get(metrics::metrics))
    };
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    // The dashboard's page and files hold no data: public, like /healthz.
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/login", post(login::login))
        .route("/api/v1/openapi.json", get(openapi::get))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset));
    let open = if state.metrics_public {
        open.route("/metrics", get(metrics::metrics))
    } else {
        open
    };
    protected
        .merge(open)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::layer,
        ))
        .with_state(state)
}

/// `GET /healthz`: 200 while the broker runs (no credentials: for load balancers and probes).
async fn healthz() -> &'static str {
    "ok\n"
}
