//! The scripted HTTP(S) receiver the webhook tests send to: axum on 127.0.0.1:0, each request
//! reported as an event, answers from a script, then a default status; held while `open` is
//! false.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::common::{self, WAIT};

/// One request the receiver got.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub at: Instant,
}

impl Seen {
    pub fn payload(&self) -> &str {
        self.body["payload"].as_str().expect("payload is a string")
    }
}

/// A scripted answer: the status and an optional `Retry-After`.
pub type Answer = (u16, Option<&'static str>);

/// How the receiver answers: the scripted answers first, then `status`; held while `open` is
/// false.
#[derive(Clone)]
pub struct Behaviour {
    pub status: Arc<AtomicU16>,
    pub script: Arc<Mutex<VecDeque<Answer>>>,
    pub open: Arc<watch::Sender<bool>>,
    seen: mpsc::UnboundedSender<Seen>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub behaviour: Behaviour,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn answer(
    State(b): State<Behaviour>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).expect("the body is JSON");
    let _ = b.seen.send(Seen {
        method,
        headers,
        body,
        at: Instant::now(),
    });
    let (code, retry_after) = b
        .script
        .lock()
        .pop_front()
        .unwrap_or((b.status.load(Ordering::SeqCst), None));
    let _ = b.open.subscribe().wait_for(|open| *open).await;
    let mut response = StatusCode::from_u16(code).unwrap().into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static(secs));
    }
    response
}

impl Receiver {
    fn app() -> (axum::Router, Behaviour, mpsc::UnboundedReceiver<Seen>) {
        let (tx, seen) = mpsc::unbounded_channel();
        let behaviour = Behaviour {
            status: Arc::new(AtomicU16::new(200)),
            script: Default::default(),
            open: Arc::new(watch::channel(true).0),
            seen: tx,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::any(answer))
            .with_state(behaviour.clone());
        (app, behaviour, seen)
    }

    /// Plain HTTP on `addr` (port 0: any).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let (app, behaviour, seen) = Receiver::app();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            addr,
            behaviour,
            seen,
        }
    }

    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// HTTPS with the test PKI's server certificate.
    pub async fn start_tls(pki: &common::certs::Pki) -> Receiver {
        let (app, behaviour, seen) = Receiver::app();
        let issued = pki.issue_server_cert();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.der], issued.key_der)
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            addr,
            behaviour,
            seen,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request, within `WAIT`.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("a request in time")
            .expect("receiver alive")
    }

    /// No request for `quiet`.
    pub async fn expect_none(&mut self, quiet: Duration) {
        if let Ok(seen) = tokio::time::timeout(quiet, self.seen.recv()).await {
            panic!("unexpected request: {seen:?}");
        }
    }
}

/// Accepts TLS connections for axum (handshakes one at a time: enough for a test).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(Ok(tls)) = tokio::time::timeout(WAIT, self.acceptor.accept(tcp)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
