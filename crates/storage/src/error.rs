//! The one error type of the storage crate.

use std::path::PathBuf;

/// Why a storage operation failed.
///
/// The first three variants are answers about the data (the caller turns them into an XMPP
/// error such as `<conflict/>` or `<item-not-found/>`); the others are failures of the database
/// itself, for which [`StorageError::is_transient`] tells whether retrying later may help.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The account to create already exists.
    #[error("the account already exists")]
    AlreadyExists,

    /// The account to change does not exist.
    #[error("the account does not exist")]
    NotFound,

    /// The JID cannot name an account: it has no localpart (a domain-only JID such as
    /// `example.org`). Holds the JID as given.
    #[error("'{0}' cannot be an account: an account JID needs a localpart (user@domain)")]
    InvalidUser(String),

    /// The directory that should hold the database file could not be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The database could not be opened (or created).
    #[error("cannot open the SQLite database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What the database driver said.
        #[source]
        source: sqlx::Error,
    },

    /// The PostgreSQL server could not be reached, or refused the login.
    #[error("cannot connect to PostgreSQL {target}: {source}")]
    Connect {
        /// `user@host:port/database`.
        target: String,
        /// What the database driver said.
        #[source]
        source: sqlx::Error,
    },

    /// A schema migration failed; that migration was rolled back, the earlier ones stay applied.
    #[error("cannot upgrade the database schema to version {version}: {source}")]
    Migration {
        /// The schema version the failed migration would have produced.
        version: i64,
        /// What the database said.
        #[source]
        source: sqlx::Error,
    },

    /// The database was written by a newer herald whose schema this one does not know.
    #[error(
        "the database schema is at version {found} but this herald knows versions up to \
         {supported}: run the newer herald that upgraded it, or restore a backup"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The latest version this build can migrate to.
        supported: i64,
    },

    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A stored row cannot be read back as what herald wrote (for instance a user name that is
    /// not a normalised localpart): the database was edited by hand or is damaged.
    #[error("the database holds invalid data ({0}); was it edited outside herald?")]
    Corrupt(String),

    /// The write was part of a batch (group commit) whose transaction could not begin or
    /// commit: nothing of the batch was kept.
    #[error("the write's batch failed: {message}")]
    Batch {
        /// What the database said.
        message: String,
        /// Whether the database's error was transient.
        transient: bool,
    },
}

impl StorageError {
    /// The error told to every write of a batch that failed with `source`.
    pub(crate) fn batch(source: &sqlx::Error) -> StorageError {
        StorageError::Batch {
            message: source.to_string(),
            transient: sqlx_error_is_transient(source),
        }
    }
}

impl StorageError {
    /// Whether the same operation may succeed if retried later: the database was busy or locked,
    /// the connection pool was exhausted, or the connection failed. Answers about the data
    /// ([`AlreadyExists`](Self::AlreadyExists), [`NotFound`](Self::NotFound), ...) and schema
    /// problems are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Database(source)
            | StorageError::Open { source, .. }
            | StorageError::Connect { source, .. } => sqlx_error_is_transient(source),
            StorageError::Batch { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// SQLite primary result codes (the low byte of an extended code) that mean "try again":
/// `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6). <https://www.sqlite.org/rescode.html>
const SQLITE_TRANSIENT_CODES: [i32; 2] = [5, 6];

/// PostgreSQL SQLSTATE classes and codes that mean "try again": 08 connection exception,
/// 40 transaction rollback (serialization failure, deadlock), 53 insufficient resources,
/// 57P01-57P03 the server shutting down or not accepting connections (a terminated backend).
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
const POSTGRES_TRANSIENT_PREFIXES: [&str; 6] = ["08", "40", "53", "57P01", "57P02", "57P03"];

fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            if let Some(postgres) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = postgres.code();
                return POSTGRES_TRANSIENT_PREFIXES
                    .iter()
                    .any(|prefix| code.starts_with(prefix));
            }
            // SQLite reports numeric (extended) result codes.
            database
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| SQLITE_TRANSIENT_CODES.contains(&(code & 0xff)))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_and_io_failures_are_transient() {
        assert!(StorageError::Database(sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StorageError::Database(sqlx::Error::Io(io)).is_transient());
    }

    /// A database error carrying only a result code, as a driver would report it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "(code: {})", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> StorageError {
        StorageError::Database(sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn sqlite_busy_and_locked_are_transient() {
        assert!(coded("5").is_transient(), "SQLITE_BUSY");
        assert!(coded("517").is_transient(), "SQLITE_BUSY_SNAPSHOT");
        assert!(coded("6").is_transient(), "SQLITE_LOCKED");
        assert!(!coded("2067").is_transient(), "SQLITE_CONSTRAINT_UNIQUE");
        assert!(!coded("1").is_transient(), "SQLITE_ERROR");
    }

    #[test]
    fn answers_about_the_data_are_not_transient() {
        assert!(!StorageError::AlreadyExists.is_transient());
        assert!(!StorageError::NotFound.is_transient());
        assert!(!StorageError::InvalidUser("example.org".into()).is_transient());
        assert!(!StorageError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StorageError::Database(sqlx::Error::PoolClosed).is_transient());
    }

    #[test]
    fn open_failure_names_the_path() {
        let error = StorageError::Open {
            path: PathBuf::from("/var/lib/herald/herald.db"),
            source: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "permission denied",
            )),
        };
        let message = error.to_string();
        assert!(message.contains("/var/lib/herald/herald.db"), "{message}");
        assert!(message.contains("permission denied"), "{message}");
    }
}
