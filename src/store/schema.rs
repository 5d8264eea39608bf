//! The database's schema, its version, and the migrations between versions.
//!
//! `PRAGMA user_version` holds the schema version. A database with no version is new and gets
//! the whole schema; an older one is migrated, one step per version, each in its own
//! transaction; a newer one (written by a later mqttd) is refused rather than misread.

use rusqlite::Connection;

/// The schema this build writes.
pub const VERSION: i64 = 2;

/// Version 1: retained messages.
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

/// Version 2: persistent sessions, their subscriptions, their queued and in-flight messages
/// (each message's payload stored once, in `messages`, whoever it is queued for) and the QoS 2
/// packet ids they sent and have not released.
const V2: &str = "
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,    -- the broker's session id (kept across restarts)
    client_id   TEXT NOT NULL UNIQUE,
    expiry      INTEGER NOT NULL,       -- Session Expiry Interval, s (4294967295: never)
    username    TEXT,
    expires_at  INTEGER,                -- ms since the Unix epoch; NULL: connected, or never
    will_topic  TEXT,                   -- the will (NULL: none) ...
    will_qos    INTEGER,
    will_retain INTEGER,
    will_payload BLOB,
    will_properties BLOB,               -- PUBLISH property block (Will Delay Interval not in it)
    will_delay  INTEGER,                -- Will Delay Interval, s
    will_at     INTEGER                 -- a delayed will's deadline, ms; NULL: not started
);
CREATE TABLE subscriptions (
    session     INTEGER NOT NULL,
    filter      TEXT NOT NULL,
    options     INTEGER NOT NULL,       -- the MQTT 5.0 subscription options byte
    sub_id      INTEGER,                -- Subscription Identifier (NULL: none)
    PRIMARY KEY (session, filter)
) WITHOUT ROWID;
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    properties  BLOB,                   -- the PUBLISH property block as on the wire
    expires_at  INTEGER                 -- ms since the Unix epoch (NULL: never)
);
CREATE TABLE deliveries (
    session     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,       -- order within the session
    message     INTEGER NOT NULL,       -- messages.id
    qos         INTEGER NOT NULL,       -- as delivered: min(published, granted)
    retain      INTEGER NOT NULL,
    sub_ids     BLOB,                   -- Subscription Identifiers, u32 little-endian each
    shared      TEXT,                   -- the $share/GROUP/FILTER it came through
    packet_id   INTEGER,                -- NULL: queued; else sent and not acknowledged
    pubrel      INTEGER NOT NULL DEFAULT 0,  -- 1: PUBREC received, PUBREL sent
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE inbound_qos2 (
    session     INTEGER NOT NULL,
    packet_id   INTEGER NOT NULL,
    PRIMARY KEY (session, packet_id)
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
            2 => tx.execute_batch(V2)?,
            _ => return Err(SchemaError::Unknown { found }),
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
