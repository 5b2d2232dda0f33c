//! The migrator (the scheme is described in [`crate::migrations`]), one for both engines:
//! several herald processes may open one database at the same time, so the check and the
//! migration run in one writing transaction under the migration lock ([`Dialect::lock`]),
//! and each migration is applied by exactly one of them.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::Dialect;
use crate::StorageError;
use crate::migrations::{self, AppliedMigration, Migration, MigrationSet};

/// The lock class of schema changes ([`Dialect::lock`]).
const MIGRATION_LOCK: i32 = 18500;

/// The migrator of an engine (`Migrator::<Sqlite>::migrate(...)`).
pub(crate) struct Migrator<DB>(std::marker::PhantomData<DB>);

impl<DB> Migrator<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<i64>: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Bring the schema of the database behind `pool` up to date: this crate's tables and those
    /// of `features`; returns the migrations applied here.
    pub(crate) async fn migrate(
        pool: &Pool<DB>,
        features: &[&MigrationSet],
    ) -> Result<Vec<AppliedMigration>, StorageError> {
        Self::apply(pool, &migrations::assemble(migrations::OWN, features)?).await
    }

    /// Apply the migrations of `list` that the database lacks, each in its own transaction;
    /// returns those applied here.
    pub(crate) async fn apply(
        pool: &Pool<DB>,
        list: &[Migration],
    ) -> Result<Vec<AppliedMigration>, StorageError> {
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in a catalogue: take the lock.
        let mut transaction = DB::begin_write(pool).await?;
        DB::lock(&mut transaction, MIGRATION_LOCK, "schema").await?;
        sqlx::raw_sql(DB::SQL.create_schema_version)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;

        let current = Self::current_version(pool).await?;
        let supported = migrations::latest_version(list);
        if current > supported {
            return Err(StorageError::SchemaTooNew {
                found: current,
                supported,
            });
        }

        let mut applied = Vec::new();
        for migration in migrations::pending(list, current) {
            if Self::apply_one(pool, migration)
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
    pub(crate) async fn current_version(pool: &Pool<DB>) -> Result<i64, StorageError> {
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(pool)
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Apply one migration and record it, unless another process did so first; returns whether it
    /// was applied here.
    async fn apply_one(pool: &Pool<DB>, migration: &Migration) -> Result<bool, sqlx::Error> {
        // The writing transaction and the lock come before the check, so two servers opening the
        // same database cannot both apply a migration.
        let mut transaction = DB::begin_write(pool).await?;
        DB::lock(&mut transaction, MIGRATION_LOCK, "schema").await?;
        let done: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = $1)")
                .bind(migration.version)
                .fetch_one(&mut *transaction)
                .await?;
        if done {
            return Ok(false);
        }
        sqlx::raw_sql(DB::migration_sql(migration))
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
}
