//! The embedded engine's part of the registration store: the SQL text that differs from
//! PostgreSQL's. The table is created by herald-push's own migration (see `migrations`).

use super::sql::{PushDialect, PushSql};

impl PushDialect for sqlx::Sqlite {
    const PUSH: &'static PushSql = &PushSql {
        enable: "INSERT INTO event_pusher_push_subscription
                 (owner_jid, node, pubsub_jid, form, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (owner_jid, node, pubsub_jid)
             DO UPDATE SET form = excluded.form, created_at = excluded.created_at",
        set_options: "INSERT INTO herald_push_options (owner_jid, node, pubsub_jid, options)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (owner_jid, node, pubsub_jid) DO UPDATE SET options = excluded.options",
        // SQLite's default BINARY collation compares UTF-8 bytes: code point order.
        list: "SELECT s.owner_jid, s.node, s.pubsub_jid, s.form, s.created_at, o.options
             FROM event_pusher_push_subscription s
             LEFT JOIN herald_push_options o
               ON o.owner_jid = s.owner_jid AND o.node = s.node AND o.pubsub_jid = s.pubsub_jid
             WHERE s.owner_jid = $1
             ORDER BY s.created_at, s.pubsub_jid, s.node",
        remove_domain: "DELETE FROM event_pusher_push_subscription
             WHERE length(owner_jid) > length($1)
               AND substr(owner_jid, length(owner_jid) - length($1) + 1) = $1",
        hibernating: "INSERT INTO herald_push_hibernation
                 (owner_jid, resource, pubsub_jid, node, since)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (owner_jid, resource)
             DO UPDATE SET pubsub_jid = excluded.pubsub_jid, node = excluded.node,
                 since = excluded.since",
        remove_domain_options: "DELETE FROM herald_push_options
             WHERE length(owner_jid) > length($1) AND substr(owner_jid, length(owner_jid) - length($1) + 1) = $1",
        remove_domain_hibernating: "DELETE FROM herald_push_hibernation
             WHERE length(owner_jid) > length($1)
               AND substr(owner_jid, length(owner_jid) - length($1) + 1) = $1",
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use herald_storage::Storage;

    use herald_storage::StorageError;
    use jid::BareJid;

    use crate::registrations::conformance::run_registration_store_conformance;
    use crate::registrations::{
        Registration, RegistrationKey, RegistrationStore, SqliteRegistrations,
    };

    pub(super) fn sqlite_pool(storage: &Storage) -> &sqlx::SqlitePool {
        match storage.engine() {
            herald_storage::Engine::Sqlite(pool) => pool,
            herald_storage::Engine::Postgres(_) => panic!("a SQLite storage"),
        }
    }

    /// The database file at `path` with the push module's tables.
    pub(super) async fn open_file(path: &std::path::Path) -> Storage {
        Storage::open_sqlite_with(
            path,
            herald_storage::Durability::default(),
            &[&crate::registrations::MIGRATIONS],
        )
        .await
        .unwrap()
    }

    /// A store over a fresh in-memory database; the `Storage` must outlive it.
    pub(crate) async fn in_memory() -> (Storage, Arc<dyn RegistrationStore>) {
        let storage = Storage::open_sqlite_in_memory_with(&[&crate::registrations::MIGRATIONS])
            .await
            .unwrap();
        let pool = sqlite_pool(&storage).clone();
        let store = SqliteRegistrations::new(pool).with_writer(storage.sqlite_writer());
        (storage, Arc::new(store))
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
            let storage = super::open_file(&directory.path().join("h.db")).await;
            let pool = super::sqlite_pool(&storage).clone();
            // As the server builds it: the outbox written through the file's writer.
            let store = super::SqliteRegistrations::new(pool).with_writer(storage.sqlite_writer());
            (directory, std::sync::Arc::new(store))
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
            let storage = open_file(&path).await;
            let store = SqliteRegistrations::new(sqlite_pool(&storage).clone());
            store.enable(&registration).await.unwrap();
            storage.close().await;
        }
        let storage = open_file(&path).await;
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

    /// The outbox's rows are written and removed on the connection of the file's writer, in
    /// its transactions, not on pooled connections that would take SQLite's lock of the file
    /// in transactions of their own: temporary triggers (which fire only on the connection
    /// that made them) made through the writer see every insert and every delete.
    #[tokio::test]
    async fn the_outbox_is_written_and_removed_in_the_files_group_commit() {
        use crate::registrations::{PendingPush, StoredRoute};

        let directory = tempfile::TempDir::new().unwrap();
        let storage = open_file(&directory.path().join("herald.db")).await;
        let writer = storage
            .sqlite_writer()
            .expect("a SQLite storage has a writer");
        writer
            .write(|connection| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "CREATE TEMP TABLE seen (what TEXT, id INTEGER);
                         CREATE TEMP TRIGGER added AFTER INSERT ON main.herald_push_outbox
                         BEGIN INSERT INTO seen VALUES ('added', new.id); END;
                         CREATE TEMP TRIGGER removed AFTER DELETE ON main.herald_push_outbox
                         BEGIN INSERT INTO seen VALUES ('removed', old.id); END;",
                    )
                    .execute(connection)
                    .await?;
                    Ok(())
                })
            })
            .await
            .unwrap();
        let store = SqliteRegistrations::new(sqlite_pool(&storage).clone())
            .with_writer(Some(writer.clone()));
        let push = |node: &str| PendingPush {
            key: RegistrationKey {
                owner: BareJid::new("alice@example.com").unwrap(),
                pubsub: BareJid::new("push.example.com").unwrap(),
                node: node.into(),
            },
            message: Some(format!("archive:{node}")),
            route: StoredRoute::Xmpp("<iq/>".into()),
            created_at: std::time::SystemTime::now(),
        };
        store
            .add_pending(&[(1, push("n1")), (2, push("n2"))])
            .await
            .unwrap();
        store.finish_pending(&[1]).await.unwrap();
        let seen = writer
            .write(|connection| {
                Box::pin(async move {
                    let rows: Vec<(String, i64)> =
                        sqlx::query_as("SELECT what, id FROM seen ORDER BY rowid")
                            .fetch_all(connection)
                            .await?;
                    Ok(rows)
                })
            })
            .await
            .unwrap();
        let seen: Vec<(&str, i64)> = seen.iter().map(|(w, id)| (w.as_str(), *id)).collect();
        assert_eq!(seen, [("added", 1), ("added", 2), ("removed", 1)]);
        let left = store.pending().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 2);
        storage.close().await;
    }
}
