//! The SQLite part of the offline store: storing under the limit in one statement, and
//! removing a list of ids passed as one JSON array.

use sqlx::{Pool, Sqlite, SqliteConnection};

use crate::StorageError;
use crate::accounts::AccountKey;
use crate::offline::{NewOfflineMessage, Stored};
use crate::sql::offline::{OfflineDialect, micros};

/// Stores a message unless the user already has `$7` waiting.
const INSERT_BELOW_LIMIT: &str = "INSERT INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT $1, $2, $3, $4, $5, $6
     WHERE (SELECT COUNT(*) FROM offline_message WHERE server = $2 AND username = $3) < $7";

/// The same, and only if the account exists.
const INSERT_FOR_ACCOUNT_BELOW_LIMIT: &str = "INSERT INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT $1, $2, $3, $4, $5, $6
     WHERE EXISTS (SELECT 1 FROM users WHERE server = $2 AND username = $3)
       AND (SELECT COUNT(*) FROM offline_message WHERE server = $2 AND username = $3) < $7";

impl OfflineDialect for Sqlite {
    /// One statement, one round trip to the connection's thread: a writing statement takes
    /// SQLite's write lock before it runs, so the count and the insert are atomic and
    /// concurrent senders cannot overshoot the limit together. The account is in the same
    /// file: its check is part of the statement.
    async fn store_below_limit<'c>(
        connection: &'c mut SqliteConnection,
        check_account: bool,
        key: AccountKey<'c>,
        message: NewOfflineMessage<'c>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        let sql = if check_account {
            INSERT_FOR_ACCOUNT_BELOW_LIMIT
        } else {
            INSERT_BELOW_LIMIT
        };
        let done = sqlx::query(sql)
            .bind(micros(message.stored_at))
            .bind(key.domain)
            .bind(key.localpart)
            .bind(message.from.as_str())
            .bind(message.stanza)
            .bind(message.metadata)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&mut *connection)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Some(Stored::Stored(done.last_insert_rowid())));
        }
        if !check_account {
            return Ok(Some(Stored::Full));
        }
        // Nothing stored: no account, or a full store (rare; one more query tells which).
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE server = $1 AND username = $2)",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&mut *connection)
        .await?;
        Ok(exists.then_some(Stored::Full))
    }

    async fn remove_ids(
        pool: &Pool<Self>,
        key: AccountKey<'_>,
        ids: &[i64],
    ) -> Result<u64, StorageError> {
        // The ids travel as one JSON array, so the statement text (and its prepared form in
        // the connection's cache) is the same whatever their number.
        let list = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        let deleted = sqlx::query(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2
               AND id IN (SELECT value FROM json_each($3))",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(list)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
