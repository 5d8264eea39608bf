//! The auth state in force, swapped whole on reload, and per-holder snapshots of it.
//!
//! Every connection (and every other publisher or subscriber) keeps an [`AuthSnapshot`]: checking
//! the ACL then costs one atomic load of the generation, not a lock and a reference count shared
//! by every core. A reload installs a new [`Auth`] and bumps the generation; each snapshot picks
//! the new one up at its next check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::{Access, Auth};

#[derive(Debug)]
pub struct AuthCell {
    current: RwLock<Arc<Auth>>,
    generation: AtomicU64,
}

/// One holder's copy of the auth state, refreshed by [`AuthCell::refresh`].
#[derive(Debug, Clone)]
pub struct AuthSnapshot {
    generation: u64,
    auth: Arc<Auth>,
}

impl AuthCell {
    pub fn new(auth: Auth) -> Self {
        AuthCell {
            current: RwLock::new(Arc::new(auth)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn current(&self) -> Arc<Auth> {
        self.current.read().clone()
    }

    /// Bumped by every [`AuthCell::set`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Installs a newly loaded `Auth` for new connections and for the ACL checks of existing ones.
    pub fn set(&self, auth: Auth) {
        *self.current.write() = Arc::new(auth);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn snapshot(&self) -> AuthSnapshot {
        // Generation first: a reload between the two reads is then seen at the next refresh.
        let generation = self.generation();
        AuthSnapshot {
            generation,
            auth: self.current(),
        }
    }

    /// Brings `snap` up to date after a reload; returns the auth in force.
    pub fn refresh<'a>(&self, snap: &'a mut AuthSnapshot) -> &'a Arc<Auth> {
        let generation = self.generation();
        if generation != snap.generation {
            *snap = self.snapshot();
        }
        &snap.auth
    }
}

impl AuthCell {
    /// Whether `username` / `client_id` may use `topic` as `access` under the ACL in force
    /// (`snap` brought up to date first).
    pub fn allowed(
        &self,
        snap: &mut AuthSnapshot,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        self.refresh(snap);
        snap.allowed(username, client_id, topic, access)
    }
}

impl AuthSnapshot {
    /// The [`AuthCell::generation`] this snapshot was taken at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The auth as of this snapshot (see [`AuthCell::refresh`] to bring it up to date).
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Whether `username` / `client_id` may use `topic` as `access` (true without an ACL).
    pub fn allowed(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        !self.auth.has_acl() || self.auth.check(username, client_id, topic, access)
    }
}
