//! Group commit: the writes of many callers committed together, one transaction per batch.
//!
//! SQLite runs one writer at a time. When every sender's offline store, the push module's
//! bookkeeping and the archive each took the write lock in a transaction of their own, they
//! queued on the lock (SQLite's busy handler sleeps in steps of milliseconds) and paid a commit
//! each. Here they go to one task instead: it takes whatever is queued (up to [`MAX_BATCH`]
//! writes), runs each on its one connection inside one `BEGIN IMMEDIATE` transaction, commits,
//! and only then tells each caller its outcome. Nothing waits on purpose to fill a batch: while
//! a batch commits, the next one gathers, so a quiet server commits each write at once and a
//! busy one commits many per transaction.
//!
//! Writes run in the order they were queued, so a user's messages keep their order and a
//! per-user limit counted inside a write sees every earlier write of the batch. A write that
//! fails (a statement error) is told so and the others go on, since a failed SQLite statement
//! undoes only itself; a write of several statements guards itself with a savepoint. A batch
//! whose commit fails tells every caller in it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::{Database, Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::Dialect;
use crate::StorageError;

/// Most writes in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// Writes waiting for the writer before callers wait to queue theirs (bounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// A boxed future borrowing the connection.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Tells a caller its outcome once the batch's commit is known (`Some` if it failed).
type Finish = Box<dyn FnOnce(Option<&sqlx::Error>) + Send>;

/// One queued write: run on the batch's connection (`None` if the batch could not begin).
type Work<DB> = Box<
    dyn for<'c> FnOnce(Option<&'c mut <DB as Database>::Connection>) -> BoxFuture<'c, Finish>
        + Send,
>;

/// The handle to a database's writer task; cheap to share behind an `Arc`.
pub(crate) struct GroupCommit<DB: Database> {
    queue: mpsc::Sender<Work<DB>>,
}

impl<DB: Database> std::fmt::Debug for GroupCommit<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<DB: Dialect> GroupCommit<DB> {
    /// Start the writer task of `pool` (on the current Tokio runtime), taking a pooled
    /// connection for each batch. It ends when the last handle is dropped, after committing
    /// what was queued.
    pub(crate) fn start(pool: Pool<DB>) -> GroupCommit<DB> {
        GroupCommit::spawn(pool, WriterConnection::Pooled)
    }

    /// [`GroupCommit::start`] with a connection of the writer's own, opened with the pool's
    /// options and kept from batch to batch: its page cache stays warm, where a pooled
    /// connection that another one wrote behind would find its cache stale and read the pages
    /// again. Closed when the pool is closed (later writes fail). Not for an in-memory
    /// database, where each connection is a database of its own.
    /// `setup` runs on that connection once it is open, before its first batch (the pool's
    /// own `after_connect` does not run on a connection opened from its options). Each
    /// batch's transaction begins with `begin` when given (see [`Begin`]), else with
    /// [`Dialect::begin_write_on`].
    pub(crate) fn start_dedicated(
        pool: Pool<DB>,
        setup: Option<Setup<DB>>,
        begin: Option<Begin>,
    ) -> GroupCommit<DB> {
        GroupCommit::spawn(pool, WriterConnection::Own(setup, begin))
    }

    fn spawn(pool: Pool<DB>, connection: WriterConnection<DB>) -> GroupCommit<DB> {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, connection, queued));
        GroupCommit { queue }
    }

    /// Run `write` in the next batch and return its outcome once the batch is committed.
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, StorageError>>
            + Send
            + 'static,
    {
        let (told, outcome) = oneshot::channel();
        let work: Work<DB> = Box::new(move |connection| {
            Box::pin(async move {
                let done = match connection {
                    Some(connection) => Some(write(connection).await),
                    None => None,
                };
                Box::new(move |failed: Option<&sqlx::Error>| {
                    let outcome = match (failed, done) {
                        (None, Some(done)) => done,
                        (Some(error), _) => Err(StorageError::batch(error)),
                        // Not run yet a batch that committed: cannot happen.
                        (None, None) => Err(StorageError::batch(&sqlx::Error::WorkerCrashed)),
                    };
                    // The caller may have given up waiting: nothing to tell then.
                    let _ = told.send(outcome);
                }) as Finish
            })
        });
        self.queue
            .send(work)
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        outcome
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?
    }
}

/// The handle through which the stores of feature crates (the push module's outbox) run
/// their frequent writes in a database's group commit: in the transactions of its one writer
/// task, rather than in transactions of their own that would wait on SQLite's lock of the
/// file (and, worse, make the writer wait: SQLite's busy handler sleeps a millisecond and more
/// at each try, while every message the writer stores waits with it).
///
/// A write runs among others in one transaction: it must not begin or commit one itself, and
/// a write of several statements that must stand or fall together guards itself with a
/// savepoint (a failed statement undoes only itself).
pub struct Writer<DB: Database>(Arc<GroupCommit<DB>>);

impl<DB: Database> Clone for Writer<DB> {
    fn clone(&self) -> Self {
        Writer(Arc::clone(&self.0))
    }
}

impl<DB: Database> std::fmt::Debug for Writer<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Writer").finish()
    }
}

impl<DB: Dialect> Writer<DB> {
    pub(crate) fn new(commits: Arc<GroupCommit<DB>>) -> Writer<DB> {
        Writer(commits)
    }

    /// Run `write` in the writer's next transaction; its outcome once that transaction is
    /// committed (a failed commit fails every write in it).
    ///
    /// # Errors
    ///
    /// What `write` returned, [`StorageError::Batch`] when the transaction could not be
    /// begun or committed, or [`StorageError::Database`] once the database is closed.
    pub async fn write<T, F>(&self, write: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, StorageError>>
            + Send
            + 'static,
    {
        self.0.write(write).await
    }
}

/// Run `write` through `commits` when the database has a writer, else on a pooled
/// connection of its own (where each statement commits by itself unless `write` begins a
/// transaction).
pub(crate) async fn write_via<DB, T, F>(
    commits: Option<&GroupCommit<DB>>,
    pool: &Pool<DB>,
    write: F,
) -> Result<T, StorageError>
where
    DB: Dialect,
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, StorageError>>
        + Send
        + 'static,
{
    match commits {
        Some(commits) => commits.write(write).await,
        None => {
            let mut connection = pool.acquire().await?;
            write(&mut *connection).await
        }
    }
}

/// What a dedicated writer runs on its connection once open (see
/// [`GroupCommit::start_dedicated`]).
pub(crate) type Setup<DB> = Arc<
    dyn for<'c> Fn(&'c mut <DB as Database>::Connection) -> BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + Sync,
>;

/// The statement (or statements) that begin a dedicated writer's transactions when the
/// dialect's own beginning does not fit its connection: the SQLite archive's writer, whose
/// connection attaches the main file (`sqlite::ARCHIVE_BEGIN`).
pub(crate) type Begin = &'static str;

/// Which connection the writer commits on.
enum WriterConnection<DB: Database> {
    /// A pooled one for each batch.
    Pooled,
    /// One of its own, with what runs on it once open and how its transactions begin.
    Own(Option<Setup<DB>>, Option<Begin>),
}

/// The writer.
async fn run<DB: Dialect>(
    pool: Pool<DB>,
    connection: WriterConnection<DB>,
    mut queued: mpsc::Receiver<Work<DB>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut own: Option<DB::Connection> = None;
    loop {
        let received = tokio::select! {
            received = queued.recv_many(&mut batch, MAX_BATCH) => received,
            // Closing the pool closes the writer's own connection too.
            () = pool.close_event(), if own.is_some() => {
                close(own.take()).await;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        if pool.is_closed() {
            close(own.take()).await;
            fail::<DB>(&mut batch, &sqlx::Error::PoolClosed).await;
            continue;
        }
        if let WriterConnection::Own(setup, _) = &connection
            && own.is_none()
        {
            let connected =
                match <DB::Connection as sqlx::Connection>::connect_with(&pool.connect_options())
                    .await
                {
                    Ok(mut connection) => match setup {
                        Some(setup) => setup(&mut connection).await.map(|()| connection),
                        None => Ok(connection),
                    },
                    Err(error) => Err(error),
                };
            match connected {
                Ok(connection) => own = Some(connection),
                Err(error) => {
                    tracing::warn!(%error, writes = batch.len(), "the writer cannot connect");
                    fail::<DB>(&mut batch, &error).await;
                    continue;
                }
            }
        }
        let healthy = match (own.as_mut(), &connection) {
            (Some(connection), WriterConnection::Own(_, Some(begin))) => {
                let begun = sqlx::Connection::begin_with(connection, *begin).await;
                commit(begun, &mut batch).await
            }
            (Some(connection), _) => commit(DB::begin_write_on(connection).await, &mut batch).await,
            (None, _) => commit(DB::begin_write(&pool).await, &mut batch).await,
        };
        if !healthy {
            // Begin or commit failed: a fresh connection for the next batch.
            close(own.take()).await;
        }
    }
    close(own).await;
}

async fn close<C: sqlx::Connection>(connection: Option<C>) {
    if let Some(connection) = connection
        && let Err(error) = connection.close().await
    {
        tracing::debug!(%error, "closing the writer's connection");
    }
}

/// Tell every write of `batch` that it failed with `error`, without running it.
async fn fail<DB: Dialect>(batch: &mut Vec<Work<DB>>, error: &sqlx::Error) {
    for work in batch.drain(..) {
        work(None).await(Some(error));
    }
}

/// Run and commit one batch in `transaction`, and tell every caller in it; false if the
/// transaction could not begin or commit.
async fn commit<DB: Dialect>(
    transaction: Result<Transaction<'_, DB>, sqlx::Error>,
    batch: &mut Vec<Work<DB>>,
) -> bool {
    let mut finishes = Vec::with_capacity(batch.len());
    let mut transaction = match transaction {
        Ok(transaction) => transaction,
        Err(error) => {
            tracing::warn!(%error, writes = batch.len(), "a write batch could not begin");
            fail::<DB>(batch, &error).await;
            return false;
        }
    };
    for work in batch.drain(..) {
        finishes.push(work(Some(&mut *transaction)).await);
    }
    let committed = transaction.commit().await;
    if let Err(error) = &committed {
        tracing::warn!(%error, writes = finishes.len(), "a write batch failed to commit");
    }
    for finish in finishes {
        finish(committed.as_ref().err());
    }
    committed.is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn pool() -> sqlx::SqlitePool {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    async fn insert(commits: &GroupCommit<sqlx::Sqlite>, n: i64) -> Result<u64, StorageError> {
        commits
            .write(move |connection| {
                Box::pin(async move {
                    let done = sqlx::query("INSERT INTO t (n) VALUES ($1)")
                        .bind(n)
                        .execute(connection)
                        .await?;
                    Ok(done.rows_affected())
                })
            })
            .await
    }

    #[tokio::test]
    async fn concurrent_writes_are_all_committed_in_queue_order() {
        let pool = pool().await;
        let commits = Arc::new(GroupCommit::start(pool.clone()));
        let writers: Vec<_> = (0..500)
            .map(|n| {
                let commits = Arc::clone(&commits);
                tokio::spawn(async move { insert(&commits, n).await })
            })
            .collect();
        for writer in writers {
            assert_eq!(writer.await.unwrap().unwrap(), 1);
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 500);
    }

    #[tokio::test]
    async fn a_failing_write_is_told_and_its_batch_neighbours_still_commit() {
        let pool = pool().await;
        let commits = GroupCommit::start(pool.clone());
        let (first, duplicate, last) = tokio::join!(
            insert(&commits, 1),
            insert(&commits, 1),
            insert(&commits, 2)
        );
        assert_eq!(first.unwrap(), 1);
        assert!(
            duplicate.is_err(),
            "a UNIQUE violation is the caller's error"
        );
        assert_eq!(last.unwrap(), 1);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn a_closed_database_fails_the_write_instead_of_hanging() {
        let pool = pool().await;
        let commits = GroupCommit::start(pool.clone());
        pool.close().await;
        assert!(insert(&commits, 1).await.is_err());
    }

    #[tokio::test]
    async fn a_dedicated_writer_commits_for_other_connections_and_closes_with_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        let commits = Arc::new(GroupCommit::start_dedicated(pool.clone(), None, None));
        let writers: Vec<_> = (0..300)
            .map(|n| {
                let commits = Arc::clone(&commits);
                tokio::spawn(async move { insert(&commits, n).await })
            })
            .collect();
        for writer in writers {
            assert_eq!(writer.await.unwrap().unwrap(), 1);
        }
        // The pool's connections read what the writer's own connection committed.
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 300);
        assert!(
            insert(&commits, 7).await.is_err(),
            "a duplicate still fails"
        );
        pool.close().await;
        assert!(
            insert(&commits, 1000).await.is_err(),
            "no write after the pool is closed"
        );
    }
}
