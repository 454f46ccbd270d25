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
//! A job that fails rolls back to its own savepoint; the others in the group
//! still commit. If the commit itself fails, every job of the group is told.

use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// Most jobs in one transaction: enough to amortise the commit, few enough
/// that the first caller in a group is not kept waiting long.
const MAX_GROUP: usize = 128;

/// One store call waiting for the writer.
pub(super) trait Job: Send {
    /// Runs the call inside the group's transaction; false if it failed
    /// (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the call's result once the group committed,
    /// or with `failure` when the group could not be committed.
    fn answer(self: Box<Self>, failure: Option<&str>);
}

/// A closure and the caller waiting for its result.
struct Call<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = work(conn);
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
    /// group is committed.
    pub(super) async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            work: Some(work),
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
    while let Ok(first) = queue.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let failure = run_group(&conn, &mut group).err().map(|e| e.to_string());
        for job in group.drain(..) {
            job.answer(failure.as_deref());
        }
    }
}

/// Runs a group in one transaction, each job under its own savepoint.
/// The statements are cached: parsing them anew for every job cost more
/// than the jobs themselves.
fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let ran = (|| {
        for job in group.iter_mut() {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            }
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })();
    if ran.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ran
}
