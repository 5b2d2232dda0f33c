//! The PostgreSQL schema, as an ordered list of migrations, and the code that applies them on
//! open (the scheme is described in [`crate::migrations`]).
//!
//! Several herald processes may open one database at the same time: every step runs under a
//! transaction-scoped advisory lock, so each migration is applied by exactly one of them.

use sqlx::PgPool;

use crate::StorageError;
use crate::migrations::{self, AppliedMigration, Migration, MigrationSet};

/// Every PostgreSQL migration, in order. Append only: a released migration never changes.
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

/// The advisory lock key (two-key form: herald's class 0x4845, "HE"; 1 for migrations) that
/// serialises schema changes between processes.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(18501, 1)";

/// Bring the schema of the database behind `pool` up to date, with the migrations of
/// `features`; returns the migrations applied.
pub(crate) async fn migrate(
    pool: &PgPool,
    features: &[&MigrationSet],
) -> Result<Vec<AppliedMigration>, StorageError> {
    let sets: Vec<&[Migration]> = features.iter().map(|set| set.postgres).collect();
    apply(pool, &migrations::assemble(MIGRATIONS, &sets)?).await
}

/// Apply the migrations of `list` that the database lacks, each in its own transaction.
pub(crate) async fn apply(
    pool: &PgPool,
    list: &[Migration],
) -> Result<Vec<AppliedMigration>, StorageError> {
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue: take the lock.
    let mut transaction = pool.begin().await?;
    sqlx::query(MIGRATION_LOCK)
        .execute(&mut *transaction)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version     BIGINT PRIMARY KEY,
             description TEXT   NOT NULL,
             applied_at  BIGINT NOT NULL
         )",
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;

    let current = current_version(pool).await?;
    let supported = migrations::latest_version(list);
    if current > supported {
        return Err(StorageError::SchemaTooNew {
            found: current,
            supported,
        });
    }

    let mut applied = Vec::new();
    for migration in migrations::pending(list, current) {
        if apply_one(pool, migration)
            .await
            .map_err(|source| StorageError::Migration {
                version: migration.version,
                source,
            })?
        {
            tracing::info!(
                version = migration.version,
                description = migration.description,
                "applied database migration"
            );
            applied.push(AppliedMigration::of(migration));
        }
    }
    Ok(applied)
}

/// The highest schema version recorded, 0 for a new database.
pub(crate) async fn current_version(pool: &PgPool) -> Result<i64, StorageError> {
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(pool)
        .await?;
    Ok(version.unwrap_or(0))
}

/// Apply one migration and record it, unless another process did so first; returns whether it
/// was applied here.
async fn apply_one(pool: &PgPool, migration: &Migration) -> Result<bool, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query(MIGRATION_LOCK)
        .execute(&mut *transaction)
        .await?;
    let done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = $1)")
            .bind(migration.version)
            .fetch_one(&mut *transaction)
            .await?;
    if done {
        return Ok(false);
    }
    sqlx::raw_sql(migration.sql)
        .execute(&mut *transaction)
        .await?;
    sqlx::query(
        "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
    )
    .bind(migration.version)
    .bind(migration.description)
    .bind(crate::unix_time())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_list_is_well_formed() {
        crate::migrations::tests::assert_well_formed(MIGRATIONS);
    }
}
