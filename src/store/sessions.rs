//! Start-up: the persistent sessions the store holds, read back and checked row by row.
//!
//! A row that fails its checks (see `rows.rs`) is reported and left out; a session whose own row
//! is bad goes with everything it held, and so do rows that belong to no session and messages
//! no delivery points at, so the file is consistent again before the writer starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use rusqlite::{Connection, params};
use tracing::warn;

use super::ops::Refs;
use super::rows::{self, MessageRow, RowError};
use crate::protocol::{QoS, SubscriptionOptions, text, topic};
use crate::router::Message;
use crate::router::state::Delivery;

/// A persistent session as the store held it.
#[derive(Debug)]
pub struct StoredSession {
    /// The broker's session id, kept across restarts.
    pub id: u64,
    pub client_id: Arc<str>,
    pub expiry: u32,
    pub username: Option<String>,
    /// When it expires. None: its client was connected when the broker stopped (the session
    /// expires `expiry` after the restart), or it never expires.
    pub expires_at: Option<SystemTime>,
    pub will: Option<StoredWill>,
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    /// Queued and in-flight deliveries in order, each with the packet id it was sent with
    /// (None: not sent yet) and whether PUBREL was sent for it.
    pub deliveries: Vec<(Delivery, Option<u16>, bool)>,
    /// QoS 2 packet ids received from the client and not yet released.
    pub inbound_qos2: Vec<u16>,
}

/// A stored will.
#[derive(Debug)]
pub struct StoredWill {
    pub message: Message,
    pub delay: u32,
    /// When a delayed will is due. None: the connection was still there when the broker
    /// stopped (the will is due `delay` after the restart).
    pub at: Option<SystemTime>,
}

/// What [`load`] read.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub sessions: Vec<StoredSession>,
    pub refs: Refs,
    pub skipped: usize,
    pub queued: usize,
}

/// Reads every persistent session, and tidies what no longer belongs to one.
pub(super) fn load(conn: &mut Connection) -> Result<Loaded, rusqlite::Error> {
    let mut loaded = Loaded::default();
    let mut bad_sessions = Vec::new();
    // Rows of no (readable) session were seen: the tidy-up deletes them.
    let mut orphans = false;
    let mut sessions: HashMap<i64, StoredSession> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, client_id, expiry, username, expires_at, will_topic, will_qos,
                    will_retain, will_payload, will_properties, will_delay, will_at
             FROM sessions",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            // A key of the wrong type (any column may hold any type in SQLite): the row is
            // left out, as any other bad row; the rest still loads.
            let Ok(id) = r.get::<_, i64>(0) else {
                loaded.skipped += 1;
                continue;
            };
            match session_row(r) {
                Ok(s) => {
                    sessions.insert(id, s);
                }
                Err(e) => {
                    warn!(
                        session = id,
                        "a stored session cannot be read ({e}); dropped"
                    );
                    loaded.skipped += 1;
                    bad_sessions.push(id);
                }
            }
        }
    }
    {
        let mut stmt =
            conn.prepare("SELECT session, filter, options, sub_id FROM subscriptions")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some(s) = r.get::<_, i64>(0).ok().and_then(|k| sessions.get_mut(&k)) else {
                orphans = true;
                continue;
            };
            match subscription_row(r) {
                Ok(sub) => s.subscriptions.push(sub),
                Err(e) => {
                    warn!(client_id = %text::cut(&s.client_id),
                        "a stored subscription cannot be read ({e}); left out");
                    loaded.skipped += 1;
                }
            }
        }
    }
    let messages = load_messages(conn, &mut loaded.skipped)?;
    {
        let mut stmt = conn.prepare(
            "SELECT session, seq, message, qos, retain, sub_ids, shared, packet_id, pubrel
             FROM deliveries ORDER BY session, seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some(s) = r.get::<_, i64>(0).ok().and_then(|k| sessions.get_mut(&k)) else {
                orphans = true;
                continue;
            };
            let Some((message, msg)) = r
                .get::<_, i64>(2)
                .ok()
                .and_then(|m| Some((m, messages.get(&m)?)))
            else {
                loaded.skipped += 1;
                continue;
            };
            match delivery_row(r, msg) {
                Ok(d) => {
                    *loaded.refs.entry(message).or_default() += 1;
                    s.deliveries.push(d);
                    loaded.queued += 1;
                }
                Err(e) => {
                    warn!(client_id = %text::cut(&s.client_id),
                        "a stored delivery cannot be read ({e}); left out");
                    loaded.skipped += 1;
                }
            }
        }
    }
    {
        let mut stmt = conn.prepare("SELECT session, packet_id FROM inbound_qos2")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some(s) = r.get::<_, i64>(0).ok().and_then(|k| sessions.get_mut(&k)) else {
                orphans = true;
                continue;
            };
            if let Some(Ok(id @ 1..)) = r.get::<_, i64>(1).ok().map(u16::try_from) {
                s.inbound_qos2.push(id);
            }
        }
    }
    tidy(conn, &bad_sessions, orphans, &messages, &loaded.refs)?;
    loaded.sessions = sessions.into_values().collect();
    loaded.sessions.sort_unstable_by_key(|s| s.id);
    Ok(loaded)
}

fn session_row(r: &rusqlite::Row<'_>) -> Result<StoredSession, LoadError> {
    let id = u64::try_from(r.get::<_, i64>(0)?).map_err(|_| RowError::Range("session id"))?;
    let client_id: String = r.get(1)?;
    let username: Option<String> = r.get(3)?;
    let valid = |s: &str| s.len() <= usize::from(u16::MAX) && !s.contains('\0');
    if !valid(&client_id) || !username.as_deref().is_none_or(valid) {
        return Err(RowError::Text.into());
    }
    let expiry = u32::try_from(r.get::<_, i64>(2)?).map_err(|_| RowError::Range("expiry"))?;
    let expires_at = millis(r.get(4)?)?;
    let will = match r.get::<_, Option<String>>(5)? {
        None => None,
        Some(topic) => {
            let message = MessageRow {
                topic,
                qos: r.get::<_, Option<i64>>(6)?.unwrap_or(-1),
                retain: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
                payload: r.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default(),
                properties: r.get(9)?,
                expires_at: None,
            }
            .into_message()?;
            let delay = r.get::<_, Option<i64>>(10)?.unwrap_or(0);
            let delay = u32::try_from(delay).map_err(|_| RowError::Range("will delay"))?;
            let at = millis(r.get(11)?)?;
            Some(StoredWill { message, delay, at })
        }
    };
    Ok(StoredSession {
        id,
        client_id: client_id.into(),
        expiry,
        username,
        expires_at,
        will,
        subscriptions: Vec::new(),
        deliveries: Vec::new(),
        inbound_qos2: Vec::new(),
    })
}

fn subscription_row(
    r: &rusqlite::Row<'_>,
) -> Result<(String, SubscriptionOptions, Option<u32>), LoadError> {
    let filter: String = r.get(1)?;
    if topic::subscription_filter(&filter).is_err() {
        return Err(RowError::Filter.into());
    }
    let options = u8::try_from(r.get::<_, i64>(2)?)
        .ok()
        .and_then(|b| SubscriptionOptions::from_byte(b).ok())
        .ok_or(RowError::Range("subscription options"))?;
    let sub_id = match r.get::<_, Option<i64>>(3)? {
        None => None,
        Some(id) => Some(
            u32::try_from(id)
                .ok()
                .filter(|id| (1..=268_435_455).contains(id))
                .ok_or(RowError::SubscriptionId)?,
        ),
    };
    Ok((filter, options, sub_id))
}

fn delivery_row(
    r: &rusqlite::Row<'_>,
    msg: &Arc<Message>,
) -> Result<(Delivery, Option<u16>, bool), LoadError> {
    let seq = u64::try_from(r.get::<_, i64>(1)?)
        .ok()
        .filter(|&s| s > 0)
        .ok_or(RowError::Range("seq"))?;
    let qos = match r.get::<_, i64>(3)? {
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(RowError::Qos(other).into()),
    };
    let sub_ids = rows::sub_ids_from_blob(r.get_ref(5)?.as_blob_or_null()?)?;
    let shared: Option<String> = r.get(6)?;
    if let Some(s) = &shared
        && !matches!(topic::subscription_filter(s), Ok((true, _)))
    {
        return Err(RowError::Filter.into());
    }
    let packet_id = match r.get::<_, Option<i64>>(7)? {
        None => None,
        Some(id) => Some(
            u16::try_from(id)
                .ok()
                .filter(|&id| id > 0)
                .ok_or(RowError::Range("packet id"))?,
        ),
    };
    let pubrel = r.get::<_, bool>(8)? && packet_id.is_some() && qos == QoS::ExactlyOnce;
    let mut d = Delivery::new(msg.clone(), qos, r.get(4)?);
    d.sub_ids = sub_ids;
    d.shared = shared.map(Arc::from);
    d.seq = seq;
    Ok((d, packet_id, pubrel))
}

/// Every stored message, by id, with its `store_id` set.
fn load_messages(
    conn: &Connection,
    skipped: &mut usize,
) -> Result<HashMap<i64, Arc<Message>>, rusqlite::Error> {
    let mut stmt = conn
        .prepare("SELECT id, topic, qos, retain, payload, properties, expires_at FROM messages")?;
    let mut rows = stmt.query([])?;
    let mut messages = HashMap::new();
    while let Some(r) = rows.next()? {
        let Ok(id) = r.get::<_, i64>(0) else {
            *skipped += 1;
            continue;
        };
        let row = (|| -> Result<Message, LoadError> {
            Ok(MessageRow {
                topic: r.get(1)?,
                qos: r.get(2)?,
                retain: r.get(3)?,
                payload: r.get(4)?,
                properties: r.get(5)?,
                expires_at: r.get(6)?,
            }
            .into_message()?)
        })();
        match row {
            Ok(msg) if id > 0 => {
                msg.store_id.store(id.unsigned_abs(), Ordering::Relaxed);
                messages.insert(id, Arc::new(msg));
            }
            Ok(_) => *skipped += 1,
            Err(e) => {
                warn!(
                    message = id,
                    "a stored message cannot be read ({e}); left out"
                );
                *skipped += 1;
            }
        }
    }
    Ok(messages)
}

/// Deletes bad sessions, rows of no session (`orphans`: the load saw some), and messages no
/// delivery points at.
fn tidy(
    conn: &mut Connection,
    bad_sessions: &[i64],
    orphans: bool,
    messages: &HashMap<i64, Arc<Message>>,
    refs: &Refs,
) -> Result<(), rusqlite::Error> {
    let unused: Vec<i64> = messages
        .keys()
        .filter(|id| !refs.contains_key(id))
        .copied()
        .collect();
    if unused.is_empty() && bad_sessions.is_empty() && !orphans {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for id in bad_sessions {
        tx.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
    }
    for table in ["deliveries", "subscriptions", "inbound_qos2"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE session NOT IN (SELECT id FROM sessions)"),
            [],
        )?;
    }
    for id in unused {
        tx.execute("DELETE FROM messages WHERE id = ?1", params![id])?;
    }
    tx.commit()
}

/// A time stored as ms since the Unix epoch.
fn millis(ms: Option<i64>) -> Result<Option<SystemTime>, RowError> {
    ms.map(|ms| rows::from_millis(ms).ok_or(RowError::Expiry))
        .transpose()
}

/// A row that could not be read: SQLite's type error, or our checks.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Row(#[from] RowError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl From<rusqlite::types::FromSqlError> for LoadError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        LoadError::Sqlite(e.into())
    }
}
