//! The SQLite part of the offline store: storing under the limit in one statement, and
//! removing a list of ids passed as one JSON array.

use sqlx::Pool;
use sqlx::Sqlite;

use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore};
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
    /// concurrent senders cannot overshoot the limit together. With `accounts`, the account
    /// is in the same file: the check is part of the statement.
    async fn store_below_limit(
        pool: &Pool<Self>,
        accounts: Option<&dyn AccountStore>,
        key: AccountKey<'_>,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        let sql = match accounts {
            Some(_) => INSERT_FOR_ACCOUNT_BELOW_LIMIT,
            None => INSERT_BELOW_LIMIT,
        };
        let done = sqlx::query(sql)
            .bind(micros(message.stored_at))
            .bind(key.domain)
            .bind(key.localpart)
            .bind(message.from.as_str())
            .bind(message.stanza)
            .bind(message.metadata)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Some(Stored::Stored(done.last_insert_rowid())));
        }
        match accounts {
            // Nothing stored: no account, or a full store (rare; one more query tells which).
            Some(accounts) => {
                let user = key.to_jid()?;
                Ok(accounts.exists(&user).await?.then_some(Stored::Full))
            }
            None => Ok(Some(Stored::Full)),
        }
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
