//! The PostgreSQL part of the offline store: a batch stored with one call of
//! `herald_store_offline` (migration 11: the recipients' advisory locks, the counts under them,
//! the inserts in order), and removing a list of ids as one array parameter.

use sqlx::{PgConnection, Pool, Postgres};

use crate::StorageError;
use crate::accounts::AccountKey;
use crate::offline::Stored;
use crate::sql::offline::{OfflineDialect, Store, micros};

impl OfflineDialect for Postgres {
    /// One call of `herald_store_offline` (migration 11), one statement and so one
    /// transaction: it takes the advisory lock of every recipient (the lock concurrent senders
    /// and other servers take too, so they count in turn and cannot overshoot the limit
    /// together) in the order of their keys, so that two batches never wait for each other
    /// in a circle; counts by a statement after the locks' (which in READ COMMITTED sees every
    /// row an earlier holder committed); and inserts the messages kept in their order.
    async fn store_many<'c>(
        connection: &'c mut PgConnection,
        stores: &'c [Store<'c>],
    ) -> Result<Vec<Option<Stored>>, StorageError> {
        store_all(connection, stores).await
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
    // One per store, in order (the caller checks the count, as for every engine).
    Ok(outcomes
        .into_iter()
        .map(|outcome| match outcome {
            -1 => None,
            0 => Some(Stored::Full),
            id => Some(Stored::Stored(id)),
        })
        .collect())
}
