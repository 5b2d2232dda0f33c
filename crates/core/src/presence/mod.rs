//! Presence (RFC 6121 sections 3 and 4): each resource's availability and priority, the
//! broadcast of its presence to the user's resources and subscribed contacts, probes at
//! login, directed presence, and the subscription stanzas (subscribe, subscribed,
//! unsubscribe, unsubscribed) applied to both rosters with the state tables of appendix A.
//!
//! Subscriptions need the roster (`mod_roster`, [`crate::roster`]). Without it, presence
//! reaches the user's own resources and the recipients of directed presence only, and
//! subscription stanzas are delivered like directed presence.
//!
//! Contacts on served domains are handled here; stanzas for a connected component are routed
//! to it; contacts on other domains are skipped until federation exists.
//!
//! The subsystem is split by concern: `broadcast` (a resource's own availability, sent to
//! the user's resources and subscribed contacts), `subscription` (probes and the
//! subscription stanzas applied to both rosters), `directed` (presence to one entity, and
//! what it owes at logoff). This file holds the entry points and the primitives they share.
//! What presence remembers about a session ([`SessionPresence`]) lives in the session's own
//! state (`SessionHandle::state`).

mod broadcast;
mod directed;
mod subscription;

use std::{collections::HashSet, sync::Mutex};

use herald_stream::Bare;
use herald_stream::stanza::{PresenceType, Stanza, set_attr};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use subscription::CancelSubscriptions;

use crate::{
    Origin, Server,
    hooks::{Direction, PresenceIn, Priority},
    module::{Module, Registrar},
    roster::{Roster, subscription::SubscriptionKind},
    sessions::{Availability, SessionHandle},
};

/// Most entities one session's directed presence is remembered for (RFC 6121 section 4.6.3),
/// so that a client cannot grow the server's memory without bound; beyond it, further
/// recipients get no unavailable presence at logoff.
const MAX_DIRECTED: usize = 1000;

/// Presence as it registers with the server (beside the roster): it handles the removal of
/// roster items.
pub(crate) struct Presence;

impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn register(self: std::sync::Arc<Self>, r: &mut Registrar) {
        r.hooks()
            .roster_item_removed
            .add(Priority::NORMAL, CancelSubscriptions::handler());
    }
}

/// What presence remembers about one session besides its availability, kept in the
/// session's state.
#[derive(Debug, Default)]
pub struct SessionPresence {
    /// Entities that got directed available presence from the session and no unavailable
    /// since (RFC 6121 section 4.6.3: they get unavailable presence when it goes offline).
    directed: Mutex<HashSet<Jid>>,
}

impl SessionPresence {
    /// The presence state of `session`.
    fn of(session: &SessionHandle) -> std::sync::Arc<SessionPresence> {
        session.state.get_or_default::<SessionPresence>()
    }

    fn directed(&self) -> std::sync::MutexGuard<'_, HashSet<Jid>> {
        self.directed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Presence from the bound session `sender`.
pub(crate) async fn route(server: &Server, sender: &FullJid, kind: PresenceType, stanza: Stanza) {
    let roster = server.roster();
    match (&stanza.to, subscription_kind(kind), roster) {
        (None, _, _) => broadcast::broadcast(server, sender, kind, stanza).await,
        (Some(to), Some(subscription), Some(roster)) => {
            let to = to.clone();
            subscription::outbound_subscription(server, roster, sender, subscription, &to, stanza)
                .await;
        }
        (Some(to), None, Some(roster)) if kind == PresenceType::Probe => {
            subscription::probe(server, roster, sender, &to.bare(), true).await;
        }
        (Some(to), _, _) => {
            let to = to.clone();
            directed::directed(server, sender, kind, to, stanza).await;
        }
    }
}

/// Presence from a connected component (XEP-0114) to a local entity: subscription stanzas
/// are processed like those of any contact's server (RFC 6121 section 3), probes are
/// answered for subscribers (section 4.3.2), the rest is delivered as addressed.
pub(crate) async fn from_component(server: &Server, kind: PresenceType, stanza: Stanza) {
    let (Some(to), Some(from)) = (stanza.to.clone(), stanza.from.clone()) else {
        return;
    };
    let account = to.node().is_some() && server.is_local_domain(to.domain().as_str());
    match (subscription_kind(kind), server.roster()) {
        (Some(subscription), Some(roster)) if account => {
            let (recipient, contact) = (to.bare(), from.bare());
            subscription::inbound_subscription(
                server,
                roster,
                &recipient,
                &contact,
                subscription,
                stanza.element,
            )
            .await;
        }
        (None, Some(roster)) if kind == PresenceType::Probe && account => {
            let (user, prober) = (to.bare(), from);
            match roster.state(server, &user, &prober.bare()).await {
                Ok(state) if state.has_from() => {
                    for resource in server.sessions.available(&user) {
                        if let Some(presence) = last_presence(server, &resource) {
                            send(server, addressed(&presence, &prober)).await;
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%user, %error, "cannot read the roster to answer a probe")
                }
            }
        }
        _ => send(server, stanza.element).await,
    }
}

/// A session ended: the server acts as if it had sent unavailable presence (RFC 6121 section
/// 4.5.3.2): the user's other resources, the subscribed contacts and the recipients of
/// directed presence learn that it is gone.
pub async fn session_ended(server: &Server, handle: &SessionHandle, last: Option<Availability>) {
    let mut unavailable = Element::bare("presence", herald_stream::ns::CLIENT);
    set_attr(&mut unavailable, "type", "unavailable");
    set_attr(&mut unavailable, "from", handle.jid.to_string());
    if matches!(last, Some(Availability::Available { .. })) {
        let user = handle.jid.bare();
        for other in server.sessions.available(&user) {
            other.deliver(addressed(&unavailable, &Jid::from(other.jid.clone())));
        }
        if let Some(roster) = server.roster() {
            for contact in subscribers(server, roster, &user).await {
                send(server, addressed(&unavailable, &Jid::from(contact))).await;
            }
        }
    }
    directed::unavailable_to_directed(server, handle, &unavailable).await;
}

pub(super) fn subscription_kind(kind: PresenceType) -> Option<SubscriptionKind> {
    match kind {
        PresenceType::Subscribe => Some(SubscriptionKind::Subscribe),
        PresenceType::Subscribed => Some(SubscriptionKind::Subscribed),
        PresenceType::Unsubscribe => Some(SubscriptionKind::Unsubscribe),
        PresenceType::Unsubscribed => Some(SubscriptionKind::Unsubscribed),
        _ => None,
    }
}

/// RFC 6121 section 4.7.2.3: the priority, -128..=127, 0 when absent.
pub(super) fn priority(presence: &Element) -> Result<i8, ()> {
    match presence.get_child("priority", herald_stream::ns::CLIENT) {
        None => Ok(0),
        Some(p) => p.text().trim().parse::<i8>().map_err(|_| ()),
    }
}

pub(super) fn addressed(presence: &Element, to: &Jid) -> Element {
    let mut copy = presence.clone();
    set_attr(&mut copy, "to", to.to_string());
    copy
}

pub(super) fn presence_of_type(kind: &'static str, from: &Jid, to: &Jid) -> Element {
    let mut presence = Element::bare("presence", herald_stream::ns::CLIENT);
    set_attr(&mut presence, "type", kind);
    set_attr(&mut presence, "from", from.to_string());
    set_attr(&mut presence, "to", to.to_string());
    presence
}

/// Deliver a presence stanza to what its `to` names: a local account's resource or its
/// available resources, a connected component, or a remote server when federation is on.
/// Block lists apply both ways (XEP-0191 sections 3.5 and 3.6: presence between a user and
/// an entity the user blocks is dropped silently), and a local account's modules learn of
/// the presence (the `presence_in` hook).
pub(super) async fn send(server: &Server, presence: Element) {
    let Some(to) = presence.attr("to").and_then(|to| Jid::new(to).ok()) else {
        return;
    };
    let from = presence.attr("from").and_then(|from| Jid::new(from).ok());
    if let Some(from) = &from
        && !from.same_bare(&to)
    {
        if server.is_local_user(from) && server.blocked(Direction::Out, &from.bare(), &to).await {
            return;
        }
        if server.is_local_user(&to) && server.blocked(Direction::In, &to.bare(), from).await {
            return;
        }
    }
    if server.is_local_domain(to.domain().as_str()) {
        if to.node().is_some() {
            presence_in(server, to.bare(), &presence).await;
        }
        match to.try_as_full() {
            Ok(full) => {
                if let Some(session) = server.sessions.get(full) {
                    session.deliver(presence);
                }
            }
            Err(bare) => {
                for session in server.sessions.available(bare) {
                    session.deliver(presence.clone());
                }
            }
        }
    } else if (server.components.get(to.domain().as_str()).is_some() || server.s2s().is_some())
        && let Ok(stanza) = Stanza::parse(presence)
    {
        Box::pin(server.route(Origin::Server, stanza)).await;
    }
}

/// Send a presence stanza a module built (from and to set) as presence itself sends it: block
/// lists apply, and local recipients' modules learn of it.
pub async fn deliver(server: &Server, presence: Element) {
    send(server, presence).await;
}

/// Raise the `presence_in` hook for available or unavailable presence from a full JID
/// reaching the local account `user`.
pub(super) async fn presence_in(server: &Server, user: BareJid, presence: &Element) {
    let hooks = server.extensions.hooks();
    if hooks.presence_in.is_empty() {
        return;
    }
    let available = match presence.attr("type") {
        None => true,
        Some("unavailable") => false,
        Some(_) => return,
    };
    let Some(from) = presence
        .attr("from")
        .and_then(|from| FullJid::new(from).ok())
    else {
        return;
    };
    let caps = available.then(|| caps_of(presence)).flatten();
    let mut event = PresenceIn {
        user,
        from,
        caps,
        available,
    };
    hooks.presence_in.run(server, &mut event).await;
}

/// The Entity Capabilities of a presence (XEP-0115 section 4), as `node#ver`; only hashed
/// capabilities (section 5), the legacy form names no verifiable set of features.
pub fn caps_of(presence: &Element) -> Option<String> {
    let c = presence.get_child("c", CAPS)?;
    let (Some(node), Some(ver), Some(_hash)) = (c.attr("node"), c.attr("ver"), c.attr("hash"))
    else {
        return None;
    };
    Some(format!("{node}#{ver}"))
}

/// XEP-0115's namespace.
pub const CAPS: &str = "http://jabber.org/protocol/caps";

pub(super) fn send_presence_of_others(
    server: &Server,
    session: &SessionHandle,
    others: &[SessionHandle],
) {
    for other in others.iter().filter(|o| o.id != session.id) {
        if let Some(presence) = last_presence(server, other) {
            session.deliver(addressed(&presence, &Jid::from(session.jid.clone())));
        }
    }
}

/// The last available presence a resource broadcast, if it is available.
pub(super) fn last_presence(server: &Server, handle: &SessionHandle) -> Option<Element> {
    server
        .sessions
        .resources(&handle.jid.bare())
        .into_iter()
        .find(|state| state.handle.id == handle.id)
        .and_then(|state| match state.availability {
            Availability::Available { presence, .. } => Some(presence.element()),
            Availability::Unavailable => None,
        })
}

/// The contacts subscribed to the user's presence ("from" or "both"), the user excluded.
pub(super) async fn subscribers(server: &Server, roster: &Roster, user: &BareJid) -> Vec<BareJid> {
    match roster.items(server, user).await {
        Ok(items) => items
            .into_iter()
            .filter(|item| item.state.has_from() && &item.contact != user)
            .map(|item| item.contact)
            .collect(),
        Err(error) => {
            tracing::error!(%user, %error, "cannot read the roster to broadcast presence");
            Vec::new()
        }
    }
}

/// Whether a local account exists; `None` (logged) when the store cannot tell.
pub(super) async fn account_exists(server: &Server, user: &BareJid) -> Option<bool> {
    match server.storage.accounts().exists(user).await {
        Ok(exists) => Some(exists),
        Err(error) => {
            tracing::error!(%user, %error, "cannot check whether an account exists");
            None
        }
    }
}

pub(super) fn unavailable_from(from: &FullJid, to: &Jid) -> Element {
    presence_of_type("unavailable", &Jid::from(from.clone()), to)
}
