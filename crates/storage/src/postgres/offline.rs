//! The PostgreSQL part of the offline store: storing under the limit with the user's
//! advisory lock, many stores batched into one transaction ([`BatchedOffline`]), and removing
//! a list of ids as one array parameter.

use std::time::SystemTime;

use jid::{BareJid, Jid};
use sqlx::{PgConnection, PgPool, Pool, Postgres};
use tokio::sync::{mpsc, oneshot};

use crate::StorageError;
use crate::accounts::{AccountKey, AccountStore};
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};
use crate::sql::offline::{OfflineDialect, SqlOffline, micros};

impl OfflineDialect for Postgres {
    /// One call of `herald_store_offline` (migration 11): the user's advisory lock makes
    /// concurrent senders count in turn, so they cannot overshoot the limit together; one
    /// statement, so its own transaction.
    async fn store_below_limit<'c>(
        connection: &'c mut PgConnection,
        check_account: bool,
        key: AccountKey<'c>,
        message: NewOfflineMessage<'c>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        let store = Store {
            key,
            check_account,
            message,
            limit,
        };
        let mut outcomes = store_all(connection, &[store]).await?;
        outcomes
            .pop()
            .ok_or_else(|| StorageError::Corrupt("herald_store_offline returned nothing".into()))
    }

    async fn remove_ids(
        pool: &Pool<Self>,
        key: AccountKey<'_>,
        ids: &[i64],
    ) -> Result<u64, StorageError> {
        let deleted = sqlx::query(
            "DELETE FROM offline_message WHERE server = $1 AND username = $2 AND id = ANY($3)",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(ids)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}

/// Most stores in one batch.
const MAX_BATCH: usize = 256;

/// Stores waiting for the batcher before callers wait to queue theirs (bounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// PostgreSQL's offline store: messages stored in batches.
///
/// Every store goes to one task, which takes whatever is queued (up to [`MAX_BATCH`]) and
/// stores it with one statement, `herald_store_offline` (migration 11): one round trip and one
/// commit for the batch, where a store of its own took four round trips (begin, lock, count
/// and insert, commit) per message. Nothing waits on purpose to fill a batch: while one
/// commits, the next gathers, so a quiet server stores each message alone and a busy one
/// hundreds per commit.
///
/// The limit stays exact: the statement takes the advisory lock of every recipient of the
/// batch (the lock a store of its own took), counts under the locks, and counts the batch's
/// own messages in the order they came; so is the order of each recipient's messages (their
/// ids, from the table's sequence, grow in the batch's order). A batch that fails as a whole
/// (a message the database refuses, a lost connection) is stored again message by message, so
/// that a bad message fails alone. Reads, removals and metadata go straight to the pool.
pub(crate) struct BatchedOffline {
    rest: SqlOffline<Postgres>,
    queue: mpsc::Sender<Request>,
}

impl std::fmt::Debug for BatchedOffline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedOffline").finish_non_exhaustive()
    }
}

/// One store, owning what it stores.
pub(super) struct Request {
    domain: String,
    localpart: String,
    check_account: bool,
    from: Jid,
    stored_at: SystemTime,
    stanza: String,
    metadata: String,
    limit: usize,
    told: oneshot::Sender<Result<Option<Stored>, StorageError>>,
}

/// Where a request's outcome arrives.
type Outcome = oneshot::Receiver<Result<Option<Stored>, StorageError>>;

impl Request {
    /// A store of `message` for `user`, and where its outcome will arrive.
    pub(super) fn new(
        user: &BareJid,
        check_account: bool,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<(Request, Outcome), StorageError> {
        let key = AccountKey::of(user)?;
        let (told, outcome) = oneshot::channel();
        let request = Request {
            domain: key.domain.to_owned(),
            localpart: key.localpart.to_owned(),
            check_account,
            from: message.from.clone(),
            stored_at: message.stored_at,
            stanza: message.stanza.to_owned(),
            metadata: message.metadata.to_owned(),
            limit,
            told,
        };
        Ok((request, outcome))
    }

    fn key(&self) -> AccountKey<'_> {
        AccountKey {
            domain: &self.domain,
            localpart: &self.localpart,
        }
    }

    /// Store it alone, in a transaction of its own.
    async fn store_alone(&self, pool: &PgPool) -> Result<Option<Stored>, StorageError> {
        let mut connection = pool.acquire().await?;
        let message = NewOfflineMessage {
            from: &self.from,
            stored_at: self.stored_at,
            stanza: &self.stanza,
            metadata: &self.metadata,
        };
        Postgres::store_below_limit(
            &mut connection,
            self.check_account,
            self.key(),
            message,
            self.limit,
        )
        .await
    }
}

impl BatchedOffline {
    /// The offline store of `pool`'s database, with its batcher started on the current Tokio
    /// runtime (it ends once the store is dropped, after storing what was queued).
    pub(crate) fn start(pool: PgPool) -> BatchedOffline {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool.clone(), queued));
        BatchedOffline {
            rest: SqlOffline::new(pool, None),
            queue,
        }
    }

    async fn store_with(
        &self,
        check_account: bool,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        let (request, outcome) = Request::new(user, check_account, message, limit)?;
        self.queue
            .send(request)
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        outcome
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?
    }
}

/// Store batches until every handle is gone and the queue is empty.
pub(super) async fn run(pool: PgPool, mut queued: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match store_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    // A caller that gave up waiting is not told.
                    let _ = request.told.send(Ok(outcome));
                }
            }
            Err(error) if batch.len() == 1 => {
                let _ = batch.remove(0).told.send(Err(error));
            }
            Err(error) => {
                tracing::debug!(%error, stores = batch.len(), "offline batch failed; storing each alone");
                for request in batch.drain(..) {
                    let outcome = request.store_alone(&pool).await;
                    let _ = request.told.send(outcome);
                }
            }
        }
    }
}

/// One message to store, borrowed.
struct Store<'a> {
    key: AccountKey<'a>,
    check_account: bool,
    message: NewOfflineMessage<'a>,
    limit: usize,
}

/// Store `batch` in one statement, so one transaction: what each store did, in the batch's
/// order.
async fn store_batch(
    pool: &PgPool,
    batch: &[Request],
) -> Result<Vec<Option<Stored>>, StorageError> {
    let stores: Vec<Store<'_>> = batch
        .iter()
        .map(|request| Store {
            key: request.key(),
            check_account: request.check_account,
            message: NewOfflineMessage {
                from: &request.from,
                stored_at: request.stored_at,
                stanza: &request.stanza,
                metadata: &request.metadata,
            },
            limit: request.limit,
        })
        .collect();
    let mut connection = pool.acquire().await?;
    store_all(&mut connection, &stores).await
}

/// Store every one of `stores` with one call of `herald_store_offline` (migration 11), which
/// takes the recipients' locks in the order of their keys, counts under them, and inserts the
/// messages kept in their order: what each store did, in order.
async fn store_all<'a>(
    connection: &mut PgConnection,
    stores: &[Store<'a>],
) -> Result<Vec<Option<Stored>>, StorageError> {
    // Each recipient once; each message names its own by position (from 1).
    let mut recipients: Vec<(&str, &str)> = stores
        .iter()
        .map(|store| (store.key.domain, store.key.localpart))
        .collect();
    recipients.sort_unstable();
    recipients.dedup();
    let positions: Vec<i32> = stores
        .iter()
        .map(|store| {
            let index = recipients
                .binary_search(&(store.key.domain, store.key.localpart))
                .unwrap_or_default();
            i32::try_from(index + 1).unwrap_or(i32::MAX)
        })
        .collect();
    let (domains, localparts): (Vec<&str>, Vec<&str>) = recipients.into_iter().unzip();
    let column = |field: fn(&Store<'a>) -> &'a str| stores.iter().map(field).collect::<Vec<_>>();
    let outcomes: Vec<i64> =
        sqlx::query_scalar("SELECT herald_store_offline($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&domains)
            .bind(&localparts)
            .bind(&positions)
            .bind(
                stores
                    .iter()
                    .map(|store| micros(store.message.stored_at))
                    .collect::<Vec<i64>>(),
            )
            .bind(column(|store| store.message.from.as_str()))
            .bind(column(|store| store.message.stanza))
            .bind(column(|store| store.message.metadata))
            .bind(
                stores
                    .iter()
                    .map(|store| i64::try_from(store.limit).unwrap_or(i64::MAX))
                    .collect::<Vec<i64>>(),
            )
            .bind(
                stores
                    .iter()
                    .map(|store| store.check_account)
                    .collect::<Vec<bool>>(),
            )
            .fetch_one(&mut *connection)
            .await?;
    if outcomes.len() != stores.len() {
        return Err(StorageError::Corrupt(format!(
            "herald_store_offline: {} outcomes for {} messages",
            outcomes.len(),
            stores.len()
        )));
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| match outcome {
            -1 => None,
            0 => Some(Stored::Full),
            id => Some(Stored::Stored(id)),
        })
        .collect())
}

#[async_trait::async_trait]
impl OfflineStore for BatchedOffline {
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
        // The accounts are in the same database: the check is part of the batch.
        self.store_with(true, user, message, limit).await
    }

    async fn list(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        self.rest.list(user).await
    }

    async fn page(
        &self,
        user: &BareJid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        self.rest.page(user, after, limit).await
    }

    async fn remove(&self, user: &BareJid, ids: &[i64]) -> Result<usize, StorageError> {
        self.rest.remove(user, ids).await
    }

    async fn take(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError> {
        self.rest.take(user).await
    }

    async fn count(&self, user: &BareJid) -> Result<usize, StorageError> {
        self.rest.count(user).await
    }

    async fn set_metadata(
        &self,
        user: &BareJid,
        id: i64,
        metadata: &str,
    ) -> Result<bool, StorageError> {
        self.rest.set_metadata(user, id, metadata).await
    }

    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError> {
        self.rest.remove_all(user).await
    }
}
