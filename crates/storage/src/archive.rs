//! The message archive (XEP-0313): each account's one-to-one messages, sent and received, by
//! archive id. The store keeps rows and answers filtered, paged queries; what is archived and
//! how queries look on the wire is the server's (`herald-core`'s `mam` module).
//!
//! Archive ids grow with time ([`ArchiveId`]): the microseconds since the Unix epoch shifted
//! left by 8 bits, plus a sequence, so a time range is an id range and the order of ids is the
//! order of arrival. A message between two local accounts is one row that both archives
//! keep ([`Kept`]), with one id: the stanza-id its recipient sees is the id its sender's
//! archive gives it.

#[doc(hidden)]
pub mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jid::BareJid;

use crate::StorageError;

/// An archive id: microseconds since the Unix epoch << 8 | a sequence.
pub type ArchiveId = i64;

/// The last archive id given or seen.
static LAST: AtomicI64 = AtomicI64::new(0);

/// A fresh archive id, greater than every id this process made or [saw](seen_id) before.
pub fn next_id() -> ArchiveId {
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

/// Never give an id at or below `id` (the largest an archive holds, read at start: a clock set
/// back across a restart does not give an id twice).
pub fn seen_id(id: ArchiveId) {
    LAST.fetch_max(id, Ordering::Relaxed);
}

/// The first archive id at or after `micros` microseconds since the epoch.
pub fn first_id_at(micros: i64) -> ArchiveId {
    micros.saturating_mul(256)
}

/// The time of an archive id, in microseconds since the epoch.
pub fn micros_of(id: ArchiveId) -> i64 {
    id >> 8
}

/// Whose archives keep a message: its sender's, its recipient's, or both (one row serves
/// both accounts' archives when both are local).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The sender's archive only.
    Sender,
    /// The recipient's archive only.
    Recipient,
    /// Both.
    Both,
}

impl Kept {
    /// The stored code: 1 the sender's, 2 the recipient's, 3 both (bits).
    pub fn code(self) -> i64 {
        match self {
            Kept::Sender => 1,
            Kept::Recipient => 2,
            Kept::Both => 3,
        }
    }

    /// Whether the sender's archive keeps it.
    pub fn sender(self) -> bool {
        self != Kept::Recipient
    }

    /// Whether the recipient's archive keeps it.
    pub fn recipient(self) -> bool {
        self != Kept::Sender
    }
}

/// One message, in its sender's archive, its recipient's, or both: one row for both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its archive id: the stanza-id both archives give it.
    pub id: ArchiveId,
    /// The sender's bare JID.
    pub sender: BareJid,
    /// The sender's resource ("" for none).
    pub sender_resource: String,
    /// The recipient's bare JID.
    pub recipient: BareJid,
    /// The resource it was addressed to ("" for none).
    pub recipient_resource: String,
    /// Whose archives keep it. A message to oneself is kept as received only.
    pub kept: Kept,
    /// The sender's XEP-0359 origin-id, if any.
    pub origin_id: Option<String>,
    /// The body, for full-text queries.
    pub body: String,
    /// The stanza, serialised: as its recipient saw it when the recipient's archive keeps
    /// it, else as its sender sent it. Shared, not copied: the same text is the offline row
    /// of a message for an account that is offline, and it is bound to the insert as it is.
    pub message: Arc<str>,
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
    /// Add messages (a message whose id is already archived is skipped: an append retried
    /// changes nothing). With `only_accounts`, a side whose account does not exist is left
    /// out (and a message with no side left), checked when the rows are written. Removing an account's archive ([`ArchiveStore::remove_user`])
    /// and appending take turns, so rows checked before a removal are removed by it.
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

    /// Delete every message of the account's archive (a message the other party's archive
    /// also keeps stays there).
    async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError>;

    /// Delete every message older than `id` (retention); how many.
    async fn purge_before(&self, id: ArchiveId) -> Result<u64, StorageError>;
}
