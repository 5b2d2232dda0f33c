//! herald's storage: opens the database, owns its schema, and hands out the stores features
//! use.
//!
//! A [`Storage`] is one opened database, whatever the engine: embedded SQLite today,
//! PostgreSQL later. Each feature owns a narrow store trait ([`AccountStore`] for accounts,
//! [`RosterStore`] for rosters and subscriptions, [`OfflineStore`] for offline messages) and
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
mod error;
mod migrations;
pub mod offline;
pub mod roster;
mod sqlite;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use accounts::AccountStore;
#[doc(hidden)]
pub use accounts::conformance;
pub use error::StorageError;
pub use offline::OfflineStore;
pub use roster::RosterStore;

/// An opened database: the handle the server keeps for its lifetime and clones freely.
///
/// Open it with [`Storage::open_sqlite`], take the stores from it, and [`close`](Self::close)
/// it at shutdown.
#[derive(Clone)]
pub struct Storage {
    engine: Engine,
    accounts: Arc<dyn AccountStore>,
    roster: Arc<dyn RosterStore>,
    offline: Arc<dyn OfflineStore>,
}

/// The engine behind a [`Storage`], kept for what is not a store (closing).
#[derive(Clone, Debug)]
enum Engine {
    Sqlite(sqlx::SqlitePool),
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
        let pool = sqlite::open_file(path).await?;
        Ok(Storage::sqlite(pool))
    }

    /// Open a new, empty SQLite database held in memory, gone once closed or dropped: for
    /// tests.
    ///
    /// # Errors
    ///
    /// As [`Storage::open_sqlite`], which cannot happen short of running out of memory.
    pub async fn open_sqlite_in_memory() -> Result<Storage, StorageError> {
        let pool = sqlite::open_in_memory().await?;
        Ok(Storage::sqlite(pool))
    }

    fn sqlite(pool: sqlx::SqlitePool) -> Storage {
        Storage {
            accounts: Arc::new(sqlite::SqliteAccounts::new(pool.clone())),
            roster: Arc::new(sqlite::SqliteRoster::new(pool.clone())),
            offline: Arc::new(sqlite::SqliteOffline::new(pool.clone())),
            engine: Engine::Sqlite(pool),
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

    /// The SQLite pool, for stores owned by feature crates (their tables are created by this
    /// crate's migrations); `None` on another engine.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.engine {
            Engine::Sqlite(pool) => Some(pool),
        }
    }

    /// Close the database, for every clone of this handle and every store taken from it: wait
    /// for operations in progress, then close the connections. Later operations fail.
    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(pool) => pool.close().await,
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Engine::Sqlite(pool) => f
                .debug_struct("Storage")
                .field("engine", &"sqlite")
                .field("path", &pool.connect_options().get_filename())
                .finish(),
        }
    }
}
