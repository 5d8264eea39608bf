//! Authentication and authorization, as the connection handler sees it.
//!
//! [`Auth`] is built from `[auth]` once at start-up and swapped wholesale on reload, so a broken
//! file never half-applies. The session calls [`Auth::authenticate`] with the CONNECT credentials
//! *before* anything reaches the router, and the ACL checks on every PUBLISH / SUBSCRIBE / delivery.
//!
//! Password checks, in order (see [`Auth::authenticate`]; `backoff.rs` documents the back-off
//! rules exactly):
//! 1. no password: refused (bad credentials) at once, not counted as a guess;
//! 2. a hit in the credential cache (same username and password verified within `cache_ttl`) is let
//!    in without hashing; a cache hit proves the password, so it is honoured even while the
//!    *username* backs off (otherwise anyone could lock a busy account out by guessing at it);
//! 3. the same username and password that already failed from this address within
//!    `failure_window`: refused (bad credentials) at once, not counted again;
//! 4. a username in back-off is refused at once (not authorised);
//! 5. the login waits for a turn of its address (an address that keeps failing gets its turns
//!    one at a time and ever later; never refused for it unless the wait would exceed
//!    `backoff_max`: then "server unavailable");
//! 6. the hash is verified on the blocking pool, at most `verify_threads` at a time, waiting at
//!    most `verify_wait` for a slot. Unknown users are verified against a dummy argon2id hash so
//!    they cost the same as a known user's wrong password.
//!
//! MQTT 5.0 enhanced authentication ([`enhanced`]) is offered with a password file: SCRAM-SHA-256
//! ([`scram`]) for users whose line carries SCRAM credentials. The connection code runs the
//! exchange (it owns the socket) and goes through the same rules with a [`LoginAttempt`]: it asks
//! before giving a verdict and records the outcome.
//!
//! A successful login with a Mosquitto (`$7$`/`$6$`) or weaker-than-default argon2 hash re-hashes
//! the password to argon2id and atomically rewrites the password file (failure only logs).

pub mod acl;
pub mod apikeys;
mod backoff;
mod cache;
mod cell;
pub use cell::{AuthCell, AuthSnapshot};
pub mod credentials;
pub mod enhanced;
pub mod passwd;
pub mod scram;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::config::{AuthConfig, MAX_VERIFY_THREADS};
use crate::protocol::Password;

use backoff::{Backoff, Turn};
use cache::{CredentialCache, FailedLogins};
use credentials::{Argon2Params, PasswordHash};
use enhanced::AuthMethod;
use passwd::{PasswdError, PasswordFile};

/// What the CONNECT offered, plus where it came from.
#[derive(Debug)]
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a Password>,
    pub peer: SocketAddr,
    /// The listener's effective `allow_anonymous`.
    pub allow_anonymous: bool,
    /// The verified client certificate's CN when the listener has `use_identity_as_username`.
    pub cert_identity: Option<&'a str>,
}

/// The verdict, which the session maps onto CONNACK codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Let in, as this user (None: anonymous).
    Allowed { username: Option<String> },
    /// Unknown user or wrong password: 3.1.1 0x04, 5.0 0x86.
    BadCredentials,
    /// Anonymous where not allowed, or banned/backing off: 3.1.1 0x05, 5.0 0x87.
    NotAuthorized,
    /// The verification pool is saturated: 3.1.1 0x03, 5.0 0x88.
    Unavailable,
}

/// Kind of access an ACL check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// PUBLISH from the client.
    Write,
    /// Delivery of a message (including retained) to the client.
    Read,
    /// SUBSCRIBE to a filter.
    Subscribe,
}

impl Access {
    /// What a denial of this access counts as in the statistics.
    pub fn action(self) -> crate::stats::AclAction {
        match self {
            Access::Write => crate::stats::AclAction::Publish,
            Access::Subscribe => crate::stats::AclAction::Subscribe,
            Access::Read => crate::stats::AclAction::Deliver,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Load(String),
}

impl From<PasswdError> for AuthError {
    fn from(e: PasswdError) -> Self {
        AuthError::Load(e.to_string())
    }
}

impl From<credentials::CredentialError> for AuthError {
    fn from(e: credentials::CredentialError) -> Self {
        AuthError::Load(e.to_string())
    }
}

/// The authentication and authorization state of the broker. Built by [`Auth::load`]; a reload
/// builds a new one (which also empties the credential cache and the back-off counters).
pub struct Auth {
    inner: Arc<Inner>,
    acl: Option<acl::Acl>,
    /// Enhanced authentication methods on offer (empty without a password file).
    methods: Vec<Arc<dyn AuthMethod>>,
}

/// What the blocking verification tasks share with the async side.
struct Inner {
    /// `None` without a password file.
    users: Option<Users>,
    pool: Arc<Semaphore>,
    pool_size: usize,
    verify_wait: Duration,
    cache: CredentialCache,
    /// Credentials that failed recently, per address: repeats are not guesses.
    failed: FailedLogins,
    backoff: Arc<Backoff>,
    /// Password hashes computed so far (including dummy runs for unknown users).
    verifications: AtomicU64,
}

struct Users {
    path: PathBuf,
    hashes: RwLock<HashMap<String, PasswordHash>>,
    /// Verified instead of a real entry for unknown users (argon2id with the file's usual cost).
    dummy: PasswordHash,
    /// Successful logins with hashes weaker than this are re-hashed.
    rehash_to: Argon2Params,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self.inner.users.as_ref();
        f.debug_struct("Auth")
            .field("password_file", &users.map(|u| &u.path))
            .field("users", &users.map(|u| u.hashes.read().len()))
            .field("acl", &self.acl.is_some())
            .field(
                "methods",
                &self.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("verify_threads", &self.inner.pool_size)
            .field("verify_wait", &self.inner.verify_wait)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the password file and ACL named in `config` (errors name file and line).
    ///
    /// Blocking (file I/O and one argon2 run for the dummy hash): call it from `spawn_blocking`
    /// when reloading from async code.
    pub fn load(config: &AuthConfig) -> Result<Auth, AuthError> {
        let (users, methods) = match &config.password_file {
            Some(path) => {
                let (users, scram) = Users::load(path)?;
                let scram: Arc<dyn AuthMethod> = Arc::new(scram::ScramSha256::new(scram));
                (Some(users), vec![scram])
            }
            None => (None, Vec::new()),
        };
        let acl = match &config.acl_file {
            Some(path) => Some(acl::Acl::load(path).map_err(|e| AuthError::Load(e.to_string()))?),
            None => None,
        };
        let pool_size = config.verify_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let pool_size = pool_size.clamp(1, MAX_VERIFY_THREADS);
        Ok(Auth {
            inner: Arc::new(Inner {
                users,
                pool: Arc::new(Semaphore::new(pool_size)),
                pool_size,
                verify_wait: config.verify_wait,
                cache: CredentialCache::new(config.cache_ttl, config.cache_size),
                failed: FailedLogins::new(config.failure_window, config.cache_size),
                backoff: Arc::new(Backoff::new(
                    config.max_failures,
                    config.failure_window,
                    config.backoff_max,
                )),
                verifications: AtomicU64::new(0),
            }),
            acl,
            methods,
        })
    }

    /// The enhanced authentication method named `method` (CONNECT's Authentication Method), if
    /// offered.
    pub fn enhanced(&self, method: &str) -> Option<Arc<dyn AuthMethod>> {
        self.methods.iter().find(|m| m.name() == method).cloned()
    }

    /// A login from `ip` whose verdict the caller decides (enhanced authentication), under the
    /// same back-off rules as [`Auth::authenticate`].
    pub fn login_attempt(&self, ip: IpAddr) -> LoginAttempt {
        LoginAttempt {
            backoff: Arc::clone(&self.inner.backoff),
            ip,
            turn: None,
        }
    }

    /// Checks CONNECT credentials. Never runs a password hash on the async runtime.
    ///
    /// - A verified client certificate identity is let in as that user.
    /// - No username: anonymous, allowed only if `creds.allow_anonymous` (else NotAuthorized).
    /// - A username without a password file: allowed only if `creds.allow_anonymous` (as
    ///   Mosquitto does), else BadCredentials.
    /// - With a password file: the steps in the module doc; unknown user, wrong or missing
    ///   password is BadCredentials, back-off is NotAuthorized, no verification slot within
    ///   `verify_wait` is Unavailable.
    pub async fn authenticate(&self, creds: &Credentials<'_>) -> AuthOutcome {
        if let Some(identity) = creds.cert_identity {
            return AuthOutcome::Allowed {
                username: Some(identity.to_owned()),
            };
        }
        let Some(username) = creds.username else {
            return if creds.allow_anonymous {
                AuthOutcome::Allowed { username: None }
            } else {
                AuthOutcome::NotAuthorized
            };
        };
        let inner = &self.inner;
        if inner.users.is_none() {
            return if creds.allow_anonymous {
                AuthOutcome::Allowed {
                    username: Some(username.to_owned()),
                }
            } else {
                AuthOutcome::BadCredentials
            };
        }
        let ip = creds.peer.ip();
        let Some(password) = creds.password else {
            tracing::info!(%ip, username, "login failed: no password");
            return AuthOutcome::BadCredentials;
        };
        let password = password.as_bytes();
        if inner.cache.hit(username, password) {
            inner.backoff.record_success(username);
            return AuthOutcome::Allowed {
                username: Some(username.to_owned()),
            };
        }
        if inner.failed.contains(ip, username, password) {
            tracing::info!(%ip, username, "login failed: the same bad credentials again");
            return AuthOutcome::BadCredentials;
        }
        let mut attempt = self.login_attempt(ip);
        if let Err(refusal) = attempt.proceed(username).await {
            return refusal;
        }
        let permit =
            match tokio::time::timeout(inner.verify_wait, Arc::clone(&inner.pool).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                _ => {
                    tracing::warn!(%ip, username, "login refused: password verification pool busy");
                    return AuthOutcome::Unavailable;
                }
            };
        let task_inner = Arc::clone(inner);
        let task_user = username.to_owned();
        let task_password = Zeroizing::new(password.to_vec());
        let verified = tokio::task::spawn_blocking(move || {
            task_inner.verify_blocking(permit, &task_user, &task_password)
        })
        .await;
        match verified {
            Ok(true) => {
                inner.cache.insert(username, password);
                attempt.succeeded(username);
                AuthOutcome::Allowed {
                    username: Some(username.to_owned()),
                }
            }
            Ok(false) => {
                inner.failed.insert(ip, username, password);
                attempt.failed(username);
                tracing::info!(%ip, username, "login failed: bad username or password");
                AuthOutcome::BadCredentials
            }
            Err(e) => {
                tracing::error!(%ip, username, "password verification task failed: {e}");
                AuthOutcome::Unavailable
            }
        }
    }

    /// May this client access `topic` (a topic name, or a filter for [`Access::Subscribe`])?
    pub fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.check(username, client_id, topic, access))
    }

    /// True when a password file is configured.
    pub fn has_password_file(&self) -> bool {
        self.password_file().is_some()
    }

    /// True when an ACL is configured (so the hot path can skip checks when it is not).
    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    /// May a session that logged in as `name` with a password (or enhanced authentication) stay
    /// under this `Auth`? Everyone without a password file; else only users in it. A reload kicks
    /// the sessions for which this is false.
    pub fn keeps_user(&self, name: &str) -> bool {
        !self.has_password_file() || self.has_user(name)
    }

    /// Is `name` in the password file? (After a reload, sessions of deleted users can be closed.)
    /// False without a password file.
    pub fn has_user(&self, name: &str) -> bool {
        self.inner
            .users
            .as_ref()
            .is_some_and(|u| u.hashes.read().contains_key(name))
    }

    /// The password file this was loaded from, if any.
    pub fn password_file(&self) -> Option<&Path> {
        self.inner.users.as_ref().map(|u| u.path.as_path())
    }

    /// How many password hashes have been computed (tests and metrics: cache hits and back-off
    /// refusals do not count).
    pub fn verifications(&self) -> u64 {
        self.inner.verifications.load(Ordering::Relaxed)
    }
}

/// One login going through the back-off rules (`backoff.rs`) for code that decides the verdict
/// itself: MQTT 5.0 enhanced authentication. Ask [`LoginAttempt::proceed`] before revealing a
/// verdict, then record it with [`LoginAttempt::succeeded`] or [`LoginAttempt::failed`].
/// Dropped without an outcome (the client went away), it counts nothing.
#[derive(Debug)]
pub struct LoginAttempt {
    backoff: Arc<Backoff>,
    ip: IpAddr,
    /// The address's turn, once [`LoginAttempt::proceed`] got it.
    turn: Option<Turn>,
}

impl LoginAttempt {
    /// May a verdict about `username` be given? Refused at once (NotAuthorized) while the
    /// username backs off; otherwise waits for a turn of the client's address, which an address
    /// that keeps failing gets ever later (Unavailable if it would not come within `backoff_max`).
    /// Cancel-safe.
    pub async fn proceed(&mut self, username: &str) -> Result<(), AuthOutcome> {
        let ip = self.ip;
        self.may_proceed_now(username)?;
        if self.turn.is_none() {
            match self.backoff.turn(ip).await {
                Ok(turn) => self.turn = Some(turn),
                Err(backoff::Busy) => {
                    tracing::warn!(%ip, username, "login refused: the address's turn did not come within backoff_max");
                    return Err(AuthOutcome::Unavailable);
                }
            }
        }
        // The username may have started backing off while this login waited.
        self.may_proceed_now(username)
    }

    /// The username rule alone, without waiting (re-authentication, inside the packet loop: it
    /// needs an authenticated connection, which each failure closes).
    pub fn may_proceed_now(&self, username: &str) -> Result<(), AuthOutcome> {
        if self.backoff.user_blocked(username) {
            tracing::info!(ip = %self.ip, username, "login refused: username is backing off");
            return Err(AuthOutcome::NotAuthorized);
        }
        Ok(())
    }

    /// `username` proved its credentials: its failures are forgotten.
    pub fn succeeded(mut self, username: &str) {
        match self.turn.take() {
            Some(turn) => turn.succeeded(username),
            None => self.backoff.record_success(username),
        }
    }

    /// The credentials claimed for `username` were wrong: one failure for the address and the
    /// username.
    pub fn failed(mut self, username: &str) {
        match self.turn.take() {
            Some(turn) => turn.failed(username),
            None => self.backoff.record_failure(self.ip, username),
        }
    }
}

impl Users {
    /// The users, and the SCRAM credentials of those who have them.
    fn load(
        path: &Path,
    ) -> Result<(Users, HashMap<String, credentials::ScramCredentials>), AuthError> {
        let file = PasswordFile::load(path)?;
        let scram = file
            .entries()
            .filter_map(|e| Some((e.username.clone(), e.scram.clone()?)))
            .collect();
        let rehash_to = Argon2Params::default();
        let hashes: HashMap<String, PasswordHash> = file
            .entries()
            .map(|e| (e.username.clone(), e.hash.clone()))
            .collect();
        // The dummy costs what most users' hashes cost, so an unknown name is not faster.
        let dummy_params = most_common_argon2id_params(&file).unwrap_or(rehash_to);
        let dummy_password: [u8; 16] = rand::random();
        let dummy = credentials::hash_argon2id(&dummy_password, dummy_params)?;
        let users = Users {
            path: path.to_owned(),
            hashes: RwLock::new(hashes),
            dummy,
            rehash_to,
        };
        Ok((users, scram))
    }
}

fn most_common_argon2id_params(file: &PasswordFile) -> Option<Argon2Params> {
    let mut counts: HashMap<(u32, u32, u32), usize> = HashMap::new();
    for e in file.entries() {
        if let Some(p) = e.hash.argon2id_params() {
            *counts.entry((p.m_cost, p.t_cost, p.p_cost)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(params, n)| (n, params))
        .map(|((m_cost, t_cost, p_cost), _)| Argon2Params {
            m_cost,
            t_cost,
            p_cost,
        })
}

impl Inner {
    /// Runs on the blocking pool, holding a verification slot.
    fn verify_blocking(
        &self,
        permit: OwnedSemaphorePermit,
        username: &str,
        password: &[u8],
    ) -> bool {
        let Some(users) = &self.users else {
            return false;
        };
        let entry = users.hashes.read().get(username).cloned();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = match &entry {
            Some(hash) => credentials::verify(hash, password),
            None => {
                let _ = credentials::verify(&users.dummy, password);
                false
            }
        };
        if ok
            && let Some(old) = entry
            && credentials::needs_rehash(&old, users.rehash_to)
        {
            users.rehash(permit, username, password, &old);
        }
        ok
    }
}

impl Users {
    /// Replaces `old` (just verified with `password`) by an argon2id hash, in memory and in the
    /// file. Only replaces what it verified: a concurrent change (another login's re-hash, an edit
    /// by `mqtt-passwd`) wins. Failure to rewrite the file only logs.
    fn rehash(
        &self,
        permit: OwnedSemaphorePermit,
        username: &str,
        password: &[u8],
        old: &PasswordHash,
    ) {
        let new = match credentials::hash_argon2id(password, self.rehash_to) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(username, "could not re-hash password: {e}");
                return;
            }
        };
        // The CPU-heavy part is done; file I/O need not hold a verification slot.
        drop(permit);
        {
            let mut hashes = self.hashes.write();
            match hashes.get_mut(username) {
                Some(current) if current == old => *current = new.clone(),
                _ => return,
            }
        }
        let result = PasswordFile::update::<_, PasswdError>(&self.path, false, |file| {
            match file.get(username) {
                Some(e) if e.hash == *old => {
                    file.set_keeping_scram(username, new);
                    Ok((true, true))
                }
                _ => Ok((false, false)),
            }
        });
        match result {
            Ok(true) => tracing::info!(
                username,
                from = %old.kind(),
                file = %self.path.display(),
                "re-hashed password to argon2id"
            ),
            Ok(false) => {
                tracing::info!(username, "entry changed on disk meanwhile; not re-hashed")
            }
            Err(e) => tracing::warn!(username, "could not rewrite the password file: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
