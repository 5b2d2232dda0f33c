//! [`OfflineStore`] on PostgreSQL: MongooseIM's `offline_message` table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::StorageError;
use crate::accounts::AccountKey;
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};

/// The offline messages of a PostgreSQL database.
#[derive(Debug, Clone)]
pub(crate) struct PgOffline {
    pool: PgPool,
}

impl PgOffline {
    /// Offline messages stored in the database behind `pool`, whose schema is up to date.
    pub(crate) fn new(pool: PgPool) -> Self {
        PgOffline { pool }
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

fn message_of(row: &PgRow, key: AccountKey<'_>) -> Result<StoredMessage, StorageError> {
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

#[async_trait::async_trait]
impl OfflineStore for PgOffline {
    async fn store(
        &self,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Stored, StorageError> {
        let key = AccountKey::of(user)?;
        let mut transaction = self.pool.begin().await?;
        // The user's advisory lock makes concurrent senders count in turn, so they cannot
        // overshoot the limit together.
        sqlx::query("SELECT pg_advisory_xact_lock(18502, hashtext($1 || '/' || $2))")
            .bind(key.domain)
            .bind(key.localpart)
            .execute(&mut *transaction)
            .await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM offline_message WHERE server = $1 AND username = $2",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&mut *transaction)
        .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
            transaction.rollback().await?;
            return Ok(Stored::Full);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO offline_message
                 (timestamp, server, username, from_jid, packet, metadata)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id",
        )
        .bind(micros(message.stored_at))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(message.from.as_str())
        .bind(message.stanza)
        .bind(message.metadata)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Stored::Stored(id))
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
            " FROM offline_message WHERE server = $1 AND username = $2 AND id > $3
             ORDER BY id LIMIT $4"
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
        let deleted = sqlx::query(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2 AND id = ANY($3)",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
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
            .map(|row| message_of(row, key))
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
        let key = AccountKey::of(user)?;
        let updated = sqlx::query(
            "UPDATE offline_message SET metadata = $1
             WHERE id = $2 AND server = $3 AND username = $4",
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
        let deleted =
            sqlx::query("DELETE FROM offline_message WHERE server = $1 AND username = $2")
                .bind(key.domain)
                .bind(key.localpart)
                .execute(&self.pool)
                .await?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
    }
}
