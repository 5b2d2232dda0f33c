//! The embedded SQLite engine: one database file, opened through a small connection pool.
//!
//! The file is opened in WAL journal mode (readers do not block the writer) with `synchronous`
//! at [`Durability::Normal`] by default: a committed transaction survives the server process
//! being killed, and a power loss or an operating-system crash may lose the last transactions
//! but never corrupts the file. [`Durability::Full`] syncs the log at every commit, so that
//! a commit survives a power loss too, at the cost of one disk sync per transaction. Foreign
//! keys are enforced, and a busy timeout makes concurrent writers wait for each other instead
//! of failing. The directory and the file are created readable by their owner only.

mod offline;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StorageError;
use crate::migrations::{AppliedMigration, MigrationSet};
use crate::sql::group_commit::Setup;
use crate::sql::{Dialect, DialectSql};

/// How long a statement waits for another connection's write lock before failing with
/// `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to a database file. SQLite runs one writer at a time, so more connections only
/// add concurrent readers.
const FILE_POOL_SIZE: u32 = 4;

/// Bytes of the file read through a memory map (SQLite's `mmap_size`).
const MMAP_SIZE: u64 = 256 * 1024 * 1024;

/// The page cache per connection, as SQLite's `cache_size` (negative: in KiB).
const CACHE_SIZE_KIB: i64 = -16 * 1024;

/// How long an operation waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a committed transaction is on disk (SQLite's `synchronous` in WAL mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `NORMAL`: a commit survives the process being killed; a power loss or an OS crash may
    /// lose the last commits (never the file's integrity).
    #[default]
    Normal,
    /// `FULL`: a commit survives a power loss too (a disk sync per transaction).
    Full,
}

/// Open (creating if missing, with its directory) the database file at `path` and bring its
/// schema up to date.
pub(crate) async fn open_file(
    path: &Path,
    durability: Durability,
    features: &[&MigrationSet],
) -> Result<(SqlitePool, Vec<AppliedMigration>), StorageError> {
    let pool = open_pool(path, durability, "herald-db").await?;
    let applied = migrate_or_close(&pool, features).await?;
    tracing::info!(path = %path.display(), applied = applied.len(), "opened SQLite database");
    Ok((pool, applied))
}

/// The name under which the archive's writer sees the main file (`ATTACH`), whose
/// `users` table the archive's inserts read to leave out rows of removed accounts.
const MAIN_FILE_SCHEMA: &str = "herald_main";

/// Open (creating if missing) the archive's database file at `path`, a file of its own so
/// that its writes take their own write lock (SQLite has one writer per file): a large
/// archive batch does not hold up an offline store. Its schema is
/// [`crate::migrations::ARCHIVE_FILE`].
///
/// Also returns what the archive's writer runs on its connection: attach the main file at
/// `main` (as [`MAIN_FILE_SCHEMA`]), so that an insert checks its owners' accounts in the
/// same statement, one index lookup a row, where a separate query of the main file cost a
/// quarter of the archive's writing (`examples/archive_append.rs`). In WAL mode the attached
/// file's readers take no lock its writer waits for, and the writer's transactions begin
/// with [`ARCHIVE_BEGIN`], which locks the archive's file only. Only the writer attaches,
/// and only once the archive's schema is in place: a statement names its tables
/// unqualified, and one prepared while the archive's own `mam_message` did not exist yet
/// would keep reading the main file's (an earlier version's, emptied).
pub(crate) async fn open_archive_file(
    path: &Path,
    main: &Path,
    durability: Durability,
) -> Result<(SqlitePool, Setup<sqlx::Sqlite>), StorageError> {
    let setup = attach_main(main)?;
    let pool = open_pool(path, durability, "herald-mam").await?;
    migrate_archive_or_close(&pool).await?;
    tracing::info!(path = %path.display(), "opened SQLite archive database");
    Ok((pool, setup))
}

/// How the archive's writer begins each batch: a deferred transaction whose first statement
/// writes (no row) to the archive's own file, taking that file's write lock and no other.
///
/// `BEGIN IMMEDIATE` takes the write lock of every database the connection has attached
/// (SQLite's `BEGIN` documentation), so on the writer's connection it also held the main
/// file's, for the whole of each archive batch: the offline stores and the push module's
/// bookkeeping queued behind it, in the busy handler's sleeps of 1, 2, 5 ms and more. The
/// main file is only read here (its accounts and its count of removals), from one snapshot,
/// which in WAL mode waits for no writer.
///
/// The archive's lock is still taken first, before that snapshot is read, which keeps the
/// accounts' check exact: a removal's clean-up of the archive (after the account's row is
/// deleted) writes the archive's file, so it waits for a batch that read the account as
/// present and then deletes that batch's rows too; and a batch that begins after the
/// clean-up reads a snapshot where the account is gone.
pub(crate) const ARCHIVE_BEGIN: &str = "BEGIN DEFERRED; DELETE FROM main.mam_message WHERE 0";

/// What the archive's writer runs on its connection once open: `ATTACH` the main file at
/// `main` as [`MAIN_FILE_SCHEMA`], named by its absolute path (it exists by now; a name
/// starting with `/` is never read as one of SQLite's `file:` URIs). The archive's file has
/// no `users` table, so the inserts' unqualified `users` is the main file's.
fn attach_main(main: &Path) -> Result<Setup<sqlx::Sqlite>, StorageError> {
    let absolute = std::fs::canonicalize(main).map_err(|source| StorageError::Io {
        path: main.to_owned(),
        source,
    })?;
    let Some(absolute) = absolute.to_str() else {
        return Err(StorageError::Io {
            path: main.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidFilename,
                "the database's path is not UTF-8",
            ),
        });
    };
    let absolute: Arc<str> = Arc::from(absolute);
    Ok(Arc::new(move |connection: &mut sqlx::SqliteConnection| {
        let absolute = Arc::clone(&absolute);
        Box::pin(async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ATTACH DATABASE $1 AS {MAIN_FILE_SCHEMA}"
            )))
            .bind(absolute.as_ref())
            .execute(&mut *connection)
            .await
            .map(drop)
        })
    }))
}

/// The archive's database in memory, beside [`open_in_memory`]'s.
pub(crate) async fn open_archive_in_memory() -> Result<SqlitePool, StorageError> {
    let pool = memory_pool().await?;
    migrate_archive_or_close(&pool).await?;
    Ok(pool)
}

async fn migrate_archive_or_close(pool: &SqlitePool) -> Result<(), StorageError> {
    let migrated =
        crate::sql::migrate::Migrator::<sqlx::Sqlite>::apply(pool, crate::migrations::ARCHIVE_FILE)
            .await;
    close_on_error(pool, migrated).await.map(drop)
}

/// A pool on the database file at `path` (created, owner-only, if missing), in WAL mode.
/// Each connection's thread is named `threads` and the connection's number.
async fn open_pool(
    path: &Path,
    durability: Durability,
    threads: &'static str,
) -> Result<SqlitePool, StorageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    };
    if let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        // Blocking, but once at start-up and cheap.
        create_private_dir(directory).map_err(io(directory))?;
    }
    if !path.exists() {
        // Created empty and owner-only before SQLite opens it (its journal files take the
        // database file's permissions).
        create_private_file(path).map_err(io(path))?;
    }
    let synchronous = match durability {
        Durability::Normal => SqliteSynchronous::Normal,
        Durability::Full => SqliteSynchronous::Full,
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .thread_name(move |id| format!("{threads}-{id}"))
        // Pages read through a memory map instead of a read() call each, and a larger page
        // cache per connection: the archive's and the offline store's indexes stay in memory.
        .pragma("mmap_size", MMAP_SIZE.to_string())
        .pragma("cache_size", CACHE_SIZE_KIB.to_string())
        // A statement that may fail half-way (a multi-row insert) inside a transaction keeps
        // a copy of the pages it changes: in memory, not in a temporary file written page by
        // page.
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(FILE_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A SQLite connection is a file handle in this process: it does not die while idle,
        // and the check would cost every query a round trip to the connection's thread.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Open {
            path: path.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// Create a directory (and its parents) that only its owner can read, write and enter; an
/// existing directory is left as it is.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Create an empty file that only its owner can read and write, unless it exists.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Open a new, empty database that lives in memory until closed.
pub(crate) async fn open_in_memory(features: &[&MigrationSet]) -> Result<SqlitePool, StorageError> {
    let pool = memory_pool().await?;
    migrate_or_close(&pool, features).await?;
    Ok(pool)
}

async fn memory_pool() -> Result<SqlitePool, StorageError> {
    let options = SqliteConnectOptions::new()
        .in_memory(true)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    // Each connection to ":memory:" is a database of its own, so the pool holds exactly one
    // connection and never closes it.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Open {
            path: ":memory:".into(),
            source,
        })?;
    Ok(pool)
}

async fn migrate_or_close(
    pool: &SqlitePool,
    features: &[&MigrationSet],
) -> Result<Vec<AppliedMigration>, StorageError> {
    let migrated = crate::sql::migrate::Migrator::<sqlx::Sqlite>::migrate(pool, features).await;
    close_on_error(pool, migrated).await
}

/// `outcome`, after closing `pool` if it is an error (a database whose schema could not be
/// brought up to date is not used).
async fn close_on_error<T>(
    pool: &SqlitePool,
    outcome: Result<T, StorageError>,
) -> Result<T, StorageError> {
    if outcome.is_err() {
        pool.close().await;
    }
    outcome
}

impl Dialect for sqlx::Sqlite {
    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self>, sqlx::Error>> + Send
    {
        // IMMEDIATE takes the write lock before reading.
        pool.begin_with("BEGIN IMMEDIATE")
    }

    fn begin_write_on(
        connection: &mut sqlx::SqliteConnection,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'_, Self>, sqlx::Error>> + Send
    {
        sqlx::Connection::begin_with(connection, "BEGIN IMMEDIATE")
    }

    async fn lock(
        _transaction: &mut sqlx::Transaction<'_, Self>,
        _class: i32,
        _key: &str,
    ) -> Result<(), sqlx::Error> {
        // The write lock taken by `begin_write` already serialises writers.
        Ok(())
    }

    fn param(_n: usize) -> String {
        "?".to_owned()
    }

    fn migration_sql(migration: &crate::Migration) -> &'static str {
        migration.sqlite
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    const SQL: &'static DialectSql = &DialectSql {
        create_schema_version: "CREATE TABLE IF NOT EXISTS schema_version (
             version     INTEGER PRIMARY KEY,
             description TEXT    NOT NULL,
             applied_at  INTEGER NOT NULL
         ) STRICT",
        insert_user: "INSERT INTO users (server, username,
                 sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                 sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key,
                 created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        write_roster_item: "INSERT INTO rosterusers
             (server, username, jid, nick, subscription, ask, askmessage, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (server, username, jid) DO UPDATE SET
             nick = excluded.nick, subscription = excluded.subscription,
             ask = excluded.ask, askmessage = excluded.askmessage",
        bump_roster_version: "INSERT INTO roster_version (server, username, version)
             VALUES ($1, $2, CAST($3 AS TEXT))
             ON CONFLICT (server, username) DO UPDATE SET
                 version = CAST(max(CAST(version AS INTEGER) + 1, $3) AS TEXT)
             RETURNING version",
        insert_ignoring: ("INSERT OR IGNORE INTO", ""),
    };
}
