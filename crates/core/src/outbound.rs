//! IQs sent by the server itself, and their replies (RFC 6120 section 8.2.3: every get or
//! set gets exactly one result or error).
//!
//! A module calls [`Server::send_iq`] and awaits an [`IqOutcome`]. Each IQ gets a fresh,
//! unguessable id; the reply is accepted only if it comes from the JID the IQ was sent to,
//! so another entity cannot answer in its place. The table of pending IQs is sharded and
//! bounded, and an entry leaves it on reply, on timeout, or when the caller stops waiting.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use herald_stream::stanza::{IqType, Stanza, StanzaKind, set_attr};
use jid::Jid;
use minidom::Element;
use tokio::sync::oneshot;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::{Server, router::Origin};

/// How many outbound IQs may wait for replies at once by default.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

const SHARDS: usize = 16;

/// How an outbound IQ ended.
#[derive(Clone, Debug, PartialEq)]
pub enum IqOutcome {
    /// A `result` arrived; the whole reply stanza.
    Result(Element),
    /// An `error` arrived (or the router answered for an unreachable recipient).
    Error {
        /// The error's type (cancel, wait, modify, auth, continue).
        type_: ErrorType,
        /// Its defined condition.
        condition: DefinedCondition,
        /// The whole reply stanza.
        element: Element,
    },
    /// No reply in time.
    Timeout,
}

/// Why an IQ could not be sent at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendIqError {
    /// The element is not an iq get or set with a valid `to`.
    #[error("not an iq get/set with a valid 'to': {0}")]
    Invalid(&'static str),
    /// `from` is not a domain served here.
    #[error("an outbound iq must come from a served domain")]
    NotLocal,
    /// Too many IQs are waiting for replies.
    #[error("too many outbound iqs in flight")]
    Overloaded,
    /// The server has stopped.
    #[error("the server has stopped")]
    Stopped,
}

struct Pending {
    to: Jid,
    reply: oneshot::Sender<Element>,
}

/// The table of IQs waiting for a reply.
pub struct PendingIqs {
    shards: Vec<Mutex<HashMap<String, Pending>>>,
    hasher: RandomState,
    count: AtomicUsize,
    limit: usize,
}

impl Default for PendingIqs {
    fn default() -> Self {
        PendingIqs::with_limit(DEFAULT_MAX_PENDING)
    }
}

impl PendingIqs {
    /// A table holding at most `limit` pending IQs.
    pub fn with_limit(limit: usize) -> PendingIqs {
        PendingIqs {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            limit,
        }
    }

    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        let index = self.hasher.hash_one(id) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many IQs are waiting.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(&self, to: Jid) -> Result<(String, oneshot::Receiver<Element>), SendIqError> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(SendIqError::Overloaded);
        }
        let (tx, rx) = oneshot::channel();
        let id = format!("herald-{}", crate::random_id());
        self.shard(&id)
            .insert(id.clone(), Pending { to, reply: tx });
        Ok((id, rx))
    }

    fn remove(&self, id: &str) -> Option<Pending> {
        let removed = self.shard(id).remove(id);
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    /// Hand a reply (an iq result or error addressed to the server) to the waiting caller.
    /// Returns whether it matched: same id, and sent by the JID the IQ went to.
    pub(crate) fn resolve(&self, reply: Stanza) -> bool {
        if !matches!(reply.kind, StanzaKind::Iq(IqType::Result | IqType::Error)) {
            return false;
        }
        let (Some(id), Some(from)) = (&reply.id, &reply.from) else {
            return false;
        };
        let pending = {
            let mut shard = self.shard(id);
            match shard.get(id) {
                Some(pending) if &pending.to == from => shard.remove(id),
                // A reply from anyone else is ignored; the IQ keeps waiting.
                _ => None,
            }
        };
        let Some(pending) = pending else { return false };
        self.count.fetch_sub(1, Ordering::AcqRel);
        let _ = pending.reply.send(reply.element);
        true
    }
}

/// Removes the pending entry if the caller stops waiting before a reply.
struct Guard<'a> {
    table: &'a PendingIqs,
    id: String,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.table.remove(&self.id);
    }
}

fn classify(reply: Element) -> IqOutcome {
    if reply.attr("type") == Some("result") {
        return IqOutcome::Result(reply);
    }
    let error = reply
        .get_child("error", herald_stream::ns::CLIENT)
        .and_then(|e| StanzaError::try_from(e.clone()).ok());
    match error {
        Some(error) => IqOutcome::Error {
            type_: error.type_,
            condition: error.defined_condition,
            element: reply,
        },
        // An error without a parsable <error/> is still final: treat it as
        // cancel/undefined-condition (RFC 6120 section 8.3.3.21).
        None => IqOutcome::Error {
            type_: ErrorType::Cancel,
            condition: DefinedCondition::UndefinedCondition,
            element: reply,
        },
    }
}

impl Server {
    /// Send an iq get or set from one of the served domains and wait up to `timeout` for its
    /// reply. The element's `id` is replaced by a fresh unguessable one; `from` defaults to
    /// the first served domain.
    pub async fn send_iq(
        &self,
        mut iq: Element,
        timeout: Duration,
    ) -> Result<IqOutcome, SendIqError> {
        if !matches!(iq.attr("type"), Some("get" | "set")) || iq.name() != "iq" {
            return Err(SendIqError::Invalid("type must be get or set"));
        }
        let to = iq
            .attr("to")
            .and_then(|to| Jid::new(to).ok())
            .ok_or(SendIqError::Invalid("to"))?;
        match iq.attr("from") {
            Some(from) if !self.is_local_domain(from) => return Err(SendIqError::NotLocal),
            Some(_) => {}
            None => {
                let domain = self
                    .hosts()
                    .first()
                    .ok_or(SendIqError::NotLocal)?
                    .to_string();
                set_attr(&mut iq, "from", domain);
            }
        }
        let (id, rx) = self.outbound.register(to)?;
        let _guard = Guard {
            table: &self.outbound,
            id: id.clone(),
        };
        set_attr(&mut iq, "id", id);
        let stanza = Stanza::parse(iq).map_err(|_| SendIqError::Invalid("iq"))?;
        self.route(Origin::Server, stanza).await;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(classify(reply)),
            Ok(Err(_)) | Err(_) => Ok(IqOutcome::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_beyond_the_limit_is_overloaded_and_frees_on_removal() {
        let table = PendingIqs::with_limit(2);
        let to = Jid::new("push.example.net").unwrap();
        let (a, _ra) = table.register(to.clone()).unwrap();
        let (_b, _rb) = table.register(to.clone()).unwrap();
        assert_eq!(
            table.register(to.clone()).err(),
            Some(SendIqError::Overloaded)
        );
        assert!(table.remove(&a).is_some());
        assert!(table.register(to).is_ok());
        assert_eq!(table.len(), 2);
    }
}
