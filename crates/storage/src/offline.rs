//! Offline messages (XEP-0160): messages kept for an account that had no available resource,
//! delivered in the order they came when it next sends available presence.
//!
//! The store keeps the serialised stanza as it was routed and, beside it, the metadata that
//! modules attached to the message (opaque text, JSON by convention: the push module records
//! there which of its registrations were already notified). Both come back untouched.

#[doc(hidden)]
pub mod conformance;

use std::time::SystemTime;

use jid::{BareJid, Jid};

use crate::StorageError;
use crate::accounts::AccountStore;

/// A message to store.
#[derive(Clone, Copy, Debug)]
pub struct NewOfflineMessage<'a> {
    /// The sender, as stamped on the stanza.
    pub from: &'a Jid,
    /// When the message was stored (the `<delay/>` stamp given at delivery, XEP-0203).
    pub stored_at: SystemTime,
    /// The whole stanza, serialised.
    pub stanza: &'a str,
    /// What modules recorded about the message; may be empty.
    pub metadata: &'a str,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its number: unique in the store, increasing in the order messages were stored.
    pub id: i64,
    /// The sender.
    pub from: Jid,
    /// When it was stored, to the microsecond.
    pub stored_at: SystemTime,
    /// The stanza as given.
    pub stanza: String,
    /// The metadata as given or last set.
    pub metadata: String,
}

/// What [`OfflineStore::store`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The message was stored with this id.
    Stored(i64),
    /// The user already has `limit` messages waiting: nothing was stored.
    Full,
}

/// The offline messages of the server's accounts. Engines implement it; the server uses it
/// through `Arc<dyn OfflineStore>` from [`Storage::offline`](crate::Storage::offline).
///
/// Every method taking a `user` fails with [`StorageError::InvalidUser`] when the JID has no
/// localpart.
#[async_trait::async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Store a message for `user` unless `limit` messages already wait; checking and storing
    /// are one atomic step.
    async fn store(
        &self,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Stored, StorageError>;

    /// Store a message for `user` as [`OfflineStore::store`] does, but only if the account
    /// exists: `None` when it does not (RFC 6121 section 8.5.2.2.1 stores nothing for it).
    /// `accounts` is the account store of the same [`Storage`](crate::Storage). By default it
    /// is asked first; an engine that keeps both in one database may check and store in one
    /// step.
    async fn store_for_account(
        &self,
        accounts: &dyn AccountStore,
        user: &BareJid,
        message: NewOfflineMessage<'_>,
        limit: usize,
    ) -> Result<Option<Stored>, StorageError> {
        if !accounts.exists(user).await? {
            return Ok(None);
        }
        self.store(user, message, limit).await.map(Some)
    }

    /// The user's messages in the order they were stored, left in place.
    async fn list(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError>;

    /// Up to `limit` of the user's messages whose id is above `after`, in the order they were
    /// stored, left in place: delivery reads a page, and removes each message with
    /// [`OfflineStore::remove`] only once the client has it.
    async fn page(
        &self,
        user: &BareJid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError>;

    /// Delete the user's messages with these ids (ids of other users' messages are ignored);
    /// returns how many were deleted.
    async fn remove(&self, user: &BareJid, ids: &[i64]) -> Result<usize, StorageError>;

    /// Remove and return the user's messages in the order they were stored. Two concurrent
    /// calls never return the same message.
    async fn take(&self, user: &BareJid) -> Result<Vec<StoredMessage>, StorageError>;

    /// How many messages wait for the user.
    async fn count(&self, user: &BareJid) -> Result<usize, StorageError>;

    /// Replace the metadata of the user's message `id`; returns whether it is still stored.
    async fn set_metadata(
        &self,
        user: &BareJid,
        id: i64,
        metadata: &str,
    ) -> Result<bool, StorageError>;

    /// Delete every message of the user; returns how many there were.
    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError>;
}
