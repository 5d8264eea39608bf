//! API keys for the HTTP API: `Authorization: Bearer <key>`, made by `mqtt-passwd api-key add`.
//!
//! The file (`[http] api_keys`, e.g. `config/api_keys` next to the password file) has one key per
//! line, `name:role:sha256`, where `sha256` is the lowercase hex SHA-256 of the whole key;
//! `#` comments and blank lines are kept on rewrite. The key itself is shown once, when it is made,
//! and stored nowhere.
//!
//! Why SHA-256 and not argon2 as for passwords: a key is 32 random bytes from the OS's generator
//! (256 bits), not something a person chose, so there is no dictionary to try and a leaked file
//! cannot be brute-forced whatever the hash's speed; a slow hash would only make every API request
//! cost ~19 MiB and tens of milliseconds of CPU (and queue behind MQTT logins in the argon2 pool).
//! Keys are looked up by their digest, so checking one costs one SHA-256 and one map lookup.
//!
//! Rewrites are atomic and locked like the password file's (see [`super::passwd`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::passwd::{PasswdError, validate_username, with_lock, write_text_atomic};

/// What a key (or an HTTP user) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything: read, publish, disconnect clients.
    Admin,
    /// Read only: statistics, clients, metrics.
    Viewer,
    /// Publish only (where the ACL lets the key's name write); reads nothing.
    Publisher,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            "publisher" => Ok(Role::Publisher),
            other => Err(format!(
                "unknown role {other:?} (admin, viewer or publisher)"
            )),
        }
    }
}

/// Every key starts with this, so a key pasted somewhere is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "mqttd_";

/// One key's line.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the key.
    digest: [u8; 32],
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Key(KeyEntry),
    /// A comment or blank line, kept as it was.
    Other(String),
}

/// The API key file, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyFile {
    lines: Vec<Line>,
}

/// A new key: the secret to show once, and its line.
pub struct NewKey {
    pub key: Zeroizing<String>,
    pub entry: KeyEntry,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeyFile {
    pub fn load(path: &Path) -> Result<ApiKeyFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswdError::Io {
            path: path.to_owned(),
            source,
        })?;
        ApiKeyFile::parse(&text, path)
    }

    /// Parses `text`; errors name `path` and the line. Never panics.
    pub fn parse(text: &str, path: &Path) -> Result<ApiKeyFile, PasswdError> {
        let mut file = ApiKeyFile::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| PasswdError::Parse {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                // Kept as written, less carriage returns (a lone one at the very end is not
                // taken off by `lines()`, and written back it would read as another line).
                file.lines
                    .push(Line::Other(raw.trim_end_matches('\r').to_owned()));
                continue;
            }
            let mut fields = line.split(':');
            let (Some(name), Some(role), Some(hex), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected name:role:sha256".into()));
            };
            validate_username(name).map_err(|e| err(format!("key name: {e}")))?;
            let role = role.parse().map_err(err)?;
            let digest = parse_hex32(hex)
                .ok_or_else(|| err("the digest is not 64 lowercase hex digits".into()))?;
            if file.get(name).is_some() {
                return Err(err(format!("key {name:?} appears twice")));
            }
            file.lines.push(Line::Key(KeyEntry {
                name: name.to_owned(),
                role,
                digest,
            }));
        }
        Ok(file)
    }

    pub fn serialize(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Key(e) => {
                    out.push_str(&format!("{}:{}:", e.name, e.role.name()));
                    for b in e.digest {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
                Line::Other(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    pub fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.lines.iter().filter_map(|l| match l {
            Line::Key(e) => Some(e),
            Line::Other(_) => None,
        })
    }

    pub fn get(&self, name: &str) -> Option<&KeyEntry> {
        self.entries().find(|e| e.name == name)
    }

    /// Makes a key called `name` with `role` (refused if the name is taken: remove it first, so
    /// a key is never replaced by accident).
    pub fn add(&mut self, name: &str, role: Role) -> Result<NewKey, PasswdError> {
        validate_username(name)?;
        if self.get(name).is_some() {
            return Err(PasswdError::Exists(format!(
                "a key called {name:?} exists already (remove it first)"
            )));
        }
        let secret: [u8; 32] = rand::random();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let key = Zeroizing::new(format!("{KEY_PREFIX}{encoded}"));
        let entry = KeyEntry {
            name: name.to_owned(),
            role,
            digest: digest(key.as_bytes()),
        };
        self.lines.push(Line::Key(entry.clone()));
        Ok(NewKey { key, entry })
    }

    /// Removes the key called `name`; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Key(e) if e.name == name));
        self.lines.len() != before
    }

    /// Locked read-modify-write (as [`super::passwd::PasswordFile::update`]): loads the file
    /// (empty if missing and `create`), applies `edit`, writes atomically (0600) if it says so.
    pub fn update<T>(
        path: &Path,
        create: bool,
        edit: impl FnOnce(&mut ApiKeyFile) -> Result<(T, bool), PasswdError>,
    ) -> Result<T, PasswdError> {
        with_lock(path, || {
            let mut file = match ApiKeyFile::load(path) {
                Ok(f) => f,
                Err(PasswdError::Io { source, .. })
                    if create && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    ApiKeyFile::default()
                }
                Err(e) => return Err(e),
            };
            let (value, changed) = edit(&mut file)?;
            if changed {
                write_text_atomic(path, &file.serialize())?;
            }
            Ok(value)
        })?
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A key's holder, as the API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub name: Arc<str>,
    pub role: Role,
}

/// The keys in force, by digest; replaced whole on reload.
#[derive(Debug, Default)]
pub struct ApiKeys {
    path: Option<PathBuf>,
    by_digest: RwLock<Arc<HashMap<[u8; 32], KeyHolder>>>,
}

impl ApiKeys {
    /// Loads `path` (None: no keys). Blocking (file I/O).
    pub fn load(path: Option<&Path>) -> Result<ApiKeys, PasswdError> {
        let keys = ApiKeys {
            path: path.map(Path::to_owned),
            by_digest: RwLock::default(),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Re-reads the file; on error the keys in force stay. Blocking (file I/O).
    pub fn reload(&self) -> Result<(), PasswdError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = ApiKeyFile::load(path)?;
        let map = file
            .entries()
            .map(|e| {
                let holder = KeyHolder {
                    name: e.name.as_str().into(),
                    role: e.role,
                };
                (e.digest, holder)
            })
            .collect();
        *self.by_digest.write() = Arc::new(map);
        Ok(())
    }

    /// The file the keys come from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Who holds `key`, if anyone. A key is 256 random bits, so looking its digest up in a map
    /// leaks nothing an attacker could use (see the module doc).
    pub fn check(&self, key: &str) -> Option<KeyHolder> {
        if !key.starts_with(KEY_PREFIX) {
            return None;
        }
        self.by_digest.read().get(&digest(key.as_bytes())).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_digest.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ApiKeyFile, PasswdError> {
        ApiKeyFile::parse(text, Path::new("keys"))
    }

    /// Found by the `api_keys_parse` fuzz target: a lone carriage return at the end.
    #[test]
    fn carriage_returns_round_trip() {
        for text in ["\r", "# note\r", "\r\r\n", "# a\r\n\r"] {
            let path = Path::new("keys");
            let file = ApiKeyFile::parse(text, path).unwrap();
            let written = file.serialize();
            assert_eq!(ApiKeyFile::parse(&written, path).unwrap(), file, "{text:?}");
        }
    }

    #[test]
    fn add_parse_round_trip_and_check() {
        let mut file = p("# keys\n\n").unwrap();
        let new = file.add("grafana", Role::Viewer).unwrap();
        assert!(new.key.starts_with(KEY_PREFIX));
        assert_eq!(new.key.len(), KEY_PREFIX.len() + 43);
        let text = file.serialize();
        assert!(text.starts_with("# keys\n\ngrafana:viewer:"));
        assert!(
            !text.contains(new.key.as_str()),
            "the key itself is never stored"
        );
        let again = p(&text).unwrap();
        assert_eq!(again, file);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, text).unwrap();
        let keys = ApiKeys::load(Some(&path)).unwrap();
        let holder = keys.check(&new.key).unwrap();
        assert_eq!((&*holder.name, holder.role), ("grafana", Role::Viewer));
        assert!(keys.check("mqttd_wrong").is_none());
        assert!(keys.check(&new.key[1..]).is_none());
        assert!(
            file.add("grafana", Role::Admin).is_err(),
            "names are unique"
        );
        assert!(file.remove("grafana") && !file.remove("grafana"));
    }

    #[test]
    fn errors_name_the_line() {
        let hex = "0".repeat(64);
        for (text, needle) in [
            ("a:viewer".to_owned(), "keys:1: expected name:role:sha256"),
            (format!("# c\na:root:{hex}"), "keys:2: unknown role"),
            ("a:admin:00".to_owned(), "keys:1: the digest"),
            (format!("a:admin:{}", "A".repeat(64)), "keys:1: the digest"),
            (
                format!("a:admin:{hex}\na:viewer:{hex}"),
                "keys:2: key \"a\" appears twice",
            ),
            (format!(":admin:{hex}"), "keys:1: key name"),
            (format!("a:admin:{hex}:x"), "keys:1: expected"),
        ] {
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // Multi-byte text where a digest should be: an error, not a panic.
        assert!(p(&format!("a:admin:{}", "é".repeat(32))).is_err());
    }

    #[test]
    fn debug_hides_the_digest() {
        let mut file = ApiKeyFile::default();
        file.add("k", Role::Admin).unwrap();
        let shown = format!("{file:?}");
        assert!(!shown.contains("digest"), "{shown}");
    }

    #[test]
    fn update_writes_0600_and_reload_picks_changes_up() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_keys");
        let key = ApiKeyFile::update(&path, true, |f| {
            Ok((f.add("ci", Role::Publisher)?.key, true))
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let keys = ApiKeys::load(Some(&path)).unwrap();
        assert_eq!(keys.check(&key).unwrap().role, Role::Publisher);
        ApiKeyFile::update(&path, false, |f| Ok(((), f.remove("ci")))).unwrap();
        keys.reload().unwrap();
        assert!(keys.check(&key).is_none());
        assert!(ApiKeys::load(Some(&dir.path().join("missing"))).is_err());
    }
}
