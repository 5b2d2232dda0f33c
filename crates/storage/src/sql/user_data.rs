//! [`UserDataStore`] on SQL: the `herald_user_data` table, the same statements on both
//! engines.

use std::sync::atomic::{AtomicI64, Ordering};

use jid::BareJid;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::Dialect;
use crate::StorageError;
use crate::user_data::{Entry, UserDataStore};

/// The per-user rows of a database.
#[derive(Debug)]
pub(crate) struct SqlUserData<DB: Dialect> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlUserData<DB> {
    /// Rows stored in the database behind `pool`, whose schema is up to date.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlUserData { pool }
    }
}

/// A number that grows with every write of this process and with the clock, so that rows
/// come back in write order (and roughly so across servers sharing a database).
fn next_seq() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::unix_time_micros();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

#[async_trait::async_trait]
impl<DB> UserDataStore for SqlUserData<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn put(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
        value: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO herald_user_data (owner, kind, scope, item, value, seq)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (owner, kind, scope, item)
             DO UPDATE SET value = excluded.value, seq = excluded.seq",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .bind(item)
        .bind(value)
        .bind(next_seq())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
    ) -> Result<Option<String>, StorageError> {
        let row = sqlx::query(
            "SELECT value FROM herald_user_data
             WHERE owner = $1 AND kind = $2 AND scope = $3 AND item = $4",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .bind(item)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("value")?),
            None => None,
        })
    }

    async fn list(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
    ) -> Result<Vec<Entry>, StorageError> {
        let rows = sqlx::query(
            "SELECT item, value FROM herald_user_data
             WHERE owner = $1 AND kind = $2 AND scope = $3 ORDER BY seq",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Entry {
                    item: row.try_get("item")?,
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }

    async fn delete(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "DELETE FROM herald_user_data
             WHERE owner = $1 AND kind = $2 AND scope = $3 AND item = $4",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .bind(item)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn delete_scope(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM herald_user_data WHERE owner = $1 AND kind = $2 AND scope = $3",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn trim(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        keep: usize,
    ) -> Result<u64, StorageError> {
        if keep == 0 {
            return self.delete_scope(owner, kind, scope).await;
        }
        // The `keep`-th latest row's seq, if there are that many; older rows go.
        let done = sqlx::query(
            "DELETE FROM herald_user_data
             WHERE owner = $1 AND kind = $2 AND scope = $3 AND seq < (
                 SELECT seq FROM herald_user_data
                 WHERE owner = $1 AND kind = $2 AND scope = $3
                 ORDER BY seq DESC LIMIT 1 OFFSET $4)",
        )
        .bind(owner.as_str())
        .bind(kind)
        .bind(scope)
        .bind(i64::try_from(keep - 1).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM herald_user_data WHERE owner = $1")
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn owners(&self, kind: &str) -> Result<Vec<BareJid>, StorageError> {
        let rows = sqlx::query("SELECT DISTINCT owner FROM herald_user_data WHERE kind = $1")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let owner: String = row.try_get("owner")?;
                BareJid::new(&owner).map_err(|_| {
                    StorageError::Corrupt(format!("user data owner {owner:?} is not a bare JID"))
                })
            })
            .collect()
    }
}
