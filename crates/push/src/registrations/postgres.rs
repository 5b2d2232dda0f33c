//! PostgreSQL's part of the registration store (`backend = "rdbms"`): the SQL text that
//! differs from SQLite's. Rows copied from a MongooseIM database are read as they are (the
//! form is MongooseIM's `JSON` column).

use super::sql::{PushDialect, PushSql};

impl PushDialect for sqlx::Postgres {
    const PUSH: &'static PushSql = &PushSql {
        enable: "INSERT INTO event_pusher_push_subscription
                 (owner_jid, node, pubsub_jid, form, created_at)
             VALUES ($1, $2, $3, $4::json, $5)
             ON CONFLICT (owner_jid, node, pubsub_jid)
             DO UPDATE SET form = excluded.form, created_at = excluded.created_at",
        set_options: "INSERT INTO herald_push_options (owner_jid, node, pubsub_jid, options)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (owner_jid, node, pubsub_jid) DO UPDATE SET options = excluded.options",
        // The "C" collation compares UTF-8 bytes: code point order, as on SQLite.
        list:
            "SELECT s.owner_jid, s.node, s.pubsub_jid, s.form::text AS form, s.created_at, o.options
             FROM event_pusher_push_subscription s
             LEFT JOIN herald_push_options o
               ON o.owner_jid = s.owner_jid AND o.node = s.node AND o.pubsub_jid = s.pubsub_jid
             WHERE s.owner_jid = $1
             ORDER BY s.created_at, s.pubsub_jid COLLATE \"C\", s.node COLLATE \"C\"",
        remove_domain: "DELETE FROM event_pusher_push_subscription
             WHERE length(owner_jid) > length($1) AND right(owner_jid, length($1)) = $1",
        hibernating: "INSERT INTO herald_push_hibernation
                 (owner_jid, resource, pubsub_jid, node, since)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (owner_jid, resource)
             DO UPDATE SET pubsub_jid = excluded.pubsub_jid, node = excluded.node,
                 since = excluded.since",
        remove_domain_options: "DELETE FROM herald_push_options
             WHERE length(owner_jid) > length($1) AND right(owner_jid, length($1)) = $1",
        remove_domain_hibernating: "DELETE FROM herald_push_hibernation
             WHERE length(owner_jid) > length($1) AND right(owner_jid, length($1)) = $1",
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_storage::Storage;
    use herald_storage::test_database::TestDatabase;

    use herald_storage::StorageError;
    use jid::BareJid;

    use crate::registrations::conformance::{self, run_registration_store_conformance, with_cases};
    use crate::registrations::{PostgresRegistrations, RegistrationStore, to_micros};

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
        let storage = database
            .open_with(2, &[&crate::registrations::MIGRATIONS])
            .await
            .unwrap();
        let pool = postgres_pool(&storage).clone();
        Some((
            database,
            storage,
            Arc::new(PostgresRegistrations::new(pool)),
        ))
    }

    /// The columns of `table`, in order, with their types.
    async fn columns(pool: &sqlx::PgPool, table: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    /// The table is created by herald-push's own migration, exactly as MongooseIM has it.
    #[tokio::test]
    async fn the_push_table_is_exactly_mongooseims() {
        let Some((_database, storage, _store)) = open().await else {
            return;
        };
        let pool = postgres_pool(&storage);
        let expected = [
            ("owner_jid", "character varying"),
            ("node", "character varying"),
            ("pubsub_jid", "character varying"),
            ("form", "json"),
            ("created_at", "bigint"),
        ]
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()));
        assert_eq!(
            columns(pool, "event_pusher_push_subscription").await,
            expected
        );
        let index: Option<String> = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'i_event_pusher_push_subscription'",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        assert!(index.is_some_and(|def| def.contains("(owner_jid)")));
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

    /// Polls `cache` for `owner`'s nodes until they are `expected`, for at most 5 s (the
    /// cache's entries live 30 s: only a notification makes it forget sooner).
    async fn nodes_become(
        cache: &crate::registrations::CachedRegistrations,
        owner: &BareJid,
        expected: &[&str],
    ) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let nodes: Vec<String> = cache
                .list(owner)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.key.node)
                .collect();
            if nodes == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cache still says {nodes:?}, the database {expected:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits until the listener trusts `cache` (it listens), for at most 5 s.
    async fn trusted(cache: &crate::registrations::CachedRegistrations) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cache.trusted() {
            assert!(tokio::time::Instant::now() < deadline, "never listening");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn registration(owner: &str, node: &str) -> crate::registrations::Registration {
        crate::registrations::Registration::new(
            crate::registrations::RegistrationKey {
                owner: BareJid::new(owner).unwrap(),
                pubsub: BareJid::new("push.example.com").unwrap(),
                node: node.into(),
            },
            Default::default(),
        )
    }

    /// Two servers on one database: what one enables or disables, the other's cache forgets
    /// when the database tells it, long before its entries expire.
    #[tokio::test]
    async fn a_change_another_server_writes_is_seen_through_the_cache_at_once() {
        let Some((_database, storage, _store)) = open().await else {
            return;
        };
        let pool = postgres_pool(&storage).clone();
        let cache = Arc::new(crate::registrations::CachedRegistrations::untrusted(
            Arc::new(PostgresRegistrations::new(pool.clone())),
        ));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listening = tokio::spawn(crate::registrations::listen(
            pool.clone(),
            Arc::clone(&cache),
            shutdown.clone(),
        ));
        trusted(&cache).await;
        let other = PostgresRegistrations::new(pool.clone());
        let alice = BareJid::new("alice@example.com").unwrap();
        nodes_become(&cache, &alice, &[]).await;
        other
            .enable(&registration("alice@example.com", "n1"))
            .await
            .unwrap();
        nodes_become(&cache, &alice, &["n1"]).await;
        other
            .disable(&registration("alice@example.com", "n1").key)
            .await
            .unwrap();
        nodes_become(&cache, &alice, &[]).await;
        shutdown.cancel();
        listening.await.unwrap();
    }

    /// The listening connection dies: the cache reads the database until the listener
    /// listens again, and changes are then told as before.
    #[tokio::test]
    async fn a_lost_listening_connection_is_replaced_and_changes_are_still_seen() {
        let Some((database, storage, _store)) = open().await else {
            return;
        };
        let pool = postgres_pool(&storage).clone();
        let cache = Arc::new(crate::registrations::CachedRegistrations::untrusted(
            Arc::new(PostgresRegistrations::new(pool.clone())),
        ));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listening = tokio::spawn(crate::registrations::listen(
            pool.clone(),
            Arc::clone(&cache),
            shutdown.clone(),
        ));
        trusted(&cache).await;
        let alice = BareJid::new("alice@example.com").unwrap();
        nodes_become(&cache, &alice, &[]).await;
        assert!(database.terminate_connections().await >= 1);
        let other = PostgresRegistrations::new(pool.clone());
        other
            .enable(&registration("alice@example.com", "n1"))
            .await
            .unwrap();
        nodes_become(&cache, &alice, &["n1"]).await;
        trusted(&cache).await;
        other
            .enable(&registration("alice@example.com", "n2"))
            .await
            .unwrap();
        nodes_become(&cache, &alice, &["n1", "n2"]).await;
        shutdown.cancel();
        listening.await.unwrap();
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
