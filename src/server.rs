//! Putting it together: bind every listener, load auth and TLS, run until the shutdown token fires,
//! then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{Auth, AuthCell, AuthError};
use crate::client::Context;
use crate::config::Config;
use crate::ingress::{Ingress, IngressLimits};
use crate::listener::Listener;
use crate::msglog::MessageLogger;
use crate::park::Parker;
pub use crate::reload::Reloader;
use crate::router::{Router, RouterLimits};
use crate::store::history::History;
use crate::tls::{Tls, TlsError};

/// How long connections get to close after shutdown before the broker exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the broker cannot start. Each names the configuration file and the line of the setting at
/// fault (`at`), then the problem, which names its own file and line where it has one (a PEM file,
/// the password file, the ACL).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The causes are part of each message and deliberately not `source`s: the binary prints the
    // error chain, which would repeat them.
    #[error("{at}: listener {name:?}: cannot bind {addr}: {error}")]
    Bind {
        at: String,
        name: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{at}: listener {name:?}: {error}")]
    Tls {
        at: String,
        name: String,
        error: TlsError,
    },
    #[error("{at}: {error}")]
    Auth { at: String, error: AuthError },
    #[error("{at}: log.file {path}: {error}")]
    LogFile {
        at: String,
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{at}: persistence: {error}")]
    Store {
        at: String,
        error: crate::store::StoreError,
    },
    #[error("{at}: history: {error}")]
    History {
        at: String,
        error: crate::store::history::HistoryError,
    },
    #[error("{at}: {kind} {name:?}: {error}")]
    Gateway {
        at: String,
        kind: &'static str,
        name: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{at}: http.api_keys: {error}")]
    ApiKeys {
        at: String,
        error: crate::auth::passwd::PasswdError,
    },
}

/// Everything start-up loads from the files a configuration names: the password file and ACL,
/// each TLS listener's certificates and key, and the log file (checked, not created). `mqttd
/// --check-config` loads the same, so a file that would stop the start fails the check; only
/// binding the ports is left to the start.
pub struct Resources {
    auth: Auth,
    /// One per listener, in order: `Some` for TLS listeners.
    tls: Vec<Option<Tls>>,
    /// `[http] tls`, and the `[http] api_keys` file (empty without one).
    http_tls: Option<Tls>,
    api_keys: Arc<crate::auth::apikeys::ApiKeys>,
}

impl Resources {
    /// Loads and checks everything `config` names. Blocking (file I/O and one argon2 run).
    pub fn load(config: &Config) -> Result<Resources, StartError> {
        let auth = Auth::load(&config.auth).map_err(|error| StartError::Auth {
            at: config.locate("auth"),
            error,
        })?;
        let mut tls = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let loaded = match &l.tls {
                Some(t) => Some(Tls::load(t).map_err(|error| StartError::Tls {
                    at: config.locate(&format!("listener.{i}.tls")),
                    name: l.name.clone(),
                    error,
                })?),
                None => None,
            };
            tls.push(loaded);
        }
        let http = config.http.as_ref();
        let http_tls = match http.and_then(|h| h.tls.as_ref()) {
            Some(t) => Some(Tls::load(t).map_err(|error| StartError::Tls {
                at: config.locate("http.tls"),
                name: "http".into(),
                error,
            })?),
            None => None,
        };
        let api_keys = crate::auth::apikeys::ApiKeys::load(
            http.and_then(|h| h.api_keys.as_deref()),
        )
        .map_err(|error| StartError::ApiKeys {
            at: config.locate("http.api_keys"),
            error,
        })?;
        crate::gateway::Gateways::check(config)?;
        if let Some(path) = &config.log.file {
            check_log_file(path).map_err(|error| StartError::LogFile {
                at: config.locate("log.file"),
                path: path.clone(),
                error,
            })?;
        }
        Ok(Resources {
            auth,
            tls,
            http_tls,
            api_keys: Arc::new(api_keys),
        })
    }
}

/// Can `path` be appended to? An existing file is opened (not written); a missing one needs an
/// existing directory to be created in.
fn check_log_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if std::fs::metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
        }
        Err(e) => Err(e),
    }
}

/// A bound, ready broker.
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<Listener>,
    addrs: Vec<(String, SocketAddr)>,
    reloader: Reloader,
    sys_interval: u64,
    /// The message history's recorder (`[history]`), closed after the connections.
    history: Option<History>,
    /// The HTTP API (`[http]`; None when off, or when the default run's port was taken).
    http: Option<crate::http::HttpServer>,
    /// CoAP gateways, bridges and webhooks (`[[coap]]`, `[[bridge]]`, `[[webhook]]`).
    gateways: crate::gateway::Gateways,
    coap_addrs: Vec<(String, SocketAddr)>,
}

impl Server {
    /// Binds every listener of `config` (port 0 picks a free port), loads auth and TLS. Errors
    /// name the listener or file at fault.
    pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<Server, StartError> {
        Server::bind_with_log(config, shutdown, None).await
    }

    /// As [`Server::bind`], with the message log written to `msglog_sink` instead of the configured
    /// destination (tests capture it this way).
    pub async fn bind_with_log(
        config: Config,
        shutdown: CancellationToken,
        msglog_sink: Option<Box<dyn std::io::Write + Send>>,
    ) -> Result<Server, StartError> {
        let Resources {
            auth,
            tls,
            http_tls,
            api_keys,
        } = Resources::load(&config)?;
        let mut router = Router::new(RouterLimits::from(&config.limits));
        let mut stored = None;
        if config.persistence.enabled {
            let (with_store, restored) = open_store(&config, router)?;
            router = with_store;
            stored = Some(restored);
        }
        let router = Arc::new(router);
        let history = match config.history.enabled {
            false => None,
            true => Some(
                History::start(&config.history, &config.persistence.path, &router).map_err(
                    |error| StartError::History {
                        at: config.locate("history"),
                        error,
                    },
                )?,
            ),
        };
        let msglog = match (config.log.messages, msglog_sink) {
            (false, _) => None,
            (true, Some(sink)) => Some(MessageLogger::start(sink, &router)),
            (true, None) => Some(MessageLogger::start(
                match &config.log.file {
                    Some(path) => {
                        crate::msglog::open_file(path).map_err(|error| StartError::LogFile {
                            at: config.locate("log.file"),
                            path: path.clone(),
                            error,
                        })?
                    }
                    None => crate::msglog::stdout(),
                },
                &router,
            )),
        };
        let auth = Arc::new(AuthCell::new(auth));
        let ingress = Arc::new(
            Ingress::new(
                router.clone(),
                auth.clone(),
                IngressLimits::from(&config.limits),
            )
            // The history records who published; a webhook's body names them.
            .record_publishers(history.is_some() || !config.webhooks.is_empty()),
        );
        if let Some(stored) = stored {
            restore_sessions(&ingress, stored);
        }
        let timer = router.timer().clone();
        let ctx = Arc::new(Context {
            router,
            ingress,
            auth,
            limits: config.limits.clone(),
            msglog,
            shutdown,
            parker: match Parker::new(timer) {
                Ok(parker) => Some(parker),
                Err(e) => {
                    warn!("idle connections will not be parked: {e}");
                    None
                }
            },
            connections_per_ip: Default::default(),
        });
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut tls_list = Vec::new();
        let tls_all = tls.clone();
        for (i, (l, tls)) in config.listeners.iter().zip(tls).enumerate() {
            if let Some(tls) = &tls {
                tls_list.push((l.name.clone(), tls.clone()));
            }
            let bind_error = |error| StartError::Bind {
                at: config.locate(&format!("listener.{i}.bind")),
                name: l.name.clone(),
                addr: l.bind,
                error,
            };
            let tcp = bind_tcp(l.bind).map_err(bind_error)?;
            let local = tcp.local_addr().map_err(bind_error)?;
            let allow_anonymous = config.listener_allows_anonymous(l);
            if allow_anonymous && !l.bind.ip().is_loopback() {
                warn!(listener = %l.name, "anonymous access is allowed on {local}, which is reachable beyond loopback");
            }
            addrs.push((l.name.clone(), local));
            listeners.push(Listener {
                name: l.name.as_str().into(),
                tcp,
                tls,
                max_connections: l.max_connections,
                allow_anonymous,
                proxy: (l.proxy_protocol != crate::config::ProxyProtocol::Off).then(|| {
                    Arc::new(crate::proxy::ProxyGate {
                        version: l.proxy_protocol,
                        trusted: l.proxy_trusted.clone(),
                        use_identity_as_username: l.use_identity_as_username,
                    })
                }),
                ws: (l.protocol == crate::config::ListenerProtocol::Ws).then(|| {
                    Arc::new(crate::transport::ws::WsOptions {
                        path: l.path.clone().unwrap_or_else(|| "/mqtt".into()),
                        origins: l.ws_origins.clone(),
                        trusted: l.proxy_trusted.clone(),
                        max_frame: config.limits.max_packet_size,
                    })
                }),
            });
        }
        if let Some(tls) = &http_tls {
            tls_list.push(("http".into(), tls.clone()));
        }
        let gateways = crate::gateway::Gateways::start(&config, &ctx)?;
        let coap_addrs = gateways.coap_addrs();
        let config = Arc::new(config);
        let reloader = Reloader {
            ctx: ctx.clone(),
            config: config.clone(),
            tls: tls_list,
            api_keys: api_keys.clone(),
        };
        let mut state = crate::http::AppState::new(&config, ctx.clone(), api_keys);
        state.listeners = crate::http::api::listeners::ListenerInfo::of(&config, &addrs, &tls_all);
        state.reloader = Some(reloader.clone());
        state.history = history.as_ref().map(History::access);
        state.history_drops = history.as_ref().map(History::drop_counter);
        state.gateways = gateways.statuses();
        let http = crate::http::HttpServer::bind(&config, http_tls, state)?;
        let sys_interval = config.sys.interval;
        Ok(Server {
            ctx,
            listeners,
            addrs,
            reloader,
            sys_interval,
            history,
            http,
            gateways,
            coap_addrs,
        })
    }

    /// The HTTP API's bound address (None: no HTTP listener).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(crate::http::HttpServer::local_addr)
    }

    /// The address each listener is bound to, by listener name.
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The bound UDP address of the CoAP gateway called `name`.
    pub fn coap_addr(&self, name: &str) -> Option<SocketAddr> {
        self.coap_addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Each CoAP gateway's bound UDP address, by name.
    pub fn coap_addrs(&self) -> &[(String, SocketAddr)] {
        &self.coap_addrs
    }

    /// Every gateway's status (`$SYS`, `/metrics`, the API read the same).
    pub fn gateways(&self) -> crate::gateway::Statuses {
        self.gateways.statuses()
    }

    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Where idle connections park (None if it could not be set up).
    pub fn parker(&self) -> Option<Arc<Parker<crate::client::Idle>>> {
        self.ctx.parker.clone()
    }

    /// The shared router (for tests and embedding).
    pub fn router(&self) -> Arc<Router> {
        self.ctx.router.clone()
    }

    /// Connections over in-process pipes instead of sockets (see [`crate::listener::InMemory`]).
    pub fn in_memory(&self, allow_anonymous: bool) -> crate::listener::InMemory {
        crate::listener::InMemory::new(self.ctx.clone(), allow_anonymous)
    }

    /// The one way into the router, for publishers that are not MQTT connections (and tests).
    pub fn ingress(&self) -> Arc<crate::ingress::Ingress> {
        self.ctx.ingress.clone()
    }

    /// What the message logger dropped so far (None: the message log is off).
    pub fn message_log_drops(&self) -> Option<crate::router::subscriber::DropCounter> {
        self.ctx.msglog.as_ref().map(MessageLogger::drop_counter)
    }

    /// What the message history's recorder dropped so far (None: the history is off).
    pub fn history_drops(&self) -> Option<crate::router::subscriber::DropCounter> {
        self.history.as_ref().map(History::drop_counter)
    }

    /// Serves until the shutdown token fires, then stops accepting, closes every connection and
    /// waits (at most 5 s) for them to finish.
    pub async fn run(self) {
        let tracker = TaskTracker::new();
        for (name, addr) in &self.addrs {
            info!(listener = %name, "listening on {addr}");
        }
        tracker.spawn(
            self.ctx
                .router
                .timer()
                .clone()
                .run(self.ctx.shutdown.clone()),
        );
        if let Some(parker) = &self.ctx.parker {
            tracker.spawn(parker.clone().run(self.ctx.shutdown.clone()));
        }
        for listener in self.listeners {
            tracker.spawn(listener.run(self.ctx.clone(), tracker.clone()));
        }
        if let Some(http) = self.http {
            tracker.spawn(http.run(self.ctx.shutdown.clone()));
        }
        let statuses = self.gateways.statuses();
        self.gateways.run(&tracker, &self.ctx.shutdown);
        if self.sys_interval > 0 {
            let interval = Duration::from_secs(self.sys_interval);
            tracker.spawn(crate::sys::run(
                self.ctx.ingress.clone(),
                statuses,
                interval,
                self.ctx.shutdown.clone(),
            ));
        }
        self.ctx.shutdown.cancelled().await;
        info!(
            "shutting down: closing {} connection(s)",
            self.ctx
                .router
                .stats
                .clients_connected
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some connections did not close within {DRAIN_DEADLINE:?}");
        }
        drop(self.reloader);
        if let Some(history) = self.history {
            // Writes what is queued (wills of the connections just closed included); blocking.
            let _ = tokio::task::spawn_blocking(move || history.close()).await;
        }
        if let Some(store) = self.ctx.router.store().cloned() {
            // Commits what is queued; blocking, so off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        if let Ok(ctx) = Arc::try_unwrap(self.ctx)
            && let Some(log) = ctx.msglog
        {
            log.close();
        }
    }
}

/// What the store held, restored before any listener opens.
struct Stored {
    sessions: Vec<crate::store::StoredSession>,
    /// For the log line: what was read, and how long reading took.
    retained: usize,
    queued: usize,
    skipped: usize,
    took: std::time::Duration,
    db: std::path::PathBuf,
}

/// Opens the store `config.persistence` names and restores its retained messages into
/// `router`; its sessions follow in [`restore_sessions`], once the ingress (for their wills)
/// exists.
fn open_store(config: &Config, router: Router) -> Result<(Router, Stored), StartError> {
    let (store, restored) =
        crate::store::Store::open(&config.persistence).map_err(|error| StartError::Store {
            at: config.locate("persistence"),
            error,
        })?;
    let stored = Stored {
        retained: restored.retained.len(),
        queued: restored.queued,
        skipped: restored.skipped,
        took: restored.took,
        db: store.db_path().to_owned(),
        sessions: restored.sessions,
    };
    let router = router.with_store(store);
    router.restore_retained(restored.retained);
    Ok((router, stored))
}

/// Restores the stored sessions (and schedules their wills), and logs what was restored.
fn restore_sessions(ingress: &Arc<Ingress>, stored: Stored) {
    let started = std::time::Instant::now();
    let sessions = stored.sessions.len();
    for (session, will) in ingress.router().restore_sessions(stored.sessions) {
        crate::client::restore_will(ingress, &session, will);
    }
    info!(
        "store {}: restored {} retained message(s), {sessions} session(s) and {} queued message(s) in {} ms{}",
        stored.db.display(),
        stored.retained,
        stored.queued,
        (stored.took + started.elapsed()).as_millis(),
        match stored.skipped {
            0 => String::new(),
            n => format!(" ({n} unreadable row(s) left out, see above)"),
        }
    );
}

/// Pending connections the kernel may hold for us (capped by `net.core.somaxconn`). tokio's
/// `TcpListener::bind` uses 1024, which a burst of thousands of devices reconnecting at once
/// overflows, stalling them for a SYN retransmit (1 s, then 3 s, ...).
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
