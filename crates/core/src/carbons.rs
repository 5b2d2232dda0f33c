//! Message Carbons (XEP-0280), `[modules.mod_carboncopy]`: a resource that enables carbons
//! gets a copy of the messages its account's other resources send (`<sent/>`) and receive
//! (`<received/>`), so that every device of a user shows the whole conversation.
//!
//! Which messages are copied follows XEP-0280 section 6: chat messages, normal messages with
//! a body (or another payload a conversation shows: an encrypted body, a receipt, a marker),
//! and errors; never groupchat or headline, never a message marked `<private/>` (section 7)
//! or `<no-copy/>` (XEP-0334), never a copy of a copy. Docs: `docs/modules/carbons.md`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use herald_stream::Bare;
use herald_stream::stanza::{IqType, MessageType, StanzaKind, set_attr};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::{
    Server,
    hooks::{Flow, Handler, MessageDelivered, MessageSent, Priority},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
    sessions::SessionId,
};

/// XEP-0280's namespace.
pub const NS: &str = "urn:xmpp:carbons:2";
/// XEP-0297's namespace (the `<forwarded/>` wrapper).
const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334's namespace (`<no-copy/>`).
const HINTS: &str = "urn:xmpp:hints";

/// `[modules.mod_carboncopy]`: no options (MongooseIM's `iqdisc` is not needed here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarbonsConfig;

/// `[modules.mod_carboncopy]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCarbons {}

impl crate::config::Section for CarbonsConfig {
    type Raw = RawCarbons;

    fn from_raw(
        _raw: RawCarbons,
        _at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        Ok(CarbonsConfig)
    }
}

/// Whether a session enabled carbons (kept in its state).
#[derive(Debug, Default)]
pub struct CarbonsEnabled(AtomicBool);

impl CarbonsEnabled {
    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The carbons module.
pub struct Carbons;

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "mod_carboncopy"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(NS);
        r.iq(IqScope::Account, NS, Arc::new(Toggle));
        r.hooks()
            .message_sent
            .add(Priority::NORMAL, Arc::new(SentCopies));
        r.hooks()
            .message_delivered
            .add(Priority::NORMAL, Arc::new(ReceivedCopies));
    }
}

/// `<enable/>` and `<disable/>` (XEP-0280 sections 4 and 5), for the sender's own session.
struct Toggle;

#[async_trait::async_trait]
impl IqHandler for Toggle {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        if request.kind != IqType::Set {
            return Err(IqError::bad_request());
        }
        let on = match request.payload.name() {
            "enable" => true,
            "disable" => false,
            _ => return Err(IqError::bad_request()),
        };
        let Some(session) = request
            .sender
            .try_as_full()
            .ok()
            .filter(|full| full.same_bare(&request.target))
            .and_then(|full| server.sessions.get(full))
        else {
            // Only a client may enable carbons, for itself.
            return Err(IqError::not_allowed());
        };
        session
            .state
            .get_or_default::<CarbonsEnabled>()
            .0
            .store(on, Ordering::Relaxed);
        Ok(None)
    }
}

/// Whether XEP-0280 section 6 copies this message.
pub fn eligible(message: &Element) -> bool {
    if message.has_child("private", NS)
        || message.has_child("no-copy", HINTS)
        || message.has_child("sent", NS)
        || message.has_child("received", NS)
    {
        return false;
    }
    match MessageType::of(message.attr("type")) {
        MessageType::Chat | MessageType::Error => true,
        MessageType::Normal => message.children().any(|child| {
            matches!(
                (child.name(), child.ns().as_str()),
                ("body", herald_stream::ns::CLIENT)
                    | ("encrypted", _)
                    | ("received", "urn:xmpp:receipts")
                    | (
                        "displayed" | "received" | "acknowledged",
                        "urn:xmpp:chat-markers:0"
                    )
            )
        }),
        _ => false,
    }
}

/// The copy of `message` for `to`: `<sent/>` or `<received/>` wrapping the message
/// (XEP-0280 sections 6 and 7), from the account's bare JID.
fn copy(message: &Element, direction: &'static str, user: &BareJid, to: &FullJid) -> Element {
    let mut forwarded = Element::bare("forwarded", FORWARD);
    forwarded.append_child(message.clone());
    let mut wrapper = Element::bare(direction, NS);
    wrapper.append_child(forwarded);
    let mut carbon = Element::bare("message", herald_stream::ns::CLIENT);
    set_attr(&mut carbon, "from", user.to_string());
    set_attr(&mut carbon, "to", to.to_string());
    set_attr(
        &mut carbon,
        "type",
        message.attr("type").unwrap_or("normal").to_owned(),
    );
    carbon.append_child(wrapper);
    carbon
}

/// Deliver copies to the account's carbons-enabled sessions other than `skip`.
fn send_copies(
    server: &Server,
    user: &BareJid,
    message: &Element,
    direction: &'static str,
    skip: &dyn Fn(SessionId) -> bool,
) {
    for session in server.sessions.bound(user) {
        if skip(session.id)
            || !session
                .state
                .get::<CarbonsEnabled>()
                .is_some_and(|enabled| enabled.get())
        {
            continue;
        }
        session.deliver(copy(message, direction, user, &session.jid));
    }
}

struct SentCopies;

#[async_trait::async_trait]
impl Handler<MessageSent> for SentCopies {
    async fn call(&self, server: &Server, event: &mut MessageSent) -> Flow {
        let user = event.sender.bare();
        let to_self = event
            .stanza
            .to
            .as_ref()
            .is_some_and(|to| to.same_bare(&user));
        if !to_self
            && matches!(event.stanza.kind, StanzaKind::Message(_))
            && eligible(&event.stanza.element)
        {
            let sender = server.sessions.get(&event.sender).map(|session| session.id);
            send_copies(server, &user, &event.stanza.element, "sent", &|id| {
                Some(id) == sender
            });
        }
        // XEP-0280 section 7: the private marker has done its work.
        strip_private(&mut event.stanza.element);
        Flow::Continue
    }
}

struct ReceivedCopies;

#[async_trait::async_trait]
impl Handler<MessageDelivered> for ReceivedCopies {
    async fn call(&self, server: &Server, event: &mut MessageDelivered) -> Flow {
        let from_self = event
            .stanza
            .attr("from")
            .and_then(|from| Jid::new(from).ok())
            .is_some_and(|from| from.same_bare(&event.user));
        if !from_self && eligible(&event.stanza) {
            let delivered = &event.delivered;
            send_copies(server, &event.user, &event.stanza, "received", &|id| {
                delivered.contains(&id)
            });
        }
        Flow::Continue
    }
}

/// Remove `<private xmlns='urn:xmpp:carbons:2'/>` from a message about to be routed.
fn strip_private(message: &mut Element) {
    if message.has_child("private", NS) {
        let _ = message.remove_child("private", NS);
    }
}
