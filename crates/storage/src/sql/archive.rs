//! [`ArchiveStore`] on SQL: the `mam_message` table, the same statements on both engines
//! (queries are built from the filters present, with numbered parameters).
//!
//! One row a message, kept by its sender's archive, its recipient's or both (`kept`, bits 1
//! and 2), on integer keys of the JIDs (`mam_jid`): a message between two local accounts is
//! written once, not once per archive, and every index entry is a pair of integers. A query
//! of one account's archive reads two sides, each on an index of its own (the rows it sent,
//! the rows it received), merged by id.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use jid::BareJid;
use sqlx::{Arguments, ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::Dialect;
use super::group_commit::{GroupCommit, write_via};
use crate::StorageError;
use crate::accounts::AccountKey;
use crate::archive::{
    ArchiveId, ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, Found, Kept, Paging,
};

/// How many JIDs' keys are kept in memory (the cache is emptied when full).
const KEYS_CACHED: usize = 65_536;

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
    /// JIDs' keys in `mam_jid`, as committed (a key never changes once given).
    keys: Mutex<HashMap<Box<str>, i64>>,
    /// The texts of the inserts, made once each.
    inserts: Arc<Inserts>,
    /// The accounts the writer found, when its transactions see the accounts in one snapshot
    /// (SQLite's archive file, attaching the main file); else each insert checks its rows'.
    known: Option<Arc<Mutex<KnownAccounts>>>,
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
            keys: Mutex::new(HashMap::new()),
            inserts: Arc::new(Inserts::default()),
            known: None,
        }
    }

    /// This archive, its writer remembering the accounts it found (see [`KnownAccounts`]):
    /// for a writer whose transaction reads the accounts, and the main file's count of
    /// removals, from one snapshot.
    pub(crate) fn remembering_accounts(mut self) -> Self {
        self.known = Some(Arc::default());
        self
    }

    fn cached_keys(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, i64>> {
        lock(&self.keys)
    }
}

/// `mutex` locked; a panic elsewhere while it was held leaves what it holds usable (a cache).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The two keys of a conversation in one number: the smaller shifted left by 32 bits, or-ed
/// with the larger (keys are below 2^31: `mam_jid` would need two billion JIDs).
fn conversation(a: i64, b: i64) -> i64 {
    (a.min(b) << 32) | a.max(b)
}

/// A bound parameter of a built query.
#[derive(Debug, Clone)]
enum Param {
    Int(i64),
    Text(String),
}

/// A query's conditions on one side of the archive (the rows its owner sent, or received),
/// with its parameters, numbered from `$1` (the owner's key): the same numbers in both sides.
struct Filter {
    sent: String,
    received: String,
    params: Vec<Param>,
}

impl Filter {
    fn next(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }

    /// A condition on both sides; `?` is its parameter.
    fn both(&mut self, condition: &str, param: Param) {
        let n = self.next(param);
        let condition = condition.replace('?', &n);
        for side in [&mut self.sent, &mut self.received] {
            side.push_str(" AND ");
            side.push_str(&condition);
        }
    }

    /// The filters of a query (not its page), on the owner's key and, if it asks for one,
    /// the key of the JID it is `with` (`None` if that JID was never archived).
    fn of(owner: i64, with: Option<i64>, query: &ArchiveQuery) -> Filter {
        let mut filter = Filter {
            sent: String::new(),
            received: String::new(),
            params: vec![Param::Int(owner)],
        };
        match with {
            // Unary `+` keeps the owner's index out: a conversation's index serves better.
            Some(with) => {
                let c = filter.next(Param::Int(conversation(owner, with)));
                let w = filter.next(Param::Int(with));
                filter.sent = format!(
                    "+sender = $1 AND kept <> 2 AND conversation = {c} AND recipient = {w}"
                );
                filter.received = format!(
                    "+recipient = $1 AND kept <> 1 AND conversation = {c} AND sender = {w}"
                );
            }
            None => {
                filter.sent = "sender = $1 AND kept <> 2".to_owned();
                filter.received = "recipient = $1 AND kept <> 1".to_owned();
            }
        }
        if let Some(resource) = &query.with_resource {
            let r = filter.next(Param::Text(resource.clone()));
            filter
                .sent
                .push_str(&format!(" AND recipient_resource = {r}"));
            filter
                .received
                .push_str(&format!(" AND sender_resource = {r}"));
        }
        if let Some(start) = query.start {
            filter.both("id >= ?", Param::Int(start));
        }
        if let Some(end) = query.end {
            filter.both("id <= ?", Param::Int(end));
        }
        if let Some(after) = query.after_id {
            filter.both("id > ?", Param::Int(after));
        }
        if let Some(before) = query.before_id {
            filter.both("id < ?", Param::Int(before));
        }
        if !query.ids.is_empty() {
            let list: Vec<String> = query
                .ids
                .iter()
                .map(|id| filter.next(Param::Int(*id)))
                .collect();
            let condition = format!(" AND id IN ({})", list.join(", "));
            filter.sent.push_str(&condition);
            filter.received.push_str(&condition);
        }
        if let Some(text) = &query.text {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            filter.both(
                "search_body LIKE ? ESCAPE '\\'",
                Param::Text(format!("%{escaped}%")),
            );
        }
        filter
    }

    fn bind<'q, DB>(
        &self,
        mut query: sqlx::query::Query<'q, DB, DB::Arguments>,
    ) -> sqlx::query::Query<'q, DB, DB::Arguments>
    where
        DB: Dialect,
        String: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        for param in &self.params {
            query = match param {
                Param::Int(n) => query.bind(*n),
                Param::Text(text) => query.bind(text.clone()),
            };
        }
        query
    }
}

/// Rows per INSERT: 14 parameters a row (10 columns, the two sides' account keys), 3,584 a
/// statement, within both engines' limits (SQLite 32,766, PostgreSQL 65,535).
const ROWS: usize = 256;

/// The columns of `mam_message` an insert writes, in the order rows are bound.
const COLUMNS: &str = "id, sender, recipient, conversation, kept, sender_resource, \
                       recipient_resource, origin_id, search_body, message";

/// The parameters bound for each row of an insert: the ten columns, and with
/// `only_accounts` each side's domain and localpart.
fn parameters_per_row(only_accounts: bool) -> usize {
    if only_accounts { 14 } else { 10 }
}

/// The text of an insert of `rows` rows (the same for every batch of that size, so that the
/// engine's statement cache keeps it): one parameter list per row, ten columns and, when
/// `only_accounts`, each side's domain and localpart, for a side to be kept only if its
/// account exists (one index lookup a kept side) and a row only if a side is left. A row
/// whose key is taken is skipped.
fn insert_sql<DB: Dialect>(rows: usize, only_accounts: bool) -> String {
    let columns = parameters_per_row(only_accounts);
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
    if only_accounts {
        // CASE and EXISTS, no function call: SQLite keeps no statement journal for it.
        let side = |bit: u8, domain: u8| {
            format!(
                "(CASE WHEN (v.column5 & {bit}) = 0 THEN 0 WHEN EXISTS (SELECT 1 FROM users \
                 WHERE users.server = v.column{domain} AND users.username = v.column{}) \
                 THEN {bit} ELSE 0 END)",
                domain + 1
            )
        };
        format!(
            "{insert} mam_message ({COLUMNS}) \
             SELECT w.c1, w.c2, w.c3, w.c4, w.k, w.c6, w.c7, w.c8, w.c9, w.c10 FROM \
             (SELECT v.column1 AS c1, v.column2 AS c2, v.column3 AS c3, v.column4 AS c4, \
             {} + {} AS k, v.column6 AS c6, v.column7 AS c7, v.column8 AS c8, \
             v.column9 AS c9, v.column10 AS c10 FROM (VALUES {values}) AS v) AS w \
             WHERE w.k <> 0{on_conflict}",
            side(1, 11),
            side(2, 13),
        )
    } else {
        format!(
            "{insert} mam_message ({COLUMNS}) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
             v.column7, v.column8, v.column9, v.column10 FROM (VALUES {values}) AS v{on_conflict}"
        )
    }
}

/// The insert texts of [`insert_sql`], one per statement size (a power of two up to [`ROWS`])
/// with and without the account checks, each made on first use and then shared with the
/// statement (a text of 256 rows is about 30 KiB, and making it took 3,584 small strings:
/// about 2,000 instructions a row in callgrind, on the server's threads).
#[derive(Debug, Default)]
struct Inserts([OnceLock<Arc<str>>; 2 * SIZES]);

/// How many statement sizes there are: 1, 2, 4 ... [`ROWS`].
const SIZES: usize = ROWS.ilog2() as usize + 1;

impl Inserts {
    fn get<DB: Dialect>(&self, rows: usize, only_accounts: bool) -> Arc<str> {
        debug_assert!(rows.is_power_of_two() && rows <= ROWS);
        let at = rows.ilog2() as usize + if only_accounts { SIZES } else { 0 };
        Arc::clone(self.0[at].get_or_init(|| insert_sql::<DB>(rows, only_accounts).into()))
    }
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

/// The rows of one append: a message to oneself is kept as received only (one message of
/// one's archive).
fn rows_of(mut messages: Vec<ArchivedMessage>) -> Vec<ArchivedMessage> {
    for message in &mut messages {
        if message.sender == message.recipient {
            message.kept = Kept::Recipient;
        }
    }
    messages
}

/// Keys of JIDs as committed in `mam_jid`.
type Keys = HashMap<Box<str>, i64>;

/// The keys of a message's sender and recipient.
type Pair = (i64, i64);

fn key(keys: &Keys, jid: &BareJid) -> Result<i64, StorageError> {
    keys.get(jid.as_str())
        .copied()
        .ok_or_else(|| StorageError::Corrupt(format!("no archive key for {jid}")))
}

/// Insert the rows of `messages` (each side kept only if its account exists, with
/// `only_accounts`), in statements of [`statement_sizes`] (each statement is a round trip to
/// the engine).
///
/// Texts are bound as shared strings of which this function keeps a reference until the
/// statement is done: sqlx's SQLite worker drops the bound values on its own thread, and a
/// string allocated on a tokio thread and freed on another costs glibc's allocator a lock on
/// the tokio thread's arena (24.6 us of CPU per message in that thread's `_int_free` in a
/// profile of the push benchmark, gone after); so the last reference, and the free, stay here.
async fn insert_rows<DB>(
    connection: &mut DB::Connection,
    inserts: &Inserts,
    messages: &[ArchivedMessage],
    keys: &[Pair],
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
    let empty: Arc<str> = Arc::from("");
    let mut kept: Vec<Arc<str>> = Vec::new();
    let mut lower = String::new();
    let mut rest = messages.iter().zip(keys);
    for size in statement_sizes(messages.len()) {
        let chunk = rest.by_ref().take(size);
        kept.clear();
        let mut text = |text: &str| {
            if text.is_empty() {
                return Arc::clone(&empty);
            }
            let shared: Arc<str> = Arc::from(text);
            kept.push(Arc::clone(&shared));
            shared
        };
        // The arguments made at their full count: grown value by value, the vector of a
        // statement of 256 rows was moved a dozen times, into blocks large enough that the
        // allocator merged its small free chunks first each time.
        let mut arguments = DB::Arguments::default();
        arguments.reserve(size * parameters_per_row(only_accounts), 0);
        let mut insert = sqlx::query_with(
            sqlx::AssertSqlSafe(inserts.get::<DB>(size, only_accounts)),
            arguments,
        );
        for (message, &(sender, recipient)) in chunk {
            insert = insert
                .bind(message.id)
                .bind(sender)
                .bind(recipient)
                .bind(conversation(sender, recipient))
                .bind(message.kept.code())
                .bind(text(&message.sender_resource))
                .bind(text(&message.recipient_resource))
                .bind(message.origin_id.as_deref().map(&mut text))
                .bind(text(lowercase(&message.body, &mut lower)))
                .bind(Arc::clone(&message.message));
            if only_accounts {
                for (side, jid) in [
                    (message.kept.sender(), &message.sender),
                    (message.kept.recipient(), &message.recipient),
                ] {
                    // A side not kept, or a JID that cannot be an account, matches no user.
                    match AccountKey::of(jid) {
                        Ok(account) if side => {
                            insert = insert
                                .bind(text(account.domain))
                                .bind(text(account.localpart));
                        }
                        _ => insert = insert.bind(Arc::clone(&empty)).bind(Arc::clone(&empty)),
                    }
                }
            }
        }
        insert.execute(&mut *connection).await?;
    }
    drop(kept);
    Ok(())
}

/// `text` in lowercase, as `str::to_lowercase` makes it, in `buffer` (reused from row to
/// row: ASCII text, most bodies, is lowered there without a string of its own).
fn lowercase<'b>(text: &str, buffer: &'b mut String) -> &'b str {
    buffer.clear();
    if text.is_ascii() {
        buffer.push_str(text);
        buffer.make_ascii_lowercase();
    } else {
        buffer.push_str(&text.to_lowercase());
    }
    buffer
}

/// `messages` with each side whose account is not in the database of `accounts` left out,
/// and the messages left with no side (one query per [`ROWS`] accounts, on a reading
/// connection).
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
    let mut owners: Vec<&BareJid> = Vec::new();
    for message in &messages {
        if message.kept.sender() {
            owners.push(&message.sender);
        }
        if message.kept.recipient() {
            owners.push(&message.recipient);
        }
    }
    owners.sort();
    owners.dedup();
    let mut connection = accounts.acquire().await?;
    let found = existing_accounts(&mut connection, &owners).await?;
    let keys = vec![(0, 0); messages.len()];
    let (messages, _) = keep_sides(messages, keys, |_, jid| found.contains(jid.as_str()));
    Ok(messages)
}

/// Which of `owners` have an account in the database `connection` reads (their bare JIDs'
/// texts), one query per [`ROWS`] accounts.
async fn existing_accounts<DB>(
    connection: &mut DB::Connection,
    owners: &[&BareJid],
) -> Result<HashSet<String>, StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut found = HashSet::new();
    for chunk in owners.chunks(ROWS) {
        let keys: Vec<AccountKey<'_>> = chunk
            .iter()
            .filter_map(|owner| AccountKey::of(owner).ok())
            .collect();
        let mut n = 0;
        let mut next = || {
            n += 1;
            DB::param(n)
        };
        let pairs: Vec<String> = keys
            .iter()
            .map(|_| format!("(server = {} AND username = {})", next(), next()))
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT server, username FROM users WHERE {}",
            pairs.join(" OR ")
        );
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in &keys {
            select = select.bind(key.domain).bind(key.localpart);
        }
        for row in select.fetch_all(&mut *connection).await? {
            let server: String = row.try_get("server")?;
            let username: String = row.try_get("username")?;
            found.insert(format!("{username}@{server}"));
        }
    }
    Ok(found)
}

/// `messages` (with their keys, `keys`, kept in step) with each side left out for which
/// `exists(key, jid)` is false, and the messages left with no side.
fn keep_sides(
    messages: Vec<ArchivedMessage>,
    keys: Vec<Pair>,
    exists: impl Fn(i64, &BareJid) -> bool,
) -> (Vec<ArchivedMessage>, Vec<Pair>) {
    let mut kept_keys = Vec::with_capacity(keys.len());
    let kept = messages
        .into_iter()
        .zip(keys)
        .filter_map(|(mut message, (sender_key, recipient_key))| {
            let sender = message.kept.sender() && exists(sender_key, &message.sender);
            let recipient = message.kept.recipient() && exists(recipient_key, &message.recipient);
            message.kept = match (sender, recipient) {
                (true, true) => Kept::Both,
                (true, false) => Kept::Sender,
                (false, true) => Kept::Recipient,
                (false, false) => return None,
            };
            kept_keys.push((sender_key, recipient_key));
            Some(message)
        })
        .collect();
    (kept, kept_keys)
}

/// The accounts an archive's writer found, remembered while the count of accounts ever
/// removed (`herald_account_removals`, kept by a trigger on `users`) stays what it was when
/// they were found: in a transaction that reads that count and the accounts from one snapshot
/// (SQLite's), an account remembered at the count read is one the snapshot has, as a check in
/// the insert would have found. Checking each row's two accounts in the insert was a quarter
/// of the archive's cost (two lookups of text keys a row; callgrind, the push benchmark).
#[derive(Debug, Default)]
pub(crate) struct KnownAccounts {
    /// The count the accounts were found at.
    removals: Option<i64>,
    /// Their keys in `mam_jid`.
    keys: KeySet,
}

/// A set of `mam_jid` keys. They are numbers the database gave, never chosen by a client,
/// so they are hashed by one multiplication ([`KeyHasher`]) rather than by SipHash, the
/// standard library's defence against chosen keys (about a hundred instructions a lookup,
/// and a batch looks each row's keys up four to six times).
type KeySet = HashSet<i64, BuildHasherDefault<KeyHasher>>;

/// Fibonacci hashing of one integer key (Knuth, TAOCP vol. 3, section 6.4): a product with
/// an odd constant near 2^64 divided by the golden ratio, which spreads consecutive keys
/// over the high bits the table reads as well as the low ones.
#[derive(Debug, Default)]
struct KeyHasher(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `i64`; kept correct for any other input all the same.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0 ^ n.cast_unsigned()).wrapping_mul(GOLDEN);
    }
}

/// Add the JIDs of `missing` to `mam_jid` (those not there yet), in statements of
/// [`statement_sizes`].
async fn add_keys<DB>(
    connection: &mut DB::Connection,
    missing: &[Box<str>],
) -> Result<(), StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let (insert, on_conflict) = DB::SQL.insert_ignoring;
    let mut rest = missing;
    for size in statement_sizes(missing.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let values: Vec<String> = (1..=chunk.len())
            .map(|n| format!("({})", DB::param(n)))
            .collect();
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{insert} mam_jid (jid) VALUES {}{on_conflict}",
            values.join(", ")
        )));
        for jid in chunk {
            statement = statement.bind(&**jid);
        }
        statement.execute(&mut *connection).await?;
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
        let mut rows = rows_of(messages);
        let mut only_accounts = only_accounts;
        if let Some(accounts) = &self.accounts
            && only_accounts
        {
            // The accounts are in another database: checked here, before the write.
            rows = with_accounts(accounts, rows).await?;
            only_accounts = false;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let keys = self.keys_of(&rows).await?;
        let inserts = Arc::clone(&self.inserts);
        // Accounts the writer remembers are checked before the insert, in its transaction.
        let known = self.known.clone().filter(|_| only_accounts);
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                let (rows, keys, only_accounts) = match known {
                    Some(known) => {
                        let (rows, keys) =
                            SqlArchive::<DB>::keep_existing(&known, connection, rows, keys).await?;
                        (rows, keys, false)
                    }
                    None => (rows, keys, only_accounts),
                };
                // Rows are independent: each INSERT of up to ROWS rows is atomic by itself,
                // and no savepoint is taken (it would copy every page the batch touches).
                insert_rows(connection, &inserts, &rows, &keys, only_accounts).await
            })
        })
        .await
    }

    async fn query(
        &self,
        owner: &BareJid,
        query: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError> {
        let empty = ArchivePage {
            items: Vec::new(),
            complete: true,
            count: 0,
        };
        let Some(owner) = self.key_of(owner.as_str()).await? else {
            return Ok(empty);
        };
        let with = match &query.with_bare {
            Some(with) => match self.key_of(with).await? {
                Some(key) => Some(key),
                None => return Ok(empty),
            },
            None => None,
        };
        let mut filter = Filter::of(owner, with, query);
        let count_sql = format!(
            "SELECT (SELECT COUNT(*) FROM mam_message WHERE {}) + \
             (SELECT COUNT(*) FROM mam_message WHERE {})",
            filter.sent, filter.received
        );
        let count = filter.bind(sqlx::query(sqlx::AssertSqlSafe(count_sql)));
        let count: i64 = count.fetch_one(&self.pool).await?.try_get(0usize)?;

        let order = match query.paging {
            Paging::Forward(after) => {
                if let Some(after) = after {
                    filter.both("id > ?", Param::Int(after));
                }
                "ASC"
            }
            Paging::Backward(before) => {
                if let Some(before) = before {
                    filter.both("id < ?", Param::Int(before));
                }
                "DESC"
            }
        };
        // One more than asked tells whether the page is the last in its direction. Each side
        // gives its first rows in the page's order, and the page is the first of both.
        let limit = i64::try_from(query.max.saturating_add(1)).unwrap_or(i64::MAX);
        let limit = filter.next(Param::Int(limit));
        let side = |condition: &str, name: &str| {
            format!(
                "SELECT id, message FROM (SELECT id, message FROM mam_message WHERE {condition} \
                 ORDER BY id {order} LIMIT {limit}) AS {name}"
            )
        };
        let sql = format!(
            "SELECT id, message FROM ({} UNION ALL {}) AS both_sides \
             ORDER BY id {order} LIMIT {limit}",
            side(&filter.sent, "sent"),
            side(&filter.received, "received"),
        );
        let rows = filter
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await?;
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
        let Some(owner) = self.key_of(owner.as_str()).await? else {
            return Ok(false);
        };
        let row = sqlx::query(
            "SELECT id FROM mam_message WHERE id = $2 \
             AND ((sender = $1 AND kept <> 2) OR (recipient = $1 AND kept <> 1))",
        )
        .bind(owner)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError> {
        let Some(owner) = self.key_of(owner.as_str()).await? else {
            return Ok(());
        };
        // Through the writer: in turn with the appends, so none checked before lands after.
        // The rows only this account kept go; the others stay, kept by the other side only.
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                for statement in [
                    "DELETE FROM mam_message WHERE sender = $1 AND kept <> 2 AND kept = 1",
                    "UPDATE mam_message SET kept = 2 WHERE sender = $1 AND kept <> 2",
                    "DELETE FROM mam_message WHERE recipient = $1 AND kept <> 1 AND kept = 2",
                    "UPDATE mam_message SET kept = 1 WHERE recipient = $1 AND kept <> 1",
                ] {
                    sqlx::query(statement)
                        .bind(owner)
                        .execute(&mut *connection)
                        .await?;
                }
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

impl<DB> SqlArchive<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    /// `messages` (with their keys) with the sides whose account does not exist left out, as
    /// the transaction on `connection` sees the accounts: the remembered ones, after the count
    /// of removals is read, and the others looked up and remembered.
    async fn keep_existing(
        known: &Mutex<KnownAccounts>,
        connection: &mut DB::Connection,
        messages: Vec<ArchivedMessage>,
        keys: Vec<Pair>,
    ) -> Result<(Vec<ArchivedMessage>, Vec<Pair>), StorageError> {
        let removals: i64 = sqlx::query_scalar("SELECT removals FROM herald_account_removals")
            .fetch_one(&mut *connection)
            .await?;
        let mut existing = KeySet::default();
        let mut unknown: Vec<(i64, &BareJid)> = Vec::new();
        {
            let mut known = lock(known);
            if known.removals != Some(removals) {
                known.keys.clear();
                known.removals = Some(removals);
            }
            for (message, &(sender, recipient)) in messages.iter().zip(&keys) {
                for (side, key, jid) in [
                    (message.kept.sender(), sender, &message.sender),
                    (message.kept.recipient(), recipient, &message.recipient),
                ] {
                    if side && !existing.contains(&key) {
                        if known.keys.contains(&key) {
                            existing.insert(key);
                        } else {
                            unknown.push((key, jid));
                        }
                    }
                }
            }
        }
        if !unknown.is_empty() {
            unknown.sort_unstable_by_key(|(key, _)| *key);
            unknown.dedup_by_key(|(key, _)| *key);
            let jids: Vec<&BareJid> = unknown.iter().map(|(_, jid)| *jid).collect();
            let found = existing_accounts(connection, &jids).await?;
            let mut known = lock(known);
            let remember = known.removals == Some(removals);
            if remember && known.keys.len() + found.len() > KEYS_CACHED {
                known.keys.clear();
            }
            for (key, jid) in unknown {
                if found.contains(jid.as_str()) {
                    existing.insert(key);
                    if remember {
                        known.keys.insert(key);
                    }
                }
            }
        }
        Ok(keep_sides(messages, keys, |key, _| existing.contains(&key)))
    }

    /// The key of `jid`, if it was ever archived.
    async fn key_of(&self, jid: &str) -> Result<Option<i64>, StorageError> {
        if let Some(key) = self.cached_keys().get(jid) {
            return Ok(Some(*key));
        }
        let key: Option<i64> = sqlx::query_scalar("SELECT id FROM mam_jid WHERE jid = $1")
            .bind(jid)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(key) = key {
            self.remember(jid.into(), key);
        }
        Ok(key)
    }

    fn remember(&self, jid: Box<str>, key: i64) {
        let mut keys = self.cached_keys();
        if keys.len() >= KEYS_CACHED {
            keys.clear();
        }
        keys.insert(jid, key);
    }

    /// The keys of every message's sender and recipient, given to JIDs that have none in a
    /// write of its own (committed before a row names them, so that a key in memory is always
    /// one the database has). JIDs not in memory are read first and only those still missing
    /// are inserted: an insert that skips an existing JID still takes a number of
    /// PostgreSQL's sequence.
    async fn keys_of<'m>(
        &self,
        messages: &'m [ArchivedMessage],
    ) -> Result<Vec<Pair>, StorageError> {
        const UNKNOWN: i64 = -1;
        let mut pairs = Vec::with_capacity(messages.len());
        let mut missing: HashSet<&'m str> = HashSet::new();
        {
            let cached = self.cached_keys();
            let mut known = |jid: &'m BareJid| match cached.get(jid.as_str()) {
                Some(key) => *key,
                None => {
                    missing.insert(jid.as_str());
                    UNKNOWN
                }
            };
            for message in messages {
                pairs.push((known(&message.sender), known(&message.recipient)));
            }
        }
        if missing.is_empty() {
            return Ok(pairs);
        }
        let mut missing: Vec<Box<str>> = missing.into_iter().map(Box::from).collect();
        missing.sort();
        let mut found = Keys::new();
        self.read_keys(&missing, &mut found).await?;
        missing.retain(|jid| !found.contains_key(jid));
        if !missing.is_empty() {
            let added = missing.clone();
            write_via(self.commits.as_deref(), &self.pool, move |connection| {
                Box::pin(async move { add_keys(connection, &added).await })
            })
            .await?;
            self.read_keys(&missing, &mut found).await?;
        }
        for (message, (sender, recipient)) in messages.iter().zip(&mut pairs) {
            if *sender == UNKNOWN {
                *sender = key(&found, &message.sender)?;
            }
            if *recipient == UNKNOWN {
                *recipient = key(&found, &message.recipient)?;
            }
        }
        Ok(pairs)
    }

    /// Read the keys `mam_jid` has of `jids` into `keys` and the cache.
    async fn read_keys(&self, jids: &[Box<str>], keys: &mut Keys) -> Result<(), StorageError> {
        for chunk in jids.chunks(ROWS) {
            let list: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let mut select = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, jid FROM mam_jid WHERE jid IN ({})",
                list.join(", ")
            )));
            for jid in chunk {
                select = select.bind(&**jid);
            }
            for row in select.fetch_all(&self.pool).await? {
                let key: i64 = row.try_get("id")?;
                let jid: String = row.try_get("jid")?;
                self.remember(jid.as_str().into(), key);
                keys.insert(jid.into_boxed_str(), key);
            }
        }
        Ok(())
    }
}

/// The largest archive id the database holds (0 if none): ids given after a start must be
/// above it ([`crate::archive::seen_id`]).
pub(crate) async fn largest_id<DB>(pool: &Pool<DB>) -> Result<ArchiveId, StorageError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM mam_message")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get(0usize)?)
}

/// A row of the archive before one row served both archives (`owner`'s, sent or received) as
/// a message of the present table, kept by that owner's side.
struct LegacyRow {
    id: ArchiveId,
    owner: String,
    remote_bare: String,
    remote_resource: String,
    direction: String,
    from: String,
    origin_id: Option<String>,
    body: String,
    message: String,
}

impl LegacyRow {
    fn into_message(self) -> Option<ArchivedMessage> {
        let owner = BareJid::new(&self.owner).ok()?;
        let remote = BareJid::new(&self.remote_bare).ok()?;
        let outgoing = self.direction == "O";
        let from_resource = self
            .from
            .split_once('/')
            .map(|(_, resource)| resource.to_owned())
            .unwrap_or_default();
        let (sender, sender_resource, recipient, recipient_resource, kept) = if outgoing {
            (
                owner,
                from_resource,
                remote,
                self.remote_resource,
                Kept::Sender,
            )
        } else {
            (
                remote,
                self.remote_resource,
                owner,
                String::new(),
                Kept::Recipient,
            )
        };
        Some(ArchivedMessage {
            id: self.id,
            sender,
            sender_resource,
            recipient,
            recipient_resource,
            kept,
            origin_id: self.origin_id,
            body: self.body,
            message: self.message.into(),
        })
    }
}

/// Move the rows an earlier version kept in the main file's `mam_message` (a row per message
/// per archive) into the archive's own file (SQLite), a thousand at a time, each as a message
/// kept by its owner's side; nothing to do once the main table is empty.
pub(crate) async fn move_rows_from_main(
    main: &sqlx::SqlitePool,
    archive: &sqlx::SqlitePool,
) -> Result<(), StorageError> {
    const CHUNK: i64 = 1000;
    let store = SqlArchive::<sqlx::Sqlite>::new(archive.clone(), None, None);
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
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let legacy = LegacyRow {
                id: row.try_get("id")?,
                owner: row.try_get("owner")?,
                remote_bare: row.try_get("remote_bare_jid")?,
                remote_resource: row.try_get("remote_resource")?,
                direction: row.try_get("direction")?,
                from: row.try_get("from_jid")?,
                origin_id: row.try_get("origin_id")?,
                body: row.try_get("search_body")?,
                message: row.try_get("message")?,
            };
            let id = legacy.id;
            match legacy.into_message() {
                Some(message) => messages.push(message),
                None => tracing::warn!(id, "left out an archived message whose JIDs do not parse"),
            }
        }
        store.append(messages, false).await?;
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

/// Rows as the archive kept them before one row served both archives (PostgreSQL's version
/// 6, SQLite's archive file version 2), for the tests of their conversion on both engines.
#[cfg(test)]
pub(crate) mod legacy {
    /// (id, owner, remote bare JID, remote resource, direction, from): Juliet's row of a
    /// message from Romeo (from his orchard), Romeo's of one to Juliet, and the nurse's of one
    /// to Romeo under an id Juliet's archive also gave (ids were per archive).
    pub(crate) const ROWS: [(i64, &str, &str, &str, &str, &str); 3] = [
        (
            4242,
            "juliet@capulet.example",
            "romeo@montague.example",
            "orchard",
            "I",
            "romeo@montague.example/orchard",
        ),
        (
            4243,
            "romeo@montague.example",
            "juliet@capulet.example",
            "",
            "O",
            "romeo@montague.example/balcony",
        ),
        (
            4242,
            "nurse@capulet.example",
            "romeo@montague.example",
            "",
            "O",
            "nurse@capulet.example/kitchen",
        ),
    ];

    /// Insert [`ROWS`] into the old table of the database behind `pool`.
    pub(crate) async fn insert<DB>(pool: &sqlx::Pool<DB>)
    where
        DB: super::Dialect,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        for (id, owner, remote, resource, direction, from) in ROWS {
            sqlx::query(
                "INSERT INTO mam_message (id, owner, remote_bare_jid, remote_resource, \
                 direction, from_jid, origin_id, search_body, message) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, 'hi', '<message/>')",
            )
            .bind(id)
            .bind(owner)
            .bind(remote)
            .bind(resource)
            .bind(direction)
            .bind(from)
            .execute(pool)
            .await
            .expect("a row of the old table");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_one_number_from_either_side() {
        assert_eq!(conversation(3, 7), conversation(7, 3));
        assert_eq!(conversation(3, 7), (3 << 32) | 7);
        assert_ne!(conversation(3, 7), conversation(3, 8));
        assert_ne!(conversation(1, 2), conversation(2, 2));
        let largest = (1 << 31) - 1;
        assert!(conversation(largest, largest - 1) > 0);
    }

    #[test]
    fn a_body_is_searched_in_the_lowercase_str_makes_with_the_buffer_reused() {
        let mut buffer = String::new();
        for body in [
            "Hello, World!",
            "",
            "already lower",
            "ÉCOLE Straße",
            "ΟΔΟΣ ΣΑΣ",
            "MiXeD 123 <&>",
        ] {
            assert_eq!(lowercase(body, &mut buffer), body.to_lowercase(), "{body}");
        }
        // A shorter text after a longer one leaves nothing of the longer.
        lowercase("A LONG BODY FIRST", &mut buffer);
        assert_eq!(lowercase("Hi", &mut buffer), "hi");
    }

    #[test]
    fn consecutive_archive_keys_hash_apart_in_the_bits_a_table_reads() {
        let hash = |n: i64| {
            let mut hasher = KeyHasher::default();
            hasher.write_i64(n);
            hasher.finish()
        };
        // hashbrown picks a bucket with the low bits and tags it with the top seven.
        let tops: HashSet<u64> = (1..=1000).map(|n| hash(n) >> 57).collect();
        assert_eq!(tops.len(), 128);
        let lows: HashSet<u64> = (1..=1000).map(|n| hash(n) & 1023).collect();
        assert_eq!(lows.len(), 1000);
        let mut keys = KeySet::default();
        keys.extend(1..=1000);
        assert!((1..=1000).all(|n| keys.contains(&n)));
        assert!(!keys.contains(&0) && !keys.contains(&1001));
    }

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

    #[test]
    fn each_insert_text_is_made_once_and_shared() {
        let inserts = Inserts::default();
        for rows in statement_sizes(511) {
            for only_accounts in [false, true] {
                let first = inserts.get::<sqlx::Sqlite>(rows, only_accounts);
                assert_eq!(&*first, insert_sql::<sqlx::Sqlite>(rows, only_accounts));
                let again = inserts.get::<sqlx::Sqlite>(rows, only_accounts);
                assert!(Arc::ptr_eq(&first, &again), "{rows} rows made twice");
            }
        }
        assert_ne!(
            inserts.get::<sqlx::Sqlite>(4, true),
            inserts.get::<sqlx::Sqlite>(4, false)
        );
    }
}
