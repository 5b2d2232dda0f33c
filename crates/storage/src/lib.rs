//! herald's storage: opens the database, owns its schema, and hands out the stores features
//! use.
//!
//! A [`Storage`] is one opened database, whatever the engine: the embedded SQLite file (the
//! default) or PostgreSQL with MongooseIM's schema ([`Storage::open_postgres`]). Each feature owns a narrow store trait ([`AccountStore`] for accounts,
//! [`RosterStore`] for rosters and subscriptions, [`OfflineStore`] for offline messages, [`UserDataStore`] for the small per-user documents
//! of blocking, vCards and PEP) and
//! gets an implementation from the [`Storage`], so the rest of the server never sees SQL.
//!
//! The schema is created and upgraded on open: a `schema_version` table records which of the
//! engine's numbered migrations are applied, and the missing ones run in order, each in its own
//! transaction. A database written by a newer herald is refused rather than misread.
//!
//! ```no_run
//! # async fn example() -> Result<(), herald_storage::StorageError> {
//! let storage = herald_storage::Storage::open_sqlite("/var/lib/herald/herald.db".as_ref()).await?;
//! let accounts = storage.accounts();
//! let juliet = jid::BareJid::new("juliet@capulet.example").unwrap();
//! if !accounts.exists(&juliet).await? {
//!     // accounts.create(&juliet, &credentials).await?;
//! }
//! storage.close().await;
//! # Ok(())
//! # }
//! ```

mod accounts;
pub mod archive;
mod error;
mod migrations;
pub mod offline;
mod postgres;
pub mod roster;
pub mod sql;
mod sqlite;
#[doc(hidden)]
pub mod test_database;
pub mod user_data;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use accounts::AccountStore;
#[doc(hidden)]
pub use accounts::conformance;
pub use archive::ArchiveStore;
pub use error::StorageError;
pub use migrations::{AppliedMigration, Migration, MigrationSet};
pub use offline::OfflineStore;
pub use postgres::PostgresOptions;
pub use roster::RosterStore;
pub use sqlite::{Durability, create_private_dir};
pub use user_data::UserDataStore;

/// An opened database: the handle the server keeps for its lifetime and clones freely.
///
/// Open it with [`Storage::open_sqlite`] or [`Storage::open_postgres`], take the stores from it,
/// and [`close`](Self::close) it at shutdown.
#[derive(Clone)]
pub struct Storage {
    engine: Backend,
    accounts: Arc<dyn AccountStore>,
    roster: Arc<dyn RosterStore>,
    offline: Arc<dyn OfflineStore>,
    user_data: Arc<dyn UserDataStore>,
    archive: Arc<dyn ArchiveStore>,
    applied: Arc<[AppliedMigration]>,
    /// The main SQLite database's writer (none on PostgreSQL, whose writers do not queue on
    /// one lock).
    writer: Option<sql::Writer<sqlx::Sqlite>>,
}

/// The engine behind a [`Storage`], kept for what is not a store (closing).
#[derive(Clone, Debug)]
enum Backend {
    /// The main file and the archive's.
    Sqlite(sqlx::SqlitePool, sqlx::SqlitePool),
    Postgres(sqlx::PgPool, Arc<str>),
}

/// The engine of a [`Storage`] and its pool, for the stores that feature crates own (their
/// tables are created by the [`MigrationSet`]s they register).
#[derive(Clone, Copy, Debug)]
pub enum Engine<'a> {
    /// The embedded SQLite database.
    Sqlite(&'a sqlx::SqlitePool),
    /// A PostgreSQL database.
    Postgres(&'a sqlx::PgPool),
}

impl Storage {
    /// Open the SQLite database file at `path`, creating it and its parent directory if
    /// missing, and bring its schema up to date.
    ///
    /// # Errors
    ///
    /// [`StorageError::Io`] if the directory cannot be created, [`StorageError::Open`] if the
    /// file cannot be opened, [`StorageError::Migration`] or [`StorageError::SchemaTooNew`] if
    /// the schema cannot be brought up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Storage, StorageError> {
        Storage::open_sqlite_with(path, Durability::default(), &[]).await
    }

    /// [`Storage::open_sqlite`] with a chosen [`Durability`] (SQLite's `synchronous`) and the
    /// tables of `features` (their [`MigrationSet`]s).
    ///
    /// # Errors
    ///
    /// As [`Storage::open_sqlite`].
    pub async fn open_sqlite_with(
        path: &Path,
        durability: Durability,
        features: &[&MigrationSet],
    ) -> Result<Storage, StorageError> {
        let (pool, applied) = sqlite::open_file(path, durability, features).await?;
        let (archive, attach) =
            match sqlite::open_archive_file(&archive_path(path), path, durability).await {
                Ok(archive) => archive,
                Err(error) => {
                    pool.close().await;
                    return Err(error);
                }
            };
        let moved = match sql::archive::move_rows_from_main(&pool, &archive).await {
            Ok(()) => sql::archive::largest_id(&archive).await,
            Err(error) => Err(error),
        };
        match moved {
            Ok(largest) => archive::seen_id(largest),
            Err(error) => {
                pool.close().await;
                archive.close().await;
                return Err(error);
            }
        }
        Ok(Storage::sqlite(pool, archive, applied, Some(attach)))
    }

    /// Open a new, empty SQLite database held in memory, gone once closed or dropped: for
    /// tests.
    ///
    /// # Errors
    ///
    /// As [`Storage::open_sqlite`], which cannot happen short of running out of memory.
    pub async fn open_sqlite_in_memory() -> Result<Storage, StorageError> {
        Storage::open_sqlite_in_memory_with(&[]).await
    }

    /// [`Storage::open_sqlite_in_memory`] with the tables of `features`.
    ///
    /// # Errors
    ///
    /// As [`Storage::open_sqlite_in_memory`].
    pub async fn open_sqlite_in_memory_with(
        features: &[&MigrationSet],
    ) -> Result<Storage, StorageError> {
        let pool = sqlite::open_in_memory(features).await?;
        let archive = sqlite::open_archive_in_memory().await?;
        Ok(Storage::sqlite(pool, archive, Vec::new(), None))
    }

    /// Connect to the PostgreSQL database of `options` with a pool of `options.pool_size`
    /// connections, and bring its schema up to date (several servers may do so at once).
    ///
    /// # Errors
    ///
    /// [`StorageError::Connect`] if the server cannot be reached or refuses the login,
    /// [`StorageError::Migration`] or [`StorageError::SchemaTooNew`] if the schema cannot be
    /// brought up to date.
    pub async fn open_postgres(
        options: &PostgresOptions,
        features: &[&MigrationSet],
    ) -> Result<Storage, StorageError> {
        let (pool, applied) = postgres::open(options, features).await?;
        seen_archive_ids(&pool).await?;
        Ok(Storage::postgres(pool, applied, options.target()))
    }

    /// As [`Storage::open_postgres`], from a `postgres://` URL: for tests.
    #[doc(hidden)]
    pub async fn open_postgres_url(
        url: &str,
        pool_size: u32,
        features: &[&MigrationSet],
    ) -> Result<Storage, StorageError> {
        let options: sqlx::postgres::PgConnectOptions =
            url.parse().map_err(|source| StorageError::Connect {
                target: url.to_owned(),
                source,
            })?;
        let target = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let (pool, applied) = postgres::open_with(options, pool_size, &target, features).await?;
        seen_archive_ids(&pool).await?;
        Ok(Storage::postgres(pool, applied, target))
    }

    fn postgres(pool: sqlx::PgPool, applied: Vec<AppliedMigration>, target: String) -> Storage {
        Storage {
            accounts: Arc::new(sql::SqlAccounts::new(pool.clone())),
            roster: Arc::new(sql::SqlRoster::new(pool.clone())),
            offline: Arc::new(sql::SqlOffline::new(pool.clone(), None)),
            user_data: Arc::new(sql::SqlUserData::new(pool.clone())),
            archive: Arc::new(sql::SqlArchive::new(pool.clone(), None, None)),
            applied: applied.into(),
            writer: None,
            engine: Backend::Postgres(pool, target.into()),
        }
    }

    /// The stores of a main database and its archive's: files, whose archive attaches the
    /// main file with `attach` (run on the archive's writer connection once open), or
    /// both in memory (`None`).
    fn sqlite(
        pool: sqlx::SqlitePool,
        archive: sqlx::SqlitePool,
        applied: Vec<AppliedMigration>,
        attach: Option<sql::group_commit::Setup<sqlx::Sqlite>>,
    ) -> Storage {
        let file = attach.is_some();
        // SQLite has one writer at a time per file: the hot writes share one writer task and
        // its transactions (group commit) instead of queueing on the lock; on a file, through
        // a connection of its own whose page cache stays warm. The archive, written in large
        // batches, is a file of its own with its own writer.
        let writer = |pool: &sqlx::SqlitePool, setup, begin| {
            Some(Arc::new(if file {
                sql::group_commit::GroupCommit::start_dedicated(pool.clone(), setup, begin)
            } else {
                sql::group_commit::GroupCommit::start(pool.clone())
            }))
        };
        let commits = writer(&pool, None, None);
        // The archive's writer attaches the main file: its transactions lock its own file only
        // (see `sqlite::ARCHIVE_BEGIN`).
        let archive_commits = writer(&archive, attach, Some(sqlite::ARCHIVE_BEGIN));
        Storage {
            applied: applied.into(),
            accounts: Arc::new(sql::SqlAccounts::new(pool.clone())),
            roster: Arc::new(sql::SqlRoster::new(pool.clone())),
            offline: Arc::new(sql::SqlOffline::new(pool.clone(), commits.clone())),
            user_data: Arc::new(sql::SqlUserData::new(pool.clone())),
            // A file's archive sees the accounts through the main file it attaches (its
            // writer remembers those it found: see `KnownAccounts`); in memory, the two
            // databases cannot see each other.
            archive: Arc::new(if file {
                sql::SqlArchive::new(archive.clone(), None, archive_commits).remembering_accounts()
            } else {
                sql::SqlArchive::new(archive.clone(), Some(pool.clone()), archive_commits)
            }),
            writer: commits.map(sql::Writer::new),
            engine: Backend::Sqlite(pool, archive),
        }
    }

    /// The accounts store.
    pub fn accounts(&self) -> Arc<dyn AccountStore> {
        Arc::clone(&self.accounts)
    }

    /// The rosters store.
    pub fn roster(&self) -> Arc<dyn RosterStore> {
        Arc::clone(&self.roster)
    }

    /// The offline messages store.
    pub fn offline(&self) -> Arc<dyn OfflineStore> {
        Arc::clone(&self.offline)
    }

    /// The per-user data of the core modules (block lists, vCards, PEP).
    pub fn user_data(&self) -> Arc<dyn UserDataStore> {
        Arc::clone(&self.user_data)
    }

    /// The message archive (XEP-0313).
    pub fn archive(&self) -> Arc<dyn ArchiveStore> {
        Arc::clone(&self.archive)
    }

    /// The migrations applied when this database was opened, in order (empty if its schema
    /// was already up to date).
    pub fn applied_migrations(&self) -> &[AppliedMigration] {
        &self.applied
    }

    /// The writer of the embedded database's main file, through which the stores of feature
    /// crates run their frequent writes (see [`sql::Writer`]); `None` on PostgreSQL.
    pub fn sqlite_writer(&self) -> Option<sql::Writer<sqlx::Sqlite>> {
        self.writer.clone()
    }

    /// The engine and its pool.
    pub fn engine(&self) -> Engine<'_> {
        match &self.engine {
            Backend::Sqlite(pool, _) => Engine::Sqlite(pool),
            Backend::Postgres(pool, _) => Engine::Postgres(pool),
        }
    }

    /// Close the database, for every clone of this handle and every store taken from it: wait
    /// for operations in progress, then close the connections. Later operations fail.
    pub async fn close(&self) {
        match &self.engine {
            Backend::Sqlite(pool, archive) => {
                // The archive's writer reads the main file's accounts: it closes first.
                archive.close().await;
                pool.close().await;
            }
            Backend::Postgres(pool, _) => pool.close().await,
        }
    }
}

/// Never give an archive id at or below one the PostgreSQL database holds (another server's, or
/// this one's before a restart with the clock set back).
async fn seen_archive_ids(pool: &sqlx::PgPool) -> Result<(), StorageError> {
    match sql::archive::largest_id(pool).await {
        Ok(largest) => {
            archive::seen_id(largest);
            Ok(())
        }
        Err(error) => {
            pool.close().await;
            Err(error)
        }
    }
}

/// The archive's file beside the main one: `herald.db` -> `herald-archive.db`.
pub fn archive_path(path: &Path) -> std::path::PathBuf {
    let stem = path.file_stem().map_or_else(
        || "herald".into(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let name = match path.extension() {
        Some(extension) => format!("{stem}-archive.{}", extension.to_string_lossy()),
        None => format!("{stem}-archive"),
    };
    path.with_file_name(name)
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Backend::Sqlite(pool, _) => f
                .debug_struct("Storage")
                .field("engine", &"sqlite")
                .field("path", &pool.connect_options().get_filename())
                .finish(),
            Backend::Postgres(_, target) => f
                .debug_struct("Storage")
                .field("engine", &"postgres")
                .field("target", target)
                .finish(),
        }
    }
}

/// Seconds since the Unix epoch, as stored in time columns. A clock before 1970 is recorded as
/// 1970 rather than failing a write.
pub(crate) fn unix_time() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Microseconds since the Unix epoch, for versions that must grow over time.
pub(crate) fn unix_time_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}
