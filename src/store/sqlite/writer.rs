//! The thread that owns the SQLite connection and commits in groups.
//!
//! Every store call becomes a [`Job`] on a queue. The writer takes what is
//! waiting (up to [`MAX_GROUP`]), runs it in one `BEGIN IMMEDIATE`
//! transaction with a savepoint per job, commits once, and only then answers
//! each caller. A caller's answer therefore always describes committed state,
//! exactly as with a transaction per call, while hundreds of concurrent
//! invoices share one commit and one thread hop instead of paying a round
//! trip to a database thread per statement (what sqlx's SQLite driver did,
//! and where the benchmark saw three quarters of the CPU go to context
//! switches).
//!
//! The jobs of a group run straight in the transaction. If one fails, the
//! whole transaction is rolled back and the group runs again with a
//! savepoint per job, so the failing job is rolled back alone and the others
//! still commit. (A savepoint per job on every group copied each page a job
//! touched into a statement journal: a fifth of the thread's work.) If the
//! commit itself fails, every job of the group is told.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// Most jobs in one transaction: enough to amortise the commit, few enough
/// that the first caller in a group is not kept waiting long.
const MAX_GROUP: usize = 128;

/// Longest a busy writer waits for more calls before it commits a group:
/// longer saves a little CPU and WAL but adds its wait to every store call
/// on an invoice's path, with no gain in throughput (bench/README.md).
const LINGER: Duration = Duration::from_millis(1);

/// One store call waiting for the writer.
pub(super) trait Job: Send {
    /// Runs the call inside the group's transaction; false if it failed.
    /// May run again, after a rollback, when another job of the group failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the call's result once the group committed,
    /// or with `failure` when the group could not be committed.
    fn answer(self: Box<Self>, failure: Option<&str>);
}

/// A closure and the caller waiting for its result.
struct Call<T, F> {
    work: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.work)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&str>) {
        let result = match (failure, self.result) {
            (Some(why), _) => Err(StoreError::Unavailable(why.to_owned())),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the call was not run".into())),
        };
        // The caller may have gone (its future was dropped); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// The handle callers use; cloning it shares the one writer.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on an open connection.
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("payrelay-sqlite".into())
            .spawn(move || run(conn, queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `work` on the writer thread in the next group; answers once that
    /// group is committed. `work` may run twice (see the module doc), each
    /// time on the state before its first run, so it must only touch the
    /// database.
    pub(super) async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            work,
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite thread stopped before answering".into()))?
    }
}

/// The writer thread: groups, transactions, answers. Ends when every
/// [`Writer`] handle is gone.
fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    let mut busy = false;
    while let Ok(first) = queue.recv() {
        group.push(first);
        // Under load, wait a moment for more: a commit writes every page
        // it changed once, so the pages invoices share (the tables' last
        // pages, the indexes) are written once for many invoices. A call
        // on its own (the last group was one call too) goes at once.
        let until = Instant::now() + LINGER;
        while group.len() < MAX_GROUP {
            let next = match queue.try_recv() {
                Ok(job) => Some(job),
                Err(_) if busy => queue.recv_timeout(until.saturating_duration_since(Instant::now())).ok(),
                Err(_) => None,
            };
            match next {
                Some(job) => group.push(job),
                None => break,
            }
        }
        busy = group.len() > 1;
        let failure = run_group(&conn, &mut group).err().map(|e| e.to_string());
        for job in group.drain(..) {
            job.answer(failure.as_deref());
        }
    }
}

/// Runs a group in one transaction: straight through, or, when a job fails,
/// again with a savepoint per job. The statements are cached: parsing them
/// anew for every job cost more than the jobs themselves.
fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<(), rusqlite::Error> {
    let straight = in_transaction(conn, |conn| {
        for job in group.iter_mut() {
            if !job.run(conn) {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if straight {
        return Ok(());
    }
    in_transaction(conn, |conn| {
        for job in group.iter_mut() {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            }
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
        Ok(true)
    })?;
    Ok(())
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction: commits if it returns
/// true, rolls back if it returns false or fails.
fn in_transaction(
    conn: &Connection,
    body: impl FnOnce(&Connection) -> Result<bool, rusqlite::Error>,
) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let ran = body(conn).and_then(|commit| {
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        conn.prepare_cached(end)?.execute([])?;
        Ok(commit)
    });
    if ran.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ran
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY);")
            .expect("schema");
        (dir, Writer::start(conn).expect("writer"))
    }

    fn insert(id: i64) -> impl Fn(&Connection) -> Result<(), StoreError> {
        move |conn: &Connection| {
            conn.execute("INSERT INTO t (id) VALUES (?1)", [id])?;
            Ok(())
        }
    }

    /// A failing call in a group is rolled back alone: the calls before and
    /// after it commit, once each (the retried group runs them again on the
    /// rolled-back state, so a second insert of the same key would fail).
    #[tokio::test]
    async fn a_failing_call_is_rolled_back_alone_and_the_rest_of_its_group_commits() {
        let (_dir, writer) = writer();
        // Keeps the thread busy so the next three calls queue into one group.
        let busy = writer.call(|_conn: &Connection| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let before = writer.call(insert(1));
        let failing = writer.call(|conn: &Connection| {
            conn.execute("INSERT INTO t (id) VALUES (2)", [])?;
            Err::<(), _>(StoreError::Corrupt("this call fails after writing".into()))
        });
        let after = writer.call(insert(3));
        let (busy, before, failing, after) = tokio::join!(busy, before, failing, after);
        busy.expect("busy call");
        before.expect("the call before the failure commits");
        assert!(failing.is_err(), "the failing call reports its error");
        after.expect("the call after the failure commits");
        let ids = writer
            .call(|conn: &Connection| {
                let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id")?;
                let ids = stmt
                    .query_map([], |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ids)
            })
            .await
            .expect("read back");
        assert_eq!(ids, vec![1, 3]);
    }
}
