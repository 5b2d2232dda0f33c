//! [`RosterStore`] on SQL: MongooseIM's `rosterusers`, `rostergroups` and `roster_version`
//! tables.

use jid::BareJid;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row,
    Transaction, Type,
};

use super::Dialect;
use crate::StorageError;
use crate::accounts::AccountKey;
use crate::roster::{
    ItemEdit, ItemUpdate, RosterItem, RosterStore, Subscription, SubscriptionState,
};

/// The rosters of a database.
#[derive(Debug)]
pub(crate) struct SqlRoster<DB: Dialect> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlRoster<DB> {
    /// Rosters stored in the database behind `pool`, whose schema is up to date.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlRoster { pool }
    }
}

/// The advisory lock class of roster items ([`Dialect::lock`]).
const ITEM_LOCK: i32 = 18501;

/// The `subscription` and `ask` codes of a state (MongooseIM's letters).
fn codes(state: SubscriptionState) -> (&'static str, &'static str) {
    let subscription = match state.subscription() {
        Subscription::None => "N",
        Subscription::To => "T",
        Subscription::From => "F",
        Subscription::Both => "B",
    };
    let ask = match (state.pending_out(), state.pending_in()) {
        (false, false) => "N",
        (true, false) => "O",
        (false, true) => "I",
        (true, true) => "B",
    };
    (subscription, ask)
}

fn state_of(subscription: &str, ask: &str) -> Option<SubscriptionState> {
    let subscription = match subscription {
        "N" => Subscription::None,
        "T" => Subscription::To,
        "F" => Subscription::From,
        "B" => Subscription::Both,
        _ => return None,
    };
    let (pending_out, pending_in) = match ask {
        "N" => (false, false),
        "O" => (true, false),
        "I" => (false, true),
        "B" => (true, true),
        _ => return None,
    };
    SubscriptionState::from_parts(subscription, pending_out, pending_in)
}

/// A contact JID as stored: a bare JID in its normalised form, else the row was not written by
/// herald.
fn contact_of(text: &str, key: AccountKey<'_>) -> Result<BareJid, StorageError> {
    match BareJid::new(text) {
        Ok(contact) if contact.as_str() == text => Ok(contact),
        _ => Err(StorageError::Corrupt(format!(
            "rosterusers row ({}, {}, {text})",
            key.domain, key.localpart
        ))),
    }
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// An item from a `rosterusers` row (without its groups).
fn item_of<DB>(row: &DB::Row, key: AccountKey<'_>) -> Result<RosterItem, StorageError>
where
    DB: Database,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let contact: String = row.try_get("jid")?;
    let subscription: String = row.try_get("subscription")?;
    let ask: String = row.try_get("ask")?;
    let state = state_of(&subscription, &ask).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "rosterusers ({}, {}, {contact}) subscription = {subscription:?}, ask = {ask:?}",
            key.domain, key.localpart
        ))
    })?;
    Ok(RosterItem {
        contact: contact_of(&contact, key)?,
        name: optional(row.try_get("nick")?),
        state,
        ask_message: optional(row.try_get("askmessage")?),
        groups: Vec::new(),
    })
}

/// The `rosterusers` columns an item is read from, as a literal for `concat!`.
macro_rules! item_columns {
    () => {
        "jid, nick, subscription, ask, askmessage"
    };
}

/// The same item as the store returns it: groups sorted, each once.
fn normalised(mut item: RosterItem) -> RosterItem {
    item.groups.sort();
    item.groups.dedup();
    item
}

impl<DB> SqlRoster<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q String: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    (String, String): for<'r> FromRow<'r, DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// The user's item for `contact`, read inside `transaction`.
    async fn read_item(
        transaction: &mut Transaction<'_, DB>,
        key: AccountKey<'_>,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            item_columns!(),
            " FROM rosterusers WHERE server = $1 AND username = $2 AND jid = $3"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .bind(contact.as_str())
        .fetch_optional(&mut **transaction)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut item = item_of::<DB>(&row, key)?;
        item.groups = sqlx::query_scalar(
            "SELECT grp FROM rostergroups WHERE server = $1 AND username = $2 AND jid = $3 ORDER BY grp",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .bind(contact.as_str())
        .fetch_all(&mut **transaction)
        .await?;
        Ok(Some(item))
    }

    /// Write `item` (an insert or an update) with exactly its groups.
    async fn write_item(
        transaction: &mut Transaction<'_, DB>,
        key: AccountKey<'_>,
        item: &RosterItem,
    ) -> Result<(), StorageError> {
        let (subscription, ask) = codes(item.state);
        sqlx::query(DB::SQL.write_roster_item)
            .bind(key.domain)
            .bind(key.localpart)
            .bind(item.contact.as_str())
            .bind(item.name.as_deref().unwrap_or_default())
            .bind(subscription)
            .bind(ask)
            .bind(item.ask_message.as_deref().unwrap_or_default())
            .bind(crate::unix_time())
            .execute(&mut **transaction)
            .await?;
        sqlx::query("DELETE FROM rostergroups WHERE server = $1 AND username = $2 AND jid = $3")
            .bind(key.domain)
            .bind(key.localpart)
            .bind(item.contact.as_str())
            .execute(&mut **transaction)
            .await?;
        for group in &item.groups {
            sqlx::query(
                "INSERT INTO rostergroups (server, username, jid, grp) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(key.domain)
            .bind(key.localpart)
            .bind(item.contact.as_str())
            .bind(group)
            .execute(&mut **transaction)
            .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl<DB> RosterStore for SqlRoster<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q String: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    (String, String): for<'r> FromRow<'r, DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn items(&self, user: &BareJid) -> Result<Vec<RosterItem>, StorageError> {
        let key = AccountKey::of(user)?;
        // One read transaction, so the items and their groups are from the same moment.
        let mut transaction = self.pool.begin().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            item_columns!(),
            " FROM rosterusers WHERE server = $1 AND username = $2 ORDER BY jid"
        ))
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&mut *transaction)
        .await?;
        let mut items = rows
            .iter()
            .map(|row| item_of::<DB>(row, key))
            .collect::<Result<Vec<_>, _>>()?;
        let groups: Vec<(String, String)> = sqlx::query_as(
            "SELECT jid, grp FROM rostergroups WHERE server = $1 AND username = $2 ORDER BY jid, grp",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        // Both lists are sorted by contact: walk them together.
        let mut groups = groups.into_iter().peekable();
        for item in &mut items {
            while let Some((contact, _)) = groups.peek() {
                match contact.as_str().cmp(item.contact.as_str()) {
                    std::cmp::Ordering::Less => {
                        groups.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some((_, group)) = groups.next() {
                            item.groups.push(group);
                        }
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        Ok(items)
    }

    async fn item(
        &self,
        user: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let key = AccountKey::of(user)?;
        let mut transaction = self.pool.begin().await?;
        let item = Self::read_item(&mut transaction, key, contact).await?;
        transaction.commit().await?;
        Ok(item)
    }

    async fn update(
        &self,
        user: &BareJid,
        contact: &BareJid,
        edit: ItemEdit<'_>,
    ) -> Result<ItemUpdate, StorageError> {
        let key = AccountKey::of(user)?;
        // Two updates of the same item take turns, so neither reads the old state.
        let mut transaction = DB::begin_write(&self.pool).await?;
        let item_key = format!("{}/{}/{}", key.domain, key.localpart, contact.as_str());
        DB::lock(&mut transaction, ITEM_LOCK, &item_key).await?;
        let before = Self::read_item(&mut transaction, key, contact).await?;
        let after = edit(before.as_ref()).map(|mut item| {
            item.contact = contact.clone();
            normalised(item)
        });
        if before == after {
            transaction.rollback().await?;
            return Ok(ItemUpdate { before, after });
        }
        match &after {
            Some(item) => Self::write_item(&mut transaction, key, item).await?,
            None => {
                sqlx::query(
                    "DELETE FROM rosterusers WHERE server = $1 AND username = $2 AND jid = $3",
                )
                .bind(key.domain)
                .bind(key.localpart)
                .bind(contact.as_str())
                .execute(&mut *transaction)
                .await?;
            }
        }
        transaction.commit().await?;
        Ok(ItemUpdate { before, after })
    }

    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError> {
        let key = AccountKey::of(user)?;
        let mut transaction = DB::begin_write(&self.pool).await?;
        // Groups go with their items (ON DELETE CASCADE).
        let removed = sqlx::query("DELETE FROM rosterusers WHERE server = $1 AND username = $2")
            .bind(key.domain)
            .bind(key.localpart)
            .execute(&mut *transaction)
            .await
            .map(|done| DB::rows_affected(&done))?;
        sqlx::query("DELETE FROM roster_version WHERE server = $1 AND username = $2")
            .bind(key.domain)
            .bind(key.localpart)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    async fn version(&self, user: &BareJid) -> Result<Option<String>, StorageError> {
        let key = AccountKey::of(user)?;
        let version = sqlx::query_scalar(
            "SELECT version FROM roster_version WHERE server = $1 AND username = $2",
        )
        .bind(key.domain)
        .bind(key.localpart)
        .fetch_optional(&self.pool)
        .await?;
        Ok(version)
    }

    async fn bump_version(&self, user: &BareJid) -> Result<String, StorageError> {
        let key = AccountKey::of(user)?;
        // The version is a number kept as text (MongooseIM's column is text): the previous one
        // plus one, or the current time in microseconds if that is larger, so that an account
        // removed and created again never repeats a version its clients may have cached.
        let version: String = sqlx::query_scalar(DB::SQL.bump_roster_version)
            .bind(key.domain)
            .bind(key.localpart)
            .bind(crate::unix_time_micros())
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }
}
