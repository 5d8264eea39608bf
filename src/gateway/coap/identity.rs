//! Who is asking: credentials in the query (`c`/`u`/`p` or `clientid`/`username`/`password`),
//! checked by the broker's [`crate::auth::Auth`] (the same argon2 pool, credential cache and
//! back-off as MQTT logins), or a connection-mode token (EMQX's `POST /mqtt/connection`).
//!
//! A cache hit answers within the request; a password that needs argon2 is checked in a task
//! of its own and the request carries on when it comes back ([`Waiting`]).
//!
//! Connection mode: `POST /mqtt/connection?clientid=..&username=..&password=..` answers 2.01
//! with a token (32 hex digits) as the body; requests then carry `token=` (and may carry
//! `clientid=`, which must match); `PUT` is a heartbeat (2.04), `DELETE` ends it (2.02, its
//! observations too). A token expires after `coap.heartbeat` without a request using it.
//! Requests without a client id get `coap:<address>` as theirs (their observations then do
//! not survive an address change).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::ResponseType;
use futures_util::FutureExt;

use super::engine::{Engine, Event};
use super::reply::{Exchange, Response};
use super::request::{Method, Request, Route};
use super::status::Reason;
use crate::auth::{AuthOutcome, Credentials};
use crate::protocol::text;

/// Who a request comes from, once checked.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: Arc<str>,
    pub username: Option<String>,
}

/// A request waiting for its password check.
#[derive(Debug)]
pub struct Waiting {
    pub ex: Exchange,
    pub req: Request,
    pub body: Vec<u8>,
    pub client_id: Arc<str>,
}

impl Engine {
    /// Finds the request's identity and carries on with it (see the module doc).
    pub(super) fn identify(&mut self, ex: Exchange, mut req: Request, body: Vec<u8>, now: Instant) {
        if req.route == Route::WellKnownCore {
            let nobody = Identity {
                client_id: "".into(),
                username: None,
            };
            return self.dispatch(ex, req, body, nobody, now);
        }
        let creating = req.route == Route::Connection && req.method == Method::Post;
        if let Some(token) = req.query.token.as_deref().filter(|_| !creating) {
            return match self.by_token(token, req.query.client_id.as_deref(), ex.peer, now) {
                Some(id) => self.dispatch(ex, req, body, id, now),
                None => {
                    self.status.refused(Reason::Unauthorized);
                    self.respond(
                        &ex,
                        Response::why(ResponseType::Unauthorized, "unknown or expired token"),
                    );
                }
            };
        }
        if req.route == Route::Connection && !creating {
            self.status.refused(Reason::Unauthorized);
            return self.respond(
                &ex,
                Response::why(ResponseType::Unauthorized, "token required"),
            );
        }
        let client_id: Arc<str> = match req.query.client_id.take() {
            Some(c) if c.is_empty() || c.len() > 256 => {
                self.status.refused(Reason::BadRequest);
                let r = Response::why(ResponseType::BadRequest, "client id of 1 to 256 bytes");
                return self.respond(&ex, r);
            }
            Some(c) => c.into(),
            None => format!("coap:{}", ex.peer).into(),
        };
        let (username, password) = (req.query.username.take(), req.query.password.take());
        let auth = self.ctx.auth.current();
        let (allow_anonymous, peer, cid) = (self.settings.anonymous, ex.peer, client_id.clone());
        let mut check = Box::pin(async move {
            let creds = Credentials {
                client_id: &cid,
                username: username.as_deref(),
                password: password.as_ref(),
                peer,
                allow_anonymous,
                cert_identity: None,
            };
            auth.authenticate(&creds).await
        });
        let waiting = Waiting {
            ex,
            req,
            body,
            client_id,
        };
        if let Some(outcome) = (&mut check).now_or_never() {
            return self.authenticated(waiting, outcome, now);
        }
        if self.pending >= self.settings.max_pending {
            return self.overloaded(&waiting.ex, "password checks queue full; retry later");
        }
        self.pending += 1;
        let events = self.events.clone();
        tokio::spawn(async move {
            let outcome = check.await;
            let _ = events.send(Event::Authenticated(Box::new(waiting), outcome));
        });
    }

    /// The password check's verdict.
    pub(super) fn authenticated(&mut self, w: Waiting, outcome: AuthOutcome, now: Instant) {
        let why = match outcome {
            AuthOutcome::Allowed { username } => {
                let id = Identity {
                    client_id: w.client_id,
                    username,
                };
                return self.dispatch(w.ex, w.req, w.body, id, now);
            }
            AuthOutcome::Unavailable => {
                return self.overloaded(&w.ex, "password verification is busy; retry later");
            }
            AuthOutcome::BadCredentials => "bad username or password",
            AuthOutcome::NotAuthorized => "not authorised (anonymous, or too many failed logins)",
        };
        // At info, as an MQTT login refused is: a credential failure is worth an operator's eye.
        tracing::info!(gateway = %self.settings.name, peer = %w.ex.peer,
            client_id = %text::cut(&w.client_id), "CoAP request refused: {why}");
        self.status.refused(Reason::Unauthorized);
        self.respond(&w.ex, Response::why(ResponseType::Unauthorized, why));
    }

    /// The identity a live token stands for; the token's life starts again, and its session's
    /// notifications go to `peer` from now on.
    fn by_token(
        &mut self,
        token: &str,
        client_id: Option<&str>,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<Identity> {
        let id = self.tokens.get(token)?.clone();
        let heartbeat = self.settings.heartbeat;
        let s = self.observers.sessions.get_mut(&id)?;
        let (_, expires) = s.token.as_mut()?;
        if *expires <= now || client_id.is_some_and(|c| *c != *id) {
            return None;
        }
        *expires = now + heartbeat;
        s.peer = peer;
        Some(Identity {
            client_id: id,
            username: s.username.clone(),
        })
    }

    /// `/mqtt/connection`: POST creates a session with a token, PUT keeps it (done by
    /// [`Engine::by_token`] already), DELETE ends it.
    pub(super) fn connection(&mut self, ex: &Exchange, method: Method, id: Identity, now: Instant) {
        match method {
            Method::Post => {
                if let Some(old) = self.observers.sessions.get(&id.client_id) {
                    if let Some((token, _)) = &old.token {
                        self.tokens.remove(token);
                    }
                    self.observers.remove(&id.client_id);
                } else if self.observers.sessions.len() >= self.settings.max_sessions {
                    return self.overloaded(ex, "coap.max_sessions reached");
                }
                let token = format!("{:032x}", rand::random::<u128>());
                let s = self
                    .observers
                    .create(id.client_id.clone(), id.username, ex.peer, now);
                s.token = Some((token.clone(), now + self.settings.heartbeat));
                self.tokens.insert(token.clone(), id.client_id.clone());
                tracing::debug!(gateway = %self.settings.name, peer = %ex.peer,
                    client_id = %text::cut(&id.client_id), "CoAP connection opened");
                self.gauges();
                let mut r = Response::new(ResponseType::Created);
                r.payload = token.into_bytes();
                self.respond(ex, r);
            }
            Method::Put => self.respond(ex, Response::new(ResponseType::Changed)),
            Method::Delete => {
                if let Some(s) = self.observers.remove(&id.client_id)
                    && let Some((token, _)) = &s.token
                {
                    self.tokens.remove(token);
                }
                self.gauges();
                self.respond(ex, Response::new(ResponseType::Deleted));
            }
            Method::Get => {
                self.status.refused(Reason::NotFound);
                self.respond(
                    ex,
                    Response::why(ResponseType::MethodNotAllowed, "POST, PUT or DELETE"),
                );
            }
        }
    }
}
