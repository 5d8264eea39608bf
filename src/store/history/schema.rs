//! The history database's schema and its version (`PRAGMA user_version`), as the store's
//! (`store/schema.rs`): a new file gets the whole schema, an older one is migrated one version
//! at a time, a newer one is refused rather than misread.
//!
//! The schema is documented for `sqlite3 data/history.db` users in the README ("Message
//! history"); keep the two in step.

use rusqlite::Connection;

/// The schema this build writes.
pub const VERSION: i64 = 1;

/// Version 1: one row per recorded message.
///
/// `id` is the insertion order (the oldest rows, by `id`, are the first to go when `max_rows`
/// or `max_bytes` is reached); `(topic, time)` serves "this topic, or every topic under this
/// prefix, between these times" (a range on `topic`), and `(time)` the queries by time alone.
const V1: &str = "
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,   -- ms since the Unix epoch, when the broker routed it
    topic       TEXT NOT NULL,
    qos         INTEGER NOT NULL,   -- as published: 0, 1 or 2
    retain      INTEGER NOT NULL,   -- as published: 0 or 1
    client_id   TEXT,               -- the publisher's (NULL: the broker's own messages)
    username    TEXT,               -- the publisher's (NULL: anonymous)
    payload     BLOB NOT NULL,
    payload_len INTEGER NOT NULL,
    properties  BLOB                -- the 5.0 PUBLISH property block as on the wire (NULL: none)
);
CREATE INDEX messages_topic_time ON messages (topic, time);
CREATE INDEX messages_time ON messages (time);
";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("written by a newer mqttd (history schema version {found}, this one knows {VERSION})")]
    Newer { found: i64 },
    #[error("unknown history schema version {found}")]
    Unknown { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings `conn` to [`VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let found = check(conn)?;
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

/// The version `conn` holds, if this build can read it (`mqttd history` reads without
/// migrating).
pub fn check(conn: &Connection) -> Result<i64, SchemaError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    if found < 0 {
        return Err(SchemaError::Unknown { found });
    }
    Ok(found)
}
