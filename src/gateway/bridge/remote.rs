//! The remote connection: TCP (or TLS with rustls), CONNECT, CONNACK. Everything read is
//! decoded by our strict codec with our own maximum packet size; everything written goes through
//! its bounded encoder, so a misbehaving remote cannot make the bridge panic or write a
//! malformed packet.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::warn;

use super::BridgeError;
use crate::config::{BridgeConfig, BridgeProtocol, BridgeTls, split_host_port};
use crate::connection::Connection;
use crate::protocol::{
    self, ConnAck, ConnAckReason, Connect, Packet, Password, Properties, ProtocolVersion,
};

/// Connecting, the TLS handshake and the CONNACK each get this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Mosquitto's bridge marker (`try_private`): the CONNECT's protocol level with its top bit
/// set tells a Mosquitto remote that we are a bridge, so it does not send our own messages
/// back to us and keeps their retain flag (its bridges' No Local and Retain As Published).
const BRIDGE_BIT: u8 = 0x80;

/// The remote's stream: TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type RemoteConn = Connection<Box<dyn Io>>;

/// Why a connection attempt or a connected link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Read(#[from] crate::connection::ReadError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("the remote refused the connection: {0}")]
    Refused(ConnAckReason),
    #[error("the remote broke the protocol: {0}")]
    Protocol(String),
    #[error("the remote closed the connection{0}")]
    Closed(String),
    #[error("the local session was closed (its queue overflowed while the remote was slow)")]
    Kicked,
}

/// What the bridge needs to open a connection, made once from the configuration.
#[derive(Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    pub version: ProtocolVersion,
    pub client_id: String,
    pub clean_start: bool,
    pub username: Option<String>,
    /// Redacted in `Debug`, zeroed when dropped.
    pub password: Option<Password>,
    pub keepalive: u16,
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Largest packet accepted from the remote (the broker's `limits.max_packet_size`).
    pub max_packet_size: usize,
    /// Inbound QoS 1/2 messages the remote may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
    /// 3.1.1: send the bridge marker. Cleared (as Mosquitto does) when a remote refuses it as an
    /// unsupported protocol version; set again at a restart.
    pub marker: AtomicBool,
}

impl Remote {
    pub fn new(cfg: &BridgeConfig, max_packet_size: usize) -> Result<Remote, BridgeError> {
        let (host, port) = split_host_port(&cfg.address)
            .ok_or_else(|| BridgeError::Address(cfg.address.clone()))?;
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(client_tls(t, host)?),
        };
        Ok(Remote {
            host: host.to_owned(),
            port,
            version: match cfg.protocol {
                BridgeProtocol::V5 => ProtocolVersion::V5,
                BridgeProtocol::V311 => ProtocolVersion::V311,
            },
            client_id: cfg.remote_client_id(),
            clean_start: cfg.clean_start,
            username: cfg.username.clone(),
            password: read_password(cfg)?,
            keepalive: u16::try_from(cfg.keepalive.as_secs()).unwrap_or(u16::MAX),
            tls,
            max_packet_size,
            receive_maximum: 64,
            marker: AtomicBool::new(true),
        })
    }

    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn open(&self) -> Result<(RemoteConn, ConnAck, SocketAddr), LinkError> {
        let tcp = tokio::time::timeout(
            STEP_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| LinkError::Timeout("connecting"))??;
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr()?;
        let mut stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| LinkError::Timeout("in the TLS handshake"))?
                    .map_err(LinkError::Tls)?;
                Box::new(tls)
            }
        };
        let connect = self.connect_bytes()?;
        tokio::time::timeout(STEP_TIMEOUT, async {
            stream.write_all(&connect).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| LinkError::Timeout("sending CONNECT"))??;
        let mut conn = Connection::new(stream, self.max_packet_size);
        conn.version = self.version;
        let io = async { conn.read_packet().await.map_err(LinkError::from) };
        let first = tokio::time::timeout(STEP_TIMEOUT, io)
            .await
            .map_err(|_| LinkError::Timeout("waiting for CONNACK"))??;
        match first {
            Some(Packet::ConnAck(ack)) if ack.code == ConnAckReason::Success => {
                let max = ack.properties.as_ref().and_then(|p| p.maximum_packet_size);
                conn.set_peer_max_packet_size(max);
                Ok((conn, ack, peer))
            }
            Some(Packet::ConnAck(ack)) => {
                if ack.code == ConnAckReason::UnsupportedProtocolVersion
                    && !self.version.is_v5()
                    && self.marker.swap(false, Ordering::Relaxed)
                {
                    warn!(remote = %self.host,
                        "the remote does not take the bridge marker (try_private); retrying as a \
                         plain 3.1.1 client. It may send our own messages back on `both` topics \
                         (they are not forwarded again); prefer protocol = \"v5\" with it");
                }
                Err(LinkError::Refused(ack.code))
            }
            Some(other) => Err(LinkError::Protocol(format!(
                "{} instead of CONNACK",
                other.name()
            ))),
            None => Err(LinkError::Closed(" before CONNACK".into())),
        }
    }

    /// The CONNECT, encoded; for 3.1.1 with the bridge marker in its protocol level.
    fn connect_bytes(&self) -> Result<BytesMut, LinkError> {
        let v5 = self.version.is_v5();
        let properties = v5.then(|| {
            Box::new(Properties {
                // Kept across disconnections unless Clean Start: the remote queues for us.
                session_expiry_interval: (!self.clean_start).then_some(u32::MAX),
                receive_maximum: Some(self.receive_maximum),
                maximum_packet_size: u32::try_from(self.max_packet_size).ok(),
                ..Properties::default()
            })
        });
        let connect = Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keepalive,
            client_id: self.client_id.clone(),
            will: None,
            username: self.username.clone(),
            password: self.password.clone(),
            properties,
        };
        let mut buf = BytesMut::new();
        protocol::encode(&Packet::Connect(Box::new(connect)), self.version, &mut buf)
            .map_err(|e| LinkError::Protocol(format!("cannot encode CONNECT: {e}")))?;
        if !v5 && self.marker.load(Ordering::Relaxed) {
            mark_bridge(&mut buf);
        }
        Ok(buf)
    }
}

/// Sets [`BRIDGE_BIT`] in an encoded CONNECT's protocol level: the byte after the fixed header
/// (1 byte and a variable-length integer) and the protocol name ("MQTT" with its 2-byte length).
fn mark_bridge(buf: &mut BytesMut) {
    let len_bytes = buf
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1);
    if let Some(level) = buf.get_mut(1 + len_bytes + 6) {
        *level |= BRIDGE_BIT;
    }
}

/// The remote password, from `password_file` or `password_env`.
fn read_password(cfg: &BridgeConfig) -> Result<Option<Password>, BridgeError> {
    if let Some(path) = &cfg.password_file {
        let mut bytes = std::fs::read(path).map_err(|source| BridgeError::Password {
            from: path.display().to_string(),
            why: source.to_string(),
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok(Some(Password::new(bytes)));
    }
    if let Some(var) = &cfg.password_env {
        return match std::env::var_os(var) {
            Some(v) => Ok(Some(Password::new(v.into_encoded_bytes()))),
            None => Err(BridgeError::Password {
                from: format!("${var}"),
                why: "the environment variable is not set".into(),
            }),
        };
    }
    Ok(None)
}

/// rustls client configuration (aws-lc-rs, TLS 1.2 and 1.3) and the name to verify.
fn client_tls(
    t: &BridgeTls,
    host: &str,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), BridgeError> {
    let tls_err = |e: crate::tls::TlsError| BridgeError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::read_certs(&t.ca).map_err(tls_err)? {
        roots.add(cert).map_err(|e| {
            BridgeError::Tls(format!(
                "{}: not a usable CA certificate: {e}",
                t.ca.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
        .map_err(|e| BridgeError::Tls(format!("crypto provider: {e}")))?
        .with_root_certificates(roots);
    let config = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::read_certs(cert).map_err(tls_err)?;
            let key_der = crate::tls::read_key(key).map_err(tls_err)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| BridgeError::Tls(format!("{}: {e}", display(cert))))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = t.server_name.as_deref().unwrap_or(host).to_owned();
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| BridgeError::Tls(format!("{name:?} is not a valid TLS server name")))?;
    Ok((Arc::new(config), server_name))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_marker_sets_the_level_bit() {
        let remote = Remote {
            host: "h".into(),
            port: 1,
            version: ProtocolVersion::V311,
            client_id: "c".repeat(200),
            clean_start: false,
            username: None,
            password: None,
            keepalive: 60,
            tls: None,
            max_packet_size: 1 << 20,
            receive_maximum: 64,
            marker: AtomicBool::new(true),
        };
        let bytes = remote.connect_bytes().unwrap();
        // Two-byte remaining length here: level at 1 + 2 + 6.
        assert_eq!(bytes[9], 0x84);
        assert_eq!(&bytes[3..9], b"\0\x04MQTT");
        remote.marker.store(false, Ordering::Relaxed);
        assert_eq!(remote.connect_bytes().unwrap()[9], 0x04);
    }
}
