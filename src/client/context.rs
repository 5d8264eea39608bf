//! What every connection task shares ([`Context`]), who is on the other end ([`Peer`]), and what a
//! connection holds for its whole life ([`Guard`], with its per-IP slot).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthCell};
use crate::config::Limits;
use crate::ingress::Ingress;
use crate::msglog::MessageLogger;
use crate::park::Parker;
use crate::router::Router;

/// Everything a connection task needs, shared by all of them.
#[derive(Debug)]
pub struct Context {
    pub router: Arc<Router>,
    /// The one way into the router (every PUBLISH, every will).
    pub ingress: Arc<Ingress>,
    /// Swapped whole on reload; connections pick up the new one through their snapshot.
    pub auth: Arc<AuthCell>,
    pub limits: Limits,
    pub msglog: Option<MessageLogger>,
    pub shutdown: CancellationToken,
    /// Where idle connections park; `None`: they keep their task.
    pub parker: Option<Arc<Parker<super::Idle>>>,
    /// Open connections per client IP, for `limits.max_connections_per_ip`.
    pub connections_per_ip: parking_lot::Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One open connection counted against its IP; gives the slot back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    ctx: Arc<Context>,
    ip: std::net::IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.ctx.connections_per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Context {
    /// Takes a connection slot for `ip`, or `None` if `limits.max_connections_per_ip` is reached.
    pub fn ip_slot(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut map = self.connections_per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if self
            .limits
            .max_connections_per_ip
            .is_some_and(|max| *n >= max)
        {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ctx: self.clone(),
            ip,
        })
    }

    pub fn current_auth(&self) -> Arc<Auth> {
        self.auth.current()
    }

    /// Installs a newly loaded `Auth` for new connections and for the ACL checks of existing ones.
    pub fn set_auth(&self, auth: Auth) {
        self.auth.set(auth);
    }
}

/// Who is on the other end, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub listener: Arc<str>,
    /// The listener's effective `allow_anonymous`.
    pub allow_anonymous: bool,
    /// Verified client certificate CN, when the listener uses it as the username.
    pub cert_identity: Option<String>,
}

/// What a connection holds for its whole life, parked or not; dropping it gives it all back.
#[derive(Debug)]
pub struct Guard {
    /// The listener's `max_connections` permit.
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub ip_slot: IpSlot,
    /// Keeps the broker's shutdown drain waiting for this connection.
    pub tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}
