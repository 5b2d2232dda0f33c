//! The SQLite schema, as an ordered list of migrations, and the code that applies them on open
//! (the scheme is described in [`crate::migrations`]).

use sqlx::SqlitePool;

use crate::StorageError;
use crate::migrations::{self, AppliedMigration, Migration, MigrationSet};

/// Every SQLite migration, in order. Append only: a released migration never changes.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "accounts: users with SCRAM-SHA-1 and SCRAM-SHA-256 secrets",
        sql: include_str!("migrations/0001_users.sql"),
    },
    Migration {
        version: 2,
        description: "rosters: rosterusers, rostergroups, roster_version",
        sql: include_str!("migrations/0002_roster.sql"),
    },
    Migration {
        version: 3,
        description: "offline messages: offline_message",
        sql: include_str!("migrations/0003_offline.sql"),
    },
];

/// Bring the schema of the database behind `pool` up to date, with the migrations of
/// `features`; returns the migrations applied.
pub(crate) async fn migrate(
    pool: &SqlitePool,
    features: &[&MigrationSet],
) -> Result<Vec<AppliedMigration>, StorageError> {
    let sets: Vec<&[Migration]> = features.iter().map(|set| set.sqlite).collect();
    apply(pool, &migrations::assemble(MIGRATIONS, &sets)?).await
}

/// Apply the migrations of `list` that the database lacks (the shared migrator).
pub(crate) async fn apply(
    pool: &SqlitePool,
    list: &[Migration],
) -> Result<Vec<AppliedMigration>, StorageError> {
    crate::sql::migrate::apply(pool, list).await
}

/// The highest schema version recorded, 0 for a new database.
#[cfg(test)]
pub(crate) async fn current_version(pool: &SqlitePool) -> Result<i64, StorageError> {
    crate::sql::migrate::current_version(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_list_is_well_formed() {
        crate::migrations::tests::assert_well_formed(MIGRATIONS);
    }
}
