//! Schema migrations: how the database schema is created and upgraded when it is opened.
//!
//! Each engine keeps an ordered list of [`Migration`]s, numbered 1, 2, 3, ... A
//! `schema_version` table records the versions already applied. On open, the engine applies
//! the missing ones in order, each in its own transaction together with its `schema_version`
//! row, so a migration is either wholly applied and recorded or not at all. Migrations are
//! never edited once released: a schema change is a new migration at the end of the list.
//!
//! A feature crate owns its tables: it gives its migrations for both engines as a
//! [`MigrationSet`] (herald-push: `event_pusher_push_subscription`), and whoever opens the
//! database passes the sets of the features it runs. The versions form one sequence: this
//! crate's migrations and the features' interleave by number, and a new migration, whoever
//! owns it, takes the next number.
//!
//! On SQLite, a table written in bulk (offline messages, the archive) must not have a CHECK
//! that calls a function (`length(x) > 0`; write `x <> ''`), and its inserts skip what breaks
//! a constraint (`INSERT OR IGNORE`): a statement that writes several rows (or is an `INSERT
//! ... SELECT`) and may fail half-way makes SQLite keep a statement journal, a copy of every
//! page the statement changes (migration 12 and the archive file's version 2 rebuilt the
//! tables that had one).

/// One step of the schema, with its statements for each engine.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The schema version this step produces; the list is numbered 1, 2, 3, ... in order.
    pub version: i64,
    /// What the step does, recorded in `schema_version` and the log.
    pub description: &'static str,
    /// The statements on SQLite, run as one transaction.
    pub sqlite: &'static str,
    /// The statements on PostgreSQL, run as one transaction.
    pub postgres: &'static str,
}

/// The migrations a feature crate owns.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// The feature, for messages.
    pub owner: &'static str,
    /// Its migrations.
    pub migrations: &'static [Migration],
}

/// This crate's own tables. Append only: a released migration never changes.
pub(crate) const OWN: &[Migration] = &[
    Migration {
        version: 1,
        description: "accounts: users with SCRAM-SHA-1 and SCRAM-SHA-256 secrets",
        sqlite: include_str!("sqlite/migrations/0001_users.sql"),
        postgres: include_str!("postgres/migrations/0001_users.sql"),
    },
    Migration {
        version: 2,
        description: "rosters: rosterusers, rostergroups, roster_version",
        sqlite: include_str!("sqlite/migrations/0002_roster.sql"),
        postgres: include_str!("postgres/migrations/0002_roster.sql"),
    },
    Migration {
        version: 3,
        description: "offline messages: offline_message",
        sqlite: include_str!("sqlite/migrations/0003_offline.sql"),
        postgres: include_str!("postgres/migrations/0003_offline.sql"),
    },
    // Versions 4, 7, 8, 9 and 10 are herald-push's (`FEATURE_VERSIONS`).
    Migration {
        version: 5,
        description: "per-user data of the core modules: herald_user_data (blocking, vCards, PEP)",
        sqlite: include_str!("sqlite/migrations/0005_user_data.sql"),
        postgres: include_str!("postgres/migrations/0005_user_data.sql"),
    },
    Migration {
        version: 6,
        description: "message archive (XEP-0313): mam_message",
        sqlite: include_str!("sqlite/migrations/0006_archive.sql"),
        postgres: include_str!("postgres/migrations/0006_archive.sql"),
    },
    // Version 10 is herald-push's.
    Migration {
        version: 11,
        description: "offline messages stored in batches: herald_store_offline (PostgreSQL)",
        sqlite: include_str!("sqlite/migrations/0011_offline_batch.sql"),
        postgres: include_str!("postgres/migrations/0011_offline_batch.sql"),
    },
    Migration {
        version: 12,
        description: "offline_message checked without function calls (SQLite: no statement journal per store)",
        sqlite: include_str!("sqlite/migrations/0012_offline_checks.sql"),
        postgres: include_str!("postgres/migrations/0012_offline_checks.sql"),
    },
    Migration {
        version: 13,
        description: "the archive as one row a message for both archives, on integer keys (PostgreSQL)",
        sqlite: include_str!("sqlite/migrations/0013_archive_one_row.sql"),
        postgres: include_str!("postgres/migrations/0013_archive_one_row.sql"),
    },
    Migration {
        version: 14,
        description: "account removals counted (SQLite: the archive's writer remembers the accounts it found)",
        sqlite: include_str!("sqlite/migrations/0014_account_removals.sql"),
        postgres: include_str!("postgres/migrations/0014_account_removals.sql"),
    },
];

/// The schema of the archive's own database file on SQLite (numbered apart from [`OWN`]; the
/// main file's `mam_message` of version 6 is emptied into it at start and left unused).
pub(crate) const ARCHIVE_FILE: &[Migration] = &[
    Migration {
        version: 1,
        description: "message archive (XEP-0313): mam_message, in a file of its own",
        sqlite: include_str!("sqlite/migrations/0006_archive.sql"),
        postgres: "",
    },
    Migration {
        version: 2,
        description: "mam_message checked without function calls (no statement journal per batch)",
        sqlite: include_str!("sqlite/migrations/archive_0002_checks.sql"),
        postgres: "",
    },
    Migration {
        version: 3,
        description: "the archive as one row a message for both archives, on integer keys",
        sqlite: include_str!("sqlite/migrations/archive_0003_one_row.sql"),
        postgres: "",
    },
];

/// Versions of the one sequence that feature crates own (4: herald-push's registrations). A
/// database opened without that feature (a test of another crate) skips them; any other gap
/// is a programming error.
pub(crate) const FEATURE_VERSIONS: &[i64] = &[4, 7, 8, 9, 10];

/// This crate's migrations and the features', as one list in version order; an error when
/// two claim the same version or a number is missing that no feature owns (a programming
/// error of a feature). The server always passes every feature's set, so a real database
/// gets every version in order.
pub(crate) fn assemble(
    own: &[Migration],
    features: &[&MigrationSet],
) -> Result<Vec<Migration>, crate::StorageError> {
    assemble_with(own, features, FEATURE_VERSIONS)
}

fn assemble_with(
    own: &[Migration],
    features: &[&MigrationSet],
    optional: &[i64],
) -> Result<Vec<Migration>, crate::StorageError> {
    let mut list: Vec<Migration> = own.to_vec();
    for set in features {
        list.extend_from_slice(set.migrations);
    }
    list.sort_by_key(|migration| migration.version);
    let mut expected = 1;
    for migration in &list {
        while migration.version > expected && optional.contains(&expected) {
            expected += 1;
        }
        if migration.version != expected {
            return Err(crate::StorageError::Corrupt(format!(
                "the migrations are not numbered 1, 2, 3, ...: version {} where {expected} was due",
                migration.version,
            )));
        }
        expected += 1;
    }
    Ok(list)
}

/// A migration applied when a database was opened, as reported to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The schema version it produced.
    pub version: i64,
    /// What it did.
    pub description: &'static str,
}

impl AppliedMigration {
    pub(crate) fn of(migration: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: migration.version,
            description: migration.description,
        }
    }
}

/// The version a database has once every migration of `migrations` is applied.
pub(crate) fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |migration| migration.version)
}

/// The migrations a database at schema version `current` still needs, in order.
pub(crate) fn pending(migrations: &[Migration], current: i64) -> &[Migration] {
    let applied = migrations.partition_point(|migration| migration.version <= current);
    &migrations[applied..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Engines call this on their own list: versions must be 1, 2, 3, ... with SQL in each.
    pub(crate) fn assert_well_formed(migrations: &[Migration]) {
        for (index, migration) in migrations.iter().enumerate() {
            assert_eq!(
                migration.version,
                index as i64 + 1,
                "{migration:?} is out of order"
            );
            assert!(
                !migration.description.is_empty(),
                "{migration:?} has no description"
            );
            assert!(
                !migration.sqlite.trim().is_empty() && !migration.postgres.trim().is_empty(),
                "{migration:?} lacks SQL for an engine"
            );
        }
    }

    const LIST: &[Migration] = &[
        Migration {
            version: 1,
            description: "one",
            sqlite: "SELECT 1",
            postgres: "SELECT 1",
        },
        Migration {
            version: 2,
            description: "two",
            sqlite: "SELECT 2",
            postgres: "SELECT 2",
        },
        Migration {
            version: 3,
            description: "three",
            sqlite: "SELECT 3",
            postgres: "SELECT 3",
        },
    ];

    #[test]
    fn a_new_database_needs_every_migration() {
        assert_eq!(pending(LIST, 0).len(), 3);
    }

    #[test]
    fn a_database_part_way_needs_only_the_later_migrations() {
        let versions: Vec<i64> = pending(LIST, 1).iter().map(|m| m.version).collect();
        assert_eq!(versions, [2, 3]);
    }

    #[test]
    fn an_up_to_date_database_needs_nothing() {
        assert!(pending(LIST, latest_version(LIST)).is_empty());
    }

    #[test]
    fn the_test_list_is_well_formed() {
        assert_well_formed(LIST);
    }

    #[test]
    fn the_own_list_is_well_formed_with_the_features_versions() {
        let push: Vec<Migration> = FEATURE_VERSIONS
            .iter()
            .map(|&version| Migration {
                version,
                description: "push",
                sqlite: "SELECT 1",
                postgres: "SELECT 1",
            })
            .collect();
        let feature = &MigrationSet {
            owner: "push",
            migrations: Box::leak(push.into_boxed_slice()),
        };
        assert_well_formed(&assemble(OWN, &[feature]).unwrap());
        assert!(
            assemble(OWN, &[]).is_ok(),
            "a feature's version may be absent"
        );
    }

    #[test]
    fn a_features_migrations_interleave_by_version_and_must_not_collide() {
        let own = &LIST[..2];
        let feature = &MigrationSet {
            owner: "test",
            migrations: &LIST[2..],
        };
        let versions: Vec<i64> = assemble(own, &[feature])
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [1, 2, 3]);
        assert!(assemble(LIST, &[feature]).is_err(), "version 3 twice");
        assert!(
            assemble(&LIST[..1], &[feature]).is_err(),
            "version 2 missing"
        );
        assert!(
            assemble_with(&LIST[..1], &[feature], &[2]).is_ok(),
            "version 2 is a feature's"
        );
    }
}
