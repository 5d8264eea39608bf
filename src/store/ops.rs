//! The changes the store keeps ([`Op`]) and how the writer thread applies a group of them in
//! one transaction.
//!
//! Every message queued for a persistent session is stored once, in `messages`; each session's
//! `deliveries` rows point at it. The writer counts the rows pointing at each message
//! ([`Refs`]) and deletes the message with its last delivery. Counts and the messages'
//! `store_id`s change only once their transaction has committed: a group that fails leaves
//! memory as it was, as it leaves the file.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use rusqlite::{Transaction, params};

use super::rows::{self, RetainedRow, WillRow};
use crate::protocol::SubscriptionOptions;
use crate::router::Message;
use crate::router::state::Delivery;

/// A change to persist, in the order it was made in memory.
#[derive(Debug)]
pub enum Op {
    /// The retained message of its topic (replacing any).
    Retain(Arc<Message>),
    /// No retained message for this topic any more.
    Unretain(Arc<str>),
    /// A persistent session began, or a client attached to it again (connected: no deadline).
    Session {
        id: u64,
        client_id: Arc<str>,
        expiry: u32,
        username: Option<String>,
    },
    /// The session's connection ended; it expires at `expires_at` (None: never).
    Detached {
        id: u64,
        expiry: u32,
        expires_at: Option<SystemTime>,
    },
    /// The session is gone, with everything queued for it.
    EndSession(u64),
    /// The will of the session's current connection (None: no will, or no longer due), and
    /// when a delayed will is due (None: the connection is still there).
    Will {
        id: u64,
        will: Option<Box<WillRow>>,
        at: Option<SystemTime>,
    },
    Subscribe {
        id: u64,
        filter: Box<str>,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    },
    Unsubscribe {
        id: u64,
        filter: Box<str>,
    },
    /// QoS 1/2 deliveries queued for the session, in order (each with its `seq`).
    Enqueue {
        id: u64,
        deliveries: Vec<Delivery>,
    },
    /// Deliveries sent with these packet ids (seq, packet id).
    Sent {
        id: u64,
        sent: Vec<(u64, u16)>,
    },
    /// PUBREC received, PUBREL sent, for the delivery `seq`.
    Released {
        id: u64,
        seq: u64,
    },
    /// Deliveries done with: acknowledged, expired, dropped or handed to another member of a
    /// shared subscription.
    Remove {
        id: u64,
        removed: Vec<(u64, Arc<Message>)>,
    },
    /// The session's client sent a QoS 2 PUBLISH with this packet id (PUBREC coming).
    Qos2In {
        id: u64,
        packet_id: u16,
    },
    /// ... and released it (PUBREL received).
    Qos2Done {
        id: u64,
        packet_id: u16,
    },
}

/// Rows in `deliveries` per stored message (by `messages.id`).
pub(super) type Refs = HashMap<i64, u32>;

/// What a group changed in memory, kept aside until its transaction commits.
#[derive(Default)]
struct Pending {
    /// Messages given a row in this group (their `store_id` is set; reset if the group fails).
    stored: Vec<Arc<Message>>,
    /// Change in each message's count of delivery rows.
    refs: HashMap<i64, i64>,
}

impl Pending {
    fn count(&self, refs: &Refs, id: i64) -> i64 {
        i64::from(refs.get(&id).copied().unwrap_or(0)) + self.refs.get(&id).copied().unwrap_or(0)
    }
}

/// Applies one group of operations in one transaction; the counts in `refs` follow only if it
/// commits.
pub(super) fn apply(
    conn: &mut rusqlite::Connection,
    group: &[(u64, Op)],
    refs: &mut Refs,
) -> Result<(), rusqlite::Error> {
    let mut pending = Pending::default();
    let result = conn
        .transaction()
        .and_then(|tx| apply_in(&tx, group, refs, &mut pending).and_then(|()| tx.commit()));
    match result {
        Ok(()) => {
            for (id, delta) in pending.refs {
                let count = i64::from(refs.get(&id).copied().unwrap_or(0)) + delta;
                match u32::try_from(count) {
                    Ok(n) if n > 0 => {
                        refs.insert(id, n);
                    }
                    _ => {
                        refs.remove(&id);
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            for msg in pending.stored {
                msg.store_id.store(0, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

/// Deliveries queued and done with in the same group (the subscriber was online and quick):
/// neither row is written. Most deliveries to an online session end this way.
fn short_lived(group: &[(u64, Op)]) -> HashSet<(u64, u64)> {
    let mut queued = HashSet::new();
    for (_, op) in group {
        if let Op::Enqueue { id, deliveries } = op {
            queued.extend(deliveries.iter().map(|d| (*id, d.seq)));
        }
    }
    let mut both = HashSet::new();
    if queued.is_empty() {
        return both;
    }
    for (_, op) in group {
        if let Op::Remove { id, removed } = op {
            both.extend(
                removed
                    .iter()
                    .map(|(seq, _)| (*id, *seq))
                    .filter(|k| queued.contains(k)),
            );
        }
    }
    both
}

fn apply_in(
    tx: &Transaction<'_>,
    group: &[(u64, Op)],
    refs: &Refs,
    pending: &mut Pending,
) -> Result<(), rusqlite::Error> {
    let now = rows::to_millis(SystemTime::now());
    let skip = short_lived(group);
    for (_, op) in group {
        match op {
            Op::Retain(msg) => {
                let row = RetainedRow::from_message(msg);
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO retained
                     (topic, qos, payload, properties, expires_at, stored_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    row.topic,
                    row.qos,
                    row.payload,
                    row.properties,
                    row.expires_at,
                    now
                ])?;
            }
            Op::Unretain(topic) => {
                tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                    .execute([&**topic])?;
            }
            Op::Session {
                id,
                client_id,
                expiry,
                username,
            } => {
                tx.prepare_cached(
                    "INSERT INTO sessions (id, client_id, expiry, username) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET
                        expiry = excluded.expiry, username = excluded.username, expires_at = NULL",
                )?
                .execute(params![
                    key(*id),
                    &**client_id,
                    i64::from(*expiry),
                    username
                ])?;
            }
            Op::Detached {
                id,
                expiry,
                expires_at,
            } => {
                tx.prepare_cached(
                    "UPDATE sessions SET expiry = ?2, expires_at = ?3 WHERE id = ?1",
                )?
                .execute(params![
                    key(*id),
                    i64::from(*expiry),
                    expires_at.map(rows::to_millis)
                ])?;
            }
            Op::EndSession(id) => end_session(tx, key(*id), refs, pending)?,
            Op::Will { id, will, at } => {
                let w = will.as_deref();
                tx.prepare_cached(
                    "UPDATE sessions SET will_topic = ?2, will_qos = ?3, will_retain = ?4,
                        will_payload = ?5, will_properties = ?6, will_delay = ?7, will_at = ?8
                     WHERE id = ?1",
                )?
                .execute(params![
                    key(*id),
                    w.map(|w| &w.message.topic),
                    w.map(|w| w.message.qos),
                    w.map(|w| w.message.retain),
                    w.map(|w| &w.message.payload),
                    w.and_then(|w| w.message.properties.as_ref()),
                    w.map(|w| i64::from(w.delay)),
                    at.filter(|_| w.is_some()).map(rows::to_millis),
                ])?;
            }
            Op::Subscribe {
                id,
                filter,
                options,
                sub_id,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO subscriptions (session, filter, options, sub_id)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    key(*id),
                    &**filter,
                    options.to_byte(),
                    sub_id
                ])?;
            }
            Op::Unsubscribe { id, filter } => {
                tx.prepare_cached("DELETE FROM subscriptions WHERE session = ?1 AND filter = ?2")?
                    .execute(params![key(*id), &**filter])?;
            }
            Op::Enqueue { id, deliveries } => {
                for d in deliveries.iter().filter(|d| !skip.contains(&(*id, d.seq))) {
                    let message = store_message(tx, &d.msg, pending)?;
                    *pending.refs.entry(message).or_default() += 1;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO deliveries
                         (session, seq, message, qos, retain, sub_ids, shared)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        key(*id),
                        key(d.seq),
                        message,
                        d.qos as i64,
                        d.retain,
                        rows::sub_ids_blob(&d.sub_ids),
                        d.shared.as_deref(),
                    ])?;
                }
            }
            Op::Sent { id, sent } => {
                let mut stmt = tx.prepare_cached(
                    "UPDATE deliveries SET packet_id = ?3 WHERE session = ?1 AND seq = ?2",
                )?;
                for (seq, packet_id) in sent.iter().filter(|(s, _)| !skip.contains(&(*id, *s))) {
                    stmt.execute(params![key(*id), key(*seq), packet_id])?;
                }
            }
            Op::Released { id, seq } if !skip.contains(&(*id, *seq)) => {
                tx.prepare_cached(
                    "UPDATE deliveries SET pubrel = 1 WHERE session = ?1 AND seq = ?2",
                )?
                .execute(params![key(*id), key(*seq)])?;
            }
            Op::Released { .. } => {}
            Op::Remove { id, removed } => {
                for (seq, msg) in removed.iter().filter(|(s, _)| !skip.contains(&(*id, *s))) {
                    let gone = tx
                        .prepare_cached("DELETE FROM deliveries WHERE session = ?1 AND seq = ?2")?
                        .execute(params![key(*id), key(*seq)])?;
                    let message = key(msg.store_id.load(Ordering::Relaxed));
                    if gone > 0 && message != 0 {
                        release(tx, message, refs, pending)?;
                    }
                }
            }
            Op::Qos2In { id, packet_id } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO inbound_qos2 (session, packet_id) VALUES (?1, ?2)",
                )?
                .execute(params![key(*id), packet_id])?;
            }
            Op::Qos2Done { id, packet_id } => {
                tx.prepare_cached(
                    "DELETE FROM inbound_qos2 WHERE session = ?1 AND packet_id = ?2",
                )?
                .execute(params![key(*id), packet_id])?;
            }
        }
    }
    Ok(())
}

/// A session id or sequence number as SQLite's integer (both stay far below 2^63).
fn key(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `msg`'s row in `messages`, inserted the first time a session queues it.
fn store_message(
    tx: &Transaction<'_>,
    msg: &Arc<Message>,
    pending: &mut Pending,
) -> Result<i64, rusqlite::Error> {
    let id = msg.store_id.load(Ordering::Relaxed);
    if id != 0 {
        return Ok(key(id));
    }
    let properties = msg
        .properties
        .as_deref()
        .map(|p| crate::protocol::publish_block(Some(p)));
    tx.prepare_cached(
        "INSERT INTO messages (topic, qos, retain, payload, properties, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        &*msg.topic,
        msg.qos as i64,
        msg.retain,
        &msg.payload[..],
        properties.as_deref(),
        msg.expires_at.map(rows::to_millis),
    ])?;
    let id = tx.last_insert_rowid();
    msg.store_id
        .store(u64::try_from(id).unwrap_or(0), Ordering::Relaxed);
    pending.stored.push(msg.clone());
    Ok(id)
}

/// One delivery row of `message` is gone: the message goes with its last one.
fn release(
    tx: &Transaction<'_>,
    message: i64,
    refs: &Refs,
    pending: &mut Pending,
) -> Result<(), rusqlite::Error> {
    *pending.refs.entry(message).or_default() -= 1;
    if pending.count(refs, message) <= 0 {
        tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
            .execute([message])?;
    }
    Ok(())
}

/// Deletes session `id` and everything it holds.
fn end_session(
    tx: &Transaction<'_>,
    id: i64,
    refs: &Refs,
    pending: &mut Pending,
) -> Result<(), rusqlite::Error> {
    let messages: Vec<i64> = tx
        .prepare_cached("SELECT message FROM deliveries WHERE session = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.prepare_cached("DELETE FROM deliveries WHERE session = ?1")?
        .execute([id])?;
    for message in messages {
        release(tx, message, refs, pending)?;
    }
    for table in ["subscriptions", "inbound_qos2"] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE session = ?1"))?
            .execute([id])?;
    }
    tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}
