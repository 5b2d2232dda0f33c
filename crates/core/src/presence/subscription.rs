//! Subscriptions (RFC 6121 section 3) and probes (section 4.3): the subscription stanzas a
//! user sends or receives change both rosters with the state tables of appendix A, and the
//! removal of a roster item cancels both subscriptions (section 2.5.2).

use std::sync::Arc;

use herald_storage::roster::RosterItem;
use herald_stream::Bare;
use herald_stream::stanza::{Stanza, set_attr};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::{
    account_exists, addressed, last_presence, presence_of_type, send, send_presence_of_others,
    unavailable_from,
};
use crate::{
    Server,
    hooks::{Flow, Handler, RosterItemRemoved},
    roster::{Direction, Roster, subscription::SubscriptionKind},
    sessions::Availability,
};

/// The `roster_item_removed` handler: cancel both subscriptions of the removed item.
pub(crate) struct CancelSubscriptions;

#[async_trait::async_trait]
impl Handler<RosterItemRemoved> for CancelSubscriptions {
    async fn call(&self, server: &Server, event: &mut RosterItemRemoved) -> Flow {
        if let Some(roster) = server.roster() {
            cancel_subscriptions(server, roster, &event.user, &event.item).await;
        }
        Flow::Continue
    }
}

impl CancelSubscriptions {
    /// The handler, shared.
    pub(crate) fn handler() -> Arc<CancelSubscriptions> {
        Arc::new(CancelSubscriptions)
    }
}

/// A probe from `prober` for `contact`'s presence (RFC 6121 section 4.3): the contact's
/// available resources answer with their last presence, if the prober is subscribed. A
/// server-generated probe of a contact that does not count the prober as a subscriber
/// (anymore) is answered with `unsubscribed` (section 4.3.2), which brings the prober's roster
/// back in line; a client's probe is then just ignored.
pub(super) async fn probe(
    server: &Server,
    roster: &Roster,
    prober: &FullJid,
    contact: &BareJid,
    from_client: bool,
) {
    let user = prober.bare();
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
        if server.sessions.get(prober).is_none() {
            return;
        }
        for resource in server.sessions.resources(contact) {
            if let Availability::Available { presence, .. } = &resource.availability {
                send(
                    server,
                    addressed(&presence.element(), &Jid::from(prober.clone())),
                )
                .await;
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

/// A subscription stanza sent by the user (RFC 6121 sections 3.1.2, 3.2.2, 3.3.2, 3.1.5):
/// the user's item changes, then the stanza goes to the contact's server stamped with the
/// user's bare JID.
pub(super) async fn outbound_subscription(
    server: &Server,
    roster: &Roster,
    sender: &FullJid,
    kind: SubscriptionKind,
    to: &Jid,
    stanza: Stanza,
) {
    let user = sender.bare();
    // Section 3.1.2: a full JID is treated as the contact's bare JID.
    let contact = to.bare();
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
            let mut event = crate::hooks::SubscriptionApproved {
                user: user.clone(),
                contact: contact.clone(),
            };
            server
                .extensions
                .hooks()
                .subscription_approved
                .run(server, &mut event)
                .await;
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

/// A subscription stanza from `from` for the local account `recipient` (RFC 6121 sections
/// 3.1.3, 3.1.6, 3.2.3, 3.3.3): the recipient's item changes, and the stanza is delivered to
/// its available resources when the change is one the recipient must learn of. A request
/// that finds no available resource stays pending in the roster until the next login.
pub(super) async fn inbound_subscription(
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
async fn cancel_subscriptions(
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
