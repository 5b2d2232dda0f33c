//! The relational engine (`backend = "rdbms"`): MongooseIM's `event_pusher_push_subscription`
//! table exactly as push.md section 9 gives it (created by herald-storage's PostgreSQL migration
//! 4), in the server's PostgreSQL database.
//!
//! Rows copied from a MongooseIM database are read as they are: owner and pubsub bare JIDs as
//! text, the form a `JSON` object, `created_at` in microseconds.

use herald_storage::StorageError;
use jid::BareJid;
use sqlx::{PgPool, Row, postgres::PgRow};

use super::{
    PublishOptions, Registration, RegistrationKey, RegistrationStore, from_micros, to_micros,
};

/// Registrations in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresRegistrations {
    pool: PgPool,
}

impl PostgresRegistrations {
    /// The store over an opened (and migrated) pool, from `Storage::postgres_pool`.
    pub fn new(pool: PgPool) -> PostgresRegistrations {
        PostgresRegistrations { pool }
    }
}

fn corrupt(what: &str, row: &PgRow) -> StorageError {
    let owner: String = row.try_get("owner_jid").unwrap_or_default();
    StorageError::Corrupt(format!(
        "event_pusher_push_subscription row of {owner:?}: {what}"
    ))
}

fn jid_column(row: &PgRow, column: &str) -> Result<BareJid, StorageError> {
    let text: String = row.try_get(column)?;
    match BareJid::new(&text) {
        // Only what herald wrote: a JID already in normalised form.
        Ok(jid) if jid.as_str() == text => Ok(jid),
        _ => Err(corrupt(column, row)),
    }
}

fn registration(row: &PgRow) -> Result<Registration, StorageError> {
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

fn key(row: &PgRow) -> Result<RegistrationKey, StorageError> {
    Ok(RegistrationKey {
        owner: jid_column(row, "owner_jid")?,
        pubsub: jid_column(row, "pubsub_jid")?,
        node: row.try_get("node")?,
    })
}

#[async_trait::async_trait]
impl RegistrationStore for PostgresRegistrations {
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
        let form = serde_json::to_string(&registration.form)
            .map_err(|error| StorageError::Corrupt(format!("unencodable form: {error}")))?;
        sqlx::query(
            "INSERT INTO event_pusher_push_subscription
                 (owner_jid, node, pubsub_jid, form, created_at)
             VALUES ($1, $2, $3, $4::json, $5)
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
             WHERE owner_jid = $1 AND node = $2 AND pubsub_jid = $3",
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
             WHERE owner_jid = $1 AND pubsub_jid = $2
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
            "SELECT owner_jid, node, pubsub_jid, form::text AS form, created_at
             FROM event_pusher_push_subscription
             WHERE owner_jid = $1
             ORDER BY created_at, pubsub_jid COLLATE \"C\", node COLLATE \"C\"",
        )
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registration).collect()
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM event_pusher_push_subscription WHERE owner_jid = $1")
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
             WHERE length(owner_jid) > length($1) AND right(owner_jid, length($1)) = $1",
        )
        .bind(suffix)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_storage::Storage;
    use herald_storage::test_database::TestDatabase;

    use super::*;
    use crate::registrations::conformance::{self, run_registration_store_conformance, with_cases};

    fn postgres_pool(storage: &Storage) -> &sqlx::PgPool {
        match storage.engine() {
            herald_storage::Engine::Postgres(pool) => pool,
            herald_storage::Engine::Sqlite(_) => panic!("a PostgreSQL storage"),
        }
    }

    /// A store over a fresh database of its own; `None` when PostgreSQL is not reachable. The
    /// database and `Storage` must outlive the store.
    async fn open() -> Option<(TestDatabase, Storage, Arc<dyn RegistrationStore>)> {
        let database = TestDatabase::create().await?;
        let storage = database.open(2).await.unwrap();
        let pool = postgres_pool(&storage).clone();
        Some((
            database,
            storage,
            Arc::new(PostgresRegistrations::new(pool)),
        ))
    }

    /// One `#[tokio::test]` per behaviour of the suite, skipped without PostgreSQL.
    macro_rules! postgres_conformance_tests {
        (() $($case:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some((_database, _storage, store)) = open().await else { return };
                    conformance::$case(store.as_ref()).await;
                }
            )*
        };
    }

    mod each {
        use super::*;
        with_cases!(postgres_conformance_tests!());
    }

    #[tokio::test]
    async fn the_whole_suite_passes_on_one_shared_postgres_store() {
        let Some((_database, _storage, store)) = open().await else {
            return;
        };
        run_registration_store_conformance(store).await;
    }

    #[tokio::test]
    async fn a_row_copied_from_mongooseim_is_read() {
        let Some((_database, storage, store)) = open().await else {
            return;
        };
        // As MongooseIM writes it: a JSON object, microseconds.
        sqlx::query(
            "INSERT INTO event_pusher_push_subscription VALUES
             ('alice@example.com', 'n1', 'push.example.com',
              '{\"service\": \"apns\", \"device_id\": \"TOKEN\"}', 1700000000123456)",
        )
        .execute(postgres_pool(&storage))
        .await
        .unwrap();
        let owner = BareJid::new("alice@example.com").unwrap();
        let listed = store.list(&owner).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key.node, "n1");
        assert_eq!(
            listed[0].form.get("device_id").map(String::as_str),
            Some("TOKEN")
        );
        assert_eq!(to_micros(listed[0].created_at), 1_700_000_000_123_456);
    }

    #[tokio::test]
    async fn a_form_that_is_not_an_object_of_strings_is_reported_as_corrupt() {
        let Some((_database, storage, store)) = open().await else {
            return;
        };
        sqlx::query(
            "INSERT INTO event_pusher_push_subscription VALUES
             ('alice@example.com', 'n', 'push.example.com', '[1, 2]', 0)",
        )
        .execute(postgres_pool(&storage))
        .await
        .unwrap();
        let owner = BareJid::new("alice@example.com").unwrap();
        assert!(matches!(
            store.list(&owner).await,
            Err(StorageError::Corrupt(_))
        ));
    }
}
