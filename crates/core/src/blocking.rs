//! Blocking Command (XEP-0191), `[modules.mod_blocking]`: a user keeps a list of JIDs that
//! may not reach them and that they do not reach. The list is read and changed with IQs on
//! the account (sections 3.1 to 3.4), changes are pushed to the user's resources that asked
//! for the list, and the router consults it for every stanza between the account and anyone
//! else ([`crate::hooks::PrivacyCheck`]): a blocked entity's messages and requests get
//! `service-unavailable` and its presence is dropped (section 3.5), so it never causes an
//! offline message or a push; the user's own stanzas to it are refused with `not-acceptable`
//! and `<blocked/>` (section 3.6). Blocking a contact sends it unavailable presence from the
//! user's resources; unblocking sends the current presence. Docs: `docs/modules/blocking.md`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use herald_storage::{StorageError, UserDataStore};
use herald_stream::Bare;
use herald_stream::stanza::{IqType, set_attr};
use jid::{BareJid, Jid};
use minidom::Element;

use crate::{
    Server,
    hooks::{Flow, Handler, Priority, PrivacyCheck, UserRemoved},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
    sessions::Availability,
};

/// XEP-0191's namespace.
pub const NS: &str = "urn:xmpp:blocking";
/// The rows' kind in the per-user data store.
const KIND: &str = "block";
/// Most accounts whose lists are kept in memory (embedded engine only); beyond it the cache
/// starts over.
const CACHE_USERS: usize = 100_000;
/// Most JIDs on one list: a client cannot grow the store without bound.
pub const MAX_ITEMS: usize = 1000;

/// `[modules.mod_blocking]`: no options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockingConfig;

/// `[modules.mod_blocking]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawBlocking {}

impl crate::config::Section for BlockingConfig {
    type Raw = RawBlocking;

    fn from_raw(
        _raw: RawBlocking,
        _at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        Ok(BlockingConfig)
    }
}

/// Whether `peer` is matched by the list item `item` (XEP-0191 section 3.4, with the JID
/// matching rules of XEP-0016 section 2.1): a full JID only itself, a bare JID any of its
/// resources, a domain with a resource only that JID, a domain everything at it.
pub fn matches(item: &Jid, peer: &Jid) -> bool {
    if item.domain() != peer.domain() {
        return false;
    }
    match (item.node(), item.resource()) {
        (Some(node), Some(resource)) => {
            peer.node() == Some(node) && peer.resource() == Some(resource)
        }
        (Some(node), None) => peer.node() == Some(node),
        (None, Some(resource)) => peer.node().is_none() && peer.resource() == Some(resource),
        (None, None) => true,
    }
}

/// One account's block list.
type List = Arc<Vec<Jid>>;

/// The blocking module.
pub struct Blocking {
    store: Arc<dyn UserDataStore>,
    /// Lists by account, in front of the embedded engine (one server owns the file); `None`
    /// on PostgreSQL, where another server may change a list.
    cache: Option<Mutex<HashMap<BareJid, List>>>,
}

impl Blocking {
    /// The module over the server's store; lists are cached in memory when `cache` (the
    /// embedded engine).
    pub fn new(store: Arc<dyn UserDataStore>, cache: bool) -> Arc<Blocking> {
        Arc::new(Blocking {
            store,
            cache: cache.then(|| Mutex::new(HashMap::new())),
        })
    }

    fn cached(&self, user: &BareJid) -> Option<List> {
        let cache = self.cache.as_ref()?;
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(user)
            .cloned()
    }

    fn remember(&self, user: &BareJid, list: List) {
        if let Some(cache) = &self.cache {
            let mut cache = cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if cache.len() >= CACHE_USERS && !cache.contains_key(user) {
                cache.clear();
            }
            cache.insert(user.clone(), list);
        }
    }

    fn forget(&self, user: &BareJid) {
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(user);
        }
    }

    /// The account's list.
    pub async fn list(&self, user: &BareJid) -> Result<List, StorageError> {
        if let Some(list) = self.cached(user) {
            return Ok(list);
        }
        let entries = self.store.list(user, KIND, "").await?;
        let list: List = Arc::new(
            entries
                .iter()
                .filter_map(|entry| Jid::new(&entry.item).ok())
                .collect(),
        );
        self.remember(user, Arc::clone(&list));
        Ok(list)
    }

    /// Whether the account blocks `peer`. A list that cannot be read blocks nothing (logged).
    pub async fn blocks(&self, user: &BareJid, peer: &Jid) -> bool {
        match self.list(user).await {
            Ok(list) => list.iter().any(|item| matches(item, peer)),
            Err(error) => {
                tracing::error!(%user, %error, "cannot read the block list");
                false
            }
        }
    }
}

impl Module for Blocking {
    fn name(&self) -> &'static str {
        "mod_blocking"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(NS);
        r.iq(IqScope::Account, NS, Arc::new(Commands(Arc::clone(&self))));
        r.hooks()
            .privacy_check
            .add(Priority::EARLY, Arc::new(Check(Arc::clone(&self))));
        r.hooks()
            .user_removed
            .add(Priority::NORMAL, Arc::new(Remove(self)));
    }
}

/// Whether a session asked for the block list (section 3.2: it then gets the pushes).
#[derive(Debug, Default)]
struct ListRequested(AtomicBool);

struct Commands(Arc<Blocking>);

/// The `<item jid='...'/>` children of a block or unblock request, checked.
fn items(payload: &Element) -> Result<Vec<Jid>, IqError> {
    payload
        .children()
        .filter(|child| child.is("item", NS))
        .map(|item| {
            item.attr("jid")
                .and_then(|jid| Jid::new(jid).ok())
                .ok_or_else(|| {
                    IqError::new(
                        xmpp_parsers::stanza_error::ErrorType::Modify,
                        xmpp_parsers::stanza_error::DefinedCondition::JidMalformed,
                    )
                })
        })
        .collect()
}

fn list_element(name: &str, jids: &[Jid]) -> Element {
    let mut element = Element::bare(name, NS);
    for jid in jids {
        let mut item = Element::bare("item", NS);
        set_attr(&mut item, "jid", jid.to_string());
        element.append_child(item);
    }
    element
}

#[async_trait::async_trait]
impl IqHandler for Commands {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let user = request.target.bare();
        if !request.sender.same_bare(&user) {
            return Err(IqError::forbidden());
        }
        let blocking = &self.0;
        match (request.kind, request.payload.name()) {
            (IqType::Get, "blocklist") => {
                if let Some(session) = request
                    .sender
                    .try_as_full()
                    .ok()
                    .and_then(|full| server.sessions.get(full))
                {
                    session
                        .state
                        .get_or_default::<ListRequested>()
                        .0
                        .store(true, Ordering::Relaxed);
                }
                let list = blocking
                    .list(&user)
                    .await
                    .map_err(|_| IqError::internal())?;
                Ok(Some(list_element("blocklist", &list)))
            }
            (IqType::Set, "block") => {
                let jids = items(request.payload)?;
                if jids.is_empty() {
                    // Section 3.3: a block request names at least one JID.
                    return Err(IqError::bad_request());
                }
                let before = blocking
                    .list(&user)
                    .await
                    .map_err(|_| IqError::internal())?;
                let new: Vec<Jid> = dedup(jids)
                    .into_iter()
                    .filter(|jid| !before.contains(jid))
                    .collect();
                if before.len() + new.len() > MAX_ITEMS {
                    return Err(IqError::new(
                        xmpp_parsers::stanza_error::ErrorType::Wait,
                        xmpp_parsers::stanza_error::DefinedCondition::ResourceConstraint,
                    ));
                }
                // The contact sees the user go before the block stops presence to it.
                for jid in &new {
                    presence_to(server, &user, jid, false).await;
                }
                blocking.forget(&user);
                for jid in &new {
                    blocking
                        .store
                        .put(&user, KIND, "", &jid.to_string(), "")
                        .await
                        .map_err(|_| IqError::internal())?;
                }
                blocking.forget(&user);
                push(server, &user, list_element("block", &new));
                Ok(None)
            }
            (IqType::Set, "unblock") => {
                let jids = items(request.payload)?;
                let before = blocking
                    .list(&user)
                    .await
                    .map_err(|_| IqError::internal())?;
                // Section 3.4: no item unblocks everything.
                let gone: Vec<Jid> = if jids.is_empty() {
                    before.to_vec()
                } else {
                    dedup(jids)
                        .into_iter()
                        .filter(|jid| before.contains(jid))
                        .collect()
                };
                blocking.forget(&user);
                for jid in &gone {
                    blocking
                        .store
                        .delete(&user, KIND, "", &jid.to_string())
                        .await
                        .map_err(|_| IqError::internal())?;
                }
                blocking.forget(&user);
                for jid in &gone {
                    presence_to(server, &user, jid, true).await;
                }
                let pushed = if request.payload.children().next().is_none() {
                    Vec::new()
                } else {
                    gone
                };
                push(server, &user, list_element("unblock", &pushed));
                Ok(None)
            }
            _ => Err(IqError::bad_request()),
        }
    }
}

fn dedup(mut jids: Vec<Jid>) -> Vec<Jid> {
    let mut seen = std::collections::HashSet::new();
    jids.retain(|jid| seen.insert(jid.clone()));
    jids
}

/// Section 3.3 and 3.4: a contact the user blocks gets unavailable presence from each of the
/// user's available resources (it saw them online); one the user unblocks gets their
/// presence again. Only contacts subscribed to the user's presence saw it.
async fn presence_to(server: &Server, user: &BareJid, jid: &Jid, available: bool) {
    let Some(roster) = server.roster() else {
        return;
    };
    let contact = jid.bare();
    match roster.state(server, user, &contact).await {
        Ok(state) if state.has_from() => {}
        _ => return,
    }
    for resource in server.sessions.resources(user) {
        let Availability::Available { presence, .. } = resource.availability else {
            continue;
        };
        let mut stanza = if available {
            presence.element()
        } else {
            let mut unavailable = Element::bare("presence", herald_stream::ns::CLIENT);
            set_attr(&mut unavailable, "type", "unavailable");
            unavailable
        };
        set_attr(&mut stanza, "from", resource.handle.jid.to_string());
        set_attr(&mut stanza, "to", jid.to_string());
        crate::presence::deliver(server, stanza).await;
    }
}

/// Push a change to the user's resources that asked for the list (section 3.3).
fn push(server: &Server, user: &BareJid, change: Element) {
    for session in server.sessions.bound(user) {
        if !session
            .state
            .get::<ListRequested>()
            .is_some_and(|requested| requested.0.load(Ordering::Relaxed))
        {
            continue;
        }
        let mut iq = Element::bare("iq", herald_stream::ns::CLIENT);
        set_attr(&mut iq, "type", "set");
        set_attr(&mut iq, "id", format!("push-{}", crate::random_id()));
        set_attr(&mut iq, "to", session.jid.to_string());
        iq.append_child(change.clone());
        session.deliver(iq);
    }
}

struct Check(Arc<Blocking>);

#[async_trait::async_trait]
impl Handler<PrivacyCheck> for Check {
    async fn call(&self, _server: &Server, event: &mut PrivacyCheck) -> Flow {
        if self.0.blocks(&event.user, &event.peer).await {
            event.blocked = true;
            return Flow::Stop;
        }
        Flow::Continue
    }
}

struct Remove(Arc<Blocking>);

#[async_trait::async_trait]
impl Handler<UserRemoved> for Remove {
    async fn call(&self, server: &Server, event: &mut UserRemoved) -> Flow {
        self.0.forget(&event.user);
        crate::user_data::RemoveUserData(Arc::clone(&self.0.store))
            .call(server, event)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(text: &str) -> Jid {
        Jid::new(text).unwrap()
    }

    #[test]
    fn items_match_as_xep_0016_says() {
        let full = jid("a@x/phone");
        let bare = jid("a@x");
        let domain = jid("x");
        let domain_resource = jid("x/r");
        assert!(matches(&full, &jid("a@x/phone")));
        assert!(!matches(&full, &jid("a@x/laptop")));
        assert!(!matches(&full, &jid("a@x")));
        assert!(matches(&bare, &jid("a@x/laptop")));
        assert!(matches(&bare, &jid("a@x")));
        assert!(!matches(&bare, &jid("b@x")));
        assert!(matches(&domain, &jid("b@x/r")));
        assert!(matches(&domain, &jid("x")));
        assert!(!matches(&domain, &jid("b@y")));
        assert!(matches(&domain_resource, &jid("x/r")));
        assert!(!matches(&domain_resource, &jid("b@x/r")));
    }
}
