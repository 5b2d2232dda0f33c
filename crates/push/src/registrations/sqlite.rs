//! The embedded engine: the `event_pusher_push_subscription` table (push.md section 9, created
//! by herald-storage's SQLite migration 4) in the server's SQLite database.
//!
//! The columns are MongooseIM's, so moving registrations between the two is a copy: owner and
//! pubsub bare JIDs as text, the form as a JSON object, `created_at` in microseconds.

use herald_storage::StorageError;
use jid::BareJid;
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use super::{
    PublishOptions, Registration, RegistrationKey, RegistrationStore, from_micros, to_micros,
};

/// Registrations in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteRegistrations {
    pool: SqlitePool,
}

impl SqliteRegistrations {
    /// The store over an opened (and migrated) pool, from `Storage::engine`.
    pub fn new(pool: SqlitePool) -> SqliteRegistrations {
        SqliteRegistrations { pool }
    }
}

fn corrupt(what: &str, row: &SqliteRow) -> StorageError {
    let owner: String = row.try_get("owner_jid").unwrap_or_default();
    StorageError::Corrupt(format!(
        "event_pusher_push_subscription row of {owner:?}: {what}"
    ))
}

fn jid_column(row: &SqliteRow, column: &str) -> Result<BareJid, StorageError> {
    let text: String = row.try_get(column)?;
    match BareJid::new(&text) {
        // Only what herald wrote: a JID already in normalised form.
        Ok(jid) if jid.as_str() == text => Ok(jid),
        _ => Err(corrupt(column, row)),
    }
}

fn registration(row: &SqliteRow) -> Result<Registration, StorageError> {
    let form: String = row.try_get("form")?;
    let form: PublishOptions = serde_json::from_str(&form)
        .map_err(|_| corrupt("form is not a JSON object of strings", row))?;
    Ok(Registration {
        key: RegistrationKey {
            owner: jid_column(row, "owner_jid")?,
            pubsub: jid_column(row, "pubsub_jid")?,
            node: row.try_get("node")?,
        },
        form,
        created_at: from_micros(row.try_get("created_at")?),
    })
}

fn key(row: &SqliteRow) -> Result<RegistrationKey, StorageError> {
    Ok(RegistrationKey {
        owner: jid_column(row, "owner_jid")?,
        pubsub: jid_column(row, "pubsub_jid")?,
        node: row.try_get("node")?,
    })
}

#[async_trait::async_trait]
impl RegistrationStore for SqliteRegistrations {
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
        let form = serde_json::to_string(&registration.form)
            .map_err(|error| StorageError::Corrupt(format!("unencodable form: {error}")))?;
        sqlx::query(
            "INSERT INTO event_pusher_push_subscription
                 (owner_jid, node, pubsub_jid, form, created_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (owner_jid, node, pubsub_jid)
             DO UPDATE SET form = excluded.form, created_at = excluded.created_at",
        )
        .bind(registration.key.owner.as_str())
        .bind(&registration.key.node)
        .bind(registration.key.pubsub.as_str())
        .bind(form)
        .bind(to_micros(registration.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "DELETE FROM event_pusher_push_subscription
             WHERE owner_jid = ? AND node = ? AND pubsub_jid = ?",
        )
        .bind(key.owner.as_str())
        .bind(&key.node)
        .bind(key.pubsub.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn disable_all(
        &self,
        owner: &BareJid,
        pubsub: &BareJid,
    ) -> Result<Vec<RegistrationKey>, StorageError> {
        let rows = sqlx::query(
            "DELETE FROM event_pusher_push_subscription
             WHERE owner_jid = ? AND pubsub_jid = ?
             RETURNING owner_jid, node, pubsub_jid",
        )
        .bind(owner.as_str())
        .bind(pubsub.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key).collect()
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError> {
        let rows = sqlx::query(
            "SELECT owner_jid, node, pubsub_jid, form, created_at
             FROM event_pusher_push_subscription
             WHERE owner_jid = ?
             ORDER BY created_at, pubsub_jid, node",
        )
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registration).collect()
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM event_pusher_push_subscription WHERE owner_jid = ?")
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
        // Owners are user@domain: compare the end of the text, not a LIKE pattern, so no
        // character of the domain is taken as a wildcard.
        let suffix = format!("@{domain}");
        let done = sqlx::query(
            "DELETE FROM event_pusher_push_subscription
             WHERE length(owner_jid) > length(?1)
               AND substr(owner_jid, length(owner_jid) - length(?1) + 1) = ?1",
        )
        .bind(suffix)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use herald_storage::Storage;

    use super::*;
    use crate::registrations::conformance::run_registration_store_conformance;

    pub(super) fn sqlite_pool(storage: &Storage) -> &sqlx::SqlitePool {
        match storage.engine() {
            herald_storage::Engine::Sqlite(pool) => pool,
            herald_storage::Engine::Postgres(_) => panic!("a SQLite storage"),
        }
    }

    /// A store over a fresh in-memory database; the `Storage` must outlive it.
    pub(crate) async fn in_memory() -> (Storage, Arc<dyn RegistrationStore>) {
        let storage = Storage::open_sqlite_in_memory().await.unwrap();
        let pool = sqlite_pool(&storage).clone();
        (storage, Arc::new(SqliteRegistrations::new(pool)))
    }

    mod in_memory {
        use crate::registrations::conformance::registration_store_conformance_tests;
        registration_store_conformance_tests!(open);

        async fn open() -> (
            herald_storage::Storage,
            std::sync::Arc<dyn crate::registrations::RegistrationStore>,
        ) {
            super::in_memory().await
        }
    }

    mod in_a_file {
        use crate::registrations::conformance::registration_store_conformance_tests;
        registration_store_conformance_tests!(open);

        async fn open() -> (
            tempfile::TempDir,
            std::sync::Arc<dyn crate::registrations::RegistrationStore>,
        ) {
            let directory = tempfile::TempDir::new().unwrap();
            let storage = herald_storage::Storage::open_sqlite(&directory.path().join("h.db"))
                .await
                .unwrap();
            let pool = super::sqlite_pool(&storage).clone();
            (
                directory,
                std::sync::Arc::new(super::SqliteRegistrations::new(pool)),
            )
        }
    }

    #[tokio::test]
    async fn the_whole_suite_passes_on_one_shared_sqlite_store() {
        let (_storage, store) = in_memory().await;
        run_registration_store_conformance(store).await;
    }

    #[tokio::test]
    async fn registrations_survive_reopening_the_file() {
        let directory = tempfile::TempDir::new().unwrap();
        let path = directory.path().join("herald.db");
        let key = RegistrationKey {
            owner: BareJid::new("alice@example.com").unwrap(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: "n1".into(),
        };
        let registration = Registration::new(
            key.clone(),
            [("device_id".to_owned(), "TOKEN".to_owned())].into(),
        );
        {
            let storage = Storage::open_sqlite(&path).await.unwrap();
            let store = SqliteRegistrations::new(sqlite_pool(&storage).clone());
            store.enable(&registration).await.unwrap();
            storage.close().await;
        }
        let storage = Storage::open_sqlite(&path).await.unwrap();
        let store = SqliteRegistrations::new(sqlite_pool(&storage).clone());
        assert_eq!(store.list(&key.owner).await.unwrap(), [registration]);
        storage.close().await;
    }

    #[tokio::test]
    async fn a_form_that_is_not_an_object_of_strings_is_reported_as_corrupt() {
        let (storage, store) = in_memory().await;
        sqlx::query(
            "INSERT INTO event_pusher_push_subscription VALUES
             ('alice@example.com', 'n', 'push.example.com', '[1, 2]', 0)",
        )
        .execute(sqlite_pool(&storage))
        .await
        .unwrap();
        let owner = BareJid::new("alice@example.com").unwrap();
        assert!(matches!(
            store.list(&owner).await,
            Err(StorageError::Corrupt(_))
        ));
    }
}
