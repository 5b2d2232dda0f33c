//! The table of connected external components (XEP-0114) by domain.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use herald_stream::StreamErrorCondition;
use jid::Jid;

use crate::{
    queue::{Inbox, Outbox},
    sessions::{SessionControl, SessionId},
};

/// How many stanzas may wait for a component: components carry the traffic of many users
/// (a push app server receives a publish per notification), so far more than a client.
pub const COMPONENT_QUEUE: usize = 32 * 1024;

/// How many bytes (approximately, serialised) may wait for a component.
pub const COMPONENT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// What the router holds of a connected component.
#[derive(Clone, Debug)]
pub struct ComponentHandle {
    /// Connection number (shared numbering with client sessions).
    pub id: SessionId,
    /// The component's domain.
    pub domain: Jid,
    /// Stanzas to write to it.
    pub outbound: Outbox,
    /// Asks the connection to close.
    pub control: Arc<SessionControl>,
    /// Listed in the server's disco#items (`hidden_components = false`).
    pub visible: bool,
}

impl ComponentHandle {
    /// Create a handle and the receiving end of its queue.
    pub fn new(domain: Jid, visible: bool) -> (ComponentHandle, Inbox) {
        let (tx, rx) = crate::queue::bounded(COMPONENT_QUEUE, COMPONENT_QUEUE_BYTES);
        let handle = ComponentHandle {
            id: crate::sessions::next_session_id(),
            domain,
            outbound: tx,
            control: Arc::new(SessionControl::default()),
            visible,
        };
        (handle, rx)
    }

    /// Queue a stanza without waiting; `false` if the component is gone or its queue is
    /// full. A busy component is not disconnected: the stanza is bounced with
    /// wait/resource-constraint, which tells the sender to retry later.
    pub fn deliver(&self, stanza: impl Into<crate::envelope::Envelope>) -> bool {
        self.try_deliver(stanza.into()).is_ok()
    }

    /// [`ComponentHandle::deliver`], with the stanza handed back when it was not queued (for
    /// the caller's error reply, without a copy made beforehand in case).
    pub fn try_deliver(
        &self,
        stanza: crate::envelope::Envelope,
    ) -> Result<(), Box<crate::envelope::Envelope>> {
        crate::sessions::push_or_close(&self.outbound, &self.control, stanza, &self.domain, false)
    }
}

/// What to do when a second component authenticates for a connected domain
/// (MongooseIM's `conflict_behaviour`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictBehaviour {
    /// Refuse the new connection with a `conflict` stream error.
    Disconnect,
    /// Close the old connection with `conflict` and keep the new one.
    KickOld,
}

/// Connected components by domain.
#[derive(Default)]
pub struct ComponentRegistry {
    map: RwLock<HashMap<String, ComponentHandle>>,
    /// Domains that have had a component since start-up.
    known: RwLock<std::collections::HashSet<String>>,
}

impl ComponentRegistry {
    /// The component serving `domain`, if connected.
    pub fn get(&self, domain: &str) -> Option<ComponentHandle> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(domain).cloned()
    }

    /// Register a component; `Err(())` when the domain is taken and the behaviour is
    /// [`ConflictBehaviour::Disconnect`]. With `KickOld` the old one is told to close.
    #[allow(clippy::result_unit_err)]
    pub fn register(
        &self,
        handle: ComponentHandle,
        behaviour: ConflictBehaviour,
    ) -> Result<(), ()> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let domain = handle.domain.to_string();
        if let Some(old) = map.get(&domain) {
            match behaviour {
                ConflictBehaviour::Disconnect => return Err(()),
                ConflictBehaviour::KickOld => old.control.close(StreamErrorCondition::Conflict),
            }
        }
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain.clone());
        map.insert(domain, handle);
        Ok(())
    }

    /// Whether a component has served `domain` since start-up (it may be disconnected now).
    pub fn was_connected(&self, domain: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(domain)
    }

    /// Remove a component unless it has been replaced already.
    pub fn unregister(&self, domain: &Jid, id: SessionId) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let key = domain.to_string();
        if map.get(&key).is_some_and(|h| h.id == id) {
            map.remove(&key);
        }
    }

    /// The visible connected components' domains.
    pub fn visible(&self) -> Vec<Jid> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Jid> = map
            .values()
            .filter(|h| h.visible)
            .map(|h| h.domain.clone())
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out
    }

    /// Every connected component, for shutdown.
    pub fn all(&self) -> Vec<ComponentHandle> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
