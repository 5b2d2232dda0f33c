//! The SQLite engine against the conformance suite, in memory and in a file, and what only a
//! file has: persistence, migrations on reopen, pragmas, errors naming the path.

use std::path::PathBuf;
use std::sync::Arc;

use herald_sasl::{Credentials, ScramSecrets};
use jid::{BareJid, Jid};
use sqlx::SqlitePool;
use tempfile::TempDir;

use crate::migrations::OWN as MIGRATIONS;
type Migrations = crate::sql::migrate::Migrator<sqlx::Sqlite>;
use crate::accounts::conformance::{
    account_store_conformance_tests, run_account_store_conformance,
};
use crate::archive::conformance::{archive_store_conformance_tests, run_archive_store_conformance};
use crate::migrations::Migration;
use crate::offline::conformance::{offline_store_conformance_tests, run_offline_store_conformance};
use crate::offline::{NewOfflineMessage, Stored};
use crate::roster::conformance::{roster_store_conformance_tests, run_roster_store_conformance};
use crate::roster::{RosterItem, SubscriptionState};
use crate::user_data::conformance::{
    run_user_data_store_conformance, user_data_store_conformance_tests,
};
use crate::{
    AccountStore, ArchiveStore, OfflineStore, RosterStore, Storage, StorageError, UserDataStore,
};

/// An opened [`Storage`] and the directory that must outlive it.
struct Opened {
    storage: Storage,
    _directory: Option<TempDir>,
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
}

async fn open_in_memory() -> Opened {
    Opened {
        storage: Storage::open_sqlite_in_memory().await.unwrap(),
        _directory: None,
    }
}

async fn open_file() -> Opened {
    let directory = TempDir::new().unwrap();
    let storage = Storage::open_sqlite(&directory.path().join("herald.db"))
        .await
        .unwrap();
    Opened {
        storage,
        _directory: Some(directory),
    }
}

mod in_memory {
    use super::*;
    account_store_conformance_tests!(super::open_in_memory);
}

mod in_a_file {
    use super::*;
    account_store_conformance_tests!(super::open_file);
}

mod roster_in_memory {
    use super::*;
    roster_store_conformance_tests!(super::open_in_memory);
}

mod roster_in_a_file {
    use super::*;
    roster_store_conformance_tests!(super::open_file);
}

mod offline_in_memory {
    use super::*;
    offline_store_conformance_tests!(super::open_in_memory);
}

mod offline_in_a_file {
    use super::*;
    offline_store_conformance_tests!(super::open_file);
}

mod user_data_in_memory {
    use super::*;
    user_data_store_conformance_tests!(super::open_in_memory);
}

mod user_data_in_a_file {
    use super::*;
    user_data_store_conformance_tests!(super::open_file);
}

mod archive_in_memory {
    use super::*;
    archive_store_conformance_tests!(super::open_in_memory);
}

mod archive_in_a_file {
    use super::*;
    archive_store_conformance_tests!(super::open_file);
}

#[tokio::test]
async fn the_whole_suite_passes_on_one_shared_in_memory_store() {
    let opened = open_in_memory().await;
    run_account_store_conformance(opened.accounts()).await;
    run_roster_store_conformance(opened.roster()).await;
    run_offline_store_conformance(opened.offline()).await;
    run_user_data_store_conformance(opened.user_data()).await;
    run_archive_store_conformance(opened.archive()).await;
}

#[tokio::test]
async fn the_whole_suite_passes_on_one_shared_file_store() {
    let opened = open_file().await;
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

/// The pool of an opened SQLite [`Storage`], to look under the store.
fn pool(storage: &Storage) -> &SqlitePool {
    match storage.engine() {
        crate::Engine::Sqlite(pool) => pool,
        crate::Engine::Postgres(_) => panic!("a SQLite storage"),
    }
}

/// `(version, applied_at)` of every recorded migration.
async fn recorded_migrations(pool: &SqlitePool) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT version, applied_at FROM schema_version ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn database_in(directory: &TempDir) -> PathBuf {
    directory.path().join("herald.db")
}

#[tokio::test]
async fn accounts_survive_close_and_reopen() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let juliet = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS).unwrap();
    let storage = Storage::open_sqlite(&path).await.unwrap();
    storage
        .accounts()
        .create(&jid("juliet@capulet.example"), &juliet)
        .await
        .unwrap();
    storage.close().await;

    let storage = Storage::open_sqlite(&path).await.unwrap();
    let accounts = storage.accounts();
    assert_eq!(
        accounts
            .credentials(&jid("juliet@capulet.example"))
            .await
            .unwrap(),
        Some(juliet)
    );
    assert_eq!(
        accounts.list(None).await.unwrap(),
        [jid("juliet@capulet.example")]
    );
    storage.close().await;
}

#[tokio::test]
async fn reopening_applies_no_migration_again() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let storage = Storage::open_sqlite(&path).await.unwrap();
    let first = recorded_migrations(pool(&storage)).await;
    assert_eq!(first.len(), MIGRATIONS.len());
    storage.close().await;

    let storage = Storage::open_sqlite(&path).await.unwrap();
    assert_eq!(recorded_migrations(pool(&storage)).await, first);
    assert!(
        Migrations::migrate(pool(&storage), &[])
            .await
            .unwrap()
            .is_empty()
    );
    storage.close().await;
}

#[tokio::test]
async fn a_new_migration_is_applied_to_an_existing_database() {
    let directory = TempDir::new().unwrap();
    let storage = Storage::open_sqlite(&database_in(&directory))
        .await
        .unwrap();
    storage
        .accounts()
        .create(&jid("juliet@capulet.example"), &credentials())
        .await
        .unwrap();
    let next = Migration {
        version: crate::migrations::latest_version(MIGRATIONS) + 1,
        description: "test: rosters",
        sqlite: "CREATE TABLE rosters (server TEXT NOT NULL, username TEXT NOT NULL) STRICT;
              CREATE INDEX rosters_by_user ON rosters (server, username);",
        postgres: "",
    };
    let list = [MIGRATIONS, &[next]].concat();

    assert_eq!(
        Migrations::apply(pool(&storage), &list)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        Migrations::current_version(pool(&storage)).await.unwrap(),
        next.version
    );
    assert!(
        storage
            .accounts()
            .exists(&jid("juliet@capulet.example"))
            .await
            .unwrap()
    );
    assert!(
        Migrations::apply(pool(&storage), &list)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_and_named() {
    let storage = Storage::open_sqlite_in_memory().await.unwrap();
    let broken = Migration {
        version: crate::migrations::latest_version(MIGRATIONS) + 1,
        description: "test: broken",
        sqlite: "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table;",
        postgres: "",
    };
    let list = [MIGRATIONS, &[broken]].concat();

    let error = Migrations::apply(pool(&storage), &list).await.unwrap_err();
    assert!(
        matches!(error, StorageError::Migration { version, .. } if version == broken.version),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("version {}", broken.version)),
        "{error}"
    );
    let latest = crate::migrations::latest_version(MIGRATIONS);
    assert_eq!(
        Migrations::current_version(pool(&storage)).await.unwrap(),
        latest
    );
    let half_done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'half_done')")
            .fetch_one(pool(&storage))
            .await
            .unwrap();
    assert!(
        !half_done,
        "the failed migration's first statement was kept"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_herald_is_refused() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let storage = Storage::open_sqlite(&path).await.unwrap();
    sqlx::query(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', 0)",
    )
    .execute(pool(&storage))
    .await
    .unwrap();
    storage.close().await;

    let error = Storage::open_sqlite(&path).await.unwrap_err();
    let supported = crate::migrations::latest_version(MIGRATIONS);
    assert!(
        matches!(error, StorageError::SchemaTooNew { found: 99, supported: s } if s == supported),
        "{error:?}"
    );
}

#[tokio::test]
async fn opening_creates_missing_parent_directories() {
    let directory = TempDir::new().unwrap();
    let path = directory.path().join("var/lib/herald/herald.db");
    let storage = Storage::open_sqlite(&path).await.unwrap();
    assert!(path.is_file());
    storage.close().await;
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_named_in_the_error() {
    let directory = TempDir::new().unwrap();
    let file = directory.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let error = Storage::open_sqlite(&file.join("herald.db"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Io { path, .. } if path == &file),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_named_in_the_error() {
    let directory = TempDir::new().unwrap();
    // A directory where the database file should be.
    let path = directory.path().join("herald.db");
    std::fs::create_dir(&path).unwrap();
    let error = Storage::open_sqlite(&path).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Open { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_file_uses_wal_normal_sync_and_foreign_keys() {
    let opened = open_file().await;
    let pool = pool(&opened.storage);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 1, "NORMAL");
    assert_eq!(foreign_keys, 1);
}

#[tokio::test]
async fn the_users_table_has_scram_secrets_and_no_password() {
    let opened = open_in_memory().await;
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('users')")
        .fetch_all(pool(&opened.storage))
        .await
        .unwrap();
    assert_eq!(
        columns,
        [
            "server",
            "username",
            "sha1_salt",
            "sha1_iterations",
            "sha1_stored_key",
            "sha1_server_key",
            "sha256_salt",
            "sha256_iterations",
            "sha256_stored_key",
            "sha256_server_key",
            "created_at",
        ]
    );
}

#[tokio::test]
async fn an_account_gets_its_creation_time() {
    let opened = open_in_memory().await;
    opened
        .accounts()
        .create(&jid("juliet@capulet.example"), &credentials())
        .await
        .unwrap();
    let created_at: i64 = sqlx::query_scalar("SELECT created_at FROM users")
        .fetch_one(pool(&opened.storage))
        .await
        .unwrap();
    assert!((crate::unix_time() - created_at).abs() < 60, "{created_at}");
}

#[tokio::test]
async fn a_row_written_outside_herald_is_reported_as_corrupt() {
    let opened = open_in_memory().await;
    let pool = pool(&opened.storage);
    sqlx::query(
        "INSERT INTO users VALUES ('capulet.example', 'Juliet', x'', 1, x'', x'', x'', -1, x'', x'', 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    let listed = opened.accounts().list(None).await;
    assert!(
        matches!(listed, Err(StorageError::Corrupt(_))),
        "{listed:?}"
    );

    sqlx::query("UPDATE users SET username = 'juliet'")
        .execute(pool)
        .await
        .unwrap();
    let read = opened
        .accounts()
        .credentials(&jid("juliet@capulet.example"))
        .await;
    assert!(
        matches!(read, Err(StorageError::Corrupt(_))),
        "negative iterations: {read:?}"
    );
}

#[tokio::test]
async fn concurrent_writers_wait_for_each_other() {
    let opened = open_file().await;
    let accounts = opened.accounts();
    let writers: Vec<_> = (0..16)
        .map(|n| {
            let accounts = Arc::clone(&accounts);
            tokio::spawn(async move {
                accounts
                    .create(&jid(&format!("user{n:02}@busy.example")), &credentials())
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(accounts.list(Some("busy.example")).await.unwrap().len(), 16);
}

#[tokio::test]
async fn a_closed_storage_refuses_operations() {
    let opened = open_in_memory().await;
    let accounts = opened.accounts();
    opened.storage.clone().close().await;
    let result = accounts.exists(&jid("juliet@capulet.example")).await;
    assert!(
        matches!(&result, Err(error @ StorageError::Database(sqlx::Error::PoolClosed)) if !error.is_transient()),
        "{result:?}"
    );
}

#[tokio::test]
async fn debug_names_the_engine_and_file() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let storage = Storage::open_sqlite(&path).await.unwrap();
    let debug = format!("{storage:?}");
    assert!(debug.contains("sqlite"), "{debug}");
    assert!(debug.contains(path.to_str().unwrap()), "{debug}");
    storage.close().await;
}

#[tokio::test]
async fn rosters_and_offline_messages_survive_close_and_reopen() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let juliet = jid("juliet@capulet.example");
    let romeo = Jid::new("romeo@montague.example/orchard").unwrap();
    let storage = Storage::open_sqlite(&path).await.unwrap();
    let item = RosterItem {
        name: Some("Romeo".into()),
        state: SubscriptionState::Both,
        groups: vec!["Friends".into()],
        ..RosterItem::new(romeo.clone().into_bare())
    };
    let stored = item.clone();
    storage
        .roster()
        .update(
            &juliet,
            &romeo.clone().into_bare(),
            Box::new(move |_| Some(stored)),
        )
        .await
        .unwrap();
    let version = storage.roster().bump_version(&juliet).await.unwrap();
    let message = NewOfflineMessage {
        from: &romeo,
        stored_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        stanza: "<message xmlns='jabber:client'><body>wherefore</body></message>",
        metadata: "{}",
    };
    assert!(matches!(
        storage.offline().store(&juliet, message, 10).await.unwrap(),
        Stored::Stored(_)
    ));
    storage.close().await;

    let storage = Storage::open_sqlite(&path).await.unwrap();
    assert_eq!(storage.roster().items(&juliet).await.unwrap(), [item]);
    assert_eq!(
        storage.roster().version(&juliet).await.unwrap(),
        Some(version)
    );
    let messages = storage.offline().take(&juliet).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].stanza, message.stanza);
    storage.close().await;
}

#[tokio::test]
async fn concurrent_updates_of_one_roster_item_are_serialised() {
    let opened = open_file().await;
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
async fn the_roster_table_refuses_a_state_that_does_not_exist() {
    let opened = open_in_memory().await;
    // "To" with a pending outbound request: the user asks for what it already has.
    let inserted = sqlx::query(
        "INSERT INTO rosterusers VALUES ('capulet.example', 'juliet', 'romeo@montague.example',
             '', 'T', 'O', '', 0)",
    )
    .execute(pool(&opened.storage))
    .await;
    assert!(inserted.is_err(), "{inserted:?}");
}

#[tokio::test]
async fn a_roster_row_written_outside_herald_is_reported_as_corrupt() {
    let opened = open_in_memory().await;
    sqlx::query(
        "INSERT INTO rosterusers VALUES ('capulet.example', 'juliet', 'Romeo@Montague.example',
             '', 'B', 'N', '', 0)",
    )
    .execute(pool(&opened.storage))
    .await
    .unwrap();
    let items = opened.roster().items(&jid("juliet@capulet.example")).await;
    assert!(matches!(items, Err(StorageError::Corrupt(_))), "{items:?}");
}

#[tokio::test]
async fn store_for_account_stores_only_for_existing_accounts_in_memory() {
    let opened = open_in_memory().await;
    crate::offline::conformance::store_for_account_stores_only_for_existing_accounts(
        opened.accounts().as_ref(),
        opened.offline().as_ref(),
    )
    .await;
}

#[tokio::test]
async fn store_for_account_stores_only_for_existing_accounts_file() {
    let opened = open_file().await;
    crate::offline::conformance::store_for_account_stores_only_for_existing_accounts(
        opened.accounts().as_ref(),
        opened.offline().as_ref(),
    )
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_file_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let directory = TempDir::new().unwrap();
    let data = directory.path().join("data");
    let path = data.join("herald.db");
    let storage = Storage::open_sqlite(&path).await.unwrap();
    storage.close().await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn full_durability_opens_and_keeps_what_was_committed() {
    let directory = TempDir::new().unwrap();
    let path = directory.path().join("herald.db");
    let storage = Storage::open_sqlite_with(&path, crate::Durability::Full, &[])
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool(&storage))
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    storage.close().await;
}

#[tokio::test]
async fn the_archive_lives_in_a_file_of_its_own_and_rows_of_the_main_file_move_into_it() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    assert_eq!(
        crate::archive_path(&path).file_name().unwrap(),
        format!(
            "{}-archive.{}",
            path.file_stem().unwrap().to_string_lossy(),
            path.extension().unwrap().to_string_lossy()
        )
        .as_str()
    );
    let storage = Storage::open_sqlite(&path).await.unwrap();
    let juliet = jid("juliet@capulet.example");
    storage
        .accounts()
        .create(
            &juliet,
            &Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS).unwrap(),
        )
        .await
        .unwrap();
    // A row where an earlier version kept it: the main file's table.
    let crate::Engine::Sqlite(main) = storage.engine() else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO mam_message (id, owner, remote_bare_jid, remote_resource, direction, \
         from_jid, origin_id, search_body, message) \
         VALUES (4242, 'juliet@capulet.example', 'romeo@montague.example', '', 'I', \
         'romeo@montague.example/orchard', NULL, 'hi', '<message/>')",
    )
    .execute(main)
    .await
    .unwrap();
    storage.close().await;
    assert!(crate::archive_path(&path).exists());

    let storage = Storage::open_sqlite(&path).await.unwrap();
    let page = storage
        .archive()
        .query(&juliet, &crate::archive::ArchiveQuery::all(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "the row moved into the archive's file");
    assert_eq!(page.items[0].id, 4242);
    let crate::Engine::Sqlite(main) = storage.engine() else {
        unreachable!()
    };
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mam_message")
        .fetch_one(main)
        .await
        .unwrap();
    assert_eq!(left, 0, "and left the main file");
    storage.close().await;
}

/// The `CREATE TABLE` text of `table`.
async fn table_sql(pool: &SqlitePool, table: &str) -> String {
    sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A pool on the database file at `path` as herald opens it, with no migration applied.
async fn bare_pool(path: &std::path::Path) -> SqlitePool {
    super::open_pool(path, super::Durability::Normal, "herald-db")
        .await
        .unwrap()
}

#[tokio::test]
async fn offline_messages_of_version_11_keep_their_rows_and_ids_through_the_rebuild() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let before_12: Vec<Migration> = MIGRATIONS
        .iter()
        .copied()
        .filter(|m| m.version < 12)
        .collect();
    let old = bare_pool(&path).await;
    Migrations::apply(&old, &before_12).await.unwrap();
    assert!(table_sql(&old, "offline_message").await.contains("length("));
    for n in 1..=3 {
        sqlx::query(
            "INSERT INTO offline_message (timestamp, server, username, from_jid, packet) \
             VALUES ($1, 'capulet.example', 'juliet', 'romeo@montague.example', '<message/>')",
        )
        .bind(n)
        .execute(&old)
        .await
        .unwrap();
    }
    // The newest was delivered: its id must still never be given again.
    sqlx::query("DELETE FROM offline_message WHERE id = 3")
        .execute(&old)
        .await
        .unwrap();
    old.close().await;

    let storage = Storage::open_sqlite(&path).await.unwrap();
    let main = pool(&storage);
    let sql = table_sql(main, "offline_message").await;
    assert!(!sql.contains("length("), "no function in a CHECK: {sql}");
    assert!(sql.contains("server <> ''"), "{sql}");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM offline_message ORDER BY id")
        .fetch_all(main)
        .await
        .unwrap();
    assert_eq!(ids, [1, 2]);
    let stored = storage
        .offline()
        .store(
            &jid("juliet@capulet.example"),
            NewOfflineMessage {
                from: &Jid::new("romeo@montague.example").unwrap(),
                stored_at: std::time::SystemTime::now(),
                stanza: "<message/>",
                metadata: "",
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        stored,
        Stored::Stored(4),
        "the counter went through the rebuild"
    );
    let refused = sqlx::query(
        "INSERT INTO offline_message (timestamp, server, username, from_jid, packet) \
         VALUES (1, '', 'juliet', 'romeo@montague.example', '<message/>')",
    )
    .execute(main)
    .await;
    assert!(refused.is_err(), "an empty account is still refused");
    storage.close().await;
}

#[tokio::test]
async fn an_archive_file_of_version_1_keeps_its_rows_through_the_rebuilds() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let old = bare_pool(&crate::archive_path(&path)).await;
    Migrations::apply(&old, &crate::migrations::ARCHIVE_FILE[..1])
        .await
        .unwrap();
    assert!(table_sql(&old, "mam_message").await.contains("length("));
    crate::sql::archive::legacy::insert(&old).await;
    old.close().await;

    let storage = Storage::open_sqlite(&path).await.unwrap();
    let archive = storage.archive();
    let all = |owner: &str| {
        let archive = Arc::clone(&archive);
        let owner = jid(owner);
        async move {
            archive
                .query(&owner, &crate::archive::ArchiveQuery::all(10))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|found| found.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all("juliet@capulet.example").await,
        [4242],
        "the rows went through the rebuilds"
    );
    assert_eq!(
        all("romeo@montague.example").await,
        [4243],
        "his row only: hers is hers"
    );
    let nurse = all("nurse@capulet.example").await;
    assert_eq!(nurse.len(), 1, "a row whose id was taken is kept");
    assert!(nurse[0] > 4243, "under a new id after the last");
    let with_orchard = crate::archive::ArchiveQuery {
        with_bare: Some("romeo@montague.example".to_owned()),
        with_resource: Some("orchard".to_owned()),
        ..crate::archive::ArchiveQuery::all(10)
    };
    assert_eq!(
        archive
            .query(&jid("juliet@capulet.example"), &with_orchard)
            .await
            .unwrap()
            .count,
        1
    );
    assert!(
        crate::archive::next_id() > nurse[0],
        "ids given after the start are above the archive's"
    );
    storage.close().await;
    let archive = bare_pool(&crate::archive_path(&path)).await;
    let sql = table_sql(&archive, "mam_message").await;
    assert!(!sql.contains("length("), "no function in a CHECK: {sql}");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'mam_message' \
         AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&archive)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "i_mam_message_conversation",
            "i_mam_message_received",
            "i_mam_message_sent"
        ]
    );
    archive.close().await;
}

/// `herald user remove` beside a running server: the account goes through another
/// connection to the file, and the server's archive, which remembered it, leaves it out of
/// what it writes next (the trigger of version 14 counts the removal).
#[tokio::test]
async fn an_account_removed_through_another_handle_is_left_out_of_the_next_batch() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    let server = Storage::open_sqlite(&path).await.unwrap();
    let romeo: BareJid = "romeo@other-handle.example".parse().unwrap();
    let juliet: BareJid = "juliet@other-handle.example".parse().unwrap();
    let credentials = herald_sasl::Credentials::from_password("pencil", 4096).unwrap();
    for user in [&romeo, &juliet] {
        server.accounts().create(user, &credentials).await.unwrap();
    }
    let archive = server.archive();
    let message = |text: &str| crate::archive::ArchivedMessage {
        id: crate::archive::next_id(),
        sender: romeo.clone(),
        sender_resource: "phone".into(),
        recipient: juliet.clone(),
        recipient_resource: String::new(),
        kept: crate::archive::Kept::Both,
        origin_id: None,
        body: text.into(),
        message: format!("<message xmlns='jabber:client'><body>{text}</body></message>").into(),
    };
    let first = message("first");
    archive.append(vec![first.clone()], true).await.unwrap();
    let cli = Storage::open_sqlite(&path).await.unwrap();
    assert!(cli.accounts().remove(&juliet).await.unwrap());
    cli.close().await;
    let second = message("second");
    archive.append(vec![second.clone()], true).await.unwrap();
    let all = crate::archive::ArchiveQuery::all(10);
    let ids = |page: crate::archive::ArchivePage| -> Vec<i64> {
        page.items.iter().map(|found| found.id).collect()
    };
    assert_eq!(
        ids(archive.query(&romeo, &all).await.unwrap()),
        [first.id, second.id]
    );
    assert_eq!(ids(archive.query(&juliet, &all).await.unwrap()), [first.id]);
    server.close().await;
}

#[tokio::test]
async fn each_side_is_kept_only_with_an_account_in_a_file_and_in_memory() {
    let directory = TempDir::new().unwrap();
    let storage = Storage::open_sqlite(&database_in(&directory))
        .await
        .unwrap();
    crate::archive::conformance::each_side_is_kept_only_with_an_account(&storage).await;
    storage.close().await;
    let storage = Storage::open_sqlite_in_memory().await.unwrap();
    crate::archive::conformance::each_side_is_kept_only_with_an_account(&storage).await;
    storage.close().await;
}

/// A connection to the file at `path` that fails at once on a lock instead of waiting.
async fn impatient(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::ZERO)
        .connect()
        .await
        .unwrap()
}

/// Whether a write transaction on `connection` can begin now.
async fn can_write(connection: &mut sqlx::SqliteConnection) -> bool {
    match sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await
    {
        Ok(_) => {
            sqlx::query("COMMIT")
                .execute(&mut *connection)
                .await
                .unwrap();
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn an_open_archive_batch_locks_the_archive_file_and_not_the_main_file() {
    let directory = TempDir::new().unwrap();
    let path = database_in(&directory);
    Storage::open_sqlite(&path).await.unwrap().close().await;
    let (main, _) = super::open_file(&path, super::Durability::Normal, &[])
        .await
        .unwrap();
    let archive_path = crate::archive_path(&path);
    let (archive, attach) =
        super::open_archive_file(&archive_path, &path, super::Durability::Normal)
            .await
            .unwrap();
    // The archive's writer as `Storage` starts it: a connection of its own attaching the main
    // file, each batch begun with `ARCHIVE_BEGIN`.
    let commits = crate::sql::group_commit::GroupCommit::start_dedicated(
        archive.clone(),
        Some(attach),
        Some(super::ARCHIVE_BEGIN),
    );
    let (begun, in_batch) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let batch = tokio::spawn(async move {
        commits
            .write(move |connection| {
                Box::pin(async move {
                    // What a batch reads of the main file: its count of removals.
                    let removals: i64 =
                        sqlx::query_scalar("SELECT removals FROM herald_account_removals")
                            .fetch_one(&mut *connection)
                            .await?;
                    let _ = begun.send(removals);
                    let _ = released.await;
                    Ok(())
                })
            })
            .await
    });
    assert_eq!(in_batch.await.unwrap(), 0);

    assert!(
        can_write(&mut impatient(&path).await).await,
        "the main file's writers do not wait for an archive batch"
    );
    assert!(
        !can_write(&mut impatient(&archive_path).await).await,
        "the archive's file is locked from the batch's beginning"
    );
    release.send(()).unwrap();
    batch.await.unwrap().unwrap();
    assert!(can_write(&mut impatient(&archive_path).await).await);
    main.close().await;
    archive.close().await;
}
