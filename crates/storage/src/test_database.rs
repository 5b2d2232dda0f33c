//! Throwaway PostgreSQL databases for tests of every crate: each test gets a database of its
//! own, `herald_test_<unique>`, dropped when the guard is, so parallel tests never collide.
//!
//! The server is found at `HERALD_TEST_PG_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (trust authentication). When it cannot be
//! reached, [`TestDatabase::create`] prints `SKIPPED: PostgreSQL not reachable at ...` and
//! returns `None`, and the test returns without failing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

use crate::{PostgresOptions, Storage, StorageError};

/// Where tests find PostgreSQL unless `HERALD_TEST_PG_URL` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the server's administrative database, where test databases are created.
pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_PG_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// A database created for one test, dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Create an empty database; `None`, after printing why, when PostgreSQL is not reachable.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is reachable but refuses to create the database.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = admin_url();
        let mut admin = match connect(&admin_url).await {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("SKIPPED: PostgreSQL not reachable at {admin_url} ({error})");
                return None;
            }
        };
        let name = unique_name();
        // The name is ours (letters, digits and underscores), not input: safe to splice.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its connection options, as a configuration file gives them.
    ///
    /// # Panics
    ///
    /// When the URL cannot be parsed.
    pub fn options(&self, pool_size: u32) -> PostgresOptions {
        let parsed: PgConnectOptions = self.url.parse().expect("a postgres:// URL");
        PostgresOptions {
            host: parsed.get_host().to_owned(),
            port: parsed.get_port(),
            database: self.name.clone(),
            username: parsed.get_username().to_owned(),
            password: password_of(&self.url),
            pool_size,
        }
    }

    /// The `[outgoing_pools.rdbms.default]` section of a configuration file that connects to
    /// it with `workers` connections.
    pub fn config_section(&self, workers: u32) -> String {
        let options = self.options(workers);
        let password = options
            .password
            .map(|password| format!("password = {password:?}\n"))
            .unwrap_or_default();
        format!(
            "[outgoing_pools.rdbms.default]\nworkers = {workers}\n\
             [outgoing_pools.rdbms.default.connection]\ndriver = \"pgsql\"\n\
             host = {:?}\nport = {}\ndatabase = {:?}\nusername = {:?}\n{password}\
             tls.required = false\n",
            options.host, options.port, options.database, options.username
        )
    }

    /// Open it as a [`Storage`] with a pool of `pool_size` connections.
    pub async fn open(&self, pool_size: u32) -> Result<Storage, StorageError> {
        self.open_with(pool_size, &[]).await
    }

    /// [`TestDatabase::open`] with the tables of `features`.
    pub async fn open_with(
        &self,
        pool_size: u32,
        features: &[&crate::migrations::MigrationSet],
    ) -> Result<Storage, StorageError> {
        Storage::open_postgres_url(&self.url, pool_size, features).await
    }

    /// Terminate every server process connected to this database (as an administrator's
    /// `pg_terminate_backend` would): every pooled connection dies. Returns how many.
    ///
    /// # Panics
    ///
    /// When the administrative connection fails.
    pub async fn terminate_connections(&self) -> usize {
        let mut admin = connect(&self.admin_url).await.expect("admin connection");
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("pg_terminate_backend");
        let _ = admin.close().await;
        terminated.into_iter().filter(|done| *done).count()
    }

    /// Let clients connect to this database, or refuse them (as during maintenance) until
    /// allowed again; connections already open stay.
    ///
    /// # Panics
    ///
    /// When the administrative connection fails.
    pub async fn accept_connections(&self, accept: bool) {
        let mut admin = connect(&self.admin_url).await.expect("admin connection");
        // The name is ours (letters, digits and underscores), not input: safe to splice.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {accept}",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("ALTER DATABASE");
        let _ = admin.close().await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside a runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = connect(&admin_url).await.map_err(std::io::Error::other)?;
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await
                    .map_err(std::io::Error::other)?;
                let _ = admin.close().await;
                Ok::<(), std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgConnection::connect_with(&options).await
}

/// A name no other test (of this or another process) uses.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "herald_test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The password in `postgres://user:password@host/...`, if any (not percent-decoded).
fn password_of(url: &str) -> Option<String> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let credentials = authority.rsplit_once('@')?.0;
    credentials
        .split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn the_password_of_a_url_is_found() {
        assert_eq!(password_of("postgres://u:p@h/test").as_deref(), Some("p"));
        assert_eq!(password_of("postgres://u@h/test"), None);
        assert_eq!(password_of("postgres://h/test"), None);
    }
}
