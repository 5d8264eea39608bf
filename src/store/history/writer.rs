//! The recorder's thread: takes messages from its subscriber handle, writes them in batches (one
//! transaction each), and enforces the retention limits every second. It owns the
//! history's only writing connection; nothing here runs on the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;
use tracing::{error, info, warn};

use super::rows::properties_block;
use crate::router::Message;
use crate::router::subscriber::SubscriberHandle;
use crate::store::rows::to_millis;

/// Most rows in one transaction.
pub const BATCH_MAX: usize = 512;
/// How long the first message of a batch waits for others before the batch is written: few
/// transactions at a low rate, full batches at a high one.
pub const GATHER: Duration = Duration::from_millis(100);
/// How often the retention limits are enforced (a pass with nothing to delete is a few index
/// lookups).
pub const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// Most rows one statement of a retention pass deletes, so that the recorder is never away
/// from its queue for long; a pass that hits it comes back sooner ([`RETENTION_AGAIN`]).
pub const DELETE_CHUNK: i64 = 10_000;
/// When the next pass comes after one that left rows to delete.
const RETENTION_AGAIN: Duration = Duration::from_millis(100);
/// Failures and drops are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The retention limits (see `config/history.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_rows: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// What the recorder did, readable from outside its thread.
#[derive(Debug, Default)]
pub struct Counters {
    pub recorded: AtomicU64,
    /// Rows whose transaction failed (a full disk, an I/O error): lost.
    pub failed: AtomicU64,
}

pub(super) struct Writer {
    pub conn: Connection,
    pub handle: SubscriberHandle,
    pub retention: Retention,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub last_failure_log: Option<Instant>,
    /// Drops already reported, and when.
    pub drops_logged: (u64, Option<Instant>),
}

impl Writer {
    /// Records until `stop` is set, then writes what is queued and returns.
    pub fn run(mut self) {
        let waker = crate::router::subscriber::thread_waker();
        let mut cx = Context::from_waker(&waker);
        let mut batch: Vec<(i64, Arc<Message>)> = Vec::with_capacity(BATCH_MAX);
        let mut write_at: Option<Instant> = None;
        let mut retention_at = Instant::now();
        // Set once `stop` is seen: one more look at the queue, then out.
        let mut last_look = false;
        loop {
            match self.handle.poll_recv(&mut cx) {
                Poll::Ready(Some(r)) => {
                    if batch.is_empty() {
                        write_at = Some(Instant::now() + GATHER);
                    }
                    batch.push((to_millis(SystemTime::now()), r.msg));
                    if batch.len() >= BATCH_MAX {
                        self.write(&mut batch);
                        // A queue that never empties must not keep the clean-up from running.
                        if Instant::now() >= retention_at {
                            retention_at = self.retention_pass();
                        }
                    }
                    continue;
                }
                Poll::Ready(None) => break,
                Poll::Pending => {}
            }
            if self.stop.load(Ordering::Acquire) {
                if last_look {
                    break;
                }
                last_look = true;
                continue;
            }
            let now = Instant::now();
            if !batch.is_empty() && write_at.is_some_and(|at| now >= at) {
                self.write(&mut batch);
            }
            if now >= retention_at {
                let more = self.enforce_retention();
                self.log_drops();
                retention_at = now
                    + if more {
                        RETENTION_AGAIN
                    } else {
                        RETENTION_EVERY
                    };
            }
            let wake_at = match (batch.is_empty(), write_at) {
                (false, Some(at)) => at.min(retention_at),
                _ => retention_at,
            };
            std::thread::park_timeout(wake_at.saturating_duration_since(Instant::now()));
        }
        self.write(&mut batch);
        self.log_drops();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            warn!("history checkpoint at shutdown: {e}");
        }
        info!(
            "history closed: {} message(s) recorded, {} dropped (recorder behind), {} lost to write errors",
            self.counters.recorded.load(Ordering::Relaxed),
            self.handle.dropped(),
            self.counters.failed.load(Ordering::Relaxed),
        );
    }

    /// Writes `batch` in one transaction and empties it.
    fn write(&mut self, batch: &mut Vec<(i64, Arc<Message>)>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match insert(&mut self.conn, batch) {
            Ok(()) => {
                self.counters.recorded.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                let now = Instant::now();
                if self
                    .last_failure_log
                    .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
                {
                    self.last_failure_log = Some(now);
                    error!("history: {n} message(s) not recorded: {e}");
                }
            }
        }
        batch.clear();
    }

    /// Enforces the limits and reports drops; returns when the next pass is due.
    fn retention_pass(&mut self) -> Instant {
        let more = self.enforce_retention();
        self.log_drops();
        let wait = if more {
            RETENTION_AGAIN
        } else {
            RETENTION_EVERY
        };
        Instant::now() + wait
    }

    /// Enforces the limits; true if rows are left to delete (a chunk was full).
    fn enforce_retention(&mut self) -> bool {
        let now = to_millis(SystemTime::now());
        match enforce(&self.conn, &self.retention, now) {
            Ok(more) => more,
            Err(e) => {
                let now = Instant::now();
                if self
                    .last_failure_log
                    .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
                {
                    self.last_failure_log = Some(now);
                    error!("history: enforcing the retention limits failed: {e}");
                }
                false
            }
        }
    }

    /// Logs new drops, at most once a minute.
    fn log_drops(&mut self) {
        let total = self.handle.dropped();
        let (logged, at) = self.drops_logged;
        let due =
            at.is_none_or(|at| at.elapsed() >= LOG_EVERY) || self.stop.load(Ordering::Relaxed);
        if total > logged && due {
            warn!(
                "history: {} message(s) not recorded: the recorder fell behind ({total} since start)",
                total - logged
            );
            self.drops_logged = (total, Some(Instant::now()));
        }
    }
}

/// Inserts `batch` in one transaction.
fn insert(conn: &mut Connection, batch: &[(i64, Arc<Message>)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO messages
               (time, topic, qos, retain, client_id, username, payload, payload_len, properties)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (time, msg) in batch {
            let by = msg.published_by.as_deref();
            stmt.execute(rusqlite::params![
                time,
                &*msg.topic,
                msg.qos as i64,
                msg.retain,
                by.map(|b| &*b.client_id),
                by.and_then(|b| b.username.as_deref()),
                &msg.payload[..],
                msg.payload.len() as i64,
                properties_block(msg.properties.as_deref()),
            ])?;
        }
    }
    tx.commit()
}

/// Deletes what the limits no longer allow: rows older than `max_age`, the oldest beyond
/// `max_rows`, and the oldest while the database is over `max_bytes` (then gives the free pages
/// back to the file system). Each statement deletes at most `DELETE_CHUNK` rows; returns true
/// if a limit is still exceeded.
pub fn enforce(conn: &Connection, limits: &Retention, now_ms: i64) -> rusqlite::Result<bool> {
    let mut more = false;
    let mut deleted = 0;
    let max_age = i64::try_from(limits.max_age.as_millis()).unwrap_or(i64::MAX);
    let n = conn.execute(
        "DELETE FROM messages WHERE id IN
           (SELECT id FROM messages WHERE time < ?1 LIMIT ?2)",
        rusqlite::params![now_ms.saturating_sub(max_age), DELETE_CHUNK],
    )?;
    more |= n as i64 == DELETE_CHUNK;
    deleted += n;
    if let Some(max_rows) = limits.max_rows {
        // Ids are given in insertion order, and only the oldest rows are ever deleted, so the
        // newest `max_rows` rows are those with an id above `max(id) - max_rows`. (Should ids
        // have gaps, fewer rows are kept, never more.) An index lookup: no counting.
        let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let hi: Option<i64> = conn.query_row("SELECT max(id) FROM messages", [], |r| r.get(0))?;
        if let Some(hi) = hi {
            let n = conn.execute(
                "DELETE FROM messages WHERE id IN
                   (SELECT id FROM messages WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                rusqlite::params![hi.saturating_sub(max_rows), DELETE_CHUNK],
            )?;
            more |= n as i64 == DELETE_CHUNK;
            deleted += n;
        }
    }
    if let Some(max_bytes) = limits.max_bytes {
        // Deleting frees whole pages only; a few rounds per pass, each aiming a little lower.
        for _ in 0..4 {
            let used = used_bytes(conn)?;
            if used <= max_bytes {
                break;
            }
            let (lo, hi): (Option<i64>, Option<i64>) =
                conn.query_row("SELECT min(id), max(id) FROM messages", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let (Some(lo), Some(hi)) = (lo, hi) else {
                break;
            };
            let rows = u128::try_from(hi - lo + 1).unwrap_or(1);
            let target = max_bytes - max_bytes / 10;
            let excess = u128::from(used - target);
            let n = (rows * excess / u128::from(used)).max(1);
            let n = i64::try_from(n).unwrap_or(DELETE_CHUNK).min(DELETE_CHUNK);
            let gone = conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?1)",
                [n],
            )?;
            deleted += gone;
            if gone as i64 == DELETE_CHUNK {
                more = true;
                break;
            }
        }
        more |= used_bytes(conn)? > max_bytes;
    }
    if deleted > 0 {
        // Stepped to the end: each step may free only some of the pages.
        let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(more)
}

/// The database's size without its free pages, in bytes.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let get = |pragma: &str| -> rusqlite::Result<u64> {
        conn.pragma_query_value(None, pragma, |r| r.get::<_, i64>(0))
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    let (pages, free, size) = (
        get("page_count")?,
        get("freelist_count")?,
        get("page_size")?,
    );
    Ok(pages.saturating_sub(free) * size)
}
