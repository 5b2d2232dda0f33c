//! [`AccountStore`] on SQL: the `users` table (MongooseIM's, with herald's SCRAM columns).

use herald_sasl::{Credentials, ScramSecrets};
use jid::BareJid;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::Dialect;
use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore, normalise_domain};

/// The accounts of a database.
#[derive(Debug)]
pub(crate) struct SqlAccounts<DB: Dialect> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlAccounts<DB> {
    /// Accounts stored in the database behind `pool`, whose schema is up to date.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlAccounts { pool }
    }
}

#[async_trait::async_trait]
impl<DB> AccountStore for SqlAccounts<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q Vec<u8>: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn create(&self, user: &BareJid, credentials: &Credentials) -> Result<(), StorageError> {
        let key = AccountKey::of(user)?;
        let inserted = account_row(sqlx::query(DB::SQL.insert_user), key, credentials)
            .bind(crate::unix_time())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Err(StorageError::AlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn set_credentials(
        &self,
        user: &BareJid,
        credentials: &Credentials,
    ) -> Result<(), StorageError> {
        let key = AccountKey::of(user)?;
        let updated = account_row(
            sqlx::query(
                "UPDATE users SET
                     sha1_salt = $3, sha1_iterations = $4, sha1_stored_key = $5,
                     sha1_server_key = $6, sha256_salt = $7, sha256_iterations = $8,
                     sha256_stored_key = $9, sha256_server_key = $10
                 WHERE server = $1 AND username = $2",
            ),
            key,
            credentials,
        )
        .execute(&self.pool)
        .await?;
        if DB::rows_affected(&updated) == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    async fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StorageError> {
        let key = AccountKey::of(user)?;
        let row = sqlx::query(
            "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                    sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key
             FROM users WHERE server = $1 AND username = $2",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            sha1: secrets::<DB>(&row, SHA1_COLUMNS, key)?,
            sha256: secrets::<DB>(&row, SHA256_COLUMNS, key)?,
        }))
    }

    async fn exists(&self, user: &BareJid) -> Result<bool, StorageError> {
        let key = AccountKey::of(user)?;
        let exists = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE server = $1 AND username = $2)",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&self.pool)
        .await?;
        Ok(exists)
    }

    async fn remove(&self, user: &BareJid) -> Result<bool, StorageError> {
        let key = AccountKey::of(user)?;
        let deleted = sqlx::query("DELETE FROM users WHERE server = $1 AND username = $2")
            .bind(key.domain)
            .bind(key.localpart)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&deleted) > 0)
    }

    async fn list(&self, domain: Option<&str>) -> Result<Vec<BareJid>, StorageError> {
        // Both engines compare the key columns as UTF-8 bytes, which is code point order
        // (SQLite's default BINARY collation; the "C" collation on PostgreSQL).
        let rows: Vec<(String, String)> = match domain {
            None => {
                sqlx::query_as("SELECT server, username FROM users ORDER BY server, username")
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(domain) => {
                let Some(domain) = normalise_domain(domain) else {
                    return Ok(Vec::new());
                };
                sqlx::query_as(
                    "SELECT server, username FROM users WHERE server = $1 ORDER BY username",
                )
                .bind(domain.as_str())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|(domain, localpart)| AccountKey { domain, localpart }.to_jid())
            .collect()
    }
}

/// Bind `$1..$10` of an account row: the key (domain, localpart), then the SHA-1 and SHA-256
/// salt, iterations, StoredKey and ServerKey.
fn account_row<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    key: AccountKey<'q>,
    credentials: &'q Credentials,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> &'a Vec<u8>: Encode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + Type<DB>,
{
    let mut query = query.bind(key.domain).bind(key.localpart);
    for secrets in [&credentials.sha1, &credentials.sha256] {
        query = query
            .bind(&secrets.salt)
            .bind(i64::from(secrets.iterations))
            .bind(&secrets.stored_key)
            .bind(&secrets.server_key);
    }
    query
}

/// The columns of one hash's secrets: salt, iteration count, `StoredKey`, `ServerKey`.
type SecretColumns = [&'static str; 4];

const SHA1_COLUMNS: SecretColumns = [
    "sha1_salt",
    "sha1_iterations",
    "sha1_stored_key",
    "sha1_server_key",
];
const SHA256_COLUMNS: SecretColumns = [
    "sha256_salt",
    "sha256_iterations",
    "sha256_stored_key",
    "sha256_server_key",
];

/// One hash's secrets from a `users` row.
fn secrets<DB>(
    row: &DB::Row,
    [salt, iterations, stored_key, server_key]: SecretColumns,
    key: AccountKey<'_>,
) -> Result<ScramSecrets, StorageError>
where
    DB: Database,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let count: i64 = row.try_get(iterations)?;
    let count = u32::try_from(count).map_err(|_| {
        StorageError::Corrupt(format!(
            "{iterations} = {count} for {}@{}",
            key.localpart, key.domain
        ))
    })?;
    Ok(ScramSecrets {
        salt: row.try_get(salt)?,
        iterations: count,
        stored_key: row.try_get(stored_key)?,
        server_key: row.try_get(server_key)?,
    })
}
