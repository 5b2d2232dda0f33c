//! The roster (RFC 6121 section 2), `[modules.mod_roster]`: get, set and remove over
//! `jabber:iq:roster`, roster pushes to every interested resource (section 2.1.6), roster
//! versioning (XEP-0237), and the subscription states that presence processing reads and
//! changes (section 3; the transitions of appendix A are in [`subscription`]).
//!
//! The module's whole surface is [`Roster::register`]. The items live in the store's
//! [`RosterStore`](herald_storage::RosterStore); this module decides what a client sees of
//! them: an item whose only state is a contact's pending request ("None + Pending In") is
//! hidden until the user answers (RFC 6121 appendix A.1: the server SHOULD NOT push or
//! deliver such items).

mod iq;
pub mod subscription;

use std::sync::Arc;

use herald_storage::{
    StorageError,
    roster::{ItemUpdate, RosterItem, SubscriptionState},
};
use herald_stream::{ns::CLIENT, stanza::set_attr};
use jid::BareJid;
use minidom::Element;
use xmpp_parsers::{
    ns,
    roster::{Ask, Group, Item, Roster as RosterQuery, Subscription},
};

use crate::{
    Server,
    hooks::{Flow, Handler, Priority, RosterItemRemoved, UserRemoved},
    module::{IqScope, Module, Registrar},
};
use subscription::{SubscriptionKind, Transition};

/// XEP-0237 section 2.1: the stream feature that announces roster versioning.
const ROSTERVER: &str = herald_stream::ns::ROSTER_VERSIONING;

/// Options of `mod_roster` (MongooseIM's names, and herald's `max_roster_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RosterConfig {
    /// `versioning`: support roster versioning (XEP-0237).
    pub versioning: bool,
    /// `store_current_id`: keep the roster version in the database, bumped on each change,
    /// instead of computing it from the roster on each request.
    pub store_current_id: bool,
    /// `max_roster_size`: items a roster may hold (default 2000); `None` for `"infinity"`.
    /// A roster set that would add one more is refused with `not-allowed` (RFC 6121 section
    /// 2.3.3); a subscription request from a contact not yet in a full roster is dropped.
    pub max_roster_size: Option<usize>,
}

impl RosterConfig {
    /// `max_roster_size` when absent.
    pub const DEFAULT_MAX_ROSTER_SIZE: usize = 2000;
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig {
            versioning: false,
            store_current_id: false,
            max_roster_size: Some(Self::DEFAULT_MAX_ROSTER_SIZE),
        }
    }
}

/// `[modules.mod_roster]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRoster {
    /// See [`RosterConfig::versioning`].
    pub versioning: Option<bool>,
    /// See [`RosterConfig::store_current_id`].
    pub store_current_id: Option<bool>,
    /// The store (MongooseIM's `backend`); the server checks it against its storage engine.
    pub backend: Option<String>,
    /// An integer, or "infinity".
    pub max_roster_size: Option<toml::Value>,
}

impl crate::config::Section for RosterConfig {
    type Raw = RawRoster;

    fn from_raw(
        raw: RawRoster,
        at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        let max_roster_size = match raw.max_roster_size {
            Some(value) => {
                crate::config::integer_or(value, "infinity", 1, &at.key("max_roster_size"))?
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            }
            None => Some(RosterConfig::DEFAULT_MAX_ROSTER_SIZE),
        };
        Ok(RosterConfig {
            versioning: raw.versioning.unwrap_or(false),
            store_current_id: raw.store_current_id.unwrap_or(false),
            max_roster_size,
        })
    }
}

/// The longest status text kept with a pending subscription request, in characters; longer
/// texts are cut (a request is stored until answered, so its size is bounded).
pub const MAX_ASK_MESSAGE: usize = 1024;

/// The roster module, also the roster service that presence processing uses.
#[derive(Debug)]
pub struct Roster {
    config: RosterConfig,
}

/// Which side of a subscription stanza a change is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The user sent the stanza (RFC 6121 appendix A.2).
    Outbound,
    /// The user's server received it for the user (appendix A.3).
    Inbound,
}

/// What applying a subscription stanza did to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The state before.
    pub before: SubscriptionState,
    /// The state after.
    pub after: SubscriptionState,
    /// Whether the stanza travels on (see [`Transition::forward`]).
    pub forward: bool,
}

impl Roster {
    /// The module with its options.
    pub fn new(config: RosterConfig) -> Arc<Roster> {
        Arc::new(Roster { config })
    }

    /// The options.
    pub fn config(&self) -> RosterConfig {
        self.config
    }

    /// The user's items as the store has them, hidden ones included.
    pub async fn items(
        &self,
        server: &Server,
        user: &BareJid,
    ) -> Result<Vec<RosterItem>, StorageError> {
        server.storage.roster().items(user).await
    }

    /// Whether the user's roster may take an item for `contact`: it has one already, or has
    /// fewer than `max_roster_size` (checked before the change, so concurrent additions may
    /// pass it by a few).
    pub async fn has_room(
        &self,
        server: &Server,
        user: &BareJid,
        contact: &BareJid,
    ) -> Result<bool, StorageError> {
        let Some(max) = self.config.max_roster_size else {
            return Ok(true);
        };
        let store = server.storage.roster();
        if store.item(user, contact).await?.is_some() {
            return Ok(true);
        }
        Ok(store.items(user).await?.len() < max)
    }

    /// The state between the user and `contact` (none when there is no item).
    pub async fn state(
        &self,
        server: &Server,
        user: &BareJid,
        contact: &BareJid,
    ) -> Result<SubscriptionState, StorageError> {
        let item = server.storage.roster().item(user, contact).await?;
        Ok(item.map_or(SubscriptionState::None, |item| item.state))
    }

    /// Apply a subscription stanza to the user's item for `contact` (RFC 6121 appendix A) and
    /// push the change to the user's interested resources. `ask_message` is the status text
    /// of an inbound request, kept while the request is pending.
    pub async fn apply(
        &self,
        server: &Server,
        user: &BareJid,
        contact: &BareJid,
        direction: Direction,
        kind: SubscriptionKind,
        ask_message: Option<String>,
    ) -> Result<Applied, StorageError> {
        let transition = move |state| match direction {
            Direction::Outbound => subscription::outbound(state, kind),
            Direction::Inbound => subscription::inbound(state, kind),
        };
        let new_contact = contact.clone();
        let update = server
            .storage
            .roster()
            .update(
                user,
                contact,
                Box::new(move |current| {
                    let state = current.map_or(SubscriptionState::None, |item| item.state);
                    let Transition { state: new, .. } = transition(state);
                    let mut item = match current {
                        // Nothing to remember about a contact with no subscription at all.
                        None if new == SubscriptionState::None => return None,
                        None => RosterItem::new(new_contact),
                        // A record kept only for a pending request goes with it.
                        Some(item) if is_hidden(item) && new == SubscriptionState::None => {
                            return None;
                        }
                        Some(item) => item.clone(),
                    };
                    if !new.pending_in() {
                        item.ask_message = None;
                    } else if !state.pending_in() {
                        item.ask_message =
                            ask_message.map(|text| text.chars().take(MAX_ASK_MESSAGE).collect());
                    }
                    item.state = new;
                    Some(item)
                }),
            )
            .await?;
        let before = update
            .before
            .as_ref()
            .map_or(SubscriptionState::None, |item| item.state);
        let after = update
            .after
            .as_ref()
            .map_or(SubscriptionState::None, |item| item.state);
        self.push_change(server, user, &update).await;
        Ok(Applied {
            before,
            after,
            forward: transition(before).forward,
        })
    }

    /// Set the name and groups of the user's item for `contact`, creating it with no
    /// subscription if needed (RFC 6121 section 2.3), and push the change.
    pub async fn set_item(
        &self,
        server: &Server,
        user: &BareJid,
        contact: &BareJid,
        name: Option<String>,
        groups: Vec<String>,
    ) -> Result<(), StorageError> {
        let new_contact = contact.clone();
        let update = server
            .storage
            .roster()
            .update(
                user,
                contact,
                Box::new(move |current| {
                    let mut item = current
                        .cloned()
                        .unwrap_or_else(|| RosterItem::new(new_contact));
                    item.name = name;
                    item.groups = groups;
                    Some(item)
                }),
            )
            .await?;
        self.push_change(server, user, &update).await;
        Ok(())
    }

    /// Delete the user's item for `contact`, push the removal, and cancel the subscriptions
    /// both ways (RFC 6121 section 2.5.2). Returns the removed item.
    pub async fn remove_item(
        &self,
        server: &Server,
        user: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let update = server
            .storage
            .roster()
            .update(user, contact, Box::new(|_| None))
            .await?;
        self.push_change(server, user, &update).await;
        if let Some(removed) = &update.before {
            removed_item(server, user, removed).await;
        }
        Ok(update.before)
    }

    /// The roster as the client sees it: hidden items left out.
    pub fn visible(items: Vec<RosterItem>) -> Vec<RosterItem> {
        items.into_iter().filter(|item| !is_hidden(item)).collect()
    }

    /// The roster version to give the client, if versioning is on (XEP-0237).
    async fn version(
        &self,
        server: &Server,
        user: &BareJid,
        visible: &[RosterItem],
    ) -> Result<Option<String>, StorageError> {
        if !self.config.versioning {
            return Ok(None);
        }
        if !self.config.store_current_id {
            return Ok(Some(fingerprint(visible)));
        }
        let store = server.storage.roster();
        match store.version(user).await? {
            Some(version) => Ok(Some(version)),
            None => store.bump_version(user).await.map(Some),
        }
    }

    /// Send a roster push (RFC 6121 section 2.1.6) for a change the client can see, to every
    /// interested resource of the user.
    async fn push_change(&self, server: &Server, user: &BareJid, update: &ItemUpdate) {
        let before = update.before.as_ref().filter(|item| !is_hidden(item));
        let after = update.after.as_ref().filter(|item| !is_hidden(item));
        let pushed = match (before, after, &update.after) {
            (before, Some(after), _) => {
                let shown = to_xml(after);
                if before.map(to_xml).as_ref() == Some(&shown) {
                    return;
                }
                shown
            }
            // Section 2.5.2: a removal is pushed with subscription='remove'.
            (Some(before), None, None) => Item {
                jid: before.contact.clone(),
                name: None,
                subscription: Subscription::Remove,
                ask: Ask::None,
                groups: Vec::new(),
                approved: None,
            }
            .into(),
            // A visible item hidden again is not pushed (appendix A.1).
            _ => return,
        };
        let version = if self.config.versioning && self.config.store_current_id {
            match server.storage.roster().bump_version(user).await {
                Ok(version) => Some(version),
                Err(error) => {
                    tracing::warn!(%user, %error, "cannot store the roster version");
                    None
                }
            }
        } else if self.config.versioning {
            match server.storage.roster().items(user).await {
                Ok(items) => Some(fingerprint(&Roster::visible(items))),
                Err(error) => {
                    tracing::warn!(%user, %error, "cannot compute the roster version");
                    None
                }
            }
        } else {
            None
        };
        for resource in server.sessions.resources(user) {
            if !RosterInterest::of(&resource.handle) {
                continue;
            }
            let mut query = Element::bare("query", ns::ROSTER);
            if let Some(version) = &version {
                set_attr(&mut query, "ver", version.clone());
            }
            query.append_child(pushed.clone());
            let mut iq = Element::bare("iq", CLIENT);
            set_attr(&mut iq, "type", "set");
            set_attr(&mut iq, "id", format!("push-{}", crate::random_id()));
            set_attr(&mut iq, "to", resource.handle.jid.to_string());
            iq.append_child(query);
            resource.handle.deliver(iq);
        }
    }
}

impl Module for Roster {
    fn name(&self) -> &'static str {
        "mod_roster"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.iq(
            IqScope::Account,
            ns::ROSTER,
            Arc::new(iq::RosterIq(Arc::clone(&self))),
        );
        if self.config.versioning {
            r.stream_feature(Element::bare("ver", ROSTERVER));
        }
        r.hooks()
            .user_removed
            .add(Priority::NORMAL, Arc::new(RemoveRoster));
    }
}

/// An item only a contact's pending request created: not shown until the user answers.
fn is_hidden(item: &RosterItem) -> bool {
    item.state == SubscriptionState::NonePendingIn
}

/// The `<item/>` a client sees (RFC 6121 section 2.1.2).
pub(crate) fn to_xml(item: &RosterItem) -> Element {
    to_item(item).into()
}

fn to_item(item: &RosterItem) -> Item {
    let subscription = match item.state.subscription() {
        herald_storage::roster::Subscription::None => Subscription::None,
        herald_storage::roster::Subscription::To => Subscription::To,
        herald_storage::roster::Subscription::From => Subscription::From,
        herald_storage::roster::Subscription::Both => Subscription::Both,
    };
    Item {
        jid: item.contact.clone(),
        name: item.name.clone(),
        subscription,
        ask: if item.state.pending_out() {
            Ask::Subscribe
        } else {
            Ask::None
        },
        groups: item.groups.iter().cloned().map(Group).collect(),
        approved: None,
    }
}

/// The roster as a `<query/>` result.
pub(crate) fn query(items: &[RosterItem], version: Option<String>) -> Element {
    RosterQuery {
        ver: version,
        items: items.iter().map(to_item).collect(),
    }
    .into()
}

/// A version computed from what the client sees (FNV-1a, 64 bits): equal rosters give equal
/// versions, and any visible change gives another one.
fn fingerprint(visible: &[RosterItem]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        // A separator that no UTF-8 text contains, so fields cannot run into each other.
        hash ^= 0xff;
        hash = hash.wrapping_mul(PRIME);
    };
    for item in visible {
        feed(item.contact.as_str().as_bytes());
        feed(item.name.as_deref().unwrap_or_default().as_bytes());
        feed(&[
            item.state.subscription() as u8,
            u8::from(item.state.pending_out()),
        ]);
        for group in &item.groups {
            feed(group.as_bytes());
        }
        feed(b"");
    }
    format!("{hash:016x}")
}

/// Raise `roster_item_removed` (presence cancels the item's subscriptions).
async fn removed_item(server: &Server, user: &BareJid, item: &RosterItem) {
    let mut event = RosterItemRemoved {
        user: user.clone(),
        item: item.clone(),
    };
    server
        .extensions
        .hooks()
        .roster_item_removed
        .run(server, &mut event)
        .await;
}

/// Whether a session asked for the roster: an "interested resource" (RFC 6121 section
/// 2.1.6) that gets roster pushes. Kept in the session's state.
#[derive(Debug, Default)]
pub(crate) struct RosterInterest(std::sync::atomic::AtomicBool);

impl RosterInterest {
    /// Record that `session` asked for the roster.
    pub(crate) fn mark(session: &crate::sessions::SessionHandle) {
        session
            .state
            .get_or_default::<RosterInterest>()
            .0
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `session` asked for the roster.
    pub(crate) fn of(session: &crate::sessions::SessionHandle) -> bool {
        session
            .state
            .get::<RosterInterest>()
            .is_some_and(|interest| interest.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// `user_removed`: cancel the deleted account's subscriptions, then delete its roster.
struct RemoveRoster;

#[async_trait::async_trait]
impl Handler<UserRemoved> for RemoveRoster {
    async fn call(&self, server: &Server, event: &mut UserRemoved) -> Flow {
        let store = server.storage.roster();
        match store.items(&event.user).await {
            Ok(items) => {
                // XEP-0077 section 3.2: the server SHOULD also cancel the existing presence
                // subscriptions of the removed entity.
                for item in &items {
                    removed_item(server, &event.user, item).await;
                }
            }
            Err(error) => {
                tracing::warn!(user = %event.user, %error, "cannot read the roster to cancel its subscriptions")
            }
        }
        if let Err(error) = store.remove_all(&event.user).await {
            tracing::error!(user = %event.user, %error, "cannot delete the roster of a removed account");
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(contact: &str, state: SubscriptionState) -> RosterItem {
        RosterItem {
            state,
            ..RosterItem::new(BareJid::new(contact).unwrap())
        }
    }

    #[test]
    fn an_item_shows_subscription_and_ask_but_not_pending_in() {
        let mut shown = item("romeo@example.net", SubscriptionState::NonePendingOutIn);
        shown.name = Some("Romeo".into());
        shown.groups = vec!["Friends".into()];
        let xml = to_xml(&shown);
        assert!(xml.is("item", ns::ROSTER));
        assert_eq!(xml.attr("jid"), Some("romeo@example.net"));
        assert_eq!(xml.attr("name"), Some("Romeo"));
        // "none" is the default (RFC 6121 section 2.1.2.5), left implicit.
        assert_eq!(xml.attr("subscription").unwrap_or("none"), "none");
        assert_eq!(xml.attr("ask"), Some("subscribe"));
        let groups: Vec<String> = xml.children().map(|group| group.text()).collect();
        assert_eq!(groups, ["Friends"]);
        let both = to_xml(&item("nurse@example.com", SubscriptionState::Both));
        assert_eq!(both.attr("subscription"), Some("both"));
        assert_eq!(both.attr("ask"), None);
    }

    #[test]
    fn only_a_bare_pending_request_is_hidden() {
        assert!(is_hidden(&item("a@b", SubscriptionState::NonePendingIn)));
        for state in [
            SubscriptionState::None,
            SubscriptionState::NonePendingOutIn,
            SubscriptionState::ToPendingIn,
        ] {
            assert!(!is_hidden(&item("a@b", state)), "{state:?}");
        }
    }

    #[test]
    fn the_fingerprint_follows_what_the_client_sees() {
        let a = vec![item("a@b", SubscriptionState::To)];
        let b = vec![item("a@b", SubscriptionState::Both)];
        let mut named = a.clone();
        named[0].name = Some("A".into());
        let mut pending_in = a.clone();
        pending_in[0].state = SubscriptionState::ToPendingIn;
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&named));
        // Pending-in is not shown, so it does not change the version.
        assert_eq!(fingerprint(&a), fingerprint(&pending_in));
        assert_ne!(fingerprint(&a), fingerprint(&[]));
    }
}
