//! Per-user data of the modules that keep small documents for an account: the block list
//! (XEP-0191), the vCard (XEP-0054), personal eventing nodes and items (XEP-0163).
//!
//! The store knows rows, not protocols: each row belongs to an account (`owner`) and is named
//! by a `kind` (which module), a `scope` within it (a PEP node; empty where there is none) and
//! an `item`; its `value` is text the module wrote (a JID, serialised XML, JSON). Rows of a
//! scope come back in the order they were last written, so a module can keep "the latest N"
//! ([`UserDataStore::trim`]). Modules parse what they read at their edge into typed values.

#[doc(hidden)]
pub mod conformance;

use jid::BareJid;

use crate::StorageError;

/// A row's value, named by its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The row's name within its scope.
    pub item: String,
    /// What the module wrote.
    pub value: String,
}

/// Per-user rows, by owner, kind, scope and item.
#[async_trait::async_trait]
pub trait UserDataStore: Send + Sync + 'static {
    /// Write a row (replacing one of the same name), as the latest of its scope.
    async fn put(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
        value: &str,
    ) -> Result<(), StorageError>;

    /// One row's value.
    async fn get(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
    ) -> Result<Option<String>, StorageError>;

    /// Every row of a scope, oldest write first.
    async fn list(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Delete one row; whether it existed.
    async fn delete(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        item: &str,
    ) -> Result<bool, StorageError>;

    /// Delete every row of a scope; how many there were.
    async fn delete_scope(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
    ) -> Result<u64, StorageError>;

    /// Keep only the `keep` latest rows of a scope; how many were deleted.
    async fn trim(
        &self,
        owner: &BareJid,
        kind: &str,
        scope: &str,
        keep: usize,
    ) -> Result<u64, StorageError>;

    /// Delete every row of the account (its removal).
    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError>;

    /// The accounts with rows of `kind` (in any scope), each once, in no given order: what a
    /// module reads at start to know whose rows to look for (the archive's preferences).
    async fn owners(&self, kind: &str) -> Result<Vec<BareJid>, StorageError>;
}
