//! What a remote server sends us on a stream authenticated for some of its domains, be it
//! an incoming stream or an outgoing one made bidirectional (XEP-0288): the addressing
//! checks of RFC 6120 section 4.9.3, then the router.

use std::collections::HashSet;

use herald_stream::{
    StreamErrorCondition, ns,
    stanza::{set_attr, with_namespace},
};
use jid::{BareJid, Jid};
use minidom::Element;

use super::{Pair, is_ours};
use crate::{
    Origin, Server,
    conn::{Conn, Rejected, parse_stanza},
};

/// A stanza from a remote server (on an incoming stream, or on an outgoing one made
/// bidirectional): its `from` at a domain authenticated on that stream (a pair whose `local`
/// is empty stands for every domain of ours), its `to` at ours (RFC 6120 sections
/// 4.9.3.6, 4.9.3.9, 4.9.3.10), then routed.
pub(super) async fn stanza(
    server: &Server,
    conn: &mut Conn,
    authenticated: &HashSet<Pair>,
    element: Element,
) -> Result<(), StreamErrorCondition> {
    if !matches!(element.name(), "message" | "presence" | "iq") || element.ns() != ns::SERVER {
        return Err(StreamErrorCondition::UnsupportedStanzaType);
    }
    if authenticated.is_empty() {
        return Err(StreamErrorCondition::NotAuthorized);
    }
    let (Some(from), Some(to)) = (
        element.attr("from").and_then(|f| Jid::new(f).ok()),
        element.attr("to").and_then(|t| Jid::new(t).ok()),
    ) else {
        return Err(StreamErrorCondition::ImproperAddressing);
    };
    let (remote, local) = (from.domain().as_str(), to.domain().as_str());
    if !is_ours(server, local) {
        return Err(StreamErrorCondition::HostUnknown);
    }
    let known = authenticated
        .iter()
        .any(|pair| pair.remote == remote && (pair.local.is_empty() || pair.local == local));
    if !known {
        return Err(StreamErrorCondition::InvalidFrom);
    }
    let element = with_namespace(element, ns::SERVER, ns::CLIENT);
    let stanza = match parse_stanza(element) {
        Ok(stanza) => stanza,
        Err(Rejected::Stream(condition)) => return Err(condition),
        Err(Rejected::Reply(None)) => return Ok(()),
        Err(Rejected::Reply(Some(mut reply))) => {
            set_attr(&mut reply, "from", to.to_string());
            set_attr(&mut reply, "to", from.to_string());
            conn.queue_moving(&reply, ns::CLIENT, ns::SERVER);
            return Ok(());
        }
    };
    let domain = Jid::from(BareJid::from_parts(None, from.domain()));
    server.route(Origin::Remote(&domain), stanza).await;
    Ok(())
}
