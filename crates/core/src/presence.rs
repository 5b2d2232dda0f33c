//! Presence from bound sessions (RFC 6121 section 4): availability and priority tracking,
//! broadcast among the user's own resources, directed presence.
//!
//! Subscriptions and broadcast to contacts need the roster; the roster module adds them.

use herald_stream::stanza::{PresenceType, Stanza, set_attr};
use jid::{FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Server,
    sessions::{Availability, SessionHandle},
};

pub(crate) fn route(server: &Server, sender: &FullJid, kind: PresenceType, stanza: Stanza) {
    match &stanza.to {
        None => broadcast(server, sender, kind, stanza),
        Some(to) => directed(server, kind, to.clone(), stanza),
    }
}

/// RFC 6121 section 4.7.2.3: the priority, -128..=127, 0 when absent.
fn priority(presence: &Element) -> Result<i8, ()> {
    match presence.get_child("priority", herald_stream::ns::CLIENT) {
        None => Ok(0),
        Some(p) => p.text().trim().parse::<i8>().map_err(|_| ()),
    }
}

fn addressed(presence: &Element, to: &FullJid) -> Element {
    let mut copy = presence.clone();
    set_attr(&mut copy, "to", to.to_string());
    copy
}

/// Presence with no `to`: the user's own availability (RFC 6121 sections 4.2 to 4.5).
fn broadcast(server: &Server, sender: &FullJid, kind: PresenceType, stanza: Stanza) {
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
            // RFC 6121 section 4.2.2: the user's server MUST broadcast initial presence to
            // all of the user's available resources, including the one that sent it; the
            // same holds for later presence updates (section 4.4.2).
            let others = server.sessions.available(&sender.to_bare());
            for other in &others {
                other.deliver(addressed(&stanza.element, &other.jid));
            }
            if initial {
                // ...and the new resource learns the presence of the others (the effect of
                // the probe to the user's own bare JID in section 4.2.2).
                send_presence_of_others(server, &session, &others);
            }
        }
        PresenceType::Unavailable => {
            let previous =
                server
                    .sessions
                    .set_availability(sender, session.id, Availability::Unavailable);
            if matches!(previous, Some(Availability::Available { .. })) {
                // RFC 6121 section 4.5.2: broadcast to the user's other resources and
                // acknowledge to the sender itself.
                for other in server.sessions.available(&sender.to_bare()) {
                    other.deliver(addressed(&stanza.element, &other.jid));
                }
                session.deliver(addressed(&stanza.element, sender));
            }
        }
        // Subscription states and probes without `to` have no meaning
        // (RFC 6121 section 3.1.1: a subscription request is addressed to a contact).
        PresenceType::Error | PresenceType::Probe => {}
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
        for state in server.sessions.resources(&other.jid.to_bare()) {
            if state.handle.id == other.id
                && let Availability::Available { presence, .. } = &state.availability
            {
                session.deliver(addressed(presence, &session.jid));
            }
        }
    }
}

/// Presence with a `to` (RFC 6121 section 4.6 for directed presence, 8.5 for delivery).
fn directed(server: &Server, kind: PresenceType, to: Jid, stanza: Stanza) {
    if !server.is_local_domain(to.domain().as_str()) {
        server.bounce(
            &stanza,
            ErrorType::Cancel,
            DefinedCondition::RemoteServerNotFound,
        );
        return;
    }
    if to.node().is_none() {
        // Presence to the server itself: nothing to do (RFC 6121 section 8.5.1 allows
        // silently ignoring it).
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

/// A session ended: if it was available, its unavailable presence goes to the user's
/// other resources (RFC 6121 section 4.5.3.2: the server MUST act as if the client had
/// sent unavailable presence).
pub fn session_ended(server: &Server, jid: &FullJid, last: Option<Availability>) {
    if !matches!(last, Some(Availability::Available { .. })) {
        return;
    }
    let mut unavailable = Element::bare("presence", herald_stream::ns::CLIENT);
    set_attr(&mut unavailable, "type", "unavailable");
    set_attr(&mut unavailable, "from", jid.to_string());
    for other in server.sessions.available(&jid.to_bare()) {
        other.deliver(addressed(&unavailable, &other.jid));
    }
}
