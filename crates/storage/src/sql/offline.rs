//! [`OfflineStore`] on SQL: MongooseIM's `offline_message` table. Storing under the per-user
//! limit and removing a list of ids are the dialects' part ([`OfflineDialect`]): SQLite
//! counts and inserts under its write lock, PostgreSQL under advisory locks.
//!
//! On PostgreSQL stores are batched: every store goes to one task, which takes whatever is
//! queued (up to [`MAX_BATCH`]) and stores it with one [`OfflineDialect::store_many`] (one
//! statement and one commit), instead of a transaction per message. Nothing waits on purpose
//! to fill a batch: while one is stored, the next gathers, so a quiet server stores each
//! message alone and a busy one hundreds at a time. The limit stays exact (the batch counts its
//! own messages in the order they came) and so does each recipient's order (ids grow in the
//! batch's order). A batch that fails as a whole (a message the database refuses, a lost
//! connection) is stored again message by message, so that a bad message fails alone. On
//! SQLite each store is a write of its own in the group commit (`group_commit`), which
//! batches them with the other writes already.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tokio::sync::{mpsc, oneshot};

use super::Dialect;
use super::group_commit::{GroupCommit, write_via};
use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore};
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};

/// One message to store, borrowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Store<'a> {
    /// Its recipient.
    pub(crate) key: AccountKey<'a>,
    /// Whether to store it only if the recipient's account exists.
    pub(crate) check_account: bool,
    /// The message.
    pub(crate) message: NewOfflineMessage<'a>,
    /// How many messages the recipient may have waiting, this one included.
    pub(crate) limit: usize,
}

/// What differs between the engines in the offline store.
pub(crate) trait OfflineDialect: Dialect {
    /// On `connection`, store each of `stores` in order unless its recipient has its `limit`
    /// of messages already, counting the earlier ones of `stores` (and, with `check_account`,
    /// unless the account does not exist): per store `Some(Stored)`, or `None` for no
    /// account. Counting and storing are atomic against concurrent writers, and a recipient's
    /// ids grow in the order of `stores`. Where there is no group commit (PostgreSQL), all or
    /// none of `stores` is stored.
    fn store_many<'c>(
        connection: &'c mut Self::Connection,
        stores: &'c [Store<'c>],
    ) -> impl Future<Output = Result<Vec<Option<Stored>>, StorageError>> + Send + 'c;

    /// Delete the user's messages with these ids; how many were.
    fn remove_ids(
        pool: &Pool<Self>,
        key: AccountKey<'_>,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// Most stores in one batch.
const MAX_BATCH: usize = 256;

/// Stores waiting for the batcher before callers wait to queue theirs (bounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// What a store was told: `Some` if stored or full, `None` if the account does not exist.
pub(crate) type Outcome = Result<Option<Stored>, StorageError>;

/// One store waiting for the batcher, owning what it stores.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    domain: String,
    localpart: String,
    check_account: bool,
    from: Jid,
    stored_at: SystemTime,
    stanza: String,
    metadata: String,
    limit: usize,
}

impl Request {
    /// A store of `message` for `user`.
    pub(crate) fn new(
        user: &BareJid,
        check_account: bool,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Request, StorageError> {
        let key = AccountKey::of(user)?;
        Ok(Request {
            domain: key.domain.to_owned(),
            localpart: key.localpart.to_owned(),
            check_account,
            from: message.from.clone(),
            stored_at: message.stored_at,
            stanza: message.stanza.to_owned(),
            metadata: message.metadata.to_owned(),
            limit,
        })
    }

    fn store(&self) -> Store<'_> {
        Store {
            key: AccountKey {
                domain: &self.domain,
                localpart: &self.localpart,
            },
            check_account: self.check_account,
            message: NewOfflineMessage {
                from: &self.from,
                stored_at: self.stored_at,
                stanza: &self.stanza,
                metadata: &self.metadata,
            },
            limit: self.limit,
        }
    }
}

/// Store `requests` with one [`OfflineDialect::store_many`], through the writer when there is
/// one (else on a pooled connection).
async fn store_requests<DB: OfflineDialect>(
    commits: Option<&GroupCommit<DB>>,
    pool: &Pool<DB>,
    requests: Arc<Vec<Request>>,
) -> Result<Vec<Option<Stored>>, StorageError> {
    write_via(commits, pool, move |connection| {
        Box::pin(async move {
            let stores: Vec<Store<'_>> = requests.iter().map(Request::store).collect();
            let outcomes = DB::store_many(connection, &stores).await?;
            if outcomes.len() != stores.len() {
                return Err(StorageError::Corrupt(format!(
                    "offline store: {} outcomes for {} messages",
                    outcomes.len(),
                    stores.len()
                )));
            }
            Ok(outcomes)
        })
    })
    .await
}

/// The batcher (where there is no writer): store what is queued, batch after batch, until
/// every handle is gone and the queue is empty.
pub(crate) async fn run<DB: OfflineDialect>(
    pool: Pool<DB>,
    mut queued: mpsc::Receiver<(Request, oneshot::Sender<Outcome>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (requests, told): (Vec<Request>, Vec<oneshot::Sender<Outcome>>) =
            batch.drain(..).unzip();
        let requests = Arc::new(requests);
        match store_requests(None, &pool, Arc::clone(&requests)).await {
            Ok(outcomes) => {
                for (told, outcome) in told.into_iter().zip(outcomes) {
                    // A caller that gave up waiting is not told.
                    let _ = told.send(Ok(outcome));
                }
            }
            Err(error) if told.len() == 1 => {
                if let Some(told) = told.into_iter().next() {
                    let _ = told.send(Err(error));
                }
            }
            Err(error) => {
                tracing::debug!(%error, stores = told.len(), "offline batch failed; storing each alone");
                for (request, told) in requests.iter().zip(told) {
                    let alone = Arc::new(vec![request.clone()]);
                    let outcome = store_requests(None, &pool, alone)
                        .await
                        .map(|mut outcomes| outcomes.pop().flatten());
                    let _ = told.send(outcome);
                }
            }
        }
    }
}

/// The offline messages of a database.
#[derive(Debug)]
pub(crate) struct SqlOffline<DB: Dialect> {
    pool: Pool<DB>,
    /// The database's writer, if its writes are group-committed (SQLite).
    commits: Option<Arc<GroupCommit<DB>>>,
    /// The batcher's queue, where there is no writer (PostgreSQL).
    queue: Option<mpsc::Sender<(Request, oneshot::Sender<Outcome>)>>,
}

impl<DB: OfflineDialect> SqlOffline<DB> {
    /// Offline messages stored in the database behind `pool`, whose schema is up to date;
    /// with `commits`, stores and metadata updates go through that writer, else stores go
    /// through a batcher started on the current Tokio runtime (it ends once the store is
    /// dropped, after storing what was queued).
    pub(crate) fn new(pool: Pool<DB>, commits: Option<Arc<GroupCommit<DB>>>) -> Self {
        let queue = commits.is_none().then(|| {
            let (queue, queued) = mpsc::channel(QUEUE);
            tokio::spawn(run(pool.clone(), queued));
            queue
        });
        SqlOffline {
            pool,
            commits,
            queue,
        }
    }

    /// Store through the writer or the batcher, with the account checked or not.
    async fn store_with(
        &self,
        check_account: bool,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        let request = Request::new(user, check_account, message, limit)?;
        let Some(queue) = &self.queue else {
            let mut outcomes =
                store_requests(self.commits.as_deref(), &self.pool, Arc::new(vec![request]))
                    .await?;
            return Ok(outcomes.pop().flatten());
        };
        let (told, outcome) = oneshot::channel();
        queue
            .send((request, told))
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        outcome
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?
    }
}

/// Microseconds since the Unix epoch; times before it are stored as negative numbers.
pub(crate) fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

fn time_of(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// The `offline_message` columns a message is read from, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, timestamp, from_jid, packet, metadata"
    };
}

fn message_of<DB>(row: &DB::Row, key: AccountKey<'_>) -> Result<StoredMessage, StorageError>
where
    DB: Database,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let id: i64 = row.try_get("id")?;
    let from: String = row.try_get("from_jid")?;
    let from = Jid::new(&from).map_err(|_| {
        StorageError::Corrupt(format!(
            "offline_message {id} of {}@{}: from_jid = {from:?}",
            key.localpart, key.domain
        ))
    })?;
    Ok(StoredMessage {
        id,
        from,
        stored_at: time_of(row.try_get("timestamp")?),
        stanza: row.try_get("packet")?,
        metadata: row.try_get("metadata")?,
    })
}

#[async_trait::async_trait]
impl<DB> OfflineStore for SqlOffline<DB>
where
    DB: OfflineDialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn store(
        &self,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Stored, StorageError> {
        let stored = self.store_with(false, user, message, limit).await?;
        Ok(stored.unwrap_or(Stored::Full))
    }

    async fn store_for_account(
        &self,
        _accounts: &dyn AccountStore,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        // The accounts are in the same database: the check is part of the write.
        self.store_with(true, user, message, limit).await
    }

    async fn list(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM offline_message WHERE server = $1 AND username = $2 ORDER BY id"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of::<DB>(row, key)).collect()
    }

    async fn page(
        &self,
        user: &BareJid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM offline_message WHERE server = $1 AND username = $2 AND id > $3
             ORDER BY id LIMIT $4"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_of::<DB>(row, key)).collect()
    }

    async fn remove(&self, user: &BareJid, ids: &[i64]) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = DB::remove_ids(&self.pool, key, ids).await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn take(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        let key = AccountKey::of(user)?;
        // Deleting with RETURNING is one statement: what one caller takes, no other sees.
        let rows = sqlx::query(concat!(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2 RETURNING ",
            columns!()
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&self.pool)
        .await?;
        // RETURNING gives rows in no defined order.
        let mut messages = rows
            .iter()
            .map(|row| message_of::<DB>(row, key))
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|message| message.id);
        Ok(messages)
    }

    async fn count(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM offline_message WHERE server = $1 AND username = $2",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn set_metadata(
        &self,
        user: &BareJid,
        id: i64,
        metadata: &str,
    ) -> Result<bool, StorageError> {
        AccountKey::of(user)?;
        let user = user.clone();
        let metadata = metadata.to_owned();
        write_via(self.commits.as_deref(), &self.pool, move |connection| {
            Box::pin(async move {
                let key = AccountKey::of(&user)?;
                let updated = sqlx::query(
                    "UPDATE offline_message SET metadata = $1
                     WHERE id = $2 AND server = $3 AND username = $4",
                )
                .bind(metadata.as_str())
                .bind(id)
                .bind(key.domain)
                .bind(key.localpart)
                .execute(connection)
                .await?;
                Ok(DB::rows_affected(&updated) > 0)
            })
        })
        .await
    }

    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let deleted =
            sqlx::query("DELETE FROM offline_message WHERE server = $1 AND username = $2")
                .bind(key.domain)
                .bind(key.localpart)
                .execute(&self.pool)
                .await?;
        Ok(usize::try_from(DB::rows_affected(&deleted)).unwrap_or(usize::MAX))
    }
}

/// Batches (PostgreSQL's), queued before the batcher starts so that it takes them as one.
#[cfg(test)]
pub(crate) mod batch_tests {
    use super::*;
    use crate::Storage;

    fn jid(text: &str) -> BareJid {
        BareJid::new(text).unwrap()
    }

    /// Queue `stores` (user, account checked, sender, stanza, limit), run the batcher over
    /// them, and return what each was told.
    async fn one_batch<DB: OfflineDialect>(
        pool: &Pool<DB>,
        stores: &[(&BareJid, bool, &Jid, &str, usize)],
    ) -> Vec<Outcome> {
        let (queue, queued) = mpsc::channel(stores.len());
        let mut outcomes = Vec::new();
        for &(user, check_account, from, stanza, limit) in stores {
            let message = NewOfflineMessage {
                from,
                stored_at: SystemTime::now(),
                stanza,
                metadata: "",
            };
            let request = Request::new(user, check_account, message, limit).unwrap();
            let (told, outcome) = oneshot::channel();
            queue.send((request, told)).await.unwrap();
            outcomes.push(outcome);
        }
        drop(queue);
        run(pool.clone(), queued).await;
        let mut told = Vec::new();
        for outcome in outcomes {
            told.push(outcome.await.unwrap());
        }
        told
    }

    fn stored_id(outcome: &Outcome) -> i64 {
        match outcome {
            Ok(Some(Stored::Stored(id))) => *id,
            other => panic!("expected a stored message, got {other:?}"),
        }
    }

    async fn listed(storage: &Storage, user: &BareJid) -> Vec<(i64, String)> {
        storage
            .offline()
            .list(user)
            .await
            .unwrap()
            .into_iter()
            .map(|message| (message.id, message.stanza))
            .collect()
    }

    pub(crate) async fn a_batch_keeps_each_recipients_order_and_limit_and_skips_missing_accounts<
        DB: OfflineDialect,
    >(
        storage: &Storage,
        pool: &Pool<DB>,
    ) {
        let juliet = jid("juliet@capulet.example");
        let nurse = jid("nurse@capulet.example");
        let nobody = jid("nobody@capulet.example");
        let credentials = crate::accounts::conformance::credentials(1);
        storage
            .accounts()
            .create(&juliet, &credentials)
            .await
            .unwrap();
        storage
            .accounts()
            .create(&nurse, &credentials)
            .await
            .unwrap();
        let from = Jid::new("romeo@montague.example/orchard").unwrap();
        let before = NewOfflineMessage {
            from: &from,
            stored_at: SystemTime::now(),
            stanza: "<message id='0'/>",
            metadata: "",
        };
        storage.offline().store(&juliet, before, 3).await.unwrap();

        let told = one_batch(
            pool,
            &[
                (&juliet, true, &from, "<message id='1'/>", 3),
                (&nobody, true, &from, "<message id='n'/>", 3),
                (&nurse, true, &from, "<message id='a'/>", 3),
                (&juliet, true, &from, "<message id='2'/>", 3),
                (&nobody, false, &from, "<message id='kept anyway'/>", 3),
                (&juliet, true, &from, "<message id='3'/>", 3),
                (&nurse, true, &from, "<message id='b'/>", 3),
            ],
        )
        .await;

        assert!(matches!(told[1], Ok(None)), "{:?}", told[1]);
        assert!(matches!(told[5], Ok(Some(Stored::Full))), "{:?}", told[5]);
        let juliets = listed(storage, &juliet).await;
        assert_eq!(
            juliets[1..],
            [
                (stored_id(&told[0]), "<message id='1'/>".to_owned()),
                (stored_id(&told[3]), "<message id='2'/>".to_owned()),
            ]
        );
        assert_eq!(
            listed(storage, &nurse).await,
            [
                (stored_id(&told[2]), "<message id='a'/>".to_owned()),
                (stored_id(&told[6]), "<message id='b'/>".to_owned()),
            ]
        );
        assert_eq!(
            listed(storage, &nobody).await,
            [(
                stored_id(&told[4]),
                "<message id='kept anyway'/>".to_owned()
            )]
        );
    }

    /// `refused` is a sender the database refuses to store.
    pub(crate) async fn a_message_the_database_refuses_fails_alone_and_its_batch_is_stored<
        DB: OfflineDialect,
    >(
        storage: &Storage,
        pool: &Pool<DB>,
        refused: &Jid,
    ) {
        let juliet = jid("juliet@capulet.example");
        let from = Jid::new("romeo@montague.example/orchard").unwrap();
        let told = one_batch(
            pool,
            &[
                (&juliet, false, &from, "<message id='1'/>", 10),
                (&juliet, false, refused, "<message id='x'/>", 10),
                (&juliet, false, &from, "<message id='2'/>", 10),
            ],
        )
        .await;
        assert!(told[1].is_err(), "{:?}", told[1]);
        assert_eq!(
            listed(storage, &juliet).await,
            [
                (stored_id(&told[0]), "<message id='1'/>".to_owned()),
                (stored_id(&told[2]), "<message id='2'/>".to_owned()),
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_microseconds() {
        for time in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            UNIX_EPOCH - Duration::from_micros(86_400_000_001),
        ] {
            assert_eq!(time_of(micros(time)), time);
        }
    }
}
