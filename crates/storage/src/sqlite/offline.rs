//! [`OfflineStore`] on SQLite: the `offline_message` table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore};
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};

/// The offline messages of a SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqliteOffline {
    pool: SqlitePool,
}

impl SqliteOffline {
    /// Offline messages stored in the database behind `pool`, whose schema is up to date.
    pub(crate) fn new(pool: SqlitePool) -> Self {
        SqliteOffline { pool }
    }

    /// Run one of the conditional inserts (`INSERT_*` below); the new message's id, or `None` when its
    /// condition held nothing back. One statement, one round trip to the connection's thread:
    /// a writing statement takes SQLite's write lock before it runs, so the count and the
    /// insert are atomic and concurrent senders cannot overshoot the limit together.
    async fn insert_below_limit(
        &self,
        sql: &'static str,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<i64>, StorageError> {
        let key = AccountKey::of(user)?;
        let done = sqlx::query(sql)
            .bind(micros(message.stored_at))
            .bind(key.domain)
            .bind(key.localpart)
            .bind(message.from.as_str())
            .bind(message.stanza)
            .bind(message.metadata)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok((done.rows_affected() == 1).then(|| done.last_insert_rowid()))
    }
}

/// Microseconds since the Unix epoch; times before it are stored as negative numbers.
fn micros(time: SystemTime) -> i64 {
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

fn message_of(row: &SqliteRow, key: AccountKey<'_>) -> Result<StoredMessage, StorageError> {
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

/// Stores a message unless the user already has `?7` waiting.
const INSERT_BELOW_LIMIT: &str = "INSERT INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6
     WHERE (SELECT COUNT(*) FROM offline_message WHERE server = ?2 AND username = ?3) < ?7";

/// The same, and only if the account exists.
const INSERT_FOR_ACCOUNT_BELOW_LIMIT: &str = "INSERT INTO offline_message
         (timestamp, server, username, from_jid, packet, metadata)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6
     WHERE EXISTS (SELECT 1 FROM users WHERE server = ?2 AND username = ?3)
       AND (SELECT COUNT(*) FROM offline_message WHERE server = ?2 AND username = ?3) < ?7";

#[async_trait::async_trait]
impl OfflineStore for SqliteOffline {
    async fn store(
        &self,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Stored, StorageError> {
        let stored = self
            .insert_below_limit(INSERT_BELOW_LIMIT, user, message, limit)
            .await?;
        Ok(stored.map_or(Stored::Full, Stored::Stored))
    }

    async fn store_for_account(
        &self,
        accounts: &dyn AccountStore,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        // The account is in the same file: the check, the count and the insert are one
        // statement.
        let stored = self
            .insert_below_limit(INSERT_FOR_ACCOUNT_BELOW_LIMIT, user, message, limit)
            .await?;
        if let Some(id) = stored {
            return Ok(Some(Stored::Stored(id)));
        }
        // Nothing stored: no account, or a full store (rare; one more query tells which).
        Ok(accounts.exists(user).await?.then_some(Stored::Full))
    }

    async fn list(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM offline_message WHERE server = ? AND username = ? ORDER BY id"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of(row, key)).collect()
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
            " FROM offline_message WHERE server = ? AND username = ? AND id > ?
             ORDER BY id LIMIT ?"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of(row, key)).collect()
    }

    async fn remove(&self, user: &BareJid, ids: &[i64]) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        if ids.is_empty() {
            return Ok(0);
        }
        // The ids travel as one JSON array, so the statement text (and its prepared form in
        // the connection's cache) is the same whatever their number.
        let list = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        let deleted = sqlx::query(
            "DELETE FROM offline_message WHERE server = ? AND username = ?
               AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(list)
        .execute(&self.pool)
        .await?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn take(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        // Deleting with RETURNING is one statement: what one caller takes, no other sees.
        let rows = sqlx::query(concat!(
            "DELETE FROM offline_message WHERE server = ? AND username = ? RETURNING ",
            columns!()
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        // RETURNING gives rows in no defined order.
        let mut messages = rows
            .iter()
            .map(|row| message_of(row, key))
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|message| message.id);
        Ok(messages)
    }

    async fn count(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM offline_message WHERE server = ? AND username = ?",
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
        let key = AccountKey::of(user)?;
        let updated = sqlx::query(
            "UPDATE offline_message SET metadata = ? WHERE id = ? AND server = ? AND username = ?",
        )
        .bind(metadata)
        .bind(id)
        .bind(key.domain)
        .bind(key.localpart)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let deleted = sqlx::query("DELETE FROM offline_message WHERE server = ? AND username = ?")
            .bind(key.domain)
            .bind(key.localpart)
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
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
