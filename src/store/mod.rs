//! The store: what survives a restart, in one SQLite file, `<path>/mqttd.db` (WAL mode).
//!
//! One writer thread owns the database connection. Callers hand it operations ([`Op`]) through
//! a bounded queue, in the order they made the change in memory, and get a [`Ticket`]; the
//! writer applies everything queued (up to [`GROUP_MAX`] operations) in one transaction,
//! commits, and only then marks those tickets done. An acknowledgement that promises
//! durability is sent once its ticket is committed ([`Store::committed`]): a PUBACK or PUBREC
//! for a retained message means it is on disk, and a `kill -9` at any moment loses nothing
//! acknowledged. With `sync = "periodic"` tickets count as committed at once and the writer
//! commits every `interval` (speed over durability, as Mosquitto's snapshots).
//!
//! What is stored: retained messages (with their properties and expiry), and persistent
//! sessions (client id, expiry deadline, will), their subscriptions, the QoS 1/2 messages queued
//! and in flight for them (each payload once), and the QoS 2 packet ids they have not released
//! (`ops.rs` applies the changes, `sessions.rs` reads them back).
//!
//! The directory is locked (`<path>/mqttd.lock`, holding the owner's pid) for as long as the
//! store is open: a second broker pointed at it refuses to start.

pub mod history;
mod ops;
mod rows;
mod schema;
mod sessions;

pub use ops::Op;
pub use rows::{MessageRow, RetainedRow, RowError, WillRow};
pub use sessions::{StoredSession, StoredWill};

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{OnCorrupt, PersistenceConfig, SyncMode};
use crate::protocol::text;
use crate::router::Message;

/// Most operations in one transaction.
pub const GROUP_MAX: usize = 512;
/// Operations waiting for the writer before callers wait for it (back-pressure on publishers
/// when the disk cannot keep up).
const QUEUE: usize = 16 * 1024;
/// The WAL is truncated back to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// How often the writer gives free pages back to the file system.
const VACUUM_EVERY: Duration = Duration::from_secs(10);
/// Failed groups remembered, for the tickets still waiting on them.
const FAILURES_KEPT: usize = 64;

/// Identifies a submitted operation; committed in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Why the store did not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is in use by another mqttd ({owner}); stop it or give this one another persistence.path"
    )]
    Locked { path: PathBuf, owner: String },
    #[error(
        "{path} cannot be read ({why}); move it away (or set persistence.on_corrupt = \"move_aside\") to start with an empty store"
    )]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {why}; use that mqttd, or move the file away to start with an empty store")]
    Newer { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// An operation the store could not commit (a full disk, an I/O error): its acknowledgement
/// must say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store could not commit the change")]
pub struct NotCommitted;

/// What an opened store held.
#[derive(Debug)]
pub struct Restored {
    pub retained: Vec<Message>,
    /// Persistent sessions, by id.
    pub sessions: Vec<StoredSession>,
    /// Deliveries queued or in flight for them.
    pub queued: usize,
    /// Rows that could not be read (reported in the log, left out).
    pub skipped: usize,
    pub took: Duration,
}

pub struct Store {
    db: PathBuf,
    sync: SyncMode,
    queue: Mutex<Queue>,
    /// The highest ticket the writer has finished (committed, or failed: see `failures`).
    done: watch::Receiver<u64>,
    failures: Arc<Mutex<VecDeque<(u64, u64)>>>,
    /// Changes the store could not commit (`$SYS/broker/store/failed`).
    failed: Arc<std::sync::atomic::AtomicU64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (locked) for as long as the store is open.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

struct Queue {
    next: u64,
    tx: Option<SyncSender<(u64, Op)>>,
}

impl Store {
    /// Opens (creating if need be) the store `config` names, and reads what it holds.
    pub fn open(config: &PersistenceConfig) -> Result<(Arc<Store>, Restored), StoreError> {
        let started = Instant::now();
        let dir = &config.path;
        create_dir(dir)?;
        let lock = lock_dir(dir)?;
        let db = dir.join("mqttd.db");
        let mut conn = match connect(&db, config.sync) {
            Err(StoreError::Corrupt { why, .. }) if config.on_corrupt == OnCorrupt::MoveAside => {
                let aside = move_aside(&db)?;
                error!(
                    "{} could not be read ({why}); moved to {} (persistence.on_corrupt = \"move_aside\"): starting with an empty store",
                    db.display(),
                    aside.display()
                );
                connect(&db, config.sync)?
            }
            other => other?,
        };
        let (retained, skipped) =
            load_retained(&mut conn).map_err(|source| StoreError::Sqlite {
                path: db.clone(),
                source,
            })?;
        let loaded = sessions::load(&mut conn).map_err(|source| StoreError::Sqlite {
            path: db.clone(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (done_tx, done) = watch::channel(0);
        let failures = Arc::new(Mutex::new(VecDeque::new()));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            failed: failed.clone(),
            conn,
            rx,
            done: done_tx,
            failures: failures.clone(),
            periodic: (config.sync == SyncMode::Periodic).then_some(config.interval),
            last_error_log: None,
            refs: loaded.refs,
            last_vacuum: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("mqttd-store".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                path: db.clone(),
                source,
            })?;
        let store = Store {
            db,
            sync: config.sync,
            queue: Mutex::new(Queue {
                next: 1,
                tx: Some(tx),
            }),
            done,
            failures,
            failed,
            writer: Mutex::new(Some(handle)),
            _lock: lock,
        };
        let restored = Restored {
            retained,
            sessions: loaded.sessions,
            queued: loaded.queued,
            skipped: skipped + loaded.skipped,
            took: started.elapsed(),
        };
        Ok((Arc::new(store), restored))
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Queues `op`, after every operation submitted before it. Blocks while the writer's queue
    /// is full (the disk is behind). After [`Store::close`], nothing is queued.
    pub fn submit(&self, op: Op) -> Ticket {
        let mut q = self.queue.lock();
        let ticket = q.next;
        q.next += 1;
        if let Some(tx) = &q.tx
            && tx.send((ticket, op)).is_err()
        {
            q.tx = None;
        }
        Ticket(ticket)
    }

    /// Waits until `ticket` is committed (at once with `sync = "periodic"`).
    pub async fn committed(&self, ticket: Ticket) -> Result<(), NotCommitted> {
        if self.sync == SyncMode::Periodic {
            return Ok(());
        }
        let mut done = self.done.clone();
        if done.wait_for(|&d| d >= ticket.0).await.is_err() {
            return Err(NotCommitted);
        }
        self.outcome(ticket).unwrap_or(Err(NotCommitted))
    }

    /// Changes the store could not commit so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `ticket` is done (committed, or failed).
    pub fn is_done(&self, ticket: Ticket) -> bool {
        self.sync == SyncMode::Periodic || *self.done.borrow() >= ticket.0
    }

    /// `ticket`'s outcome, or `None` while it is not committed yet.
    pub fn outcome(&self, ticket: Ticket) -> Option<Result<(), NotCommitted>> {
        if self.sync != SyncMode::Periodic && *self.done.borrow() < ticket.0 {
            return None;
        }
        let failed = self
            .failures
            .lock()
            .iter()
            .any(|&(from, to)| (from..=to).contains(&ticket.0));
        Some(if failed { Err(NotCommitted) } else { Ok(()) })
    }

    /// Commits everything queued and stops the writer (shutdown). Idempotent.
    pub fn close(&self) {
        self.queue.lock().tx = None;
        if let Some(handle) = self.writer.lock().take()
            && handle.join().is_err()
        {
            error!("the store's writer thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// For the `store_sessions` fuzz target: brings `conn` (any SQLite database, e.g. in memory,
/// with whatever rows) to the current schema and reads its sessions back as start-up does.
#[doc(hidden)]
pub fn load_sessions_for_fuzzing(conn: &mut Connection) -> Result<Vec<StoredSession>, String> {
    schema::migrate(conn).map_err(|e| e.to_string())?;
    sessions::load(conn)
        .map(|loaded| loaded.sessions)
        .map_err(|e| e.to_string())
}

/// Creates `dir` (mode 0700) if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Takes `<dir>/mqttd.lock` for this process, writing its pid there.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("mqttd.lock");
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = match owner.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {}", text::cut(pid)),
            };
            return Err(StoreError::Locked {
                path: dir.to_owned(),
                owner,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Opens the database, sets it up and brings its schema up to date.
fn connect(db: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
    let synchronous = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal | SyncMode::Periodic => "NORMAL",
    };
    let mut conn =
        open_for_writing(db, synchronous, JOURNAL_SIZE_LIMIT).map_err(|e| classify(db, e))?;
    schema::migrate(&mut conn).map_err(|e| match e {
        schema::SchemaError::Newer { .. } => StoreError::Newer {
            path: db.to_owned(),
            why: e.to_string(),
        },
        schema::SchemaError::Unknown { .. } => StoreError::Corrupt {
            path: db.to_owned(),
            why: e.to_string(),
        },
        schema::SchemaError::Sqlite(source) => classify(db, source),
    })?;
    Ok(conn)
}

/// Opens (creating) a database that one writer thread owns: WAL mode, `synchronous` as given,
/// the WAL truncated back to `journal_limit` bytes after checkpoints, and pages of deleted rows
/// given back to the file system on `PRAGMA incremental_vacuum` (set before any table exists).
/// The store's and the history's files are both opened this way.
pub(crate) fn open_for_writing(
    db: &Path,
    synchronous: &str,
    journal_limit: i64,
) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!("{}: journal mode {mode}, not WAL", db.display());
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "journal_size_limit", journal_limit)?;
    Ok(conn)
}

/// A corrupt file (or one that is not a database) is [`StoreError::Corrupt`].
fn classify(db: &Path, source: rusqlite::Error) -> StoreError {
    if is_corrupt(&source) {
        return StoreError::Corrupt {
            path: db.to_owned(),
            why: source.to_string(),
        };
    }
    StoreError::Sqlite {
        path: db.to_owned(),
        source,
    }
}

/// Whether SQLite says the file is damaged, or not a database at all.
pub(crate) fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Renames `db` (and its WAL and shared-memory files) to `<db>.corrupt-<unix seconds>`.
fn move_aside(db: &Path) -> Result<PathBuf, StoreError> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", db.display()));
    std::fs::rename(db, &aside).map_err(|source| StoreError::Io {
        path: db.to_owned(),
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, format!("{}{suffix}", aside.display()));
        }
    }
    Ok(aside)
}

/// Every retained message that has not expired; rows that cannot be read are logged and left
/// out.
fn load_retained(conn: &mut Connection) -> Result<(Vec<Message>, usize), rusqlite::Error> {
    let now = SystemTime::now();
    let mut stmt =
        conn.prepare("SELECT topic, qos, payload, properties, expires_at FROM retained")?;
    let rows = stmt.query_map([], |r| {
        Ok(RetainedRow {
            topic: r.get(0)?,
            qos: r.get(1)?,
            payload: r.get(2)?,
            properties: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })?;
    let (mut messages, mut skipped) = (Vec::new(), 0);
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                warn!("a retained row cannot be read ({e}); left out");
                skipped += 1;
                continue;
            }
        };
        let topic = text::cut(&row.topic).to_string();
        match row.into_message() {
            Ok(msg) if msg.expired(now) => {}
            Ok(msg) => messages.push(msg),
            Err(e) => {
                warn!(topic = %topic, "the stored retained message is invalid ({e}); left out");
                skipped += 1;
            }
        }
    }
    Ok((messages, skipped))
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    rx: Receiver<(u64, Op)>,
    done: watch::Sender<u64>,
    failures: Arc<Mutex<VecDeque<(u64, u64)>>>,
    failed: Arc<std::sync::atomic::AtomicU64>,
    /// `sync = "periodic"`: gather for this long before each commit.
    periodic: Option<Duration>,
    last_error_log: Option<Instant>,
    /// Delivery rows per stored message (see `ops.rs`).
    refs: ops::Refs,
    /// When free pages were last given back to the file system.
    last_vacuum: Instant,
}

impl Writer {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            let gather_until = self.periodic.map(|p| Instant::now() + p);
            let mut closed = false;
            while group.len() < GROUP_MAX {
                let next = match gather_until {
                    None => self
                        .rx
                        .try_recv()
                        .map_err(|e| e == TryRecvError::Disconnected),
                    Some(until) => self
                        .rx
                        .recv_timeout(until.saturating_duration_since(Instant::now()))
                        .map_err(|e| e == RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok(job) => group.push(job),
                    Err(disconnected) => {
                        closed = disconnected;
                        break;
                    }
                }
            }
            let (from, to) = (group[0].0, group[group.len() - 1].0);
            if let Err(e) = ops::apply(&mut self.conn, &group, &mut self.refs) {
                let mut failures = self.failures.lock();
                failures.push_back((from, to));
                if failures.len() > FAILURES_KEPT {
                    failures.pop_front();
                }
                drop(failures);
                self.failed
                    .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.log_failure(&e, group.len());
            }
            self.done.send_replace(to);
            self.vacuum();
            if closed {
                break;
            }
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            warn!("store checkpoint at shutdown: {e}");
        }
        info!("store closed");
    }

    /// Gives free pages back now and then (acknowledged rows are deleted as they go: without
    /// this the file would stay as large as its largest backlog).
    fn vacuum(&mut self) {
        if self.last_vacuum.elapsed() < VACUUM_EVERY {
            return;
        }
        self.last_vacuum = Instant::now();
        if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum(2048);") {
            warn!("store: incremental vacuum: {e}");
        }
    }

    /// Logs a failed commit, at most once a minute.
    fn log_failure(&mut self, e: &rusqlite::Error, ops: usize) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.last_error_log = Some(now);
        error!("the store could not commit {ops} change(s): {e}; their publishes are refused");
    }
}

#[cfg(test)]
mod tests;
