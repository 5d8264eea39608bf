//! Authentication and authorization, as the connection handler sees it.
//!
//! [`Auth`] is built from `[auth]` once at start-up and swapped wholesale on reload, so a broken
//! file never half-applies. The session calls [`Auth::authenticate`] with the CONNECT credentials
//! *before* anything reaches the router, and the ACL checks on every PUBLISH / SUBSCRIBE / delivery.

pub mod acl;
pub mod passwd;

use std::net::SocketAddr;

use crate::config::AuthConfig;
use crate::protocol::Password;

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

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Load(String),
}

/// The authentication and authorization state of the broker.
#[derive(Debug)]
pub struct Auth {
    config: AuthConfig,
}

impl Auth {
    /// Loads the password file and ACL named in `config` (errors name file and line).
    pub fn load(config: &AuthConfig) -> Result<Auth, AuthError> {
        if config.password_file.is_some() || config.acl_file.is_some() {
            return Err(AuthError::Load(
                "password and ACL files are not supported yet".into(),
            ));
        }
        Ok(Auth {
            config: config.clone(),
        })
    }

    /// Checks CONNECT credentials. Never runs a password hash on the async runtime.
    pub async fn authenticate(&self, creds: &Credentials<'_>) -> AuthOutcome {
        let _ = &self.config;
        match (creds.username, creds.cert_identity) {
            (_, Some(identity)) => AuthOutcome::Allowed {
                username: Some(identity.to_owned()),
            },
            (None, None) if creds.allow_anonymous => AuthOutcome::Allowed { username: None },
            (Some(_), None) if creds.allow_anonymous && creds.password.is_none() => {
                AuthOutcome::Allowed {
                    username: creds.username.map(str::to_owned),
                }
            }
            (None, None) => AuthOutcome::NotAuthorized,
            (Some(_), None) => AuthOutcome::BadCredentials,
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
        let _ = (username, client_id, topic, access);
        true
    }

    /// True when an ACL is configured (so the hot path can skip checks when it is not).
    pub fn has_acl(&self) -> bool {
        false
    }
}
