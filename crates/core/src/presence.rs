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

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use herald_storage::roster::RosterItem;
use herald_stream::stanza::{PresenceType, Stanza, set_attr};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Origin, Server,
    hooks::UserAvailable,
    roster::{Direction, Roster, subscription::SubscriptionKind},
    sessions::{Availability, SessionHandle},
};

/// Most entities one session's directed presence is remembered for (RFC 6121 section 4.6.3),
/// so that a client cannot grow the server's memory without bound; beyond it, further
/// recipients get no unavailable presence at logoff.
const MAX_DIRECTED: usize = 1000;

/// What presence and the roster remember about one session besides its availability.
#[derive(Debug, Default)]
pub struct SessionPresence {
    /// The session asked for the roster: it is an "interested resource" (RFC 6121 section
    /// 2.1.6) and gets roster pushes.
    roster_requested: AtomicBool,
    /// Entities that got directed available presence from the session and no unavailable
    /// since (RFC 6121 section 4.6.3: they get unavailable presence when it goes offline).
    directed: Mutex<HashSet<Jid>>,
}

impl SessionPresence {
    /// Record that the session asked for the roster.
    pub fn request_roster(&self) {
        self.roster_requested.store(true, Ordering::Relaxed);
    }

    /// Whether the session asked for the roster.
    pub fn roster_requested(&self) -> bool {
        self.roster_requested.load(Ordering::Relaxed)
    }

    fn directed(&self) -> std::sync::MutexGuard<'_, HashSet<Jid>> {
        self.directed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Presence from the bound session `sender`.
pub(crate) async fn route(server: &Server, sender: &FullJid, kind: PresenceType, stanza: Stanza) {
    let roster = server.extensions.roster();
    match (&stanza.to, subscription_kind(kind), roster) {
        (None, _, _) => broadcast(server, sender, kind, stanza).await,
        (Some(to), Some(subscription), Some(roster)) => {
            let to = to.clone();
            outbound_subscription(server, roster, sender, subscription, &to, stanza).await;
        }
        (Some(to), None, Some(roster)) if kind == PresenceType::Probe => {
            probe(server, roster, sender, &to.to_bare(), true).await;
        }
        (Some(to), _, _) => {
            let to = to.clone();
            directed(server, sender, kind, to, stanza).await;
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
    match (subscription_kind(kind), server.extensions.roster()) {
        (Some(subscription), Some(roster)) if account => {
            let (recipient, contact) = (to.to_bare(), from.to_bare());
            inbound_subscription(
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
            let (user, prober) = (to.to_bare(), from);
            match roster.state(server, &user, &prober.to_bare()).await {
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

fn subscription_kind(kind: PresenceType) -> Option<SubscriptionKind> {
    match kind {
        PresenceType::Subscribe => Some(SubscriptionKind::Subscribe),
        PresenceType::Subscribed => Some(SubscriptionKind::Subscribed),
        PresenceType::Unsubscribe => Some(SubscriptionKind::Unsubscribe),
        PresenceType::Unsubscribed => Some(SubscriptionKind::Unsubscribed),
        _ => None,
    }
}

/// RFC 6121 section 4.7.2.3: the priority, -128..=127, 0 when absent.
fn priority(presence: &Element) -> Result<i8, ()> {
    match presence.get_child("priority", herald_stream::ns::CLIENT) {
        None => Ok(0),
        Some(p) => p.text().trim().parse::<i8>().map_err(|_| ()),
    }
}

fn addressed(presence: &Element, to: &Jid) -> Element {
    let mut copy = presence.clone();
    set_attr(&mut copy, "to", to.to_string());
    copy
}

fn presence_of_type(kind: &'static str, from: &Jid, to: &Jid) -> Element {
    let mut presence = Element::bare("presence", herald_stream::ns::CLIENT);
    set_attr(&mut presence, "type", kind);
    set_attr(&mut presence, "from", from.to_string());
    set_attr(&mut presence, "to", to.to_string());
    presence
}

/// Presence with no `to`: the user's own availability (RFC 6121 sections 4.2 to 4.5).
async fn broadcast(server: &Server, sender: &FullJid, kind: PresenceType, stanza: Stanza) {
    let Some(session) = server.sessions.get(sender) else {
        return;
    };
    match kind {
        PresenceType::Available => {
            let Ok(priority) = priority(&stanza.element) else {
                server.bounce(&stanza, ErrorType::Modify, DefinedCondition::BadRequest);
                return;
            };
            let availability = Availability::Available {
                priority,
                presence: stanza.element.clone(),
            };
            let previous = server
                .sessions
                .set_availability(sender, session.id, availability);
            let initial = matches!(previous, Some(Availability::Unavailable));
            let previous_priority = match previous {
                Some(Availability::Available { priority, .. }) => Some(priority),
                _ => None,
            };
            // RFC 6121 section 4.2.2: the user's server MUST broadcast initial presence to
            // all of the user's available resources, including the one that sent it; the
            // same holds for later presence updates (section 4.4.2).
            let others = server.sessions.available(&sender.to_bare());
            for other in &others {
                other.deliver(addressed(&stanza.element, &Jid::from(other.jid.clone())));
            }
            if initial {
                // ...and the new resource learns the presence of the others (the effect of
                // the probe to the user's own bare JID in section 4.2.2).
                send_presence_of_others(server, &session, &others);
            }
            if let Some(roster) = server.extensions.roster() {
                to_contacts(server, roster, &session, &stanza.element, initial).await;
            }
            let mut event = UserAvailable {
                session: sender.clone(),
                priority,
                previous_priority,
            };
            server
                .extensions
                .hooks()
                .user_available
                .run(server, &mut event)
                .await;
        }
        PresenceType::Unavailable => {
            let previous =
                server
                    .sessions
                    .set_availability(sender, session.id, Availability::Unavailable);
            if matches!(previous, Some(Availability::Available { .. })) {
                // RFC 6121 section 4.5.2: broadcast to the user's other resources and
                // acknowledge to the sender itself...
                for other in server.sessions.available(&sender.to_bare()) {
                    other.deliver(addressed(&stanza.element, &Jid::from(other.jid.clone())));
                }
                session.deliver(addressed(&stanza.element, &Jid::from(sender.clone())));
                // ...then to the contacts subscribed to the user's presence.
                if let Some(roster) = server.extensions.roster() {
                    for contact in subscribers(server, roster, &sender.to_bare()).await {
                        send(server, addressed(&stanza.element, &Jid::from(contact))).await;
                    }
                }
            }
            // Section 4.6.3: and to the entities that got directed presence.
            unavailable_to_directed(server, &session, &stanza.element).await;
        }
        // Probes and errors without `to` have no meaning.
        PresenceType::Error | PresenceType::Probe => {}
        // RFC 6121 section 3.1.1: a subscription request is addressed to a contact.
        PresenceType::Subscribe
        | PresenceType::Subscribed
        | PresenceType::Unsubscribe
        | PresenceType::Unsubscribed => {
            server.bounce(&stanza, ErrorType::Modify, DefinedCondition::BadRequest)
        }
    }
}

fn send_presence_of_others(server: &Server, session: &SessionHandle, others: &[SessionHandle]) {
    for other in others.iter().filter(|o| o.id != session.id) {
        if let Some(presence) = last_presence(server, other) {
            session.deliver(addressed(&presence, &Jid::from(session.jid.clone())));
        }
    }
}

/// The last available presence a resource broadcast, if it is available.
fn last_presence(server: &Server, handle: &SessionHandle) -> Option<Element> {
    server
        .sessions
        .resources(&handle.jid.to_bare())
        .into_iter()
        .find(|state| state.handle.id == handle.id)
        .and_then(|state| match state.availability {
            Availability::Available { presence, .. } => Some(presence),
            Availability::Unavailable => None,
        })
}

/// The roster side of available presence: the presence goes to every contact with a
/// subscription to the user (sections 4.2.2 and 4.4.2); on initial presence the server also
/// probes the contacts the user is subscribed to (section 4.2.2) and delivers the
/// subscription requests that waited (section 3.1.3).
async fn to_contacts(
    server: &Server,
    roster: &Roster,
    session: &SessionHandle,
    presence: &Element,
    initial: bool,
) {
    let user = session.jid.to_bare();
    let items = match roster.items(server, &user).await {
        Ok(items) => items,
        Err(error) => {
            tracing::error!(%user, %error, "cannot read the roster to broadcast presence");
            return;
        }
    };
    for item in items.iter().filter(|item| item.state.has_from()) {
        if item.contact != user {
            send(
                server,
                addressed(presence, &Jid::from(item.contact.clone())),
            )
            .await;
        }
    }
    if !initial {
        return;
    }
    for item in items.iter().filter(|item| item.state.has_to()) {
        probe(server, roster, &session.jid, &item.contact, false).await;
    }
    for item in items.iter().filter(|item| item.state.pending_in()) {
        session.deliver(subscription_request(item, &user));
    }
}

/// A stored subscription request, as delivered at login (RFC 6121 section 3.1.3).
fn subscription_request(item: &RosterItem, user: &BareJid) -> Element {
    let mut request = presence_of_type(
        "subscribe",
        &Jid::from(item.contact.clone()),
        &Jid::from(user.clone()),
    );
    if let Some(text) = &item.ask_message {
        let mut status = Element::bare("status", herald_stream::ns::CLIENT);
        status.append_text_node(text.clone());
        request.append_child(status);
    }
    request
}

/// The contacts subscribed to the user's presence ("from" or "both"), the user excluded.
async fn subscribers(server: &Server, roster: &Roster, user: &BareJid) -> Vec<BareJid> {
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

/// Deliver a presence stanza to what its `to` names: a local account's resource or its
/// available resources, or a connected component. Other domains are out of reach until
/// federation exists.
async fn send(server: &Server, presence: Element) {
    let Some(to) = presence.attr("to").and_then(|to| Jid::new(to).ok()) else {
        return;
    };
    if server.is_local_domain(to.domain().as_str()) {
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
    } else if server.components.get(to.domain().as_str()).is_some()
        && let Ok(stanza) = Stanza::parse(presence)
    {
        Box::pin(server.route(Origin::Server, stanza)).await;
    }
}

/// A probe from `prober` for `contact`'s presence (RFC 6121 section 4.3): the contact's
/// available resources answer with their last presence, if the prober is subscribed. A
/// server-generated probe of a contact that does not count the prober as a subscriber
/// (anymore) is answered with `unsubscribed` (section 4.3.2), which brings the prober's roster
/// back in line; a client's probe is then just ignored.
async fn probe(
    server: &Server,
    roster: &Roster,
    prober: &FullJid,
    contact: &BareJid,
    from_client: bool,
) {
    let user = prober.to_bare();
    if contact == &user {
        if let Some(session) = server.sessions.get(prober) {
            let others = server.sessions.available(&user);
            send_presence_of_others(server, &session, &others);
        }
        return;
    }
    if !server.is_local_domain(contact.domain().as_str()) {
        let mut probe = presence_of_type(
            "probe",
            &Jid::from(prober.clone()),
            &Jid::from(contact.clone()),
        );
        set_attr(&mut probe, "id", crate::random_id());
        send(server, probe).await;
        return;
    }
    if contact.node().is_none() {
        return;
    }
    let subscribed = match account_exists(server, contact).await {
        Some(true) => match roster.state(server, contact, &user).await {
            Ok(state) => state.has_from(),
            Err(error) => {
                tracing::error!(%contact, %error, "cannot read the roster to answer a probe");
                return;
            }
        },
        Some(false) => false,
        None => return,
    };
    if subscribed {
        let Some(session) = server.sessions.get(prober) else {
            return;
        };
        for resource in server.sessions.resources(contact) {
            if let Availability::Available { presence, .. } = &resource.availability {
                session.deliver(addressed(presence, &Jid::from(prober.clone())));
            }
        }
    } else if !from_client {
        let unsubscribed = presence_of_type(
            "unsubscribed",
            &Jid::from(contact.clone()),
            &Jid::from(user.clone()),
        );
        Box::pin(inbound_subscription(
            server,
            roster,
            &user,
            contact,
            SubscriptionKind::Unsubscribed,
            unsubscribed,
        ))
        .await;
    }
}

/// Whether a local account exists; `None` (logged) when the store cannot tell.
async fn account_exists(server: &Server, user: &BareJid) -> Option<bool> {
    match server.storage.accounts().exists(user).await {
        Ok(exists) => Some(exists),
        Err(error) => {
            tracing::error!(%user, %error, "cannot check whether an account exists");
            None
        }
    }
}

/// A subscription stanza sent by the user (RFC 6121 sections 3.1.2, 3.2.2, 3.3.2, 3.1.5):
/// the user's item changes, then the stanza goes to the contact's server stamped with the
/// user's bare JID.
async fn outbound_subscription(
    server: &Server,
    roster: &Roster,
    sender: &FullJid,
    kind: SubscriptionKind,
    to: &Jid,
    stanza: Stanza,
) {
    let user = sender.to_bare();
    // Section 3.1.2: a full JID is treated as the contact's bare JID.
    let contact = to.to_bare();
    if contact.node().is_none() && server.is_local_domain(contact.domain().as_str()) {
        // A subscription to the server itself: nothing to subscribe to.
        return;
    }
    let applied = match roster
        .apply(server, &user, &contact, Direction::Outbound, kind, None)
        .await
    {
        Ok(applied) => applied,
        Err(error) => {
            tracing::error!(%user, %contact, %error, "cannot update the roster for a subscription");
            server.bounce(
                &stanza,
                ErrorType::Wait,
                DefinedCondition::InternalServerError,
            );
            return;
        }
    };
    if applied.forward {
        let mut element = stanza.element;
        set_attr(&mut element, "from", user.to_string());
        set_attr(&mut element, "to", contact.to_string());
        to_contact_server(server, roster, &user, &contact, kind, element).await;
    }
    match kind {
        // Section 3.1.5: once the contact is subscribed, it gets the user's presence.
        SubscriptionKind::Subscribed if applied.after.has_from() && !applied.before.has_from() => {
            for resource in server.sessions.available(&user) {
                if let Some(presence) = last_presence(server, &resource) {
                    send(server, addressed(&presence, &Jid::from(contact.clone()))).await;
                }
            }
        }
        // Section 3.2.2: a contact whose subscription is cancelled sees the user go offline.
        SubscriptionKind::Unsubscribed
            if applied.before.has_from() && !applied.after.has_from() =>
        {
            for resource in server.sessions.available(&user) {
                let unavailable = unavailable_from(&resource.jid, &Jid::from(contact.clone()));
                send(server, unavailable).await;
            }
        }
        _ => {}
    }
}

fn unavailable_from(from: &FullJid, to: &Jid) -> Element {
    presence_of_type("unavailable", &Jid::from(from.clone()), to)
}

/// Hand a subscription stanza from `from` to the server of `contact`: processed here for a
/// local account, routed to a connected component, dropped for other domains.
async fn to_contact_server(
    server: &Server,
    roster: &Roster,
    from: &BareJid,
    contact: &BareJid,
    kind: SubscriptionKind,
    element: Element,
) {
    if server.is_local_domain(contact.domain().as_str()) {
        if contact.node().is_some() {
            Box::pin(inbound_subscription(
                server, roster, contact, from, kind, element,
            ))
            .await;
        }
    } else {
        send(server, element).await;
    }
}

/// A subscription stanza from `from` for the local account `recipient` (RFC 6121 sections
/// 3.1.3, 3.1.6, 3.2.3, 3.3.3): the recipient's item changes, and the stanza is delivered to
/// its available resources when the change is one the recipient must learn of. A request
/// that finds no available resource stays pending in the roster until the next login.
async fn inbound_subscription(
    server: &Server,
    roster: &Roster,
    recipient: &BareJid,
    from: &BareJid,
    kind: SubscriptionKind,
    element: Element,
) {
    match account_exists(server, recipient).await {
        Some(true) => {}
        Some(false) => {
            // There is no such contact: a request is answered with unsubscribed, so the
            // requester's roster does not wait forever.
            if kind == SubscriptionKind::Subscribe {
                let answer = presence_of_type(
                    "unsubscribed",
                    &Jid::from(recipient.clone()),
                    &Jid::from(from.clone()),
                );
                to_contact_server(
                    server,
                    roster,
                    recipient,
                    from,
                    SubscriptionKind::Unsubscribed,
                    answer,
                )
                .await;
            }
            return;
        }
        None => return,
    }
    if kind == SubscriptionKind::Subscribe {
        match roster.has_room(server, recipient, from).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%recipient, %from, "roster full: subscription request dropped");
                return;
            }
            Err(error) => {
                tracing::error!(%recipient, %error, "cannot read the roster for a subscription request");
                return;
            }
        }
        match roster.state(server, recipient, from).await {
            Ok(state) if state.has_from() => {
                // Section 3.1.3: the contact already has a subscription; the server MUST
                // auto-reply with subscribed on behalf of the recipient.
                let answer = presence_of_type(
                    "subscribed",
                    &Jid::from(recipient.clone()),
                    &Jid::from(from.clone()),
                );
                to_contact_server(
                    server,
                    roster,
                    recipient,
                    from,
                    SubscriptionKind::Subscribed,
                    answer,
                )
                .await;
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%recipient, %error, "cannot read the roster for a subscription request");
                return;
            }
        }
    }
    let status = element
        .get_child("status", herald_stream::ns::CLIENT)
        .map(|status| status.text())
        .filter(|text| !text.is_empty());
    let applied = match roster
        .apply(server, recipient, from, Direction::Inbound, kind, status)
        .await
    {
        Ok(applied) => applied,
        Err(error) => {
            tracing::error!(%recipient, %from, %error, "cannot update the roster for a subscription");
            return;
        }
    };
    if applied.forward {
        for session in server.sessions.available(recipient) {
            session.deliver(element.clone());
        }
    }
    // Section 3.3.3: the entity that unsubscribed sees the recipient go offline.
    if kind == SubscriptionKind::Unsubscribe
        && applied.before.has_from()
        && !applied.after.has_from()
    {
        for resource in server.sessions.available(recipient) {
            send(
                server,
                unavailable_from(&resource.jid, &Jid::from(from.clone())),
            )
            .await;
        }
    }
}

/// Cancel both subscriptions between the user and the contact of a removed roster item
/// (RFC 6121 section 2.5.2; XEP-0077 section 3.2 for a removed account): the contact is told
/// `unsubscribe` if the user had or asked for its presence, and `unsubscribed` if it had or
/// asked for the user's.
pub(crate) async fn cancel_subscriptions(
    server: &Server,
    roster: &Roster,
    user: &BareJid,
    removed: &RosterItem,
) {
    let contact = &removed.contact;
    if contact == user {
        return;
    }
    let state = removed.state;
    let user_jid = Jid::from(user.clone());
    let contact_jid = Jid::from(contact.clone());
    if state.has_to() || state.pending_out() {
        let stanza = presence_of_type("unsubscribe", &user_jid, &contact_jid);
        to_contact_server(
            server,
            roster,
            user,
            contact,
            SubscriptionKind::Unsubscribe,
            stanza,
        )
        .await;
    }
    if state.has_from() || state.pending_in() {
        let stanza = presence_of_type("unsubscribed", &user_jid, &contact_jid);
        to_contact_server(
            server,
            roster,
            user,
            contact,
            SubscriptionKind::Unsubscribed,
            stanza,
        )
        .await;
        if state.has_from() {
            for resource in server.sessions.available(user) {
                send(server, unavailable_from(&resource.jid, &contact_jid)).await;
            }
        }
    }
}

/// Presence with a `to` that is not a subscription stanza (RFC 6121 section 4.6 for
/// directed presence, 8.5 for delivery). The served domain itself is never the recipient.
async fn directed(server: &Server, sender: &FullJid, kind: PresenceType, to: Jid, stanza: Stanza) {
    let local = server.is_local_domain(to.domain().as_str());
    if local && to.node().is_none() {
        // Presence to the server itself: nothing to do (RFC 6121 section 8.5.1 allows
        // silently ignoring it).
        return;
    }
    if let Some(session) = server.sessions.get(sender) {
        // Section 4.6.2 and 4.6.3: remember who got available presence, so that it gets
        // unavailable presence when the user goes offline.
        match kind {
            PresenceType::Available => {
                let mut directed = session.presence.directed();
                if directed.len() < MAX_DIRECTED {
                    directed.insert(to.clone());
                }
            }
            PresenceType::Unavailable => {
                session.presence.directed().remove(&to);
            }
            _ => {}
        }
    }
    if !local {
        // A connected component (the router sends nothing else here).
        send(server, stanza.element).await;
        return;
    }
    match to.try_as_full() {
        Ok(full) => {
            // RFC 6121 section 8.5.3.2.3: to an absent resource, presence is ignored.
            if let Some(session) = server.sessions.get(full) {
                session.deliver(stanza.element);
            }
        }
        Err(bare) => {
            // RFC 6121 section 8.5.2.1.3: delivered to all available resources.
            if matches!(kind, PresenceType::Error) {
                return;
            }
            for session in server.sessions.available(bare) {
                session.deliver(stanza.element.clone());
            }
        }
    }
}

/// Send unavailable presence to the entities the session sent directed presence to and
/// forget them (RFC 6121 section 4.6.3), skipping those that got it as subscribers.
async fn unavailable_to_directed(server: &Server, session: &SessionHandle, unavailable: &Element) {
    let directed: Vec<Jid> = session.presence.directed().drain().collect();
    if directed.is_empty() {
        return;
    }
    let user = session.jid.to_bare();
    let covered = match server.extensions.roster() {
        Some(roster) => subscribers(server, roster, &user).await,
        None => Vec::new(),
    };
    for to in directed {
        if to.to_bare() == user || covered.contains(&to.to_bare()) {
            continue;
        }
        send(server, addressed(unavailable, &to)).await;
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
        let user = handle.jid.to_bare();
        for other in server.sessions.available(&user) {
            other.deliver(addressed(&unavailable, &Jid::from(other.jid.clone())));
        }
        if let Some(roster) = server.extensions.roster() {
            for contact in subscribers(server, roster, &user).await {
                send(server, addressed(&unavailable, &Jid::from(contact))).await;
            }
        }
    }
    unavailable_to_directed(server, handle, &unavailable).await;
}
