//! [`ArchiveStore`] on SQL: the `mam_message` table, the same statements on both engines
//! (queries are built from the filters present, with numbered parameters).

use std::sync::Arc;

use jid::BareJid;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::Dialect;
use super::group_commit::{GroupCommit, write_via};
use crate::StorageError;
use crate::archive::{
    ArchiveId, ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, Direction, Found, Paging,
};

/// The archive of a database.
#[derive(Debug)]
pub(crate) struct SqlArchive<DB: Dialect> {
    pool: Pool<DB>,
    /// The database of the accounts when the archive's statements cannot see it (SQLite's
    /// archive in memory, beside the main database in memory): owners are looked up there,
    /// once per batch. The archive's file sees the main file's accounts (it attaches it).
    accounts: Option<Pool<DB>>,
    /// The database's writer, if its writes are group-committed (SQLite).
    commits: Option<Arc<GroupCommit<DB>>>,
}

impl<DB: Dialect> SqlArchive<DB> {
    /// The archive in the database behind `pool`, whose schema is up to date, with the
    /// accounts in `accounts` if not in the same database; with `commits`, writes go through
    /// that writer, in the transactions of other writes.
    pub(crate) fn new(
        pool: Pool<DB>,
        accounts: Option<Pool<DB>>,
        commits: Option<Arc<GroupCommit<DB>>>,
    ) -> Self {
        SqlArchive {
            pool,
            accounts,
            commits,
        }
    }
}

/// A bound parameter of a built query.
#[derive(Debug, Clone)]
enum Param {
    Int(i64),
    Text(String),
}

/// A WHERE clause with its parameters, numbered from `$1` (the owner).
struct Filter {
    sql: String,
    params: Vec<Param>,
}

impl Filter {
    fn new(owner: &BareJid) -> Filter {
        Filter {
            sql: "owner = $1".to_owned(),
            params: vec![Param::Text(owner.to_string())],
        }
    }

    fn push(&mut self, condition: &str, param: Param) {
        self.params.push(param);
        let n = self.params.len();
        self.sql.push_str(&format!(
            " AND {}",
            condition.replace('?', &format!("${n}"))
        ));
    }

    /// The filters of a query (not its page).
    fn of(owner: &BareJid, query: &ArchiveQuery) -> Filter {
        let mut filter = Filter::new(owner);
        if let Some(bare) = &query.with_bare {
            filter.push("remote_bare_jid = ?", Param::Text(bare.clone()));
        }
        if let Some(resource) = &query.with_resource {
            filter.push("remote_resource = ?", Param::Text(resource.clone()));
        }
        if let Some(start) = query.start {
            filter.push("id >= ?", Param::Int(start));
        }
        if let Some(end) = query.end {
            filter.push("id <= ?", Param::Int(end));
        }
        if let Some(after) = query.after_id {
            filter.push("id > ?", Param::Int(after));
        }
        if let Some(before) = query.before_id {
            filter.push("id < ?", Param::Int(before));
        }
        if !query.ids.is_empty() {
            let first = filter.params.len() + 1;
            let list: Vec<String> = (0..query.ids.len())
                .map(|i| format!("${}", first + i))
                .collect();
            filter
                .sql
                .push_str(&format!(" AND id IN ({})", list.join(", ")));
            filter
                .params
                .extend(query.ids.iter().map(|id| Param::Int(*id)));
        }
        if let Some(text) = &query.text {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            filter.push(
                "search_body LIKE ? ESCAPE '\\'",
                Param::Text(format!("%{escaped}%")),
            );
        }
        filter
    }
}

fn direction_code(direction: Direction) -> &'static str {
    match direction {
        Direction::In => "I",
        Direction::Out => "O",
    }
}

/// Rows per INSERT: 11 parameters a row (9 columns, the owner's domain and localpart), 2,816
/// a statement, within both engines' limits (SQLite 32,766, PostgreSQL 65,535).
const ROWS: usize = 256;

/// The text of an insert of `rows` rows (the same for every batch of that size, so that the
/// engine's statement cache keeps it): one parameter list per row, nine columns and, when
/// `only_accounts`, the owner's domain and localpart, for a row to be inserted only if its
/// owner has an account (one index lookup per row). A row whose id its owner's archive
/// already holds is skipped.
fn insert_sql<DB: Dialect>(rows: usize, only_accounts: bool) -> String {
    let columns = if only_accounts { 11 } else { 9 };
    let mut values = String::with_capacity(rows * columns * 4);
    let mut n = 0;
    for row in 0..rows {
        values.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            n += 1;
            if column > 0 {
                values.push_str(", ");
            }
            values.push_str(&DB::param(n));
        }
        values.push(')');
    }
    let (insert, on_conflict) = DB::SQL.insert_ignoring;
    let check = if only_accounts {
        " WHERE EXISTS (SELECT 1 FROM users WHERE users.server = v.column10 \
         AND users.username = v.column11)"
    } else {
        ""
    };
    format!(
        "{insert} mam_message (id, owner, remote_bare_jid, remote_resource, direction, \
         from_jid, origin_id, search_body, message) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
         v.column8, v.column9 FROM (VALUES {values}) AS v{check}{on_conflict}"
    )
}

/// Split `len` items into statements of a power of two each, at most [`ROWS`], largest first
/// (25 rows: 16, 8, 1). A statement's text depends on its rows, and the engine's statement
/// cache keeps only so many texts: with batches of every size, most statements were parsed
/// and planned again (statement preparation was 2.8 % of the server's samples in a profile of
/// the push benchmark with the archive on); with these sizes there are nine
/// texts, all kept, for at most one statement more per power of two.
fn statement_sizes(len: usize) -> impl Iterator<Item = usize> {
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let size = if left >= ROWS {
            ROWS
        } else {
            1 << left.ilog2()
        };
        left -= size;
        Some(size)
    })
}

/// Insert the rows of `messages` (of owners with an account, with `only_accounts`), in
/// statements of [`statement_sizes`] (each statement is a round trip to the engine).
///
/// Texts are bound as shared strings of which this function keeps a reference until the
/// statement is done: sqlx's SQLite worker drops the bound values on its own thread, and a
/// string allocated on a tokio thread and freed on another costs glibc's allocator a lock on
/// the tokio thread's arena (24.6 us of CPU per message in that thread's `_int_free` in a
/// profile of the push benchmark, gone after); so the last reference, and the free, stay here.
async fn insert_rows<DB>(
    connection: &mut DB::Connection,
    messages: &[ArchivedMessage],
    only_accounts: bool,
) -> Result<(), StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    Arc<str>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<Arc<str>>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let incoming: Arc<str> = Arc::from(direction_code(Direction::In));
    let outgoing: Arc<str> = Arc::from(direction_code(Direction::Out));
    let mut kept: Vec<Arc<str>> = Vec::new();
    let mut rest = messages;
    for size in statement_sizes(messages.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        kept.clear();
        let mut text = |text: &str| {
            let shared: Arc<str> = Arc::from(text);
            kept.push(Arc::clone(&shared));
            shared
        };
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_sql::<DB>(
            chunk.len(),
            only_accounts,
        )));
        for message in chunk {
            let direction = match message.direction {
                Direction::In => &incoming,
                Direction::Out => &outgoing,
            };
            insert = insert
                .bind(message.id)
                .bind(text(message.owner.as_str()))
                .bind(text(&message.remote_bare))
                .bind(text(&message.remote_resource))
                .bind(Arc::clone(direction))
                .bind(text(&message.from))
                .bind(message.origin_id.as_deref().map(&mut text))
                .bind(text(&message.body.to_lowercase()))
                .bind(text(&message.message));
            if only_accounts {
                let key = crate::accounts::AccountKey::of(&message.owner)?;
                insert = insert.bind(text(key.domain)).bind(text(key.localpart));
            }
        }
        insert.execute(&mut *connection).await?;
    }
    drop(kept);
    Ok(())
}

/// The messages of `messages` whose owner has an account in the database of `accounts`
/// (one query per [`ROWS`] owners, on a reading connection).
async fn with_accounts<DB>(
    accounts: &Pool<DB>,
    messages: Vec<ArchivedMessage>,
) -> Result<Vec<ArchivedMessage>, StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut owners: Vec<&BareJid> = messages.iter().map(|m| &m.owner).collect();
    owners.sort();
    owners.dedup();
    let mut found = std::collections::HashSet::new();
    for chunk in owners.chunks(ROWS) {
        let mut keys = chunk
            .iter()
            .map(|owner| crate::accounts::AccountKey::of(owner))
            .collect::<Result<Vec<_>, _>>()?;
        // The last owner again up to a power of two: a few statement texts, all cached (see
        // `statement_sizes`).
        if let Some(&last) = keys.last() {
            keys.resize(keys.len().next_power_of_two(), last);
        }
        let mut n = 0;
        let mut next = || {
            n += 1;
            DB::param(n)
        };
        let pairs: Vec<String> = keys
            .iter()
            .map(|_| format!("(server = {} AND username = {})", next(), next()))
            .collect();
        let sql = format!(
            "SELECT server, username FROM users WHERE {}",
            pairs.join(" OR ")
        );
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in &keys {
            select = select.bind(key.domain).bind(key.localpart);
        }
        let mut connection = accounts.acquire().await?;
        for row in select.fetch_all(&mut *connection).await? {
            let server: String = row.try_get("server")?;
            let username: String = row.try_get("username")?;
            found.insert(format!("{username}@{server}"));
        }
    }
    Ok(messages
        .into_iter()
        .filter(|m| found.contains(m.owner.as_str()))
        .collect())
}

/// Move the rows an earlier version kept in the main file's `mam_message` into the archive's
/// own file (SQLite), a thousand at a time; nothing to do once the main table is empty.
pub(crate) async fn move_rows_from_main(
    main: &sqlx::SqlitePool,
    archive: &sqlx::SqlitePool,
) -> Result<(), StorageError> {
    const CHUNK: i64 = 1000;
    let mut moved = 0u64;
    loop {
        let rows = sqlx::query(
            "SELECT rowid, id, owner, remote_bare_jid, remote_resource, direction, from_jid, \
             origin_id, search_body, message FROM mam_message ORDER BY rowid LIMIT $1",
        )
        .bind(CHUNK)
        .fetch_all(main)
        .await?;
        let Some(last) = rows.last() else { break };
        let last: i64 = last.try_get("rowid")?;
        let mut transaction = archive.begin().await?;
        for row in &rows {
            sqlx::query(
                "INSERT OR IGNORE INTO mam_message (id, owner, remote_bare_jid, remote_resource, \
                 direction, from_jid, origin_id, search_body, message) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(row.try_get::<i64, _>("id")?)
            .bind(row.try_get::<String, _>("owner")?)
            .bind(row.try_get::<String, _>("remote_bare_jid")?)
            .bind(row.try_get::<String, _>("remote_resource")?)
            .bind(row.try_get::<String, _>("direction")?)
            .bind(row.try_get::<String, _>("from_jid")?)
            .bind(row.try_get::<Option<String>, _>("origin_id")?)
            .bind(row.try_get::<String, _>("search_body")?)
            .bind(row.try_get::<String, _>("message")?)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        sqlx::query("DELETE FROM mam_message WHERE rowid <= $1")
            .bind(last)
            .execute(main)
            .await?;
        moved += rows.len() as u64;
    }
    if moved > 0 {
        tracing::info!(rows = moved, "moved the archive into its own file");
    }
    Ok(())
}

#[async_trait::async_trait]
impl<DB> ArchiveStore for SqlArchive<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB> + Type<DB>,
    Arc<str>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<Arc<str>>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn append(
        &self,
        messages: Vec<ArchivedMessage>,
        only_accounts: bool,
    ) -> Result<(), StorageError> {
        let accounts = self.accounts.clone();
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                // Rows are independent: each INSERT of up to ROWS rows is atomic by itself,
                // and no savepoint is taken (it would copy every page the batch touches).
                match accounts {
                    Some(accounts) if only_accounts => {
                        let kept = with_accounts(&accounts, messages).await?;
                        insert_rows(connection, &kept, false).await
                    }
                    _ => insert_rows(connection, &messages, only_accounts).await,
                }
            })
        })
        .await
    }

    async fn query(
        &self,
        owner: &BareJid,
        query: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError> {
        let filter = Filter::of(owner, query);
        let count_sql = format!("SELECT COUNT(*) FROM mam_message WHERE {}", filter.sql);
        let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql));
        for param in &filter.params {
            count = match param {
                Param::Int(n) => count.bind(*n),
                Param::Text(text) => count.bind(text.clone()),
            };
        }
        let count: i64 = count.fetch_one(&self.pool).await?.try_get(0usize)?;

        let mut page = Filter {
            sql: filter.sql,
            params: filter.params,
        };
        let order = match query.paging {
            Paging::Forward(after) => {
                if let Some(after) = after {
                    page.push("id > ?", Param::Int(after));
                }
                "ASC"
            }
            Paging::Backward(before) => {
                if let Some(before) = before {
                    page.push("id < ?", Param::Int(before));
                }
                "DESC"
            }
        };
        // One more than asked tells whether the page is the last in its direction.
        let limit = i64::try_from(query.max.saturating_add(1)).unwrap_or(i64::MAX);
        page.params.push(Param::Int(limit));
        let sql = format!(
            "SELECT id, message FROM mam_message WHERE {} ORDER BY id {order} LIMIT ${}",
            page.sql,
            page.params.len()
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in &page.params {
            rows = match param {
                Param::Int(n) => rows.bind(*n),
                Param::Text(text) => rows.bind(text.clone()),
            };
        }
        let rows = rows.fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(|row| {
                Ok(Found {
                    id: row.try_get("id")?,
                    message: row.try_get("message")?,
                })
            })
            .collect::<Result<Vec<Found>, StorageError>>()?;
        let complete = items.len() <= query.max;
        items.truncate(query.max);
        if matches!(query.paging, Paging::Backward(_)) {
            items.reverse();
        }
        Ok(ArchivePage {
            items,
            complete,
            count: u64::try_from(count).unwrap_or(0),
        })
    }

    async fn exists(&self, owner: &BareJid, id: ArchiveId) -> Result<bool, StorageError> {
        let row = sqlx::query("SELECT id FROM mam_message WHERE owner = $1 AND id = $2")
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError> {
        // Through the writer: in turn with the appends, so none checked before lands after.
        let owner = owner.to_string();
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                sqlx::query("DELETE FROM mam_message WHERE owner = $1")
                    .bind(owner.as_str())
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn purge_before(&self, id: ArchiveId) -> Result<u64, StorageError> {
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM mam_message WHERE id < $1")
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
                Ok(DB::rows_affected(&done))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_powers_of_two_largest_first() {
        let sizes = |len| statement_sizes(len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(25), vec![16, 8, 1]);
        assert_eq!(sizes(256), vec![256]);
        assert_eq!(sizes(600), vec![256, 256, 64, 16, 8]);
        for len in 0..2000 {
            let split = sizes(len);
            assert_eq!(split.iter().sum::<usize>(), len);
            assert!(
                split
                    .iter()
                    .all(|size| size.is_power_of_two() && *size <= ROWS)
            );
        }
    }
}
