//! TLS: PEM files -> one shared `rustls::ServerConfig`, built at start-up and on reload.
