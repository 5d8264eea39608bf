//! Reloading what can change without a restart: the password file and ACL, the API keys, the
//! TLS certificates. SIGHUP (`src/bin/mqttd.rs`) and `POST /api/v1/reload` call the same
//! [`Reloader::reload`].

use std::sync::Arc;

use tracing::{info, warn};

use crate::auth::Auth;
use crate::client::Context;
use crate::config::Config;
use crate::tls::Tls;

/// Reloads the password file, ACL and certificates (SIGHUP). Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) ctx: Arc<Context>,
    pub(crate) config: Arc<Config>,
    /// Every TLS listener's certificates by listener name, `[http] tls` as "http".
    pub(crate) tls: Vec<(String, Tls)>,
    pub(crate) api_keys: Arc<crate::auth::apikeys::ApiKeys>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// The authentication state in force now (replaced by each successful reload), e.g. to read
    /// [`Auth::verifications`] in tests and metrics.
    pub fn current_auth(&self) -> Arc<Auth> {
        self.ctx.current_auth()
    }

    /// Re-reads the password file, ACL and certificates. Each is parsed fully before it replaces
    /// the old one; on error the old one stays in force and the error is returned (and logged).
    ///
    /// The new password file is installed first, then the sessions of users it no longer has are
    /// kicked: a login that authenticated against the old file and attaches after the kick sees
    /// the new generation and re-checks its user (`client/admit.rs`). So once this returns, no
    /// connection of a deleted user survives: each is closing or is refused before its CONNACK.
    pub fn reload(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        match Auth::load(&self.config.auth) {
            Ok(auth) => {
                self.ctx.set_auth(auth);
                let current = self.ctx.current_auth();
                let kicked = self.ctx.router.kick_users(|user| current.keeps_user(user));
                info!(
                    "reloaded authentication (password file, ACL); disconnected {kicked} client(s) of removed users"
                );
            }
            Err(e) => {
                warn!("reload: keeping the previous password file and ACL: {e}");
                errors.push(e.to_string());
            }
        }
        if let Some(path) = self.api_keys.path() {
            match self.api_keys.reload() {
                Ok(()) => info!("reloaded API keys from {}", path.display()),
                Err(e) => {
                    warn!("reload: keeping the previous API keys: {e}");
                    errors.push(e.to_string());
                }
            }
        }
        for (name, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => info!(listener = %name, "reloaded TLS certificates"),
                Err(e) => {
                    warn!(listener = %name, "reload: keeping the previous certificates: {e}");
                    errors.push(format!("listener {name:?}: {e}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
