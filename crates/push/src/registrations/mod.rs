//! Push registrations (XEP-0357 section 5, push.md sections 3 and 9): which app server node
//! (`pubsub` JID, `node`) to notify for which user, with the publish-options form to attach.
//!
//! Stored behind the narrow [`RegistrationStore`] trait: one SQL implementation for both
//! engines ([`SqlRegistrations`], `sql.rs`, with the text that differs in `sqlite.rs` and
//! `postgres.rs`) over the server's pool, and `memory.rs` for tests, all held to one
//! [`conformance`] suite. [`CachedRegistrations`] keeps each user's registrations in memory
//! in front of the embedded engine. [`EnabledInSession`] is the "registration enabled in
//! this session" (in the session's state) that the enhanced and hints plugins use.

mod cached;
pub mod conformance;
mod listen;
mod memory;
mod postgres;
mod sessions;
mod sql;
mod sqlite;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use herald_storage::{Migration, MigrationSet, StorageError};

use crate::extensions::Extensions;
use jid::{BareJid, FullJid};

pub use cached::CachedRegistrations;
pub use listen::{CHANNEL, listen};
pub use memory::MemoryRegistrations;
pub use sessions::EnabledInSession;
pub use sql::{PostgresRegistrations, PushDialect, PushSql, SqlRegistrations, SqliteRegistrations};

/// The push module's tables (push.md section 9), registered with the storage crate's
/// migrator by whoever opens the database: version 4 of herald's one schema sequence, on each
/// engine.
pub const MIGRATIONS: MigrationSet = MigrationSet {
    owner: "herald-push",
    migrations: &[
        Migration {
            version: 4,
            description: "push registrations: event_pusher_push_subscription",
            sqlite: include_str!("migrations/sqlite/0004_push.sql"),
            postgres: include_str!("migrations/postgres/0004_push.sql"),
        },
        Migration {
            version: 7,
            description: "hibernating sessions to wake at start: herald_push_hibernation",
            sqlite: include_str!("migrations/sqlite/0007_hibernation.sql"),
            postgres: include_str!("migrations/postgres/0007_hibernation.sql"),
        },
        Migration {
            version: 8,
            description: "pending push notifications: herald_push_outbox",
            sqlite: include_str!("migrations/sqlite/0008_outbox.sql"),
            postgres: include_str!("migrations/postgres/0008_outbox.sql"),
        },
        Migration {
            version: 9,
            description: "what clients ask beyond XEP-0357 at enable: herald_options",
            sqlite: include_str!("migrations/sqlite/0009_options.sql"),
            postgres: include_str!("migrations/postgres/0009_options.sql"),
        },
        Migration {
            version: 10,
            description: "registration changes told to the servers sharing the database",
            sqlite: include_str!("migrations/sqlite/0010_notify.sql"),
            postgres: include_str!("migrations/postgres/0010_notify.sql"),
        },
    ],
};

/// The publish-options fields of a registration, `FORM_TYPE` excluded, by `var`.
pub type PublishOptions = BTreeMap<String, String>;

/// What identifies a registration: the user, the app server's pubsub service, and the node on
/// it. Re-enabling the same key replaces the registration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistrationKey {
    /// The user whose messages are notified.
    pub owner: BareJid,
    /// The app server's pubsub service, stored bare (XEP-0357 `jid`).
    pub pubsub: BareJid,
    /// The node on it (XEP-0357 `node`), never empty.
    pub node: String,
}

/// One registration: where to publish, and the publish-options to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The key.
    pub key: RegistrationKey,
    /// The publish-options fields given at enable time.
    pub form: PublishOptions,
    /// When it was (last) enabled, to the microsecond.
    pub created_at: SystemTime,
    /// What the client asked for beyond XEP-0357 (Tigase's extensions).
    pub extensions: Extensions,
}

impl Registration {
    /// A registration enabled now.
    pub fn new(key: RegistrationKey, form: PublishOptions) -> Registration {
        Registration {
            key,
            form,
            created_at: from_micros(to_micros(SystemTime::now())),
            extensions: Extensions::default(),
        }
    }

    /// The same registration with `extensions`.
    pub fn with_extensions(mut self, extensions: Extensions) -> Registration {
        self.extensions = extensions;
        self
    }
}

/// The registrations of every user. Engines implement it; the module holds an
/// `Arc<dyn RegistrationStore>`.
#[async_trait::async_trait]
pub trait RegistrationStore: Send + Sync + 'static {
    /// Store a registration, replacing one with the same key (its form and time).
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError>;

    /// Remove one registration; returns whether it existed.
    async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError>;

    /// Remove every registration of `owner` at the pubsub service `pubsub`; returns the keys
    /// removed.
    async fn disable_all(
        &self,
        owner: &BareJid,
        pubsub: &BareJid,
    ) -> Result<Vec<RegistrationKey>, StorageError>;

    /// The registrations of `owner`, oldest first.
    async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError>;

    /// Remove every registration of `owner` (the account was deleted); returns how many.
    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError>;

    /// Remove every registration of the users of `domain` (the domain was removed); returns
    /// how many.
    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError>;

    /// `session` hibernates and is woken through `key` (replacing what it had), so that a
    /// restart can wake it. By default nothing is kept: a store that keeps nothing wakes no
    /// session at start.
    async fn hibernating(
        &self,
        session: &FullJid,
        key: &RegistrationKey,
    ) -> Result<(), StorageError> {
        let _ = (session, key);
        Ok(())
    }

    /// `session` no longer hibernates.
    async fn hibernation_ended(&self, session: &FullJid) -> Result<(), StorageError> {
        let _ = session;
        Ok(())
    }

    /// The sessions recorded as hibernating, each with its registration, removed from the
    /// store (read once at start), oldest first.
    async fn take_hibernating(&self) -> Result<Vec<(FullJid, RegistrationKey)>, StorageError> {
        Ok(Vec::new())
    }

    /// Keep `pending` notifications in the outbox under their ids, in one transaction; one
    /// whose message is already pending for its registration is left out. By default
    /// nothing is kept (a store without an outbox: nothing pending survives a restart).
    async fn add_pending(&self, pending: &[(i64, PendingPush)]) -> Result<(), StorageError> {
        let _ = pending;
        Ok(())
    }

    /// Remove notifications whose outcome is final.
    async fn finish_pending(&self, ids: &[i64]) -> Result<(), StorageError> {
        let _ = ids;
        Ok(())
    }

    /// Every pending notification, oldest first (read at start).
    async fn pending(&self) -> Result<Vec<(i64, PendingPush)>, StorageError> {
        Ok(Vec::new())
    }
}

/// A notification decided and not yet delivered, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPush {
    /// Its registration.
    pub key: RegistrationKey,
    /// What identifies the notified message, so that one message is pending at most once
    /// per registration; `None` when it has no identity.
    pub message: Option<String>,
    /// How it leaves.
    pub route: StoredRoute,
    /// When it was decided.
    pub created_at: SystemTime,
}

/// A notification's route in a form the store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRoute {
    /// The publish IQ, serialised.
    Xmpp(String),
    /// The MongoosePush request: the device and the JSON body.
    Http {
        /// Option `device_id`.
        device: String,
        /// The JSON body.
        body: String,
    },
}

/// Microseconds since the Unix epoch, as the `created_at` column stores them.
pub(crate) fn to_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
    })
}

/// The time `micros` microseconds after the Unix epoch (before it for negative values: never
/// written by herald, read as the epoch).
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}
