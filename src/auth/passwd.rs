//! The password file: `username:hash` lines, parsed, verified, and rewritten atomically.
//!
//! Accepted hashes:
//! - `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (PHC string; what we write). `$argon2i$` and
//!   `$argon2d$` are accepted too, but flagged by [`needs_rehash`](super::credentials::needs_rehash).
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: Mosquitto's PBKDF2-HMAC-SHA512 (64-byte hash).
//! - `$6$<base64 salt>$<base64 hash>`: Mosquitto's older `sha512(password || salt)`. This is *not*
//!   sha512-crypt, despite the prefix.
//!
//! The hashes themselves (parsing, verification, cost caps) live in [`super::credentials`], which
//! this file format and the SCRAM exchange ([`super::scram`]) both build on.
//!
//! A user may also have SCRAM-SHA-256 credentials (for MQTT 5.0 enhanced authentication, see
//! [`super::scram`]) as an optional third field on the same line:
//! `username:$argon2id$...:$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>` (standard
//! base64 with padding). Lines without it are as before; the password login works either way.
//! Changing a password with [`PasswordFile::set`] drops the SCRAM field (it was derived from the
//! old password); re-hashing keeps it (same password) via [`PasswordFile::set_keeping_scram`].
//!
//! `#` comments and blank lines are kept on rewrite. Hash parameters above [`caps`](super::credentials::caps) are refused when
//! the file is loaded, so one hostile line cannot make every login cost gigabytes or minutes.
//!
//! Rewrites never touch the file in place: a 0600 temporary file in the same directory is written,
//! fsynced and renamed over the old one, then the directory is fsynced. Concurrent editors (the
//! `mqtt-passwd` tool, the broker re-hashing a legacy entry) serialise on an exclusive lock on a
//! sidecar `<file>.lock`, see [`PasswordFile::update`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::credentials::{CredentialError, PasswordHash, ScramCredentials, verify};

/// Longest username MQTT can carry (a UTF-8 string with a 16-bit length).
pub const MAX_USERNAME_LEN: usize = 65_535;

/// Everything that can go wrong with a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid username: {0}")]
    Username(String),
    /// An entry that must not be replaced by accident exists already.
    #[error("{0}")]
    Exists(String),
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PasswdError + '_ {
    move |source| PasswdError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks a username: non-empty, no `:`, no control characters, at most 65535 bytes.
pub fn validate_username(name: &str) -> Result<(), PasswdError> {
    let problem = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_USERNAME_LEN {
        "longer than 65535 bytes"
    } else if name.contains(':') {
        "contains ':'"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(PasswdError::Username(problem.into()))
}

/// One user's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub username: String,
    pub hash: PasswordHash,
    /// SCRAM-SHA-256 credentials, when the user may log in with enhanced authentication.
    pub scram: Option<ScramCredentials>,
}

impl Entry {
    /// See [`verify`].
    pub fn verify(&self, password: &[u8]) -> bool {
        verify(&self.hash, password)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Other(String),
    /// Boxed: an entry is ten times the size of a comment.
    User(Box<Entry>),
}

/// A password file in memory, in file order (comments included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    lines: Vec<Line>,
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        PasswordFile::parse(&text, path)
    }

    /// Parses file text; `path` only names the file in errors. Duplicate users are an error.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswdError> {
        let mut file = PasswordFile::default();
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let fail = |message: String| PasswdError::Parse {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            // All trailing CRs: `serialize` ends lines with a bare LF, so keeping one would make a
            // rewrite change the line (it would then read as a CRLF ending).
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(line.to_owned()));
                continue;
            }
            let Some((username, rest)) = line.split_once(':') else {
                return Err(fail("expected username:hash".into()));
            };
            validate_username(username).map_err(|e| fail(e.to_string()))?;
            let rest = rest.trim_end();
            let (hash, scram) = match rest.split_once(':') {
                Some((hash, scram)) => (hash, Some(scram)),
                None => (rest, None),
            };
            let hash =
                PasswordHash::parse(hash).map_err(|e| fail(format!("user {username:?}: {e}")))?;
            let scram = scram
                .map(ScramCredentials::parse)
                .transpose()
                .map_err(|e| fail(format!("user {username:?}: {e}")))?;
            if !seen.insert(username) {
                return Err(fail(format!("user {username:?} appears twice")));
            }
            file.lines.push(Line::User(Box::new(Entry {
                username: username.to_owned(),
                hash,
                scram,
            })));
        }
        Ok(file)
    }

    /// The file text: one line per user / comment, each ending in `\n`.
    pub fn serialize(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(text) => out.push_str(text),
                Line::User(e) => {
                    out.push_str(&e.username);
                    out.push(':');
                    out.push_str(e.hash.as_str());
                    if let Some(scram) = &e.scram {
                        out.push(':');
                        out.push_str(scram.as_str());
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// Users in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| match l {
            Line::User(e) => Some(&**e),
            Line::Other(_) => None,
        })
    }

    pub fn get(&self, username: &str) -> Option<&Entry> {
        self.entries().find(|e| e.username == username)
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets `username`'s password hash, in place if the user exists, else appended; any SCRAM
    /// credentials are dropped (they belong to the old password). True if the user was new.
    pub fn set(&mut self, username: &str, hash: PasswordHash) -> Result<bool, PasswdError> {
        self.set_with_scram(username, hash, None)
    }

    /// Sets `username`'s password hash and SCRAM credentials (both from the same password).
    pub fn set_with_scram(
        &mut self,
        username: &str,
        hash: PasswordHash,
        scram: Option<ScramCredentials>,
    ) -> Result<bool, PasswdError> {
        validate_username(username)?;
        for line in &mut self.lines {
            if let Line::User(e) = line
                && e.username == username
            {
                e.hash = hash;
                e.scram = scram;
                return Ok(false);
            }
        }
        self.lines.push(Line::User(Box::new(Entry {
            username: username.to_owned(),
            hash,
            scram,
        })));
        Ok(true)
    }

    /// Replaces an existing user's hash by one of the *same* password (a re-hash), keeping their
    /// SCRAM credentials. False if there is no such user.
    pub fn set_keeping_scram(&mut self, username: &str, hash: PasswordHash) -> bool {
        for line in &mut self.lines {
            if let Line::User(e) = line
                && e.username == username
            {
                e.hash = hash;
                return true;
            }
        }
        false
    }

    /// Removes `username`; true if it was there.
    pub fn remove(&mut self, username: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::User(e) if e.username == username));
        self.lines.len() != before
    }

    /// Writes the file atomically (0600 temp file in the same directory, fsync, rename, fsync dir).
    /// Callers that read-modify-write should use [`PasswordFile::update`] for the lock.
    pub fn write_atomic(&self, path: &Path) -> Result<(), PasswdError> {
        write_text_atomic(path, &self.serialize())
    }

    /// Locked read-modify-write: takes an exclusive lock on `<path>.lock` (waiting for other
    /// editors), loads the file (an empty one if it does not exist and `create` is set), applies
    /// `edit`, and writes the result atomically if `edit` returned `Ok((_, true))`.
    pub fn update<T, E>(
        path: &Path,
        create: bool,
        edit: impl FnOnce(&mut PasswordFile) -> Result<(T, bool), E>,
    ) -> Result<T, E>
    where
        E: From<PasswdError>,
    {
        with_lock(path, || {
            let mut file = match PasswordFile::load(path) {
                Ok(f) => f,
                Err(PasswdError::Io { source, .. })
                    if create && source.kind() == io::ErrorKind::NotFound =>
                {
                    PasswordFile::default()
                }
                Err(e) => return Err(e.into()),
            };
            let (value, changed) = edit(&mut file)?;
            if changed {
                file.write_atomic(path)?;
            }
            Ok(value)
        })?
    }
}

/// Runs `f` holding the exclusive lock on `<path>.lock` (waiting for other editors of `path`).
pub fn with_lock<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, PasswdError> {
    let lock_path = lock_path(path);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _guard = lock.write().map_err(io_err(&lock_path))?;
    Ok(f())
}

/// Writes `text` to `path` atomically: a 0600 temporary file in the same directory, fsync,
/// rename over `path`, fsync the directory. Never in place.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<(), PasswdError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| PasswdError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The sidecar lock file for `path`: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::{Argon2Params, hash_argon2id};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest, Sha512};

    /// Cheap parameters so tests stay fast.
    const FAST: Argon2Params = Argon2Params {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn p(text: &str) -> Result<PasswordFile, PasswdError> {
        PasswordFile::parse(text, Path::new("pw"))
    }

    fn err_of(text: &str) -> String {
        p(text).unwrap_err().to_string()
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

    /// Found by the `passwd_parse` fuzz target (input as found): a comment ending in CR CR at the
    /// end of the file lost a CR on every rewrite, so parse -> serialize -> parse changed it.
    #[test]
    fn trailing_carriage_returns_survive_a_rewrite() {
        for text in ["#ni\u{b}\u{b}\u{b}\0\r\r", "# c\r\r\n\r\r\r\n \r"] {
            let file = p(text).unwrap();
            let written = file.serialize();
            assert_eq!(p(&written).unwrap(), file, "{text:?} -> {written:?}");
            assert_eq!(p(&written).unwrap().serialize(), written);
        }
    }

    #[test]
    fn parse_keeps_comments_and_round_trips() {
        let a = hash_argon2id(b"a", FAST).unwrap();
        let text = format!(
            "# users\n\nalice:{}\n  # indented comment\nbob:{}\n",
            a.as_str(),
            mosq6(b"b", b"salt")
        );
        let f = p(&text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.serialize(), text);
        let names: Vec<_> = f.entries().map(|e| e.username.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        // CRLF is accepted (and normalised).
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(p(&crlf).unwrap().serialize(), text);
    }

    #[test]
    fn scram_field_round_trips_and_follows_the_password() {
        let h = hash_argon2id(b"pw", FAST).unwrap();
        let scram = ScramCredentials::derive(b"pw", b"0123456789abcdef", 4096);
        let text = format!(
            "# c\nold:{}\nnew:{}:{}\n",
            h.as_str(),
            h.as_str(),
            scram.as_str()
        );
        let mut f = p(&text).unwrap();
        assert_eq!(f.serialize(), text);
        assert!(f.get("old").unwrap().scram.is_none());
        assert_eq!(f.get("new").unwrap().scram.as_ref(), Some(&scram));
        // A re-hash keeps the SCRAM credentials; a new password drops them.
        assert!(f.set_keeping_scram("new", h.clone()));
        assert!(f.get("new").unwrap().scram.is_some());
        f.set("new", h.clone()).unwrap();
        assert!(f.get("new").unwrap().scram.is_none());
        let e = err_of(&format!(
            "u:{}:$scram-sha-256$4096$AAAA$AAAA$AAAA\n",
            h.as_str()
        ));
        assert!(e.starts_with("pw:1:") && e.contains("32 bytes"), "{e}");
        let e = err_of(&format!("\nu:{}:{}:x\n", h.as_str(), scram.as_str()));
        assert!(e.starts_with("pw:2:"), "{e}");
    }

    #[test]
    fn set_and_remove() {
        let mut f = p("# c\n").unwrap();
        let h = hash_argon2id(b"x", FAST).unwrap();
        assert!(f.set("u", h.clone()).unwrap());
        assert!(!f.set("u", h.clone()).unwrap());
        assert!(f.set("a:b", h).is_err());
        assert_eq!(f.len(), 1);
        assert!(f.remove("u"));
        assert!(!f.remove("u"));
        assert_eq!(f.serialize(), "# c\n");
    }

    #[test]
    fn errors_name_file_and_line() {
        let good = mosq6(b"b", b"salt");
        let cases = [
            ("# x\nnocolon\n".to_string(), "pw:2:", "username:hash"),
            (format!(":{good}\n"), "pw:1:", "empty"),
            (format!("a\tb:{good}\n"), "pw:1:", "control"),
            (format!("a:{good}\na:{good}\n"), "pw:2:", "twice"),
            ("\n\nu:plaintext\n".into(), "pw:3:", "start with '$'"),
            ("u:$5$abc$def\n".into(), "pw:1:", "unsupported"),
            ("u:$7$x$c2FsdA==$aGFzaA==\n".into(), "pw:1:", "not a number"),
            ("u:$6$c2FsdA==$aGFzaA==\n".into(), "pw:1:", "64 bytes"),
            ("u:$6$!!!$aGFzaA==\n".into(), "pw:1:", "base64"),
            (
                "u:$argon2id$v=19$m=64,t=1$c29tZXNhbHQ$aGFzaGhhc2g\n".into(),
                "pw:1:",
                "m, t and p",
            ),
            (
                "u:$argon2id$v=18$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2g\n".into(),
                "pw:1:",
                "version",
            ),
        ];
        for (text, prefix, needle) in cases {
            let e = err_of(&text);
            assert!(e.starts_with(prefix), "{text:?}: {e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let s = "c29tZXNhbHQ";
        let h = "aGFzaGhhc2hoYXNoaGFzaA";
        for params in [
            "m=262145,t=1,p=1",
            "m=64,t=11,p=1",
            "m=512,t=1,p=17",
            "m=4,t=1,p=1",
        ] {
            let line = format!("u:$argon2id$v=19${params}${s}${h}\n");
            assert!(err_of(&line).contains("refused"), "{params}");
        }
        let ok = format!("u:$argon2id$v=19$m=262144,t=10,p=16${s}${h}\n");
        assert!(p(&ok).is_ok());
        let e = err_of(&format!(
            "u:$7$10000001$c2FsdA==${}\n",
            STANDARD.encode([0u8; 64])
        ));
        assert!(e.contains("iterations"), "{e}");
        assert!(
            p(&format!(
                "u:$7$10000000$c2FsdA==${}\n",
                STANDARD.encode([0u8; 64])
            ))
            .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_hashes() {
        let h = hash_argon2id(b"pw", FAST).unwrap();
        let mut f = PasswordFile::default();
        f.set("u", h.clone()).unwrap();
        let salt_and_hash = h.as_str().rsplit('$').next().unwrap().to_owned();
        for dbg in [format!("{h:?}"), format!("{f:?}")] {
            assert!(!dbg.contains(&salt_and_hash), "{dbg}");
            assert!(!dbg.contains("m=64"), "{dbg}");
        }
    }

    #[test]
    fn update_writes_atomically_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let h = hash_argon2id(b"pw", FAST).unwrap();
        PasswordFile::update::<_, PasswdError>(&path, true, |f| Ok((f.set("u", h)?, true)))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(PasswordFile::load(&path).unwrap().len(), 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
        // Without `create`, a missing file is an error naming it.
        let missing = dir.path().join("nope");
        let e = PasswordFile::update::<(), PasswdError>(&missing, false, |_| Ok(((), false)))
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
