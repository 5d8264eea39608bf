//! MQTT 5.0 enhanced authentication (section 4.12): challenge/response methods named by the
//! CONNECT's Authentication Method and carried in Authentication Data.
//!
//! A method ([`AuthMethod`]) starts one [`AuthExchange`] per login; the session feeds it the data
//! of the CONNECT and then of each client AUTH (reason 0x18), and sends what it returns:
//! [`AuthStep::Continue`] as an AUTH 0x18, [`AuthStep::Success`] as the CONNACK 0x00 (or, when
//! re-authenticating, an AUTH 0x00), [`AuthStep::Fail`] as CONNACK / DISCONNECT 0x87.
//! Exchanges run on the async runtime, so a step must be cheap (no password hashing).
//!
//! Methods offered: `SCRAM-SHA-256` ([`super::scram`]), when a password file is configured.

use std::fmt;

/// An enhanced authentication method, shared by all connections (built on [`super::Auth::load`]).
pub trait AuthMethod: Send + Sync {
    /// The Authentication Method string clients name it by.
    fn name(&self) -> &'static str;
    /// A new conversation; its first [`AuthExchange::step`] gets the CONNECT's (or the
    /// re-authenticating AUTH's) Authentication Data.
    fn start(&self) -> Box<dyn AuthExchange>;
}

/// One conversation with one client. Never panics on client data.
pub trait AuthExchange: Send {
    /// Consumes the client's next Authentication Data (None: the property was absent).
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
    /// The identity the client claims so far (for back-off accounting and logs), once known.
    fn username(&self) -> Option<&str>;
}

/// What to answer after a step.
pub enum AuthStep {
    /// Send this as Authentication Data in an AUTH 0x18 and wait for the client's next AUTH.
    Continue(Vec<u8>),
    /// Authenticated as `username`; `data` goes into the final CONNACK / AUTH 0x00.
    Success {
        username: String,
        data: Option<Vec<u8>>,
    },
    /// Refused; the text is for the broker's log only (the client learns just the reason code).
    Fail(&'static str),
}

/// Shows the step kind and username, never the authentication data.
impl fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthStep::Continue(_) => f.write_str("Continue(<data>)"),
            AuthStep::Success { username, .. } => write!(f, "Success({username:?})"),
            AuthStep::Fail(why) => write!(f, "Fail({why:?})"),
        }
    }
}
