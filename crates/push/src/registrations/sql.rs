//! The registration store on SQL, for both engines: MongooseIM's
//! `event_pusher_push_subscription` table (push.md section 9), so moving registrations
//! between the two is a copy of rows: owner and pubsub bare JIDs as text, the form as a JSON
//! object, `created_at` in microseconds. The statements whose text differs between the
//! engines are the dialects' part ([`PushDialect`], in `sqlite.rs` and `postgres.rs`).

use herald_storage::{
    StorageError,
    sql::{Dialect, Writer},
};
use herald_stream::Bare;
use jid::{BareJid, FullJid};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::extensions::Extensions;

use super::{
    PendingPush, PublishOptions, Registration, RegistrationKey, RegistrationStore, StoredRoute,
    from_micros, to_micros,
};

/// The statements of the registration store whose text differs between the engines.
#[derive(Debug)]
pub struct PushSql {
    /// Insert or refresh `($1 owner, $2 node, $3 pubsub, $4 form as JSON text, $5 created_at)`.
    pub enable: &'static str,
    /// Insert or replace a registration's extensions `($1 owner, $2 node, $3 pubsub, $4
    /// options as JSON text)` in `herald_push_options`.
    pub set_options: &'static str,
    /// The registrations of `$1`, oldest first, then by pubsub JID and node in code point
    /// order; the form as JSON text.
    pub list: &'static str,
    /// Delete the registrations of owners that end with the suffix `$1` (`@domain`),
    /// comparing text, not a LIKE pattern.
    pub remove_domain: &'static str,
    /// Record `($1 owner, $2 resource, $3 pubsub, $4 node, $5 since)` as hibernating,
    /// replacing what the session had.
    pub hibernating: &'static str,
    /// Delete the extensions of owners that end with the suffix `$1`.
    pub remove_domain_options: &'static str,
    /// Delete the hibernating sessions of owners that end with the suffix `$1`.
    pub remove_domain_hibernating: &'static str,
}

/// An engine the registration store runs on.
pub trait PushDialect: Dialect {
    /// Its statements.
    const PUSH: &'static PushSql;
}

/// Registrations in the server's database.
#[derive(Debug)]
pub struct SqlRegistrations<DB: Dialect> {
    pool: Pool<DB>,
    /// The database's writer, when it has one (SQLite): the outbox's rows are written and
    /// removed in its transactions.
    writer: Option<Writer<DB>>,
}

impl<DB: Dialect> Clone for SqlRegistrations<DB> {
    fn clone(&self) -> Self {
        SqlRegistrations {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<DB: Dialect> SqlRegistrations<DB> {
    /// The store over an opened (and migrated) pool, from `Storage::engine`.
    pub fn new(pool: Pool<DB>) -> SqlRegistrations<DB> {
        SqlRegistrations { pool, writer: None }
    }

    /// This store writing the outbox through `writer` (`Storage::sqlite_writer`), the one
    /// task that writes the file's frequent writes (offline messages among them) in shared
    /// transactions. In transactions of its own, each outbox write took SQLite's lock of the
    /// file, and the writer, waiting for it, slept in SQLite's busy handler (a millisecond
    /// and more a try) while the messages it was storing waited with it.
    pub fn with_writer(mut self, writer: Option<Writer<DB>>) -> SqlRegistrations<DB> {
        self.writer = writer;
        self
    }
}

/// Registrations in the embedded SQLite database.
pub type SqliteRegistrations = SqlRegistrations<sqlx::Sqlite>;
/// Registrations in PostgreSQL.
pub type PostgresRegistrations = SqlRegistrations<sqlx::Postgres>;

fn corrupt<DB>(what: &str, row: &DB::Row) -> StorageError
where
    DB: Database,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let owner: String = row.try_get("owner_jid").unwrap_or_default();
    StorageError::Corrupt(format!(
        "event_pusher_push_subscription row of {owner:?}: {what}"
    ))
}

fn jid_column<DB>(row: &DB::Row, column: &str) -> Result<BareJid, StorageError>
where
    DB: Database,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let text: String = row.try_get(column)?;
    match BareJid::new(&text) {
        // Only what herald wrote: a JID already in normalised form.
        Ok(jid) if jid.as_str() == text => Ok(jid),
        _ => Err(corrupt::<DB>(column, row)),
    }
}

fn registration<DB>(row: &DB::Row) -> Result<Registration, StorageError>
where
    DB: Database,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let form: String = row.try_get("form")?;
    let form: PublishOptions = serde_json::from_str(&form)
        .map_err(|_| corrupt::<DB>("form is not a JSON object of strings", row))?;
    let options: Option<String> = row.try_get("options")?;
    let extensions = match options {
        None => Extensions::default(),
        Some(options) => Extensions::from_stored(&options)
            .ok_or_else(|| corrupt::<DB>("herald_push_options is not what herald writes", row))?,
    };
    Ok(Registration {
        key: RegistrationKey {
            owner: jid_column::<DB>(row, "owner_jid")?,
            pubsub: jid_column::<DB>(row, "pubsub_jid")?,
            node: row.try_get("node")?,
        },
        form,
        created_at: from_micros(row.try_get("created_at")?),
        extensions,
    })
}

fn key<DB>(row: &DB::Row) -> Result<RegistrationKey, StorageError>
where
    DB: Database,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    Ok(RegistrationKey {
        owner: jid_column::<DB>(row, "owner_jid")?,
        pubsub: jid_column::<DB>(row, "pubsub_jid")?,
        node: row.try_get("node")?,
    })
}

/// Delete one registration's extensions.
const OPTIONS_OF_KEY: &str =
    "DELETE FROM herald_push_options WHERE owner_jid = $1 AND node = $2 AND pubsub_jid = $3";

impl<DB> SqlRegistrations<DB>
where
    DB: PushDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q String: Encode<'q, DB> + Type<DB>,
{
    /// Run `sql`, a DELETE from `herald_push_options` with `$1` (the owner, or a domain
    /// suffix), then the key's node and pubsub, or a pubsub alone.
    async fn delete_options(
        &self,
        sql: &'static str,
        first: &str,
        key: Option<&RegistrationKey>,
        pubsub: Option<&BareJid>,
    ) -> Result<(), StorageError> {
        let mut query = sqlx::query(sql).bind(first);
        if let Some(key) = key {
            query = query.bind(&key.node).bind(key.pubsub.as_str());
        }
        if let Some(pubsub) = pubsub {
            query = query.bind(pubsub.as_str());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<DB> RegistrationStore for SqlRegistrations<DB>
where
    DB: PushDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
        let form = serde_json::to_string(&registration.form)
            .map_err(|error| StorageError::Corrupt(format!("unencodable form: {error}")))?;
        let key = &registration.key;
        // The extensions first: a failure between the two leaves extensions without a
        // registration, which nothing reads and the next enable of the key replaces.
        if registration.extensions.is_empty() {
            self.delete_options(OPTIONS_OF_KEY, key.owner.as_str(), Some(key), None)
                .await?;
        } else {
            sqlx::query(DB::PUSH.set_options)
                .bind(key.owner.as_str())
                .bind(&key.node)
                .bind(key.pubsub.as_str())
                .bind(registration.extensions.to_stored())
                .execute(&self.pool)
                .await?;
        }
        sqlx::query(DB::PUSH.enable)
            .bind(key.owner.as_str())
            .bind(&key.node)
            .bind(key.pubsub.as_str())
            .bind(form)
            .bind(to_micros(registration.created_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError> {
        self.delete_options(OPTIONS_OF_KEY, key.owner.as_str(), Some(key), None)
            .await?;
        let done = sqlx::query(
            "DELETE FROM event_pusher_push_subscription
             WHERE owner_jid = $1 AND node = $2 AND pubsub_jid = $3",
        )
        .bind(key.owner.as_str())
        .bind(&key.node)
        .bind(key.pubsub.as_str())
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn disable_all(
        &self,
        owner: &BareJid,
        pubsub: &BareJid,
    ) -> Result<Vec<RegistrationKey>, StorageError> {
        self.delete_options(
            "DELETE FROM herald_push_options WHERE owner_jid = $1 AND pubsub_jid = $2",
            owner.as_str(),
            None,
            Some(pubsub),
        )
        .await?;
        let rows = sqlx::query(
            "DELETE FROM event_pusher_push_subscription
             WHERE owner_jid = $1 AND pubsub_jid = $2
             RETURNING owner_jid, node, pubsub_jid",
        )
        .bind(owner.as_str())
        .bind(pubsub.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key::<DB>).collect()
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError> {
        let rows = sqlx::query(DB::PUSH.list)
            .bind(owner.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(registration::<DB>).collect()
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
        self.delete_options(
            "DELETE FROM herald_push_options WHERE owner_jid = $1",
            owner.as_str(),
            None,
            None,
        )
        .await?;
        sqlx::query("DELETE FROM herald_push_hibernation WHERE owner_jid = $1")
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        let done = sqlx::query("DELETE FROM event_pusher_push_subscription WHERE owner_jid = $1")
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
        // Owners are user@domain: compare the end of the text, not a LIKE pattern, so no
        // character of the domain is taken as a wildcard.
        let suffix = format!("@{domain}");
        self.delete_options(DB::PUSH.remove_domain_options, &suffix, None, None)
            .await?;
        sqlx::query(DB::PUSH.remove_domain_hibernating)
            .bind(&suffix)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(DB::PUSH.remove_domain)
            .bind(suffix)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn hibernating(
        &self,
        session: &FullJid,
        key: &RegistrationKey,
    ) -> Result<(), StorageError> {
        sqlx::query(DB::PUSH.hibernating)
            .bind(key.owner.as_str())
            .bind(session.resource().as_str())
            .bind(key.pubsub.as_str())
            .bind(&key.node)
            .bind(to_micros(std::time::SystemTime::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hibernation_ended(&self, session: &FullJid) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM herald_push_hibernation WHERE owner_jid = $1 AND resource = $2")
            .bind(session.bare().as_str())
            .bind(session.resource().as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_hibernating(&self) -> Result<Vec<(FullJid, RegistrationKey)>, StorageError> {
        let rows = sqlx::query(
            "DELETE FROM herald_push_hibernation
             RETURNING owner_jid, resource, pubsub_jid, node, since",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let owner = jid_column::<DB>(row, "owner_jid")?;
            let resource: String = row.try_get("resource")?;
            let session = FullJid::new(&format!("{owner}/{resource}"))
                .map_err(|_| corrupt::<DB>("hibernating session", row))?;
            let since: i64 = row.try_get("since")?;
            let key = RegistrationKey {
                owner,
                pubsub: jid_column::<DB>(row, "pubsub_jid")?,
                node: row.try_get("node")?,
            };
            found.push((since, session, key));
        }
        found.sort_by_key(|(since, _, _)| *since);
        Ok(found
            .into_iter()
            .map(|(_, session, key)| (session, key))
            .collect())
    }

    async fn add_pending(&self, pending: &[(i64, PendingPush)]) -> Result<(), StorageError> {
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.writer {
            let rows = pending.to_vec();
            return writer
                .write(move |connection| {
                    Box::pin(async move { insert_pending::<DB>(connection, &rows).await })
                })
                .await;
        }
        let mut tx = self.pool.begin().await?;
        insert_pending::<DB>(&mut tx, pending).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_pending(&self, ids: &[i64]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.writer {
            let ids = ids.to_vec();
            return writer
                .write(move |connection| {
                    Box::pin(async move { delete_pending::<DB>(connection, &ids).await })
                })
                .await;
        }
        let mut connection = self.pool.acquire().await?;
        delete_pending::<DB>(&mut connection, ids).await
    }

    async fn pending(&self) -> Result<Vec<(i64, PendingPush)>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, owner_jid, pubsub_jid, node, message, route, device, body, created_at
             FROM herald_push_outbox ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let route: String = row.try_get("route")?;
            let body: String = row.try_get("body")?;
            let route = match route.as_str() {
                "xmpp" => StoredRoute::Xmpp(body),
                "http" => StoredRoute::Http {
                    device: row
                        .try_get::<Option<String>, _>("device")?
                        .unwrap_or_default(),
                    body,
                },
                _ => return Err(corrupt::<DB>("outbox route", row)),
            };
            found.push((
                row.try_get::<i64, _>("id")?,
                PendingPush {
                    key: key::<DB>(row)?,
                    message: row.try_get("message")?,
                    route,
                    created_at: from_micros(row.try_get("created_at")?),
                },
            ));
        }
        Ok(found)
    }
}

/// Insert `pending` into the outbox on `connection` (inside the caller's transaction): one
/// statement per 100 rows (9 parameters each). A row already pending is skipped: `INSERT OR
/// IGNORE` on SQLite, whose statement then cannot fail half-way and needs no statement
/// journal (a copy of every page it changes; `herald_storage::migrations`).
async fn insert_pending<DB>(
    connection: &mut DB::Connection,
    pending: &[(i64, PendingPush)],
) -> Result<(), StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let (insert, on_conflict) = DB::SQL.insert_ignoring;
    for chunk in pending.chunks(100) {
        let mut sql = format!(
            "{insert} herald_push_outbox
                 (id, owner_jid, pubsub_jid, node, message, route, device, body, created_at)
             VALUES "
        );
        for row in 0..chunk.len() {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..9 {
                if column > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&DB::param(row * 9 + column + 1));
            }
            sql.push(')');
        }
        sql.push_str(on_conflict);
        // Only placeholders are added to the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, push) in chunk {
            let (route, device, body) = match &push.route {
                StoredRoute::Xmpp(iq) => ("xmpp", None, iq.as_str()),
                StoredRoute::Http { device, body } => {
                    ("http", Some(device.as_str()), body.as_str())
                }
            };
            query = query
                .bind(*id)
                .bind(push.key.owner.as_str())
                .bind(push.key.pubsub.as_str())
                .bind(push.key.node.as_str())
                .bind(push.message.as_deref())
                .bind(route)
                .bind(device)
                .bind(body)
                .bind(to_micros(push.created_at));
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

/// Delete the outbox's rows `ids` on `connection`, 500 to a statement.
async fn delete_pending<DB>(
    connection: &mut DB::Connection,
    ids: &[i64],
) -> Result<(), StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    for chunk in ids.chunks(500) {
        let list: Vec<String> = (1..=chunk.len()).map(DB::param).collect();
        let sql = format!(
            "DELETE FROM herald_push_outbox WHERE id IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}
