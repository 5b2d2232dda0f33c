//! Directed presence (RFC 6121 section 4.6): presence to one entity, remembered so that it
//! gets unavailable presence when the session goes offline.

use herald_stream::Bare;
use herald_stream::stanza::{PresenceType, Stanza};
use jid::{FullJid, Jid};
use minidom::Element;

use super::{MAX_DIRECTED, SessionPresence, addressed, send, subscribers};
use crate::{Server, sessions::SessionHandle};

/// Presence with a `to` that is not a subscription stanza (RFC 6121 section 4.6 for
/// directed presence, 8.5 for delivery). The served domain itself is never the recipient.
pub(super) async fn directed(
    server: &Server,
    sender: &FullJid,
    kind: PresenceType,
    to: Jid,
    stanza: Stanza,
) {
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
                let presence = SessionPresence::of(&session);
                let mut directed = presence.directed();
                if directed.len() < MAX_DIRECTED {
                    directed.insert(to.clone());
                }
            }
            PresenceType::Unavailable => {
                SessionPresence::of(&session).directed().remove(&to);
            }
            _ => {}
        }
    }
    if !local {
        // A connected component (the router sends nothing else here).
        send(server, stanza.element).await;
        return;
    }
    // RFC 6121 section 8.5.3.2.3: to an absent resource, presence is ignored; section
    // 8.5.2.1.3: to a bare JID, delivered to all available resources (errors are not).
    if to.is_full() || !matches!(kind, PresenceType::Error) {
        send(server, stanza.element).await;
    }
}

/// Send unavailable presence to the entities the session sent directed presence to and
/// forget them (RFC 6121 section 4.6.3), skipping those that got it as subscribers.
pub(super) async fn unavailable_to_directed(
    server: &Server,
    session: &SessionHandle,
    unavailable: &Element,
) {
    let directed: Vec<Jid> = SessionPresence::of(session).directed().drain().collect();
    if directed.is_empty() {
        return;
    }
    let user = session.jid.bare();
    let covered = match server.roster() {
        Some(roster) => subscribers(server, roster, &user).await,
        None => Vec::new(),
    };
    for to in directed {
        if to.bare() == user || covered.contains(&to.bare()) {
            continue;
        }
        send(server, addressed(unavailable, &to)).await;
    }
}
