//! The SQLite part of the offline store: storing a message under the limit in one statement,
//! and removing a list of ids passed as one JSON array.

use sqlx::{Pool, Sqlite, SqliteConnection};

use crate::StorageError;
use crate::accounts::AccountKey;
use crate::offline::Stored;
use crate::sql::offline::{OfflineDialect, Store, micros};

/// Stores a message unless the user already has `$7` waiting.
///
/// `OR IGNORE`: what is bound never breaks a constraint (a non-empty account, texts), and a
/// statement that cannot fail half-way needs no statement journal: an `INSERT ... SELECT`
/// whose NOT NULL or CHECK could abort it made SQLite copy every page it changed, per store
/// (migration 12 and docs/BENCHMARKS.md, "Statement journals").
const INSERT_BELOW_LIMIT: &str = "INSERT OR IGNORE INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT $1, $2, $3, $4, $5, $6
     WHERE (SELECT COUNT(*) FROM offline_message WHERE server = $2 AND username = $3) < $7";

/// The same, and only if the account exists.
const INSERT_FOR_ACCOUNT_BELOW_LIMIT: &str = "INSERT OR IGNORE INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT $1, $2, $3, $4, $5, $6
     WHERE EXISTS (SELECT 1 FROM users WHERE server = $2 AND username = $3)
       AND (SELECT COUNT(*) FROM offline_message WHERE server = $2 AND username = $3) < $7";

impl OfflineDialect for Sqlite {
    /// Inside the writer's transaction, which holds SQLite's write lock from its start: one
    /// statement per message (its count and the account check in its `WHERE`), each seeing
    /// the ones before. Not all or none: SQLite's stores are not batched by
    /// [`SqlOffline`](crate::sql::offline::SqlOffline)'s batcher, whose retry needs that, but
    /// each goes to the group commit as a write of its own (batching them first measured
    /// slower: docs/BENCHMARKS.md, "Offline stores batched on PostgreSQL").
    async fn store_many<'c>(
        connection: &'c mut SqliteConnection,
        stores: &'c [Store<'c>],
    ) -> Result<Vec<Option<Stored>>, StorageError> {
        let mut outcomes = Vec::with_capacity(stores.len());
        for store in stores {
            outcomes.push(store_one(connection, store).await?);
        }
        Ok(outcomes)
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

/// One message: one statement (round trip), whose `WHERE` checks the count and, when asked,
/// the account.
async fn store_one(
    connection: &mut SqliteConnection,
    store: &Store<'_>,
) -> Result<Option<Stored>, StorageError> {
    let (key, message) = (store.key, store.message);
    let sql = if store.check_account {
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
        .bind(i64::try_from(store.limit).unwrap_or(i64::MAX))
        .execute(&mut *connection)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(Some(Stored::Stored(done.last_insert_rowid())));
    }
    if !store.check_account {
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
