//! The PostgreSQL engine against the conformance suites, each test in a database of its own
//! (`crate::test_database`), and what only this engine has: MongooseIM's column names,
//! migrations shared by several servers, and surviving connections that die.
//!
//! Without a reachable PostgreSQL every test here prints `SKIPPED: ...` and passes.

use std::sync::Arc;

use herald_sasl::{Credentials, ScramSecrets};
use jid::{BareJid, Jid};
use sqlx::PgPool;

use crate::migrations::OWN as MIGRATIONS;
type Migrations = crate::sql::migrate::Migrator<sqlx::Postgres>;
use crate::accounts::conformance::{
    account_store_conformance_tests, run_account_store_conformance,
};
use crate::archive::conformance::{archive_store_conformance_tests, run_archive_store_conformance};
use crate::offline::NewOfflineMessage;
use crate::offline::conformance::{offline_store_conformance_tests, run_offline_store_conformance};
use crate::roster::RosterItem;
use crate::roster::conformance::{roster_store_conformance_tests, run_roster_store_conformance};
use crate::test_database::TestDatabase;
use crate::user_data::conformance::{
    run_user_data_store_conformance, user_data_store_conformance_tests,
};
use crate::{
    AccountStore, ArchiveStore, OfflineStore, RosterStore, Storage, StorageError, UserDataStore,
};

/// An opened [`Storage`] and the database that must outlive it (dropped after it).
struct Opened {
    storage: Storage,
    database: TestDatabase,
}

impl Opened {
    fn accounts(&self) -> Arc<dyn AccountStore> {
        self.storage.accounts()
    }

    fn roster(&self) -> Arc<dyn RosterStore> {
        self.storage.roster()
    }

    fn offline(&self) -> Arc<dyn OfflineStore> {
        self.storage.offline()
    }

    fn user_data(&self) -> Arc<dyn UserDataStore> {
        self.storage.user_data()
    }

    fn archive(&self) -> Arc<dyn ArchiveStore> {
        self.storage.archive()
    }

    fn pool(&self) -> &PgPool {
        match self.storage.engine() {
            crate::Engine::Postgres(pool) => pool,
            crate::Engine::Sqlite(_) => panic!("a PostgreSQL storage"),
        }
    }
}

/// A fresh database, migrated, behind a pool of four connections; `None` if PostgreSQL is not
/// reachable.
async fn open() -> Option<Opened> {
    let database = TestDatabase::create().await?;
    let storage = database.open(4).await.unwrap();
    Some(Opened { storage, database })
}

mod accounts {
    use super::*;
    account_store_conformance_tests!(optional super::open);
}

mod roster {
    use super::*;
    roster_store_conformance_tests!(optional super::open);
}

mod offline {
    use super::*;
    offline_store_conformance_tests!(optional super::open);
}

mod user_data {
    use super::*;
    user_data_store_conformance_tests!(optional super::open);
}

mod archive {
    use super::*;
    archive_store_conformance_tests!(optional super::open);
}

#[tokio::test]
async fn the_whole_suite_passes_on_one_shared_store() {
    let Some(opened) = open().await else { return };
    run_account_store_conformance(opened.accounts()).await;
    run_roster_store_conformance(opened.roster()).await;
    run_offline_store_conformance(opened.offline()).await;
    run_user_data_store_conformance(opened.user_data()).await;
    run_archive_store_conformance(opened.archive()).await;
}

fn jid(text: &str) -> BareJid {
    BareJid::new(text).unwrap()
}

fn credentials() -> Credentials {
    let secrets = |len| ScramSecrets {
        salt: b"QSXCR+Q6sek8bf92".to_vec(),
        iterations: 4096,
        stored_key: vec![7; len],
        server_key: vec![9; len],
    };
    Credentials {
        sha1: secrets(20),
        sha256: secrets(32),
    }
}

/// A feature's table, as a feature crate registers it (herald-push does with its own).
const FEATURE: crate::MigrationSet = crate::MigrationSet {
    owner: "a feature",
    migrations: &[crate::Migration {
        version: 4,
        description: "a feature's table",
        sqlite: "CREATE TABLE a_feature (id INTEGER PRIMARY KEY)",
        postgres: "CREATE TABLE a_feature (id BIGINT PRIMARY KEY)",
    }],
};

#[tokio::test]
async fn every_migration_is_applied_once_and_recorded() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let storage = database.open_with(4, &[&FEATURE]).await.unwrap();
    let pool = match storage.engine() {
        crate::Engine::Postgres(pool) => pool.clone(),
        crate::Engine::Sqlite(_) => panic!("a PostgreSQL storage"),
    };
    let versions: Vec<i64> = storage
        .applied_migrations()
        .iter()
        .map(|applied| applied.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 11, 12, 13, 14]);
    assert!(
        Migrations::migrate(&pool, &[&FEATURE])
            .await
            .unwrap()
            .is_empty()
    );
    let reopened = database.open_with(1, &[&FEATURE]).await.unwrap();
    assert!(reopened.applied_migrations().is_empty());
    let recorded: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, [1, 2, 3, 4, 5, 6, 11, 12, 13, 14]);
    reopened.close().await;
    storage.close().await;
}

#[tokio::test]
async fn servers_opening_a_new_database_together_apply_each_migration_once() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url().to_owned();
            tokio::spawn(async move { Storage::open_postgres_url(&url, 2, &[]).await })
        })
        .collect();
    let mut applied = 0;
    for open in opens {
        let storage = open.await.unwrap().unwrap();
        applied += storage.applied_migrations().len();
        storage.close().await;
    }
    assert_eq!(applied, MIGRATIONS.len());
}

#[tokio::test]
async fn a_database_from_a_newer_herald_is_refused() {
    let Some(opened) = open().await else { return };
    sqlx::query("INSERT INTO schema_version VALUES (99, 'from the future', 0)")
        .execute(opened.pool())
        .await
        .unwrap();
    let error = opened.database.open(1).await.unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::SchemaTooNew {
                found: 99,
                supported
            } if supported == crate::migrations::latest_version(MIGRATIONS)
        ),
        "{error}"
    );
}

/// The columns of `table`, in order, with their types.
async fn columns(pool: &PgPool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn mongooseim_columns_are_kept_beside_herald_ones() {
    let Some(opened) = open().await else { return };
    let names = |columns: Vec<(String, String)>| -> Vec<String> {
        columns.into_iter().map(|(name, _)| name).collect()
    };
    let users = names(columns(opened.pool(), "users").await);
    for column in [
        "username",
        "server",
        "password",
        "pass_details",
        "created_at",
    ] {
        assert!(users.iter().any(|name| name == column), "users.{column}");
    }
    let roster = names(columns(opened.pool(), "rosterusers").await);
    for column in [
        "username",
        "server",
        "jid",
        "nick",
        "subscription",
        "ask",
        "askmessage",
        "subscribe",
        "type",
    ] {
        assert!(
            roster.iter().any(|name| name == column),
            "rosterusers.{column}"
        );
    }
    let offline = names(columns(opened.pool(), "offline_message").await);
    for column in [
        "id",
        "timestamp",
        "expire",
        "server",
        "username",
        "from_jid",
        "packet",
        "permanent_fields",
    ] {
        assert!(
            offline.iter().any(|name| name == column),
            "offline_message.{column}"
        );
    }
}

#[tokio::test]
async fn concurrent_updates_of_one_roster_item_are_serialised() {
    let Some(opened) = open().await else { return };
    let roster = opened.roster();
    let juliet = jid("juliet@capulet.example");
    let romeo = jid("romeo@montague.example");
    let writers: Vec<_> = (0..16)
        .map(|n| {
            let roster = Arc::clone(&roster);
            let (juliet, romeo) = (juliet.clone(), romeo.clone());
            tokio::spawn(async move {
                let contact = romeo.clone();
                roster
                    .update(
                        &juliet,
                        &romeo,
                        Box::new(move |current| {
                            let mut item =
                                current.cloned().unwrap_or_else(|| RosterItem::new(contact));
                            item.groups.push(format!("g{n:02}"));
                            Some(item)
                        }),
                    )
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let item = roster.item(&juliet, &romeo).await.unwrap().unwrap();
    assert_eq!(
        item.groups.len(),
        16,
        "an update was lost: {:?}",
        item.groups
    );
}

#[tokio::test]
async fn concurrent_senders_never_overshoot_the_offline_limit() {
    let Some(opened) = open().await else { return };
    let offline = opened.offline();
    let juliet = jid("juliet@capulet.example");
    let senders: Vec<_> = (0..12)
        .map(|_| {
            let offline = Arc::clone(&offline);
            let juliet = juliet.clone();
            tokio::spawn(async move {
                let from = Jid::new("romeo@montague.example/orchard").unwrap();
                let message = NewOfflineMessage {
                    from: &from,
                    stored_at: std::time::SystemTime::now(),
                    stanza: "<message/>",
                    metadata: "",
                };
                offline.store(&juliet, message, 5).await.unwrap()
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(offline.count(&juliet).await.unwrap(), 5);
}

#[tokio::test]
async fn two_servers_storing_for_the_same_recipients_at_once_never_overshoot_the_limit() {
    let Some(opened) = open().await else { return };
    // A second server on the same database: its own pool and its own batcher.
    let other = opened.database.open(4).await.unwrap();
    let recipients: Vec<BareJid> = ["juliet", "nurse", "tybalt", "mercutio"]
        .iter()
        .map(|name| jid(&format!("{name}@capulet.example")))
        .collect();
    let stores = [opened.offline(), other.offline()];
    // Every sender sends to every recipient, each starting with a different one: the batches
    // of both servers hold the same recipients in every order.
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let offline = Arc::clone(&stores[sender % 2]);
            let recipients = recipients.clone();
            tokio::spawn(async move {
                let from = Jid::new(&format!("romeo{sender}@montague.example/r")).unwrap();
                let mut outcomes = Vec::new();
                for n in 0..recipients.len() {
                    let recipient = &recipients[(sender + n) % recipients.len()];
                    let message = NewOfflineMessage {
                        from: &from,
                        stored_at: std::time::SystemTime::now(),
                        stanza: "<message/>",
                        metadata: "",
                    };
                    outcomes.push(offline.store(recipient, message, 10).await.unwrap());
                }
                outcomes
            })
        })
        .collect();
    let mut stored = 0;
    for sender in senders {
        stored += sender
            .await
            .unwrap()
            .iter()
            .filter(|outcome| matches!(outcome, crate::offline::Stored::Stored(_)))
            .count();
    }
    for recipient in &recipients {
        assert_eq!(
            opened.offline().count(recipient).await.unwrap(),
            10,
            "{recipient}"
        );
    }
    assert_eq!(stored, 10 * recipients.len());
    other.close().await;
}

#[tokio::test]
async fn operations_succeed_again_after_the_connections_are_terminated() {
    let Some(opened) = open().await else { return };
    let accounts = opened.accounts();
    let juliet = jid("juliet@capulet.example");
    accounts.create(&juliet, &credentials()).await.unwrap();
    // Several connections in the pool, all idle now.
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let accounts = Arc::clone(&accounts);
            let juliet = juliet.clone();
            tokio::spawn(async move { accounts.exists(&juliet).await.unwrap() })
        })
        .collect();
    for task in busy {
        assert!(task.await.unwrap());
    }
    assert!(opened.database.terminate_connections().await > 0);
    // The pool checks connections before handing them out and replaces the dead ones.
    for _ in 0..8 {
        assert!(accounts.exists(&juliet).await.unwrap());
    }
    let romeo = jid("romeo@montague.example");
    accounts.create(&romeo, &credentials()).await.unwrap();
    assert_eq!(accounts.list(None).await.unwrap(), [juliet, romeo]);
}

#[tokio::test]
async fn a_query_cut_off_mid_run_fails_transiently_and_writes_nothing() {
    let Some(opened) = open().await else { return };
    let pool = opened.pool().clone();
    // A transaction that is still open when its connection is terminated.
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO roster_version (server, username, version)
         VALUES ('capulet.example', 'juliet', '1')",
    )
    .execute(&mut *transaction)
    .await
    .unwrap();
    assert!(opened.database.terminate_connections().await > 0);
    let error: StorageError = sqlx::query("SELECT pg_sleep(0)")
        .execute(&mut *transaction)
        .await
        .unwrap_err()
        .into();
    assert!(error.is_transient(), "{error:?}");
    drop(transaction);
    let roster = opened.roster();
    let juliet = jid("juliet@capulet.example");
    assert_eq!(roster.version(&juliet).await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    let options = crate::PostgresOptions {
        host: "127.0.0.1".into(),
        port: 1,
        database: "herald".into(),
        username: "herald".into(),
        password: Some("secret".into()),
        pool_size: 1,
    };
    let error = Storage::open_postgres(&options, &[]).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("herald@127.0.0.1:1/herald"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    assert!(error.is_transient(), "{error:?}");
    assert!(!format!("{options:?}").contains("secret"));
}

#[tokio::test]
async fn debug_names_the_engine_and_target() {
    let Some(opened) = open().await else { return };
    let debug = format!("{:?}", opened.storage);
    assert!(debug.contains("postgres"), "{debug}");
    assert!(debug.contains(opened.database.name()), "{debug}");
}

#[tokio::test]
async fn store_for_account_stores_only_for_existing_accounts() {
    let Some(opened) = open().await else { return };
    crate::offline::conformance::store_for_account_stores_only_for_existing_accounts(
        opened.accounts().as_ref(),
        opened.offline().as_ref(),
    )
    .await;
}

mod batched_offline {
    use super::*;
    use crate::sql::offline::batch_tests;

    #[tokio::test]
    async fn a_batch_keeps_each_recipients_order_and_limit_and_skips_missing_accounts() {
        let Some(opened) = open().await else { return };
        batch_tests::a_batch_keeps_each_recipients_order_and_limit_and_skips_missing_accounts(
            &opened.storage,
            opened.pool(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_message_the_database_refuses_fails_alone_and_its_batch_is_stored() {
        let Some(opened) = open().await else { return };
        // A legal JID longer than MongooseIM's from_jid column (VARCHAR(250)).
        let long = Jid::new(&format!("{}@montague.example/r", "r".repeat(400))).unwrap();
        batch_tests::a_message_the_database_refuses_fails_alone_and_its_batch_is_stored(
            &opened.storage,
            opened.pool(),
            &long,
        )
        .await;
    }
}

#[tokio::test]
async fn archived_rows_of_version_12_become_one_row_a_message_kept_by_their_owner() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let old = PgPool::connect(database.url()).await.unwrap();
    let before_13: Vec<crate::migrations::Migration> = MIGRATIONS
        .iter()
        .copied()
        .filter(|m| m.version < 13)
        .collect();
    Migrations::apply(&old, &before_13).await.unwrap();
    crate::sql::archive::legacy::insert(&old).await;
    old.close().await;

    let storage = database.open_with(4, &[&FEATURE]).await.unwrap();
    let archive = storage.archive();
    let query = |owner: &str, with: Option<(&str, &str)>| {
        let archive = Arc::clone(&archive);
        let owner = BareJid::new(owner).unwrap();
        let query = crate::archive::ArchiveQuery {
            with_bare: with.map(|(bare, _)| bare.to_owned()),
            with_resource: with.map(|(_, resource)| resource.to_owned()),
            ..crate::archive::ArchiveQuery::all(10)
        };
        async move {
            let page = archive.query(&owner, &query).await.unwrap();
            page.items.iter().map(|found| found.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(query("juliet@capulet.example", None).await, [4242]);
    assert_eq!(query("romeo@montague.example", None).await, [4243]);
    assert_eq!(
        query("nurse@capulet.example", None).await,
        [4242],
        "rows are keyed by id and sender: the nurse's keeps its id"
    );
    assert_eq!(
        query(
            "juliet@capulet.example",
            Some(("romeo@montague.example", "orchard"))
        )
        .await,
        [4242]
    );
    assert_eq!(
        query(
            "romeo@montague.example",
            Some(("juliet@capulet.example", ""))
        )
        .await,
        [4243],
        "his row's recipient resource was the old remote resource"
    );
    assert!(crate::archive::next_id() > 4243);
    storage.close().await;
}

#[tokio::test]
async fn each_side_is_kept_only_with_an_account() {
    let Some(opened) = open().await else { return };
    crate::archive::conformance::each_side_is_kept_only_with_an_account(&opened.storage).await;
    opened.storage.close().await;
}
