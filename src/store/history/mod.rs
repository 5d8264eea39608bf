//! The message history (`[history]`, off by default): every routed message matching
//! `history.filters`, in `<persistence.path>/history.db` (SQLite, WAL), kept for `max_age`
//! (and at most `max_rows` rows and `max_bytes` bytes, if set); read with `mqttd history`
//! ([`query`]) or `sqlite3` (the schema is in `schema.rs` and the README).
//!
//! The recorder is a router *observer* ([`crate::router::subscriber`]), like the `[MSG]`
//! logger: fan-out pushes an `Arc<Message>` into its bounded queue, and it never counts as a
//! matching subscriber nor slows a publisher. One thread of its own (`writer.rs`) takes the
//! messages, writes them in batches, one transaction each (up to 512 rows, or whatever came
//! within 100 ms), and enforces the retention limits every second, deleting at most 10,000
//! rows per statement so that it is never away from its queue for long. When it falls behind, its queue drops messages and counts them: the history is
//! best-effort, the broker's throughput comes first. A file of its own, apart from the store's
//! `mqttd.db`, so that its writes and clean-ups never delay an acknowledgement.
//!
//! Each message carries its publisher's client id and username only while a history is
//! recording or a webhook is configured ([`crate::ingress::Ingress::record_publishers`]).

pub mod output;
pub mod query;
pub mod rows;
pub mod schema;
pub mod time;
mod writer;

pub use query::{Found, Query};
pub use rows::{HistoryRow, Recorded, RowError};
pub use writer::{Counters, Retention, enforce, used_bytes};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};
use tracing::{error, info};

use crate::config::HistoryConfig;
use crate::protocol::QoS;
use crate::router::Router;
use crate::router::subscriber::{DropCounter, SubscriberOptions};

/// The history's file in the persistence directory.
pub const FILE: &str = "history.db";
/// Messages that may wait in the recorder's queue before new ones are dropped. (The subscriber
/// handle takes the whole queue at once when it hands out the next message, so up to twice
/// this, and twice [`QUEUE_BYTES`], wait for the recorder in all.)
pub const QUEUE_MESSAGES: usize = 16 * 1024;
/// Bytes of messages that may wait in the recorder's queue.
pub const QUEUE_BYTES: usize = 16 << 20;
/// The write-ahead log is truncated back to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 16 << 20;

/// Why the history cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Dir(#[from] super::StoreError),
    #[error(
        "{path} does not exist: the message history is off (set `[history] enabled = true` and restart mqttd to record one)"
    )]
    Missing { path: PathBuf },
    #[error("{path} cannot be read ({why}); move it away to start a new history")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {why}; use that mqttd, or move the file away to start a new history")]
    Newer { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: cannot start the recorder's thread: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The recorder, kept by the server for its lifetime.
pub struct History {
    db: PathBuf,
    stop: Arc<AtomicBool>,
    dropped: DropCounter,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("db", &self.db)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// What others (the HTTP API) need of a running history: where to query it, what it wrote.
#[derive(Debug, Clone)]
pub struct HistoryAccess {
    pub db: PathBuf,
    pub counters: Arc<Counters>,
}

/// `<dir>/history.db`.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

impl History {
    /// Opens (creating it and `dir`, 0700, if need be) `<dir>/history.db`, subscribes to
    /// `config.filters` on `router` as an observer and starts recording. Blocking (file I/O).
    pub fn start(
        config: &HistoryConfig,
        dir: &Path,
        router: &Arc<Router>,
    ) -> Result<History, HistoryError> {
        super::create_dir(dir)?;
        let db = db_path(dir);
        let conn = connect(&db)?;
        let options = SubscriberOptions::observer("$history", QUEUE_MESSAGES, QUEUE_BYTES);
        let mut handle = router.subscriber(options, None);
        for filter in &config.filters {
            // Validated with the configuration; a failure here is a bug, not worth a refusal.
            if let Err(e) = handle.subscribe(filter, QoS::AtMostOnce) {
                error!("history: filter {filter:?} not recorded: {e}");
            }
        }
        let dropped = handle.drop_counter();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer {
            conn,
            handle,
            retention: Retention {
                max_age: config.max_age,
                max_rows: config.max_rows,
                max_bytes: config.max_bytes,
            },
            counters: counters.clone(),
            stop: stop.clone(),
            last_failure_log: None,
            drops_logged: (0, None),
        };
        let thread = std::thread::Builder::new()
            .name("mqttd-history".into())
            .spawn(move || writer.run())
            .map_err(|source| HistoryError::Thread {
                path: db.clone(),
                source,
            })?;
        info!(
            "history: recording {} to {}",
            config.filters.join(", "),
            db.display()
        );
        Ok(History {
            db,
            stop,
            dropped,
            counters,
            thread: Some(thread),
        })
    }

    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Its database and counters, for readers elsewhere.
    pub fn access(&self) -> HistoryAccess {
        HistoryAccess {
            db: self.db.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Messages left out because the recorder could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// A counter of [`History::dropped`] to keep elsewhere.
    pub fn drop_counter(&self) -> DropCounter {
        self.dropped.clone()
    }

    /// Messages written so far.
    pub fn recorded(&self) -> u64 {
        self.counters.recorded.load(Ordering::Relaxed)
    }

    /// Stops recording, writes what is queued and joins the thread (blocking). Dropping the
    /// history does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                error!("the history's thread panicked");
            }
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens the history for writing, sets it up and brings its schema up to date.
pub fn connect(db: &Path) -> Result<Connection, HistoryError> {
    let sqlite = |source| classify(db, source);
    // A lost last batch on power failure is fine for a history; an fsync per batch is not.
    let mut conn = super::open_for_writing(db, "NORMAL", JOURNAL_SIZE_LIMIT).map_err(sqlite)?;
    // `mqttd history` or `sqlite3` reading at the same moment may hold a lock briefly.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    schema::migrate(&mut conn).map_err(|e| schema_error(db, e))?;
    Ok(conn)
}

/// Opens the history for reading only (safe while the broker writes it: WAL lets a reader in),
/// and checks that this build can read its schema.
///
/// Read-only by `PRAGMA query_only`, on a connection opened read-write: with the broker
/// stopped, a connection opened `SQLITE_OPEN_READ_ONLY` must create the `-wal` and `-shm` files
/// and cannot remove them, leaving them owned by whoever ran the command (a root-owned `-shm`
/// would lock the broker's own user out of its history). Opened read-write, the last connection
/// removes them as SQLite always does. (Without write permission SQLite opens it read-only.)
pub fn open_read_only(db: &Path) -> Result<Connection, HistoryError> {
    if !db.exists() {
        return Err(HistoryError::Missing {
            path: db.to_owned(),
        });
    }
    let sqlite = |source| classify(db, source);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(sqlite)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    let version = schema::check(&conn).map_err(|e| schema_error(db, e))?;
    if version == 0 {
        return Err(HistoryError::Corrupt {
            path: db.to_owned(),
            why: "no history schema in it".into(),
        });
    }
    Ok(conn)
}

fn schema_error(db: &Path, e: schema::SchemaError) -> HistoryError {
    match e {
        schema::SchemaError::Newer { .. } => HistoryError::Newer {
            path: db.to_owned(),
            why: e.to_string(),
        },
        schema::SchemaError::Unknown { .. } => HistoryError::Corrupt {
            path: db.to_owned(),
            why: e.to_string(),
        },
        schema::SchemaError::Sqlite(source) => classify(db, source),
    }
}

/// A corrupt file (or one that is not a database) is [`HistoryError::Corrupt`].
fn classify(db: &Path, source: rusqlite::Error) -> HistoryError {
    if super::is_corrupt(&source) {
        return HistoryError::Corrupt {
            path: db.to_owned(),
            why: source.to_string(),
        };
    }
    HistoryError::Sqlite {
        path: db.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
