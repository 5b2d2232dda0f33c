//! The session registry: every bound client session, by bare JID and resource, with its
//! availability and priority (RFC 6121 section 4 and section 8.5, where delivery to a bare
//! JID depends on them; the push module's "offline" rule reads the same table).
//!
//! The table is sharded by bare JID behind short, synchronous locks that are never held
//! across an await, so routing a stanza costs one hash and one read lock.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use herald_stream::Bare;
use herald_stream::StreamErrorCondition;
use jid::{BareJid, FullJid};
use minidom::Element;

use crate::queue::{Inbox, Outbox, Refused};
use tokio_util::sync::CancellationToken;

/// How many stanzas may wait for a slow client before it is disconnected.
pub const OUTBOUND_QUEUE: usize = 1024;

/// How many bytes (approximately, serialised) may wait for a client: with stanzas of up to
/// `max_stanza_size`, the count alone would let one session hold tens of megabytes.
pub const OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;

const SHARDS: usize = 32;

/// A process-unique session number, so that an old session's clean-up never removes the
/// session that replaced it.
pub type SessionId = u64;

/// The way to ask a session's task to end its stream, or to drop a connection that does not
/// read.
#[derive(Debug, Default)]
pub struct SessionControl {
    token: CancellationToken,
    reason: OnceLock<StreamErrorCondition>,
    stalled: AtomicBool,
    stall: tokio::sync::Notify,
    waiting: AtomicBool,
}

impl SessionControl {
    /// The client is not reading (its queue is full): drop its connection. Unlike
    /// [`SessionControl::close`], the session itself goes on: a resumable one waits for its
    /// client, and a new connection resuming it clears this.
    pub fn stall(&self) {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            self.stall.notify_one();
        }
    }

    /// Resolves when the connection was found stalled.
    pub(crate) async fn stalled(&self) {
        while !self.stalled.load(Ordering::SeqCst) {
            self.stall.notified().await;
        }
    }

    /// A new connection took over: it is not stalled.
    pub(crate) fn unstall(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Whether the session has lost its connection and waits for its client to resume it
    /// (XEP-0198 section 5): still bound, but nobody reads what is written to it. The push
    /// module reads this to know whether a user is really there (push.md section 7).
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The session lost its connection (`true`) or a new one took over (`false`).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    /// End the stream with this stream error (the first reason given wins).
    pub fn close(&self, reason: StreamErrorCondition) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves when the session was asked to close.
    pub async fn closed(&self) -> StreamErrorCondition {
        self.token.cancelled().await;
        self.reason
            .get()
            .copied()
            .unwrap_or(StreamErrorCondition::SystemShutdown)
    }
}

/// A fresh connection number.
pub(crate) fn next_session_id() -> SessionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Queue a stanza for a connection without waiting. When the queue is full (or the
/// connection gone) the stanza is handed back (the caller keeps or bounces it), and with
/// `stall_when_full` the connection is dropped as not reading (RFC 6120 section 4.9.3.16,
/// resource-constraint).
pub(crate) fn push_or_close(
    queue: &Outbox,
    control: &SessionControl,
    stanza: crate::envelope::Envelope,
    who: &dyn std::fmt::Display,
    stall_when_full: bool,
) -> Result<(), Box<crate::envelope::Envelope>> {
    match queue.try_send(stanza) {
        Ok(()) => Ok(()),
        Err(Refused::Full(stanza)) => {
            if stall_when_full {
                tracing::warn!(peer = %who, "outbound queue full; dropping the connection of a client that does not read");
                control.stall();
            } else {
                tracing::warn!(peer = %who, "outbound queue full; bouncing");
            }
            Err(stanza)
        }
        Err(Refused::Closed(stanza)) => Err(stanza),
    }
}

/// What the router holds of a session: where to send stanzas and how to stop it.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The session's number.
    pub id: SessionId,
    /// The bound full JID.
    pub jid: FullJid,
    /// Stanzas to write to the client, already addressed.
    pub outbound: Outbox,
    /// Asks the session to close.
    pub control: Arc<SessionControl>,
    /// What modules keep on the session (presence, the roster, push; see
    /// [`crate::session_state`]).
    pub state: Arc<crate::session_state::SessionState>,
    /// Raised when the account's stored offline messages should be delivered to this session;
    /// the session pulls them from storage at the pace of its client's acknowledgements.
    pub(crate) offline: Arc<tokio::sync::Notify>,
}

impl SessionHandle {
    /// Create a handle and the receiving end of its outbound queue.
    pub fn new(jid: FullJid) -> (SessionHandle, Inbox) {
        let (tx, rx) = crate::queue::bounded(OUTBOUND_QUEUE, OUTBOUND_QUEUE_BYTES);
        let handle = SessionHandle {
            id: next_session_id(),
            jid,
            outbound: tx,
            control: Arc::new(SessionControl::default()),
            state: Arc::default(),
            offline: Arc::default(),
        };
        (handle, rx)
    }

    /// Ask the session to deliver the account's stored offline messages (XEP-0160). The
    /// session reads them from storage a page at a time as its client acknowledges what it
    /// was sent, and removes each one from storage only once delivered.
    pub fn want_offline(&self) {
        self.offline.notify_one();
    }

    /// Queue a stanza for the client without waiting. A client that does not read what it
    /// is sent fills its queue; its connection is then dropped (RFC 6120 section 4.9.3.16,
    /// resource-constraint; a resumable session waits for its client) and `false` is
    /// returned, so that the router keeps the stanza another way (a message goes to offline
    /// storage and push).
    pub fn deliver(&self, stanza: impl Into<crate::envelope::Envelope>) -> bool {
        self.try_deliver(stanza.into()).is_ok()
    }

    /// [`SessionHandle::deliver`], with the stanza handed back when it was not queued (for
    /// the caller's error reply, without a copy made beforehand in case).
    pub fn try_deliver(
        &self,
        stanza: crate::envelope::Envelope,
    ) -> Result<(), Box<crate::envelope::Envelope>> {
        push_or_close(&self.outbound, &self.control, stanza, &self.jid, true)
    }
}

/// A resource's presence as the server tracks it (RFC 6121 section 4.7.2.3 for priority).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Bound but no initial presence sent yet, or unavailable presence sent.
    Unavailable,
    /// Available with this priority and last broadcast presence.
    Available {
        /// -128..=127; negative means "never deliver bare-JID messages here".
        priority: i8,
        /// The last available presence broadcast, sent to the user's new resources.
        presence: StoredPresence,
    },
}

/// A resource's last available presence (RFC 6121 section 4.4.2: what the server answers
/// probes and sends to the user's other resources with), kept as the XML it is written as.
/// An element tree of even `<presence/>` with its `from` took about 1 KiB (an attribute map
/// reserves room for eleven entries), the text a tenth of that, for every available session;
/// it is read back only on a probe, a new resource, an unblocking or a PEP notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPresence(std::sync::Arc<str>);

impl StoredPresence {
    /// Keep this presence.
    pub fn new(presence: &Element) -> StoredPresence {
        StoredPresence(herald_stream::serialise::to_string(presence).into())
    }

    /// The presence as an element.
    pub fn element(&self) -> Element {
        // What herald's writer wrote parses back (herald-stream's tests check it on every
        // element its fuzzing frames); a bare presence is the harmless answer otherwise.
        self.0.parse().unwrap_or_else(|_| {
            tracing::error!(presence = %self.0, "a stored presence does not parse back");
            Element::bare("presence", herald_stream::ns::CLIENT)
        })
    }
}

#[derive(Debug)]
struct Resource {
    handle: SessionHandle,
    availability: Availability,
}

/// A snapshot of one resource of an account, for modules that decide by availability.
#[derive(Clone, Debug)]
pub struct ResourceState {
    /// The session.
    pub handle: SessionHandle,
    /// Its availability.
    pub availability: Availability,
}

/// All bound sessions.
pub struct SessionRegistry {
    shards: Vec<RwLock<HashMap<BareJid, Vec<Resource>>>>,
    hasher: RandomState,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl SessionRegistry {
    fn shard(&self, bare: &BareJid) -> &RwLock<HashMap<BareJid, Vec<Resource>>> {
        let index = self.hasher.hash_one(bare) as usize % SHARDS;
        &self.shards[index]
    }

    fn read<R>(&self, bare: &BareJid, f: impl FnOnce(Option<&Vec<Resource>>) -> R) -> R {
        let shard = self
            .shard(bare)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(shard.get(bare))
    }

    fn write<R>(
        &self,
        bare: &BareJid,
        f: impl FnOnce(&mut HashMap<BareJid, Vec<Resource>>) -> R,
    ) -> R {
        let mut shard = self
            .shard(bare)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut shard)
    }

    /// Register a bound session. A session already bound to the same full JID is returned
    /// so the caller can close it with `conflict` (RFC 6120 section 7.7.2.2: the server
    /// may terminate the old session).
    pub fn bind(&self, handle: SessionHandle) -> Option<SessionHandle> {
        let bare = handle.jid.bare();
        self.write(&bare, |map| {
            let resources = map.entry(bare.clone()).or_default();
            let new = Resource {
                handle,
                availability: Availability::Unavailable,
            };
            match resources
                .iter_mut()
                .find(|r| r.handle.jid == new.handle.jid)
            {
                Some(old) => Some(std::mem::replace(old, new).handle),
                None => {
                    // Most accounts have one session: a first push would reserve room for
                    // four (about 800 bytes for each account online).
                    resources.reserve_exact(1);
                    resources.push(new);
                    crate::metrics::sessions(1.0);
                    None
                }
            }
        })
    }

    /// Remove a session, unless it has already been replaced by another one. Returns its
    /// last availability if it was removed.
    pub fn unbind(&self, jid: &FullJid, id: SessionId) -> Option<Availability> {
        let bare = jid.bare();
        self.write(&bare, |map| {
            let resources = map.get_mut(&bare)?;
            let index = resources.iter().position(|r| r.handle.id == id)?;
            let removed = resources.swap_remove(index);
            crate::metrics::sessions(-1.0);
            if resources.is_empty() {
                map.remove(&bare);
            }
            Some(removed.availability)
        })
    }

    /// Record a resource's presence. Returns the previous availability, or `None` when the
    /// session is not (or no longer) registered.
    pub fn set_availability(
        &self,
        jid: &FullJid,
        id: SessionId,
        availability: Availability,
    ) -> Option<Availability> {
        let bare = jid.bare();
        self.write(&bare, |map| {
            let resource = map.get_mut(&bare)?.iter_mut().find(|r| r.handle.id == id)?;
            Some(std::mem::replace(&mut resource.availability, availability))
        })
    }

    /// The session bound to a full JID.
    pub fn get(&self, jid: &FullJid) -> Option<SessionHandle> {
        self.read(&jid.bare(), |resources| {
            resources?
                .iter()
                .find(|r| &r.handle.jid == jid)
                .map(|r| r.handle.clone())
        })
    }

    /// Every resource of an account with its availability.
    pub fn resources(&self, bare: &BareJid) -> Vec<ResourceState> {
        self.read(bare, |resources| {
            resources
                .map(|rs| {
                    rs.iter()
                        .map(|r| ResourceState {
                            handle: r.handle.clone(),
                            availability: r.availability.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Every bound session of an account, available or not (without copying presence).
    pub fn bound(&self, bare: &BareJid) -> Vec<SessionHandle> {
        self.read(bare, |resources| {
            resources
                .map(|rs| rs.iter().map(|r| r.handle.clone()).collect())
                .unwrap_or_default()
        })
    }

    /// The sessions that get a message sent to the bare JID (RFC 6121 section 8.5.2.1.1):
    /// the available resources with the highest non-negative priority.
    pub fn message_targets(&self, bare: &BareJid) -> Vec<SessionHandle> {
        self.read(bare, |resources| {
            let Some(resources) = resources else { return Vec::new() };
            let best = resources
                .iter()
                .filter_map(|r| match r.availability {
                    Availability::Available { priority, .. } if priority >= 0 => Some(priority),
                    _ => None,
                })
                .max();
            let Some(best) = best else { return Vec::new() };
            resources
                .iter()
                .filter(|r| matches!(r.availability, Availability::Available { priority, .. } if priority == best))
                .map(|r| r.handle.clone())
                .collect()
        })
    }

    /// The available resources of an account (any priority), for presence broadcast.
    pub fn available(&self, bare: &BareJid) -> Vec<SessionHandle> {
        self.read(bare, |resources| {
            resources
                .map(|rs| {
                    rs.iter()
                        .filter(|r| matches!(r.availability, Availability::Available { .. }))
                        .map(|r| r.handle.clone())
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Every session, for shutdown.
    pub fn all(&self) -> Vec<SessionHandle> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            out.extend(shard.values().flatten().map(|r| r.handle.clone()));
        }
        out
    }

    /// How many sessions are bound.
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).unwrap()
    }

    fn available(priority: i8) -> Availability {
        Availability::Available {
            priority,
            presence: StoredPresence::new(&Element::bare("presence", "jabber:client")),
        }
    }

    #[test]
    fn binding_the_same_full_jid_returns_the_replaced_session() {
        let reg = SessionRegistry::default();
        let (a, _ra) = SessionHandle::new(full("u@h/r"));
        let (b, _rb) = SessionHandle::new(full("u@h/r"));
        assert!(reg.bind(a.clone()).is_none());
        assert_eq!(reg.bind(b.clone()).unwrap().id, a.id);
        // The old session's clean-up must not remove the new one.
        assert!(reg.unbind(&a.jid, a.id).is_none());
        assert_eq!(reg.get(&b.jid).unwrap().id, b.id);
    }

    #[test]
    fn bare_jid_messages_go_to_the_highest_non_negative_priority() {
        let reg = SessionRegistry::default();
        let handles: Vec<_> = ["u@h/a", "u@h/b", "u@h/c", "u@h/d"]
            .iter()
            .map(|j| SessionHandle::new(full(j)))
            .collect();
        for (h, _) in &handles {
            reg.bind(h.clone());
        }
        let bare = BareJid::new("u@h").unwrap();
        assert!(
            reg.message_targets(&bare).is_empty(),
            "bound but not available"
        );
        reg.set_availability(&handles[0].0.jid, handles[0].0.id, available(1));
        reg.set_availability(&handles[1].0.jid, handles[1].0.id, available(5));
        reg.set_availability(&handles[2].0.jid, handles[2].0.id, available(5));
        reg.set_availability(&handles[3].0.jid, handles[3].0.id, available(-1));
        let mut targets: Vec<_> = reg
            .message_targets(&bare)
            .into_iter()
            .map(|h| h.jid.to_string())
            .collect();
        targets.sort();
        assert_eq!(targets, ["u@h/b", "u@h/c"]);
        assert_eq!(reg.available(&bare).len(), 4);
    }

    #[test]
    fn only_negative_priorities_means_no_bare_jid_target() {
        let reg = SessionRegistry::default();
        let (a, _ra) = SessionHandle::new(full("u@h/a"));
        reg.bind(a.clone());
        reg.set_availability(&a.jid, a.id, available(-5));
        assert!(reg.message_targets(&a.jid.bare()).is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_connection_but_not_the_session() {
        let (a, _rx) = SessionHandle::new(full("u@h/a"));
        for _ in 0..OUTBOUND_QUEUE {
            assert!(a.deliver(Element::bare("message", "jabber:client")));
        }
        assert!(!a.deliver(Element::bare("message", "jabber:client")));
        assert!(
            a.control.stalled.load(Ordering::SeqCst),
            "the connection is dropped"
        );
        assert!(
            !a.control.token.is_cancelled(),
            "the session goes on (a resumable one waits for its client)"
        );
        a.control.unstall();
        assert!(!a.control.stalled.load(Ordering::SeqCst));
    }

    #[test]
    fn the_byte_budget_fills_before_the_count_with_large_stanzas() {
        let (a, _rx) = SessionHandle::new(full("u@h/a"));
        let large: Element = format!(
            "<message xmlns='jabber:client'><body>{}</body></message>",
            "x".repeat(64 * 1024)
        )
        .parse()
        .unwrap();
        let fit = OUTBOUND_QUEUE_BYTES / (64 * 1024);
        for _ in 0..fit - 1 {
            assert!(a.deliver(large.clone()));
        }
        let mut refused = false;
        for _ in 0..2 {
            refused |= !a.deliver(large.clone());
        }
        assert!(
            refused,
            "about {fit} stanzas of 64 KiB fill 1 MiB, far below {OUTBOUND_QUEUE}"
        );
        assert!(a.control.stalled.load(Ordering::SeqCst));
    }
}
