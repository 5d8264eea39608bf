//! SCRAM-SHA-256 credentials (RFC 5802, RFC 7677) as the password file stores them: salt,
//! iteration count, `StoredKey` and `ServerKey`, never the password. The exchange that checks a
//! client's proof against them is [`crate::auth::scram`].

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{CredentialError, caps};

/// Iterations for new credentials: RFC 7677's minimum.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Prefix of the credentials field in the password file.
pub const PREFIX: &str = "$scram-sha-256$";

type HmacSha256 = Hmac<Sha256>;

pub(in crate::auth) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub(in crate::auth) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// One user's SCRAM-SHA-256 credentials:
/// `$scram-sha-256$<iterations>$<base64 salt>$<base64 StoredKey>$<base64 ServerKey>`.
/// `Debug` shows only the iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// As written in the file (empty for the exchange's stand-ins for unknown users).
    pub(in crate::auth) encoded: String,
    pub(in crate::auth) iterations: u32,
    pub(in crate::auth) salt: Vec<u8>,
    pub(in crate::auth) stored_key: [u8; 32],
    pub(in crate::auth) server_key: [u8; 32],
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramCredentials(i={}, <redacted>)", self.iterations)
    }
}

/// Client and server keys from the password (RFC 5802 section 3).
pub(in crate::auth) struct Keys {
    pub(in crate::auth) client_key: Zeroizing<[u8; 32]>,
    pub(in crate::auth) server_key: [u8; 32],
}

pub(in crate::auth) fn derive_keys(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, salted.as_mut_slice());
    Keys {
        client_key: Zeroizing::new(hmac(salted.as_slice(), &[b"Client Key"])),
        server_key: hmac(salted.as_slice(), &[b"Server Key"]),
    }
}

impl ScramCredentials {
    /// Parses and checks the field as written in the password file.
    pub fn parse(s: &str) -> Result<ScramCredentials, String> {
        let Some(rest) = s.strip_prefix(PREFIX) else {
            return Err(format!("SCRAM credentials must start with {PREFIX}"));
        };
        let [iterations, salt, stored, server] = rest.split('$').collect::<Vec<_>>()[..] else {
            return Err(format!(
                "SCRAM credentials must be {PREFIX}<iterations>$<salt>$<StoredKey>$<ServerKey>"
            ));
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("SCRAM iterations {iterations:?} is not a number"))?;
        if iterations == 0 || iterations > caps::PBKDF2_MAX_ITERATIONS {
            return Err(format!(
                "SCRAM iterations {iterations} outside 1..={}",
                caps::PBKDF2_MAX_ITERATIONS
            ));
        }
        let decode = |v: &str, what: &str| {
            STANDARD
                .decode(v)
                .map_err(|e| format!("SCRAM {what} is not valid base64: {e}"))
        };
        let salt = decode(salt, "salt")?;
        if salt.is_empty() || salt.len() > caps::MAX_SALT_LEN {
            return Err(format!(
                "SCRAM salt of {} bytes (must be 1..={})",
                salt.len(),
                caps::MAX_SALT_LEN
            ));
        }
        let key = |v: &str, what: &str| -> Result<[u8; 32], String> {
            decode(v, what)?
                .try_into()
                .map_err(|_| format!("SCRAM {what} must be 32 bytes (SHA-256)"))
        };
        Ok(ScramCredentials {
            encoded: s.to_owned(),
            iterations,
            stored_key: key(stored, "StoredKey")?,
            server_key: key(server, "ServerKey")?,
            salt,
        })
    }

    /// Derives credentials from `password` with this salt and iteration count (PBKDF2: slow on
    /// purpose, keep it off the async runtime).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramCredentials {
        let keys = derive_keys(password, salt, iterations);
        let stored_key = sha256(keys.client_key.as_slice());
        let encoded = format!(
            "{PREFIX}{iterations}${}${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key),
            STANDARD.encode(keys.server_key)
        );
        ScramCredentials {
            encoded,
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key: keys.server_key,
        }
    }

    /// Fresh credentials for `password`: a random 16-byte salt and `iterations` (at least
    /// [`DEFAULT_ITERATIONS`], the RFC 7677 minimum).
    pub fn generate(password: &[u8], iterations: u32) -> Result<ScramCredentials, CredentialError> {
        if !(DEFAULT_ITERATIONS..=caps::PBKDF2_MAX_ITERATIONS).contains(&iterations) {
            return Err(CredentialError::Params(format!(
                "SCRAM iterations {iterations} (must be {DEFAULT_ITERATIONS}..={})",
                caps::PBKDF2_MAX_ITERATIONS
            )));
        }
        let salt: [u8; 16] = rand::random();
        Ok(ScramCredentials::derive(password, &salt, iterations))
    }

    /// Were these credentials derived from `password`? Constant-time; slow (PBKDF2).
    pub fn matches(&self, password: &[u8]) -> bool {
        let keys = derive_keys(password, &self.salt, self.iterations);
        bool::from(sha256(keys.client_key.as_slice()).ct_eq(&self.stored_key))
    }

    /// The field as written in the file.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_debug() {
        // RFC 7677 section 3's salt.
        let salt_b64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
        let c = ScramCredentials::derive(b"pencil", &STANDARD.decode(salt_b64).unwrap(), 4096);
        assert!(c.matches(b"pencil") && !c.matches(b"pencil2"));
        assert_eq!(ScramCredentials::parse(c.as_str()).unwrap(), c);
        assert!(!format!("{c:?}").contains(salt_b64));
        let bad = [
            "$scram-sha-256$0$AAAA$AAAA$AAAA",
            "$scram-sha-256$4096$$AAAA$AAAA",
            "$scram-sha-256$4096$AAAA$AAAA$AAAA",
            "$scram-sha-256$x$AAAA$AAAA$AAAA",
            "$scram-sha-256$4096$AAAA",
            "$scram-sha-1$4096$AAAA$AAAA$AAAA",
        ];
        for s in bad {
            assert!(ScramCredentials::parse(s).is_err(), "{s}");
        }
        assert!(ScramCredentials::generate(b"pw", 4095).is_err());
    }
}
