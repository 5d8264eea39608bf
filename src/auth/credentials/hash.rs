//! Password hashes: argon2id (what we write), argon2i/argon2d, and Mosquitto's `$7$` (PBKDF2-HMAC-
//! SHA512) and `$6$` (`sha512(password || salt)`, *not* sha512-crypt despite the prefix), parsed
//! with their parameters checked against [`caps`] and verified in constant time.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{CredentialError, caps};

/// argon2id cost parameters for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Argon2Params {
    /// OWASP's minimum recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Argon2Params {
            m_cost: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl Argon2Params {
    /// Checks the parameters against argon2's minimums and our [`caps`].
    pub fn validate(&self) -> Result<(), String> {
        if self.t_cost == 0 || self.t_cost > caps::ARGON2_MAX_T_COST {
            return Err(format!(
                "t={} (must be 1..={})",
                self.t_cost,
                caps::ARGON2_MAX_T_COST
            ));
        }
        if self.p_cost == 0 || self.p_cost > caps::ARGON2_MAX_P_COST {
            return Err(format!(
                "p={} (must be 1..={})",
                self.p_cost,
                caps::ARGON2_MAX_P_COST
            ));
        }
        let min_m = 8 * self.p_cost;
        if self.m_cost < min_m || self.m_cost > caps::ARGON2_MAX_M_COST {
            return Err(format!(
                "m={} KiB (must be {min_m}..={} for p={})",
                self.m_cost,
                caps::ARGON2_MAX_M_COST,
                self.p_cost
            ));
        }
        Ok(())
    }
}

/// Which algorithm a [`PasswordHash`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Argon2id,
    Argon2i,
    Argon2d,
    /// Mosquitto `$7$`: PBKDF2-HMAC-SHA512.
    MosquittoPbkdf2,
    /// Mosquitto `$6$`: one round of SHA-512 over password and salt.
    MosquittoSha512,
}

impl HashKind {
    /// Mosquitto's formats, which we accept for migration but re-hash on first login.
    pub fn is_legacy(self) -> bool {
        matches!(self, HashKind::MosquittoPbkdf2 | HashKind::MosquittoSha512)
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashKind::Argon2id => "argon2id",
            HashKind::Argon2i => "argon2i",
            HashKind::Argon2d => "argon2d",
            HashKind::MosquittoPbkdf2 => "mosquitto $7$ (PBKDF2-SHA512)",
            HashKind::MosquittoSha512 => "mosquitto $6$ (SHA-512)",
        })
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Scheme {
    Argon2 {
        algorithm: Algorithm,
        version: Version,
        params: Argon2Params,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// A parsed, parameter-checked password hash. `Debug` shows only the algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    encoded: String,
    scheme: Scheme,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}, <redacted>)", self.kind())
    }
}

impl PasswordHash {
    /// Parses and checks a hash string (the part after `username:`).
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        let parts: Vec<&str> = s.split('$').collect();
        if parts.first() != Some(&"") || parts.len() < 2 {
            return Err("hash must start with '$'".into());
        }
        let scheme = match parts[1] {
            "argon2id" | "argon2i" | "argon2d" => parse_argon2(&parts)?,
            "7" => {
                let [_, _, iterations, salt, hash] = parts[..] else {
                    return Err("$7$ hash must be $7$<iterations>$<salt>$<hash>".into());
                };
                let iterations: u32 = iterations
                    .parse()
                    .map_err(|_| format!("$7$ iterations {iterations:?} is not a number"))?;
                if iterations == 0 || iterations > caps::PBKDF2_MAX_ITERATIONS {
                    return Err(format!(
                        "$7$ iterations {iterations} outside 1..={}",
                        caps::PBKDF2_MAX_ITERATIONS
                    ));
                }
                let (salt, hash) = mosquitto_salt_hash(salt, hash)?;
                Scheme::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                }
            }
            "6" => {
                let [_, _, salt, hash] = parts[..] else {
                    return Err("$6$ hash must be $6$<salt>$<hash>".into());
                };
                let (salt, hash) = mosquitto_salt_hash(salt, hash)?;
                Scheme::Sha512 { salt, hash }
            }
            other => return Err(format!("unsupported hash type ${other}$")),
        };
        Ok(PasswordHash {
            encoded: s.to_owned(),
            scheme,
        })
    }

    /// The hash as written in the file.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// The cost parameters of an argon2id hash (None for other kinds).
    pub fn argon2id_params(&self) -> Option<Argon2Params> {
        match &self.scheme {
            Scheme::Argon2 {
                algorithm: Algorithm::Argon2id,
                params,
                ..
            } => Some(*params),
            _ => None,
        }
    }

    pub fn kind(&self) -> HashKind {
        match &self.scheme {
            Scheme::Argon2 { algorithm, .. } => match algorithm {
                Algorithm::Argon2id => HashKind::Argon2id,
                Algorithm::Argon2i => HashKind::Argon2i,
                Algorithm::Argon2d => HashKind::Argon2d,
            },
            Scheme::Pbkdf2 { .. } => HashKind::MosquittoPbkdf2,
            Scheme::Sha512 { .. } => HashKind::MosquittoSha512,
        }
    }
}

fn b64(engine: &base64::engine::GeneralPurpose, s: &str, what: &str) -> Result<Vec<u8>, String> {
    engine
        .decode(s)
        .map_err(|e| format!("{what} is not valid base64: {e}"))
}

fn mosquitto_salt_hash(salt: &str, hash: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let salt = b64(&STANDARD, salt, "salt")?;
    let hash = b64(&STANDARD, hash, "hash")?;
    if salt.is_empty() || salt.len() > caps::MAX_SALT_LEN {
        return Err(format!(
            "salt of {} bytes (must be 1..={})",
            salt.len(),
            caps::MAX_SALT_LEN
        ));
    }
    if hash.len() != 64 {
        return Err(format!(
            "hash of {} bytes (SHA-512 is 64 bytes)",
            hash.len()
        ));
    }
    Ok((salt, hash))
}

fn parse_argon2(parts: &[&str]) -> Result<Scheme, String> {
    let algorithm = match parts[1] {
        "argon2id" => Algorithm::Argon2id,
        "argon2i" => Algorithm::Argon2i,
        _ => Algorithm::Argon2d,
    };
    // `$alg$v=19$params$salt$hash`, or without `v=` (which means version 0x10).
    let (version, params, salt, hash) = match parts[2..] {
        [v, params, salt, hash] => {
            let v = v
                .strip_prefix("v=")
                .ok_or_else(|| format!("expected v=<version>, found {v:?}"))?;
            let version = match v {
                "19" => Version::V0x13,
                "16" => Version::V0x10,
                _ => return Err(format!("unsupported argon2 version {v:?}")),
            };
            (version, params, salt, hash)
        }
        [params, salt, hash] => (Version::V0x10, params, salt, hash),
        _ => return Err("argon2 hash must be $argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>".into()),
    };
    let (mut m, mut t, mut p) = (None, None, None);
    for kv in params.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("argon2 parameter {kv:?} is not key=value"))?;
        let slot = match k {
            "m" => &mut m,
            "t" => &mut t,
            "p" => &mut p,
            _ => return Err(format!("unsupported argon2 parameter {k:?}")),
        };
        if slot.is_some() {
            return Err(format!("argon2 parameter {k:?} given twice"));
        }
        *slot = Some(
            v.parse::<u32>()
                .map_err(|_| format!("argon2 parameter {k}={v:?} is not a number"))?,
        );
    }
    let (Some(m_cost), Some(t_cost), Some(p_cost)) = (m, t, p) else {
        return Err("argon2 hash needs m, t and p parameters".into());
    };
    let params = Argon2Params {
        m_cost,
        t_cost,
        p_cost,
    };
    params
        .validate()
        .map_err(|e| format!("argon2 parameters refused: {e}"))?;
    let salt = b64(&STANDARD_NO_PAD, salt, "salt")?;
    let hash = b64(&STANDARD_NO_PAD, hash, "hash")?;
    if !(8..=caps::MAX_SALT_LEN).contains(&salt.len()) {
        return Err(format!(
            "argon2 salt of {} bytes (must be 8..={})",
            salt.len(),
            caps::MAX_SALT_LEN
        ));
    }
    if !(4..=caps::ARGON2_MAX_HASH_LEN).contains(&hash.len()) {
        return Err(format!(
            "argon2 hash of {} bytes (must be 4..={})",
            hash.len(),
            caps::ARGON2_MAX_HASH_LEN
        ));
    }
    Ok(Scheme::Argon2 {
        algorithm,
        version,
        params,
        salt,
        hash,
    })
}

fn argon2_raw(
    algorithm: Algorithm,
    version: Version,
    params: Argon2Params,
    password: &[u8],
    salt: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(out_len))
        .map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    Argon2::new(algorithm, version, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Does `password` match `hash`? The final comparison is constant-time. This is slow on purpose
/// (argon2 / PBKDF2): never call it on the async runtime.
pub fn verify(hash: &PasswordHash, password: &[u8]) -> bool {
    let (computed, expected): (Zeroizing<Vec<u8>>, &[u8]) = match &hash.scheme {
        Scheme::Argon2 {
            algorithm,
            version,
            params,
            salt,
            hash,
        } => match argon2_raw(*algorithm, *version, *params, password, salt, hash.len()) {
            Ok(out) => (out, hash),
            Err(_) => return false,
        },
        Scheme::Pbkdf2 {
            iterations,
            salt,
            hash,
        } => {
            let mut out = Zeroizing::new(vec![0u8; 64]);
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
            (out, hash)
        }
        Scheme::Sha512 { salt, hash } => {
            let mut d = Sha512::new();
            d.update(password);
            d.update(salt);
            (Zeroizing::new(d.finalize().to_vec()), hash)
        }
    };
    computed.len() == expected.len() && bool::from(computed.as_slice().ct_eq(expected))
}

/// Hashes `password` with argon2id v19, a fresh 16-byte random salt and a 32-byte output.
pub fn hash_argon2id(
    password: &[u8],
    params: Argon2Params,
) -> Result<PasswordHash, CredentialError> {
    params.validate().map_err(CredentialError::Params)?;
    let salt: [u8; 16] = rand::random();
    let out = argon2_raw(
        Algorithm::Argon2id,
        Version::V0x13,
        params,
        password,
        &salt,
        32,
    )
    .map_err(CredentialError::Hash)?;
    let encoded = format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost,
        params.t_cost,
        params.p_cost,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out.as_slice())
    );
    PasswordHash::parse(&encoded).map_err(CredentialError::Hash)
}

/// Should this hash be replaced (on the next successful login) by an argon2id hash with `target`?
/// True for Mosquitto formats, argon2i/argon2d, version 0x10, and any cost below `target`.
pub fn needs_rehash(hash: &PasswordHash, target: Argon2Params) -> bool {
    match &hash.scheme {
        Scheme::Argon2 {
            algorithm,
            version,
            params,
            ..
        } => {
            *algorithm != Algorithm::Argon2id
                || *version != Version::V0x13
                || params.m_cost < target.m_cost
                || params.t_cost < target.t_cost
                || params.p_cost < target.p_cost
        }
        Scheme::Pbkdf2 { .. } | Scheme::Sha512 { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Argon2Params = Argon2Params {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// `$7$` vector from the documented algorithm: PBKDF2-HMAC-SHA512(password, salt, iterations).
    fn mosq7(password: &[u8], salt: &[u8], iterations: u32) -> String {
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        format!(
            "$7${iterations}${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(out)
        )
    }

    /// `$6$` vector: SHA-512(password || salt).
    fn mosq6(password: &[u8], salt: &[u8]) -> String {
        let mut d = Sha512::new();
        d.update(password);
        d.update(salt);
        format!(
            "$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(d.finalize())
        )
    }

    #[test]
    fn argon2id_round_trip_and_verify() {
        let h = hash_argon2id(b"s3cret", FAST).unwrap();
        assert!(h.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cret "));
        assert!(!verify(&h, b""));
        assert_eq!(PasswordHash::parse(h.as_str()).unwrap(), h);
        assert!(needs_rehash(&h, Argon2Params::default()));
        assert!(!needs_rehash(&h, FAST));
    }

    #[test]
    fn our_phc_strings_are_understood_by_the_argon2_crate() {
        use argon2::PasswordVerifier;
        let h = hash_argon2id(b"pw", FAST).unwrap();
        assert!(Argon2::default().verify_password(b"pw", h.as_str()).is_ok());
        assert!(
            Argon2::default()
                .verify_password(b"px", h.as_str())
                .is_err()
        );
    }

    #[test]
    fn mosquitto_formats_verify() {
        let h7 = PasswordHash::parse(&mosq7(b"secret", b"0123456789ab", 101)).unwrap();
        assert_eq!(h7.kind(), HashKind::MosquittoPbkdf2);
        assert!(verify(&h7, b"secret"));
        assert!(!verify(&h7, b"Secret"));
        assert!(needs_rehash(&h7, FAST));
        let h6 = PasswordHash::parse(&mosq6(b"hunter2", b"saltsaltsalt")).unwrap();
        assert_eq!(h6.kind(), HashKind::MosquittoSha512);
        assert!(verify(&h6, b"hunter2"));
        assert!(!verify(&h6, b"hunter3"));
        // Real mosquitto_passwd 2.0 output for alice/secret and bob/hunter2.
        let real7 = PasswordHash::parse("$7$101$oMlSoiwaBW7BComY$497g/A+BZIKv4+IC2AeLlb2jmLGhinxauUURRkISAROiCkTUzSSvvaSyBrW8fYtHb3sQc4uq22f3Ew717BV9+A==").unwrap();
        assert!(verify(&real7, b"secret"));
        let real6 = PasswordHash::parse("$6$IvhQjZy23eSdebHD$Qz6kV2RDN3bDVE1wGrtwWe3azOyK+1w0/xkwZjdkJ6uCUFSVsQcXeMUK3HnDAja8Kl1Sf4MD1v2Lpau2WfVGwg==").unwrap();
        assert!(verify(&real6, b"hunter2"));
        assert!(!verify(&real6, b"secret"));
    }
}
