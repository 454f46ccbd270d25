//! Checkpoints on a thread of their own.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a
//! checkpoint copies them back into the database file and syncs it. Left to
//! SQLite, the checkpoint runs inside whichever commit crosses the
//! threshold, on the writer thread: every store call queued behind it waits
//! for the copy and the fsync (the benchmark's p99 latency was the length of
//! a checkpoint). Here the writer's automatic checkpoints are off and this
//! thread, on its own connection, runs a PASSIVE checkpoint (which never
//! blocks the writer) every [`INTERVAL`], and again at once while the WAL is
//! still long.
//!
//! Often and small, because the cost that matters is the fsync: on this
//! kind of machine it stalls the disk (and the writer's and the broker's
//! writes with it) for a time that grows with the data it flushes. Measured
//! at 2,500 invoices/s, publish to provider accept: a checkpoint every 3 s
//! stalled ~200 ms each time (p99 174 ms), every 500 ms ~55 ms (p99 60–68
//! ms), every 100 ms no visible stall (p99 15 ms).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;
use tracing::warn;

use crate::store::StoreError;

/// Between two checkpoints.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// A WAL longer than this many pages after a checkpoint (it could not copy
/// everything: the writer kept appending) is checkpointed again at once.
const STILL_LONG: i64 = 4000;

/// Stops the checkpoint thread when dropped (with the store).
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every `interval`.
    pub(super) fn start(path: &str, busy_timeout: Duration, interval: Duration) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("payrelay-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped, interval))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite checkpoint thread: {e}")))?;
        Ok(Checkpointer { _stop: stop })
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>, interval: Duration) {
    let mut wait = interval;
    let mut failing = false;
    loop {
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            // The store is gone (or, never, something was sent): stop.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // (busy, pages in the WAL, pages copied back)
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((_, log, copied)) => {
                failing = false;
                wait = if log - copied > STILL_LONG {
                    Duration::ZERO
                } else {
                    interval
                };
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "SQLite checkpoint failed; the WAL grows until one succeeds");
                }
                failing = true;
                wait = interval;
            }
        }
    }
}
