//! Access control lists in Mosquitto's `acl_file` syntax.

use std::path::Path;

use super::Access;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct AclError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// A parsed ACL file.
#[derive(Debug, Default)]
pub struct Acl {}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            path: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        Acl::parse(&text, path)
    }

    /// Parses ACL text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let _ = (text, path);
        Ok(Acl {})
    }

    /// May `username` (None: anonymous) with `client_id` access `topic` (a filter for Subscribe)?
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
}
