//! The PostgreSQL engine: MongooseIM's relational schema (plus herald's columns), over a pool
//! of connections shared by every store.
//!
//! A connection that died (the server restarted, an administrator terminated the backend) is
//! found by the pool's check before it is handed out and replaced; a query that was running on
//! it fails with a transient [`StorageError`], which the IQ handlers answer with
//! `wait/internal-server-error`. Every multi-statement change runs in one transaction, so a
//! lost connection never leaves it half-written.

mod offline;
#[cfg(test)]
mod tests;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::StorageError;
use crate::migrations::{AppliedMigration, MigrationSet};
use crate::sql::{Dialect, DialectSql};

/// How long an operation waits for a free connection (or a new one) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect: MongooseIM's `[outgoing_pools.rdbms.default]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The server's host name or address.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// The database.
    pub database: String,
    /// The role to log in as.
    pub username: String,
    /// Its password, if the server asks for one.
    pub password: Option<String>,
    /// How many connections the pool keeps at most (`workers`).
    pub pool_size: u32,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PostgresOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// The driver's options for these.
    fn connect_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.username)
            .application_name("herald")
            // This build has no TLS for PostgreSQL; the configuration refuses `tls.required`.
            .ssl_mode(PgSslMode::Disable);
        match &self.password {
            Some(password) => options.password(password),
            None => options,
        }
    }

    /// `user@host:port/database`, for messages.
    pub(crate) fn target(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.username, self.host, self.port, self.database
        )
    }
}

/// Connect to the database and bring its schema up to date.
pub(crate) async fn open(
    options: &PostgresOptions,
    features: &[&MigrationSet],
) -> Result<(PgPool, Vec<AppliedMigration>), StorageError> {
    open_with(
        options.connect_options(),
        options.pool_size,
        &options.target(),
        features,
    )
    .await
}

/// Connect with driver options (tests give a URL) and migrate.
pub(crate) async fn open_with(
    options: PgConnectOptions,
    pool_size: u32,
    target: &str,
    features: &[&MigrationSet],
) -> Result<(PgPool, Vec<AppliedMigration>), StorageError> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // The default, said out loud: a connection is checked before it is handed out, so one
        // that died while idle is replaced instead of failing the next query.
        .test_before_acquire(true)
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Connect {
            target: target.to_owned(),
            source,
        })?;
    match crate::sql::migrate::Migrator::<sqlx::Postgres>::migrate(&pool, features).await {
        Ok(applied) => {
            tracing::info!(
                target,
                applied = applied.len(),
                "opened PostgreSQL database"
            );
            Ok((pool, applied))
        }
        Err(error) => {
            pool.close().await;
            Err(error)
        }
    }
}

impl Dialect for sqlx::Postgres {
    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self>, sqlx::Error>> + Send
    {
        pool.begin()
    }

    fn begin_write_on(
        connection: &mut sqlx::PgConnection,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'_, Self>, sqlx::Error>> + Send
    {
        sqlx::Connection::begin(connection)
    }

    async fn lock(
        transaction: &mut sqlx::Transaction<'_, Self>,
        class: i32,
        key: &str,
    ) -> Result<(), sqlx::Error> {
        // Row locks cannot lock a row that does not exist yet: a transaction-scoped advisory
        // lock on the key makes the transactions that change it take turns.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(class)
            .bind(key)
            .execute(&mut **transaction)
            .await?;
        Ok(())
    }

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn migration_sql(migration: &crate::Migration) -> &'static str {
        migration.postgres
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    const SQL: &'static DialectSql = &DialectSql {
        create_schema_version: "CREATE TABLE IF NOT EXISTS schema_version (
             version     BIGINT PRIMARY KEY,
             description TEXT   NOT NULL,
             applied_at  BIGINT NOT NULL
         )",
        insert_user: "INSERT INTO users (server, username,
                 sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                 sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key,
                 created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, to_timestamp($11))",
        write_roster_item: "INSERT INTO rosterusers
             (server, username, jid, nick, subscription, ask, askmessage, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8))
         ON CONFLICT (server, username, jid) DO UPDATE SET
             nick = excluded.nick, subscription = excluded.subscription,
             ask = excluded.ask, askmessage = excluded.askmessage",
        bump_roster_version: "INSERT INTO roster_version (server, username, version)
             VALUES ($1, $2, $3::text)
             ON CONFLICT (server, username) DO UPDATE SET
                 version = GREATEST(roster_version.version::bigint + 1, $3)::text
             RETURNING version",
        insert_ignoring: ("INSERT INTO", " ON CONFLICT DO NOTHING"),
    };
}
