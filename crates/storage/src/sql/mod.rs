//! The SQL layer shared by both engines: one implementation of each store (`SqlAccounts`,
//! `SqlRoster`, `SqlOffline`), generic over the engine, with the engines as dialects
//! ([`Dialect`]): only the SQL text that differs and the real locking differences live in
//! `sqlite.rs` and `postgres.rs`.
//!
//! Statements are written once with `$1`-style parameters, which both engines read by number
//! (sqlx binds SQLite's `$N` parameters positionally).

mod accounts;
pub(crate) mod archive;
pub(crate) mod group_commit;
pub(crate) mod migrate;
pub(crate) mod offline;
mod roster;
mod user_data;

use std::future::Future;

use sqlx::{Database, Pool, Transaction};

pub(crate) use accounts::SqlAccounts;
pub(crate) use archive::SqlArchive;
pub use group_commit::{BoxFuture, Writer};
pub(crate) use offline::SqlOffline;
pub(crate) use roster::SqlRoster;
pub(crate) use user_data::SqlUserData;

/// What differs between the engines, for the stores of this crate and of feature crates.
pub trait Dialect: Database {
    /// Begin a transaction that will write. SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so two read-modify-write transactions cannot both read the old state;
    /// PostgreSQL begins normally and locks what it must with [`Dialect::lock`].
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// [`Dialect::begin_write`] on a connection of one's own (the group commit's writer).
    fn begin_write_on(
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<Transaction<'_, Self>, sqlx::Error>> + Send;

    /// Make the transactions that change the thing named `key` (in lock class `class`) take
    /// turns, across processes sharing the database: a transaction-scoped advisory lock on
    /// PostgreSQL; nothing on SQLite, whose write lock already serialises writers.
    fn lock(
        transaction: &mut Transaction<'_, Self>,
        class: i32,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The text of the `n`th (from 1) parameter of a statement whose parameters are bound in
    /// the order they appear: `$n` on PostgreSQL; `?` on SQLite, where a numbered parameter
    /// costs every bind a search of the statement's parameter names (quadratic in a statement
    /// of thousands).
    fn param(n: usize) -> String;

    /// A migration's statements for this engine.
    fn migration_sql(migration: &crate::Migration) -> &'static str;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The SQL text of this crate's stores that differs between the engines.
    const SQL: &'static DialectSql;
}

/// The statements whose text differs between the engines.
#[derive(Debug)]
pub struct DialectSql {
    /// Create the `schema_version` table if missing (version, description, applied_at).
    pub create_schema_version: &'static str,
    /// `users` insert: `$1..$10` are the domain, localpart and the SHA-1 then SHA-256 salt,
    /// iterations, StoredKey and ServerKey; `$11` the creation time (unix seconds; a
    /// `TIMESTAMP` column on PostgreSQL, MongooseIM's type).
    pub insert_user: &'static str,
    /// `rosterusers` upsert: `$1..$7` server, username, jid, nick, subscription, ask,
    /// askmessage; `$8` the creation time (unix seconds, as for `insert_user`).
    pub write_roster_item: &'static str,
    /// Bump the roster version of `($1, $2)`: the version (a number kept as text) plus one,
    /// or `$3` if larger; returning it.
    pub bump_roster_version: &'static str,
    /// How an insert that skips rows whose key exists begins, and what it ends with: `INSERT
    /// OR IGNORE INTO` on SQLite (which then needs no statement journal for a statement of
    /// many rows), `INSERT INTO` ... `ON CONFLICT DO NOTHING` on PostgreSQL.
    pub insert_ignoring: (&'static str, &'static str),
}
