//! The message archive (XEP-0313): each account's one-to-one messages, sent and received, by
//! archive id. The store keeps rows and answers filtered, paged queries; what is archived and
//! how queries look on the wire is the server's (`herald-core`'s `mam` module).
//!
//! Archive ids grow with time ([`ArchiveId`]): the microseconds since the Unix epoch shifted
//! left by 8 bits, plus a sequence, so a time range is an id range and the order of ids is the
//! order of arrival.

#[doc(hidden)]
pub mod conformance;

use std::sync::atomic::{AtomicI64, Ordering};

use jid::BareJid;

use crate::StorageError;

/// An archive id: microseconds since the Unix epoch << 8 | a sequence.
pub type ArchiveId = i64;

/// A fresh archive id, greater than every id this process made before.
pub fn next_id() -> ArchiveId {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::unix_time_micros() << 8;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The first archive id at or after `micros` microseconds since the epoch.
pub fn first_id_at(micros: i64) -> ArchiveId {
    micros.saturating_mul(256)
}

/// The time of an archive id, in microseconds since the epoch.
pub fn micros_of(id: ArchiveId) -> i64 {
    id >> 8
}

/// Whether the owner sent or received the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the owner.
    In,
    /// Sent by the owner.
    Out,
}

/// One message in one archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its archive id (unique per owner).
    pub id: ArchiveId,
    /// The archive's account.
    pub owner: BareJid,
    /// The other party's bare JID.
    pub remote_bare: String,
    /// The other party's resource ("" for none).
    pub remote_resource: String,
    /// Sent or received.
    pub direction: Direction,
    /// The `from` of the stanza.
    pub from: String,
    /// The sender's XEP-0359 origin-id, if any.
    pub origin_id: Option<String>,
    /// The body, for full-text queries.
    pub body: String,
    /// The stanza, serialised.
    pub message: String,
}

/// Which way a page goes (XEP-0059 with XEP-0313 section 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Oldest first, after this id (or from the start).
    Forward(Option<ArchiveId>),
    /// The newest page before this id (or the last page).
    Backward(Option<ArchiveId>),
}

/// A query's filters (XEP-0313 section 4.1) and page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Only with this bare JID...
    pub with_bare: Option<String>,
    /// ...and this resource.
    pub with_resource: Option<String>,
    /// Ids at or after.
    pub start: Option<ArchiveId>,
    /// Ids at or before.
    pub end: Option<ArchiveId>,
    /// Ids strictly after (`after-id`).
    pub after_id: Option<ArchiveId>,
    /// Ids strictly before (`before-id`).
    pub before_id: Option<ArchiveId>,
    /// Only these ids (`ids`); empty for any.
    pub ids: Vec<ArchiveId>,
    /// Bodies containing this text, case-insensitively.
    pub text: Option<String>,
    /// The page's direction and anchor.
    pub paging: Paging,
    /// Most items in the page.
    pub max: usize,
}

impl ArchiveQuery {
    /// Everything, oldest first, `max` at a time.
    pub fn all(max: usize) -> ArchiveQuery {
        ArchiveQuery {
            with_bare: None,
            with_resource: None,
            start: None,
            end: None,
            after_id: None,
            before_id: None,
            ids: Vec::new(),
            text: None,
            paging: Paging::Forward(None),
            max,
        }
    }
}

/// A message as a query returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its archive id.
    pub id: ArchiveId,
    /// The stanza, serialised.
    pub message: String,
}

/// A page of results, always oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    /// The messages.
    pub items: Vec<Found>,
    /// No more matching messages lie beyond this page in the paging direction.
    pub complete: bool,
    /// How many messages match the filters, all pages together.
    pub count: u64,
}

/// The archive.
#[async_trait::async_trait]
pub trait ArchiveStore: Send + Sync + 'static {
    /// Add messages (a message whose id its owner's archive already holds is skipped). With
    /// `only_accounts`, a message whose owner has no account is left out, checked when the
    /// rows are written. Removing an account's archive ([`ArchiveStore::remove_user`]) and
    /// appending take turns, so rows checked before a removal are removed by it.
    async fn append(
        &self,
        messages: Vec<ArchivedMessage>,
        only_accounts: bool,
    ) -> Result<(), StorageError>;

    /// One page of the owner's messages matching the query.
    async fn query(
        &self,
        owner: &BareJid,
        query: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError>;

    /// Whether the owner's archive has this id.
    async fn exists(&self, owner: &BareJid, id: ArchiveId) -> Result<bool, StorageError>;

    /// Delete every message of the account.
    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError>;

    /// Delete every message older than `id` (retention); how many.
    async fn purge_before(&self, id: ArchiveId) -> Result<u64, StorageError>;
}
