//! The PostgreSQL part of the offline store: storing under the limit with the user's
//! advisory lock, and removing a list of ids as one array parameter.

use sqlx::{Connection, PgConnection, Pool, Postgres};

use crate::StorageError;
use crate::accounts::AccountKey;
use crate::offline::{NewOfflineMessage, Stored};
use crate::sql::offline::{OfflineDialect, micros};

impl OfflineDialect for Postgres {
    /// The user's advisory lock makes concurrent senders count in turn, so they cannot
    /// overshoot the limit together; the account is checked with the lock when asked. Its
    /// own transaction (a savepoint inside a batch).
    async fn store_below_limit<'c>(
        connection: &'c mut PgConnection,
        check_account: bool,
        key: AccountKey<'c>,
        message: NewOfflineMessage<'c>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        // Four round trips (BEGIN, lock, count-and-insert, COMMIT): the account check rides
        // with the lock, and the count with the insert. The insert is a statement after the
        // lock's, so in READ COMMITTED its snapshot sees every row a sender holding the lock
        // before committed.
        let mut transaction = connection.begin().await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE server = $1 AND username = $2)
             FROM (SELECT pg_advisory_xact_lock(18502, hashtext($1 || '/' || $2))) AS locked",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&mut *transaction)
        .await?;
        if check_account && !exists {
            transaction.rollback().await?;
            return Ok(None);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO offline_message
                 (timestamp, server, username, from_jid, packet, metadata)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE (SELECT COUNT(*) FROM offline_message
                    WHERE server = $2 AND username = $3) < $7
             RETURNING id",
        )
        .bind(micros(message.stored_at))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(message.from.as_str())
        .bind(message.stanza)
        .bind(message.metadata)
        .bind(limit)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(id) = id else {
            transaction.rollback().await?;
            return Ok(Some(Stored::Full));
        };
        transaction.commit().await?;
        Ok(Some(Stored::Stored(id)))
    }

    async fn remove_ids(
        pool: &Pool<Self>,
        key: AccountKey<'_>,
        ids: &[i64],
    ) -> Result<u64, StorageError> {
        let deleted = sqlx::query(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2 AND id = ANY($3)",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(ids)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
