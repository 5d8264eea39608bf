//! Connection scenarios: many idle clients (memory per connection) and the connect rate.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_util::sync::CancellationToken;

use super::dial::{self, Conn, Transport};
use super::wire;
use super::{Opts, Report, Scenario, measure, rss_bytes};

/// How long the connections scenario may spend opening its clients.
const CONNECT_PHASE: Duration = Duration::from_secs(60);
/// Per step of one connect-rate cycle (TCP connect, TLS, CONNACK, close).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The first error seen, kept for the final message.
#[derive(Default)]
struct FirstError(Mutex<Option<String>>);

impl FirstError {
    fn set(&self, e: &anyhow::Error) {
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// `connections`: opens `--clients` idle connections (keep-alive 10 minutes, longer than any
/// run) and reads the broker's VmRSS before and after.
pub async fn connections(opts: &Opts) -> Result<Report> {
    let n = opts.clients;
    let rss_before = opts.broker_pid.map(rss_bytes).transpose()?;
    let start = Instant::now();
    let deadline = start + CONNECT_PHASE;
    let workers = opts.concurrency.min(n.max(1));
    let errors = Arc::new(FirstError::default());
    let mut set = JoinSet::new();
    for w in 0..workers {
        let (addr, errors, transport) = (opts.addr(), errors.clone(), opts.transport());
        set.spawn(async move {
            let mut held = Vec::with_capacity(n / workers + 1);
            let mut failed = 0usize;
            for i in (w..n).step_by(workers) {
                if Instant::now() > deadline {
                    failed += 1;
                    continue;
                }
                match idle_client(addr, &transport, i).await {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        errors.set(&e);
                        failed += 1;
                    }
                }
            }
            (held, failed)
        });
    }
    let (mut held, mut failed) = (Vec::with_capacity(n), 0);
    while let Some(r) = set.join_next().await {
        let (h, f) = r.context("a connecting task panicked")?;
        held.extend(h);
        failed += f;
    }
    let connect_secs = start.elapsed().as_secs_f64();
    // Let the broker finish whatever it does after CONNACK before reading its memory.
    tokio::time::sleep(opts.warmup).await;
    let rss_after = opts.broker_pid.map(rss_bytes).transpose()?;
    let connected = held.len();
    drop(held);
    if connected == 0 {
        bail!(
            "no client got a CONNACK: {}",
            errors.get().unwrap_or_default()
        );
    }
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / connected as f64),
        _ => None,
    };
    let mut report = Report::new(Scenario::Connections, opts);
    report.add("rss_per_conn_bytes", per_conn, "B");
    report.add("connected", connected as f64, "clients");
    report.add("failed", failed as f64, "clients");
    report.add("connect_seconds", connect_secs, "s");
    report.add(
        "rss_before_kb",
        rss_before.map(|b| b as f64 / 1024.0),
        "KiB",
    );
    report.add("rss_after_kb", rss_after.map(|b| b as f64 / 1024.0), "KiB");
    if let Some(e) = errors.get() {
        eprintln!("connections: first failure: {e}");
    }
    Ok(report)
}

async fn idle_client(addr: std::net::SocketAddr, t: &Transport, i: usize) -> Result<Conn> {
    let mut s = dial::dial(addr, t).await?;
    let mut rbuf = BytesMut::with_capacity(64);
    let connect = wire::connect_packet(&format!("bench-idle-{i}"), 600, None);
    wire::handshake(&mut s, &connect, &mut rbuf).await?;
    Ok(s)
}

/// A TLS client configuration trusting only `cafile`, with session resumption off so every
/// connection is a full handshake.
pub fn tls_connector(cafile: &Path) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cafile)
        .with_context(|| format!("reading {}", cafile.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", cafile.display()))?)
            .context("adding the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the certificate verifier")?;
    let verifier = Arc::new(ChainOnce {
        inner: webpki,
        verified: Mutex::new(Vec::new()),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Verifies the broker's certificate chain as any client does (webpki, against `--cafile`), but
/// each distinct chain only once per run: thousands of handshakes with one broker would otherwise
/// re-verify the same bytes every time, a sixth of the generator's CPU, which on a 2-core machine
/// the broker needs. Every handshake's own signature (the broker proving it holds the key) is
/// still checked, so each connection still costs the broker a full handshake.
#[derive(Debug)]
struct ChainOnce {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<Chain>>,
}

/// A verified chain: end entity, intermediates, server name.
type Chain = (Vec<u8>, Vec<Vec<u8>>, String);

impl ServerCertVerifier for ChainOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = (
            end_entity.to_vec(),
            intermediates.iter().map(|c| c.to_vec()).collect::<Vec<_>>(),
            server_name.to_str().into_owned(),
        );
        if self.verified.lock().unwrap().contains(&key) {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.verified.lock().unwrap().push(key);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// CONNECT -> CONNACK -> DISCONNECT, then wait for the broker to close first (so the TIME_WAIT
/// state stays on the broker's side and the client does not run out of ephemeral ports).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    connect: &[u8],
    disconnect: &[u8],
) -> Result<()> {
    let mut rbuf = BytesMut::with_capacity(256);
    wire::handshake(s, connect, &mut rbuf).await?;
    wire::send(s, disconnect)
        .await
        .context("sending DISCONNECT")?;
    let mut sink = [0u8; 256];
    // EOF, an error (a TLS peer closing without close_notify) or the timeout all end the wait.
    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
        for _ in 0..100 {
            if !matches!(s.read(&mut sink).await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

async fn one_cycle(
    opts: &Opts,
    transport: &Transport,
    tls: Option<&TlsConnector>,
    connect: &[u8],
    disconnect: &[u8],
) -> Result<()> {
    let Some(tls) = tls else {
        // dial bounds the TCP connect, PROXY header and upgrade by its own timeout.
        let mut s = dial::dial(opts.addr(), transport).await?;
        return session(&mut s, connect, disconnect).await;
    };
    let mut tcp = tokio::time::timeout(STEP_TIMEOUT, dial::tcp(opts.addr()))
        .await
        .map_err(|_| anyhow!("TCP connect timed out"))??;
    if transport.proxy_v2 {
        // TLS passthrough: the proxy's header comes before the TLS bytes.
        dial::send_proxy_header(&mut tcp).await?;
    }
    let name = ServerName::from(opts.host);
    let mut s = tokio::time::timeout(STEP_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake")?;
    session(&mut s, connect, disconnect).await
}

/// `connect-rate`: `--concurrency` clients, each with its own fixed client id (returning clients
/// with repeat credentials), loop connect -> CONNACK -> DISCONNECT.
pub async fn connect_rate(opts: &Opts) -> Result<Report> {
    let tls = match (&opts.cafile, opts.tls) {
        (Some(ca), true) => Some(Arc::new(tls_connector(ca)?)),
        _ => None,
    };
    // MQTT_PASSWORD is only looked at when a username is given (scripts export it for all runs).
    let password =
        match (&opts.username, &opts.password) {
            (None, Some(_)) => bail!("--password needs --username"),
            (None, None) => None,
            (Some(_), Some(p)) => Some(p.clone()),
            (Some(_), None) => Some(std::env::var("MQTT_PASSWORD").map_err(|_| {
                anyhow!("--username needs --password or the MQTT_PASSWORD variable")
            })?),
        };
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(FirstError::default());
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut set = JoinSet::new();
    for w in 0..opts.concurrency {
        let creds = opts.username.clone().zip(password.clone());
        let connect = wire::connect_packet(
            &format!("bench-cr-{w}"),
            60,
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        );
        let disconnect = wire::disconnect_packet();
        let (opts, tls, stop) = (opts.clone(), tls.clone(), stop.clone());
        let transport = opts.transport();
        let (ok, failed, errors) = (ok.clone(), failed.clone(), errors.clone());
        set.spawn(async move {
            while !stop.is_cancelled() {
                let cycle = one_cycle(&opts, &transport, tls.as_deref(), &connect, &disconnect);
                let r = tokio::select! {
                    r = cycle => r,
                    _ = stop.cancelled() => break,
                };
                match r {
                    Ok(()) => {
                        ok.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        errors.set(&e);
                        failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let w = measure(opts, || [ok.load(Relaxed), failed.load(Relaxed)]).await;
    let ([connects, failures], secs) = (w.counts, w.secs);
    stop.cancel();
    while let Some(r) = set.join_next().await {
        r.context("a connecting task panicked")?;
    }
    if ok.load(Relaxed) == 0 {
        bail!(
            "no connection succeeded: {}",
            errors.get().unwrap_or_default()
        );
    }
    if let Some(e) = errors.get() {
        eprintln!("connect-rate: first failure: {e}");
    }
    let mut report = Report::new(Scenario::ConnectRate, opts);
    report.add("connects_per_s", connects as f64 / secs, "connects/s");
    report.add("failures", failures as f64, "");
    report.add("concurrency", opts.concurrency as f64, "clients");
    report.add("tls", f64::from(u8::from(tls.is_some())), "");
    report.add("password", f64::from(u8::from(opts.username.is_some())), "");
    report.add("ws", f64::from(u8::from(opts.ws)), "");
    report.add("proxy_v2", f64::from(u8::from(opts.proxy_v2)), "");
    report.add("seconds", secs, "s");
    w.add_cpu(&mut report);
    Ok(report)
}
