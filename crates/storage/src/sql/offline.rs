//! [`OfflineStore`] on SQL: MongooseIM's `offline_message` table. Storing under the per-user
//! limit and removing a list of ids are the dialects' part ([`OfflineDialect`]): SQLite
//! checks and inserts in one statement under its write lock, PostgreSQL counts under an
//! advisory lock.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::Dialect;
use super::group_commit::{GroupCommit, write_via};
use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore};
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};

/// What differs between the engines in the offline store.
pub(crate) trait OfflineDialect: Dialect {
    /// On `connection`, store `message` for `key` unless the user has `limit` messages
    /// already (and, with `check_account`, unless the account does not exist): `Ok(None)`
    /// for no account. Checking and storing are atomic against concurrent writers.
    fn store_below_limit<'c>(
        connection: &'c mut Self::Connection,
        check_account: bool,
        key: AccountKey<'c>,
        message: NewOfflineMessage<'c>,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Stored>, StorageError>> + Send + 'c;

    /// Delete the user's messages with these ids; how many were.
    fn remove_ids(
        pool: &Pool<Self>,
        key: AccountKey<'_>,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// The offline messages of a database.
#[derive(Debug)]
pub(crate) struct SqlOffline<DB: Dialect> {
    pool: Pool<DB>,
    /// The database's writer, if its writes are group-committed (SQLite).
    commits: Option<Arc<GroupCommit<DB>>>,
}

impl<DB: Dialect> SqlOffline<DB> {
    /// Offline messages stored in the database behind `pool`, whose schema is up to date;
    /// with `commits`, stores and metadata updates go through that writer.
    pub(crate) fn new(pool: Pool<DB>, commits: Option<Arc<GroupCommit<DB>>>) -> Self {
        SqlOffline { pool, commits }
    }
}

/// Microseconds since the Unix epoch; times before it are stored as negative numbers.
pub(crate) fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

fn time_of(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// The `offline_message` columns a message is read from, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, timestamp, from_jid, packet, metadata"
    };
}

fn message_of<DB>(row: &DB::Row, key: AccountKey<'_>) -> Result<StoredMessage, StorageError>
where
    DB: Database,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let id: i64 = row.try_get("id")?;
    let from: String = row.try_get("from_jid")?;
    let from = Jid::new(&from).map_err(|_| {
        StorageError::Corrupt(format!(
            "offline_message {id} of {}@{}: from_jid = {from:?}",
            key.localpart, key.domain
        ))
    })?;
    Ok(StoredMessage {
        id,
        from,
        stored_at: time_of(row.try_get("timestamp")?),
        stanza: row.try_get("packet")?,
        metadata: row.try_get("metadata")?,
    })
}

impl<DB> SqlOffline<DB>
where
    DB: OfflineDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// Store through the writer (or a pooled connection), with the account checked or not.
    async fn store_with(
        &self,
        check_account: bool,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        AccountKey::of(user)?;
        // The write runs on the writer's task, after this call's borrows: it owns its data.
        let user = user.clone();
        let from = message.from.clone();
        let stored_at = message.stored_at;
        let stanza = message.stanza.to_owned();
        let metadata = message.metadata.to_owned();
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                let key = AccountKey::of(&user)?;
                let message = NewOfflineMessage {
                    from: &from,
                    stored_at,
                    stanza: &stanza,
                    metadata: &metadata,
                };
                DB::store_below_limit(connection, check_account, key, message, limit).await
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl<DB> OfflineStore for SqlOffline<DB>
where
    DB: OfflineDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn store(
        &self,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Stored, StorageError> {
        let stored = self.store_with(false, user, message, limit).await?;
        Ok(stored.unwrap_or(Stored::Full))
    }

    async fn store_for_account(
        &self,
        _accounts: &dyn AccountStore,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        // The accounts are in the same database: the check is part of the write.
        self.store_with(true, user, message, limit).await
    }

    async fn list(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM offline_message WHERE server = $1 AND username = $2 ORDER BY id"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of::<DB>(row, key)).collect()
    }

    async fn page(
        &self,
        user: &BareJid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM offline_message WHERE server = $1 AND username = $2 AND id > $3
             ORDER BY id LIMIT $4"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of::<DB>(row, key)).collect()
    }

    async fn remove(&self, user: &BareJid, ids: &[i64]) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = DB::remove_ids(&self.pool, key, ids).await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn take(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        // Deleting with RETURNING is one statement: what one caller takes, no other sees.
        let rows = sqlx::query(concat!(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2 RETURNING ",
            columns!()
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        // RETURNING gives rows in no defined order.
        let mut messages = rows
            .iter()
            .map(|row| message_of::<DB>(row, key))
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|message| message.id);
        Ok(messages)
    }

    async fn count(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM offline_message WHERE server = $1 AND username = $2",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn set_metadata(
        &self,
        user: &BareJid,
        id: i64,
        metadata: &str,
    ) -> Result<bool, StorageError> {
        AccountKey::of(user)?;
        let user = user.clone();
        let metadata = metadata.to_owned();
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                let key = AccountKey::of(&user)?;
                let updated = sqlx::query(
                    "UPDATE offline_message SET metadata = $1
                     WHERE id = $2 AND server = $3 AND username = $4",
                )
                .bind(metadata.as_str())
                .bind(id)
                .bind(key.domain)
                .bind(key.localpart)
                .execute(connection)
                .await?;
                Ok(DB::rows_affected(&updated) > 0)
            })
        })
        .await
    }

    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let deleted =
            sqlx::query("DELETE FROM offline_message WHERE server = $1 AND username = $2")
                .bind(key.domain)
                .bind(key.localpart)
                .execute(&self.pool)
                .await?;
        Ok(usize::try_from(DB::rows_affected(&deleted)).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_microseconds() {
        for time in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            UNIX_EPOCH - Duration::from_micros(86_400_000_001),
        ] {
            assert_eq!(time_of(micros(time)), time);
        }
    }
}
