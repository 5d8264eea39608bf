//! TLS: PEM files -> one shared `rustls::ServerConfig`, built at start-up and on reload.
//! (Placeholder with the final API; the real implementation lands with the TLS branch.)

use crate::config::TlsConfig;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct Tls {}

impl Tls {
    pub fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        Err(TlsError::Unsupported(format!(
            "{}: TLS is not built yet",
            cfg.cert.display()
        )))
    }
    pub fn reload(&self) -> Result<(), TlsError> {
        Ok(())
    }
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Option<String>), TlsError> {
        drop(io);
        Err(TlsError::Unsupported("TLS is not built yet".into()))
    }
}
