//! The database's schema, its version, and the migrations between versions.
//!
//! `PRAGMA user_version` holds the schema version. A database with no version is new and gets
//! the whole schema; an older one is migrated, one step per version, each in its own
//! transaction; a newer one (written by a later mqttd) is refused rather than misread.

use rusqlite::Connection;

/// The schema this build writes.
pub const VERSION: i64 = 1;

/// Version 1: retained messages. (Sessions, subscriptions and queues come with the next
/// version; see issue 12.)
const V1: &str = "
CREATE TABLE retained (
    topic       TEXT PRIMARY KEY NOT NULL,
    qos         INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    properties  BLOB,           -- the PUBLISH property block as on the wire (NULL: none)
    expires_at  INTEGER,        -- ms since the Unix epoch (NULL: never)
    stored_at   INTEGER NOT NULL
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database was written by a newer mqttd (schema version {found}, this one knows {VERSION})"
    )]
    Newer { found: i64 },
    #[error("the database has an unknown schema version {found}")]
    Unknown { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings `conn` to [`VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    if found < 0 {
        return Err(SchemaError::Unknown { found });
    }
    for version in found + 1..=VERSION {
        let tx = conn.transaction()?;
        match version {
            1 => tx.execute_batch(V1)?,
            _ => return Err(SchemaError::Unknown { found }),
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
