//! WAL checkpoints off the request path.
//!
//! SQLite in WAL mode copies the log back into the database ("checkpoint")
//! by default inside the commit that takes the log past 1000 pages, and
//! that checkpoint fsyncs the log and the database: a commit that normally
//! takes tens of microseconds then takes milliseconds. Each store here
//! instead runs [`Checkpointer`], a thread with its own connection that
//! issues a `PASSIVE` checkpoint every [`WalConfig::checkpoint_interval`]
//! (it never waits for, nor blocks, the writer), and raises the commit's
//! own automatic checkpoint to [`WalConfig::backstop_pages`], so the log
//! stays bounded even when the thread cannot keep up.
//! See <https://sqlite.org/wal.html#ckpt> and `PRAGMA wal_checkpoint`.

use crate::error::{MemoryError, Result};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a store's write-ahead log is checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// A background `PASSIVE` checkpoint runs this often.
    pub checkpoint_interval: Duration,
    /// A commit that takes the log past this many pages checkpoints it
    /// itself (SQLite's `wal_autocheckpoint`): the bound on the log when
    /// the background thread falls behind. 1..=[`MAX_BACKSTOP_PAGES`].
    pub backstop_pages: u32,
}

/// Largest [`WalConfig::backstop_pages`] accepted (256 MiB of 4 KiB pages).
pub const MAX_BACKSTOP_PAGES: u32 = 65_536;

impl Default for WalConfig {
    /// Once a second; the backstop at 16 384 pages (64 MiB of 4 KiB
    /// pages), many seconds of thinks.
    fn default() -> Self {
        WalConfig {
            checkpoint_interval: Duration::from_secs(1),
            backstop_pages: 16_384,
        }
    }
}

impl WalConfig {
    pub(crate) fn check(&self) -> Result<()> {
        if !(1..=MAX_BACKSTOP_PAGES).contains(&self.backstop_pages) {
            return Err(MemoryError::invalid(
                "backstop_pages",
                format!(
                    "{} is outside 1..={MAX_BACKSTOP_PAGES}",
                    self.backstop_pages
                ),
            ));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(MemoryError::invalid(
                "checkpoint_interval",
                "must be above zero",
            ));
        }
        Ok(())
    }

    /// Set the commit-path backstop on the writer's connection.
    pub(crate) fn apply(&self, conn: &Connection, path: &Path) -> Result<()> {
        conn.pragma_update(None, "wal_autocheckpoint", self.backstop_pages)
            .map_err(MemoryError::sqlite(path, "set wal_autocheckpoint"))
    }
}

struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// The checkpoint thread of one database file; stopped and joined on drop.
pub(crate) struct Checkpointer {
    stop: Arc<Stop>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Open a second connection to `path` (already in WAL mode) and start
    /// the thread.
    pub(crate) fn start(path: &Path, config: &WalConfig) -> Result<Checkpointer> {
        let conn =
            Connection::open(path).map_err(MemoryError::sqlite(path, "open checkpointer"))?;
        // Its checkpoints fsync the log before copying and the database
        // after, as the writer's own would: a crash never corrupts the file.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(MemoryError::sqlite(path, "set checkpointer synchronous"))?;
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let interval = config.checkpoint_interval;
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &thread_stop, interval))
            .map_err(MemoryError::io(path, "start checkpointer thread"))?;
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
        })
    }
}

fn run(conn: &Connection, stop: &Stop, interval: Duration) {
    let mut stopped = stop.stopped.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        // Checked before each wait too: a stop that came while the thread
        // was starting or checkpointing found nobody waiting.
        if *stopped {
            return;
        }
        stopped = stop
            .wake
            .wait_timeout(stopped, interval)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        if *stopped {
            return;
        }
        // Not under the stop lock: a checkpoint may take milliseconds.
        drop(stopped);
        // PASSIVE copies what no reader still needs and returns; a failure
        // (an I/O error) is retried at the next interval, and meanwhile the
        // commit-path backstop bounds the log.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        stopped = stop.stopped.lock().unwrap_or_else(|p| p.into_inner());
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
