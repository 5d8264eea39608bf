//! Credentials as stored and the work of checking them: password hashes ([`hash`]: argon2id,
//! Mosquitto's `$7$` / `$6$`) and SCRAM-SHA-256 keys ([`scram`]), with the cost caps that keep one
//! hostile line from making every login expensive.
//!
//! A leaf of `auth/`: the password file format ([`super::passwd`]) and the SCRAM exchange
//! ([`super::scram`]) both build on it, and neither needs the other.

pub mod hash;
pub mod scram;

pub use hash::{Argon2Params, HashKind, PasswordHash, hash_argon2id, needs_rehash, verify};
pub use scram::ScramCredentials;

/// Upper bounds on hash parameters accepted from a file.
pub mod caps {
    /// argon2 memory, KiB (256 MiB).
    pub const ARGON2_MAX_M_COST: u32 = 256 * 1024;
    /// argon2 passes.
    pub const ARGON2_MAX_T_COST: u32 = 10;
    /// argon2 lanes.
    pub const ARGON2_MAX_P_COST: u32 = 16;
    /// PBKDF2 iterations for `$7$`.
    pub const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;
    /// Salt bytes, any scheme.
    pub const MAX_SALT_LEN: usize = 64;
    /// argon2 output bytes.
    pub const ARGON2_MAX_HASH_LEN: usize = 64;
}
/// Bad parameters for a new hash, or a failure to compute one.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid hash parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}
