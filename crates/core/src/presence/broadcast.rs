//! A resource's own presence (RFC 6121 sections 4.2 to 4.5): broadcast to the user's
//! resources and to the contacts subscribed to the user, probes of the contacts the user is
//! subscribed to and the waiting subscription requests at login.

use herald_storage::roster::RosterItem;
use herald_stream::Bare;
use herald_stream::stanza::{PresenceType, Stanza};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::{
    addressed, directed::unavailable_to_directed, presence_of_type, priority, send,
    send_presence_of_others, subscribers, subscription::probe,
};
use crate::{
    Server,
    hooks::UserAvailable,
    roster::Roster,
    sessions::{Availability, SessionHandle, StoredPresence},
};

/// Presence with no `to`: the user's own availability (RFC 6121 sections 4.2 to 4.5).
pub(super) async fn broadcast(
    server: &Server,
    sender: &FullJid,
    kind: PresenceType,
    stanza: Stanza,
) {
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
                presence: StoredPresence::new(&stanza.element),
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
            let others = server.sessions.available(&sender.bare());
            for other in &others {
                other.deliver(addressed(&stanza.element, &Jid::from(other.jid.clone())));
            }
            if initial {
                // ...and the new resource learns the presence of the others (the effect of
                // the probe to the user's own bare JID in section 4.2.2).
                send_presence_of_others(server, &session, &others);
            }
            // The user's own modules learn of the resource's presence (personal eventing
            // sends its last items to a resource that asks for them).
            super::presence_in(server, sender.bare(), &stanza.element).await;
            if let Some(roster) = server.roster() {
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
                for other in server.sessions.available(&sender.bare()) {
                    other.deliver(addressed(&stanza.element, &Jid::from(other.jid.clone())));
                }
                session.deliver(addressed(&stanza.element, &Jid::from(sender.clone())));
                // ...then to the contacts subscribed to the user's presence.
                if let Some(roster) = server.roster() {
                    for contact in subscribers(server, roster, &sender.bare()).await {
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
    let user = session.jid.bare();
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
