//! SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding: the stored credentials, the key
//! derivation, and the server side of the exchange as an [`AuthMethod`].
//!
//! The server never sees the password: the password file holds, per user, the salt, the PBKDF2
//! iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. Checking a proof is two HMACs and a hash,
//! cheap enough to run inline on the async runtime; the client pays for the PBKDF2.
//!
//! Messages (`gs2 header` is `n,,` or `y,,`; `p=` channel binding and authzids are refused):
//! ```text
//! client-first  n,,n=<user>,r=<cnonce>             (CONNECT Authentication Data)
//! server-first  r=<cnonce><snonce>,s=<salt>,i=<n>  (AUTH 0x18)
//! client-final  c=biws,r=<nonce>,p=<proof>         (AUTH 0x18)
//! server-final  v=<ServerSignature>                (CONNACK 0x00)
//! ```
//! Unknown users (and users without SCRAM credentials) get a salt derived from a per-process
//! secret and their name, so they see the same, stable server-first as a real user and fail only
//! at the proof: the exchange does not reveal which names exist.
//!
//! Passwords are used as their UTF-8 bytes; SASLprep (RFC 4013) is not applied, so clients must
//! not normalise either (ASCII passwords are unaffected).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::credentials::ScramCredentials;
use super::credentials::scram::{DEFAULT_ITERATIONS, hmac, sha256};
use super::enhanced::{AuthExchange, AuthMethod, AuthStep};

/// The MQTT Authentication Method name (the SASL mechanism name).
pub const METHOD: &str = "SCRAM-SHA-256";

/// Longest SCRAM message accepted from a client (a username is at most 65535 bytes).
const MAX_MESSAGE_LEN: usize = 70_000;

/// Longest client nonce accepted.
const MAX_NONCE_LEN: usize = 256;

/// The server side of SCRAM-SHA-256 over a snapshot of the password file's SCRAM credentials.
pub struct ScramSha256 {
    users: Arc<HashMap<String, ScramCredentials>>,
    /// Keys the fake salts of unknown users; dies with the process (or the reload).
    secret: Zeroizing<[u8; 32]>,
    /// Iteration count shown to unknown users: the most common one in the file.
    fake_iterations: u32,
}

impl ScramSha256 {
    pub fn new(users: HashMap<String, ScramCredentials>) -> ScramSha256 {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for c in users.values() {
            *counts.entry(c.iterations).or_default() += 1;
        }
        let fake_iterations = counts
            .into_iter()
            .max_by_key(|&(i, n)| (n, i))
            .map_or(DEFAULT_ITERATIONS, |(i, _)| i);
        ScramSha256 {
            users: Arc::new(users),
            secret: Zeroizing::new(rand::random()),
            fake_iterations,
        }
    }
}

impl AuthMethod for ScramSha256 {
    fn name(&self) -> &'static str {
        METHOD
    }

    fn start(&self) -> Box<dyn AuthExchange> {
        Box::new(Exchange {
            users: Arc::clone(&self.users),
            secret: self.secret.clone(),
            fake_iterations: self.fake_iterations,
            state: State::AwaitClientFirst,
            username: None,
        })
    }
}

enum State {
    AwaitClientFirst,
    AwaitClientFinal {
        /// `client-first-message-bare + "," + server-first-message`.
        transcript: String,
        /// `c=` as the client must send it (base64 of the gs2 header).
        channel_binding: String,
        nonce: String,
        credentials: ScramCredentials,
        /// False: stand-in credentials of an unknown user; the proof is checked, then refused.
        known: bool,
    },
    Done,
}

/// One SCRAM-SHA-256 conversation.
struct Exchange {
    users: Arc<HashMap<String, ScramCredentials>>,
    secret: Zeroizing<[u8; 32]>,
    fake_iterations: u32,
    state: State,
    username: Option<String>,
}

impl AuthExchange for Exchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        let state = std::mem::replace(&mut self.state, State::Done);
        let Some(data) = data.filter(|d| d.len() <= MAX_MESSAGE_LEN) else {
            return AuthStep::Fail("missing or oversized SCRAM message");
        };
        let Ok(message) = std::str::from_utf8(data) else {
            return AuthStep::Fail("SCRAM message is not UTF-8");
        };
        match state {
            State::AwaitClientFirst => self.client_first(message),
            State::AwaitClientFinal {
                transcript,
                channel_binding,
                nonce,
                credentials,
                known,
            } => client_final(
                message,
                &transcript,
                &channel_binding,
                &nonce,
                (&credentials, known),
                self.username.as_deref().unwrap_or_default(),
            ),
            State::Done => AuthStep::Fail("SCRAM exchange already finished"),
        }
    }

    fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }
}

impl Exchange {
    fn client_first(&mut self, message: &str) -> AuthStep {
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = match message.split_once(',') {
            Some(("n", rest)) => ("n", rest),
            Some(("y", rest)) => ("y", rest),
            Some((f, _)) if f.starts_with("p=") => {
                return AuthStep::Fail("SCRAM channel binding is not supported");
            }
            _ => return AuthStep::Fail("malformed SCRAM gs2 header"),
        };
        let Some(("", bare)) = rest.split_once(',') else {
            return AuthStep::Fail("SCRAM authorization identities are not supported");
        };
        let mut attrs = bare.split(',');
        let (Some(user), Some(cnonce)) = (attrs.next(), attrs.next()) else {
            return AuthStep::Fail("malformed SCRAM client-first message");
        };
        let (Some(user), Some(cnonce)) = (user.strip_prefix("n="), cnonce.strip_prefix("r="))
        else {
            return AuthStep::Fail("malformed SCRAM client-first message");
        };
        if bare.starts_with("m=") || attrs.any(|a| a.starts_with("m=")) {
            return AuthStep::Fail("SCRAM mandatory extensions are not supported");
        }
        let Some(username) = decode_saslname(user) else {
            return AuthStep::Fail("malformed SCRAM username");
        };
        if !valid_nonce(cnonce) || cnonce.len() > MAX_NONCE_LEN {
            return AuthStep::Fail("malformed SCRAM client nonce");
        }
        let snonce: [u8; 24] = rand::random();
        let nonce = format!("{cnonce}{}", STANDARD.encode(snonce));
        let (credentials, known) = match self.users.get(&username) {
            Some(c) => (c.clone(), true),
            None => (self.fake_credentials(&username), false),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credentials.salt),
            credentials.iterations
        );
        self.state = State::AwaitClientFinal {
            transcript: format!("{bare},{server_first}"),
            channel_binding: STANDARD.encode(format!("{flag},,")),
            nonce,
            credentials,
            known,
        };
        self.username = Some(username);
        AuthStep::Continue(server_first.into_bytes())
    }

    /// Stable stand-in credentials for a name without SCRAM credentials, derived from the
    /// per-process secret: the same salt on every attempt, keys nobody can match, and the same
    /// proof check as a real user (no early return to time).
    fn fake_credentials(&self, username: &str) -> ScramCredentials {
        let key = |label: &[u8]| hmac(self.secret.as_slice(), &[label, username.as_bytes()]);
        ScramCredentials {
            encoded: String::new(),
            iterations: self.fake_iterations,
            salt: key(b"fake salt\0")[..16].to_vec(),
            stored_key: key(b"fake StoredKey\0"),
            server_key: key(b"fake ServerKey\0"),
        }
    }
}

fn client_final(
    message: &str,
    transcript: &str,
    channel_binding: &str,
    nonce: &str,
    (credentials, known): (&ScramCredentials, bool),
    username: &str,
) -> AuthStep {
    let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
        return AuthStep::Fail("SCRAM client-final message without proof");
    };
    let mut attrs = without_proof.split(',');
    if attrs.next().and_then(|c| c.strip_prefix("c=")) != Some(channel_binding) {
        return AuthStep::Fail("SCRAM channel binding data does not match the gs2 header");
    }
    if attrs.next().and_then(|r| r.strip_prefix("r=")) != Some(nonce) {
        return AuthStep::Fail("SCRAM nonce does not match");
    }
    let Ok(proof) = <[u8; 32]>::try_from(STANDARD.decode(proof).unwrap_or_default()) else {
        return AuthStep::Fail("malformed SCRAM proof");
    };
    let auth_message = format!("{transcript},{without_proof}");
    let signature = hmac(&credentials.stored_key, &[auth_message.as_bytes()]);
    let mut client_key = Zeroizing::new([0u8; 32]);
    for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
        *k = p ^ s;
    }
    let matches = bool::from(sha256(client_key.as_slice()).ct_eq(&credentials.stored_key));
    if !(matches & known) {
        return AuthStep::Fail("wrong SCRAM proof");
    }
    let server_signature = hmac(&credentials.server_key, &[auth_message.as_bytes()]);
    AuthStep::Success {
        username: username.to_owned(),
        data: Some(format!("v={}", STANDARD.encode(server_signature)).into_bytes()),
    }
}

/// `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` or a bare `,` is malformed.
fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() || s.contains(',') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `printable`: ASCII 0x21..=0x7E except `,`; at least one character.
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7E).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::scram::derive_keys;

    /// RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credentials() -> ScramCredentials {
        ScramCredentials::derive(b"pencil", &STANDARD.decode(SALT_B64).unwrap(), 4096)
    }

    /// Replays the RFC's conversation through the server with the RFC's server nonce.
    #[test]
    fn rfc7677_test_vector() {
        let creds = rfc_credentials();
        assert!(creds.matches(b"pencil"));
        assert!(!creds.matches(b"pencil2"));
        let bare = &CLIENT_FIRST[3..];
        let (without_proof, _) = CLIENT_FINAL.rsplit_once(",p=").unwrap();
        let transcript = format!("{bare},{SERVER_FIRST}");
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        // The client's proof, computed from the password.
        let keys = derive_keys(b"pencil", &creds.salt, 4096);
        let auth_message = format!("{transcript},{without_proof}");
        let sig = hmac(
            &sha256(keys.client_key.as_slice()),
            &[auth_message.as_bytes()],
        );
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(sig)
            .map(|(k, s)| k ^ s)
            .collect();
        assert_eq!(
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            CLIENT_FINAL
        );
        // Only a known user can succeed, even with the right proof.
        let creds_of = |known| (&creds, known);
        let unknown = client_final(
            CLIENT_FINAL,
            &transcript,
            "biws",
            nonce,
            creds_of(false),
            "u",
        );
        assert!(matches!(unknown, AuthStep::Fail(_)));
        match client_final(
            CLIENT_FINAL,
            &transcript,
            "biws",
            nonce,
            creds_of(true),
            "user",
        ) {
            AuthStep::Success { username, data } => {
                assert_eq!(username, "user");
                assert_eq!(data.as_deref(), Some(SERVER_FINAL.as_bytes()));
            }
            other => panic!("{other:?}"),
        }
        // A flipped proof bit, another nonce, or channel binding data all fail.
        let bad = CLIENT_FINAL.replace("p=dHz", "p=dHy");
        for (msg, cb, n) in [
            (bad.as_str(), "biws", nonce),
            (CLIENT_FINAL, "eSws", nonce),
            (CLIENT_FINAL, "biws", "rOprNGfwEbeRWgbNEkqO"),
        ] {
            let step = client_final(msg, &transcript, cb, n, (&creds, true), "user");
            assert!(matches!(step, AuthStep::Fail(_)), "{step:?}");
        }
    }

    #[test]
    fn server_first_and_unknown_users() {
        let mut users = HashMap::new();
        users.insert("user".to_owned(), rfc_credentials());
        let method = ScramSha256::new(users);
        let mut ex = method.start();
        let AuthStep::Continue(first) = ex.step(Some(CLIENT_FIRST.as_bytes())) else {
            panic!("expected server-first");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=rOprNGfwEbeRWgbNEkqO"), "{first}");
        assert!(first.ends_with(&format!(",s={SALT_B64},i=4096")), "{first}");
        assert_eq!(ex.username(), Some("user"));
        // An unknown user gets a stable fake salt and the usual iteration count.
        let fake = |name: &str| {
            let mut ex = method.start();
            let msg = format!("n,,n={name},r=abc");
            match ex.step(Some(msg.as_bytes())) {
                AuthStep::Continue(d) => {
                    let s = String::from_utf8(d).unwrap();
                    s.split_once(",s=").unwrap().1.to_owned()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(fake("nobody"), fake("nobody"));
        assert_ne!(fake("nobody"), fake("somebody"));
        assert!(fake("nobody").ends_with(",i=4096"));
    }

    #[test]
    fn malformed_client_first_fails() {
        let method = ScramSha256::new(HashMap::new());
        for msg in [
            &b"p=tls-unique,,n=user,r=abc"[..],
            b"n,a=admin,n=user,r=abc",
            b"n,,n=user",
            b"n,,r=abc,n=user",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=",
            b"x,,n=user,r=abc",
            b"n,,n=user,r=a\x01",
            b"\xff\xfe",
            b"",
        ] {
            let step = method.start().step(Some(msg));
            assert!(matches!(step, AuthStep::Fail(_)), "{msg:?}: {step:?}");
        }
        assert!(matches!(method.start().step(None), AuthStep::Fail(_)));
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(decode_saslname("a=41"), None);
        assert_eq!(decode_saslname(""), None);
    }
}
