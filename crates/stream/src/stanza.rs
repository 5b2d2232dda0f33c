//! Stanzas (RFC 6120 section 8): a first-level element with its addressing parsed once, at
//! the edge, into typed values that routing works with.

use jid::{BareJid, Jid};
use minidom::Element;
use rxml::{Namespace, NcName};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::ns;

/// The `type` of a message (RFC 6121 section 5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// One-to-one chat.
    Chat,
    /// An error reply.
    Error,
    /// Multi-user chat.
    Groupchat,
    /// An alert that is not stored.
    Headline,
    /// A standalone message; also used for absent or unknown types (RFC 6121 section 5.2.2:
    /// an unknown type MUST be treated as normal).
    Normal,
}

impl MessageType {
    /// The type named by a `type` attribute (absent or unknown: normal).
    pub fn of(attr: Option<&str>) -> MessageType {
        match attr {
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            _ => MessageType::Normal,
        }
    }
}

/// The `type` of a presence (RFC 6121 section 4.7.1); `Available` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceType {
    /// No type: the sender is available.
    Available,
    /// An error reply.
    Error,
    /// A request for the current presence.
    Probe,
    /// A subscription request.
    Subscribe,
    /// A subscription approval.
    Subscribed,
    /// The sender is no longer available.
    Unavailable,
    /// A subscription cancellation by the subscriber.
    Unsubscribe,
    /// A subscription cancellation by the contact.
    Unsubscribed,
}

/// The `type` of an IQ (RFC 6120 section 8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    /// A request for information.
    Get,
    /// A request to change something.
    Set,
    /// A successful response.
    Result,
    /// An error response.
    Error,
}

/// The kind of a stanza with its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    /// `<message/>`.
    Message(MessageType),
    /// `<presence/>`.
    Presence(PresenceType),
    /// `<iq/>`.
    Iq(IqType),
}

/// Why a first-level element is not a usable stanza.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StanzaParseError {
    /// Not message, presence or iq in `jabber:client`: a stream error
    /// (RFC 6120 section 4.9.3.21, unsupported-stanza-type).
    #[error("unsupported first-level element <{0}/>")]
    NotAStanza(String),
    /// A `to` or `from` that is not a valid JID (RFC 6120 section 8.3.3.8, jid-malformed).
    #[error("malformed JID in '{0}'")]
    BadJid(&'static str),
    /// An unknown `type` on an iq or presence, or an iq without id (RFC 6120 section 8.2.3).
    #[error("{0}")]
    BadRequest(&'static str),
}

/// A first-level element that is not a usable stanza, with the reason.
#[derive(Debug)]
pub struct Rejected {
    /// Why it was rejected.
    pub error: StanzaParseError,
    /// The element, for building the error reply.
    pub element: Element,
}

fn reject<T>(error: StanzaParseError, element: Element) -> Result<T, Box<Rejected>> {
    Err(Box::new(Rejected { error, element }))
}

/// A parsed stanza: typed addressing plus the element it came from.
#[derive(Clone, Debug)]
pub struct Stanza {
    /// Kind and type.
    pub kind: StanzaKind,
    /// The `from` attribute, if any (servers stamp it: RFC 6120 section 8.1.2.1).
    pub from: Option<Jid>,
    /// The `to` attribute, if any.
    pub to: Option<Jid>,
    /// The `id` attribute, if any.
    pub id: Option<String>,
    /// The whole element, payloads untouched.
    pub element: Element,
}

fn ncname(name: &'static str) -> NcName {
    NcName::try_from(name).unwrap_or_else(|_| unreachable!("{name} is a valid XML name"))
}

/// Set (or replace) an unqualified attribute.
pub fn set_attr(element: &mut Element, name: &'static str, value: impl Into<String>) {
    element
        .attrs_mut()
        .insert(Namespace::NONE, ncname(name), value.into());
}

/// Remove an unqualified attribute.
pub fn remove_attr(element: &mut Element, name: &'static str) {
    element.attrs_mut().remove(&Namespace::NONE, name);
}

/// An empty element made once and copied wherever one is needed, for elements the server
/// builds for every message (the archive's `<stanza-id/>`, a push form's fields).
///
/// `Element::bare` takes its namespace as a `String` that rxml keeps behind a new `Arc`:
/// three allocations an element with its name. A copy of a made element shares the
/// namespace and copies only the name: one.
pub struct Blank {
    name: &'static str,
    ns: &'static str,
    made: std::sync::OnceLock<Element>,
}

impl Blank {
    /// The empty element `name` in namespace `ns` (made on first use).
    pub const fn new(name: &'static str, ns: &'static str) -> Blank {
        Blank {
            name,
            ns,
            made: std::sync::OnceLock::new(),
        }
    }

    /// A new empty element, equal to `Element::bare(name, ns)`.
    pub fn make(&self) -> Element {
        self.made
            .get_or_init(|| Element::bare(self.name, self.ns))
            .clone()
    }
}

/// A JID's bare JID (RFC 6120 section 1.4: localpart and domainpart), as a copy of its text.
///
/// `jid`'s own `to_bare` formats the two parts into a new string (`format!`): about 2,700
/// instructions a call, and the push path took it a dozen times a message (callgrind, push
/// benchmark). The parts are already normalised, so the bare JID is the text up to the `/`:
/// one allocation and a copy.
pub trait Bare {
    /// The bare JID.
    fn bare(&self) -> BareJid;

    /// Whether `other` has the same bare JID (localpart and domainpart), without making
    /// either.
    fn same_bare(&self, other: &Jid) -> bool;
}

impl Bare for Jid {
    fn bare(&self) -> BareJid {
        self.clone().into_bare()
    }

    fn same_bare(&self, other: &Jid) -> bool {
        self.node() == other.node() && self.domain() == other.domain()
    }
}

impl Stanza {
    /// Parse a first-level element received on a client stream.
    pub fn parse(element: Element) -> Result<Stanza, Box<Rejected>> {
        if !element.has_ns(ns::CLIENT) {
            let name = element.name().to_owned();
            return reject(StanzaParseError::NotAStanza(name), element);
        }
        let ty = element.attr("type");
        let kind = match element.name() {
            "message" => StanzaKind::Message(MessageType::of(ty)),
            "presence" => StanzaKind::Presence(match ty {
                None => PresenceType::Available,
                Some("error") => PresenceType::Error,
                Some("probe") => PresenceType::Probe,
                Some("subscribe") => PresenceType::Subscribe,
                Some("subscribed") => PresenceType::Subscribed,
                Some("unavailable") => PresenceType::Unavailable,
                Some("unsubscribe") => PresenceType::Unsubscribe,
                Some("unsubscribed") => PresenceType::Unsubscribed,
                Some(_) => {
                    return reject(
                        StanzaParseError::BadRequest("unknown presence type"),
                        element,
                    );
                }
            }),
            "iq" => StanzaKind::Iq(match ty {
                Some("get") => IqType::Get,
                Some("set") => IqType::Set,
                Some("result") => IqType::Result,
                Some("error") => IqType::Error,
                _ => {
                    return reject(
                        StanzaParseError::BadRequest("missing or unknown iq type"),
                        element,
                    );
                }
            }),
            other => {
                let name = other.to_owned();
                return reject(StanzaParseError::NotAStanza(name), element);
            }
        };
        if matches!(kind, StanzaKind::Iq(_)) && element.attr("id").is_none() {
            return reject(
                StanzaParseError::BadRequest("an iq must have an id"),
                element,
            );
        }
        let to = match element.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(jid)) => Some(jid),
            Some(Err(_)) => return reject(StanzaParseError::BadJid("to"), element),
        };
        let from = match element.attr("from").map(Jid::new) {
            None => None,
            Some(Ok(jid)) => Some(jid),
            Some(Err(_)) => return reject(StanzaParseError::BadJid("from"), element),
        };
        let id = element.attr("id").map(str::to_owned);
        Ok(Stanza {
            kind,
            from,
            to,
            id,
            element,
        })
    }

    /// Whether this stanza is an error (errors are never answered with errors:
    /// RFC 6120 section 8.3.1).
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind,
            StanzaKind::Message(MessageType::Error)
                | StanzaKind::Presence(PresenceType::Error)
                | StanzaKind::Iq(IqType::Error)
        )
    }

    /// Set `from`, both the typed field and the attribute (RFC 6120 section 8.1.2.1: the
    /// server stamps the full JID of the sending session).
    pub fn set_from(&mut self, from: Jid) {
        set_attr(&mut self.element, "from", from.to_string());
        self.from = Some(from);
    }

    /// Set `to`, both the typed field and the attribute.
    pub fn set_to(&mut self, to: Jid) {
        set_attr(&mut self.element, "to", to.to_string());
        self.to = Some(to);
    }

    /// The error reply to this stanza (RFC 6120 section 8.3.1): addressed back to the
    /// sender, from the original recipient, carrying the original content. `None` when
    /// this stanza is itself an error.
    pub fn error_reply(&self, type_: ErrorType, condition: DefinedCondition) -> Option<Element> {
        if self.is_error() {
            return None;
        }
        let mut reply = self.element.clone();
        reply.attrs_mut().remove(&Namespace::NONE, "to");
        reply.attrs_mut().remove(&Namespace::NONE, "from");
        if let Some(from) = &self.from {
            set_attr(&mut reply, "to", from.to_string());
        }
        if let Some(to) = &self.to {
            set_attr(&mut reply, "from", to.to_string());
        }
        set_attr(&mut reply, "type", "error");
        if matches!(self.kind, StanzaKind::Iq(_)) {
            // The payload of a request is not echoed: the error is what matters, and
            // echoing doubles the bytes of a large request.
            reply.take_nodes();
        }
        reply.append_child(stanza_error(type_, condition));
        Some(reply)
    }
}

/// A stanza error element with a defined condition and no text (RFC 6120 section 8.3.2);
/// xmpp-parsers puts it in `jabber:client`, the namespace of the stanza that carries it.
pub fn stanza_error(type_: ErrorType, condition: DefinedCondition) -> Element {
    let mut error = StanzaError::new(type_, condition, "en", "");
    error.texts.clear();
    error.into()
}

/// About how many bytes an element takes serialised (names, attributes, text, and a little
/// per element for the markup), computed without serialising: what outbound queues count
/// against their byte budget.
pub fn approximate_size(element: &Element) -> usize {
    const MARKUP: usize = 8;
    let attributes: usize = element
        .attrs()
        .iter()
        .map(|((_, name), value)| name.len() + value.len() + 4)
        .sum();
    let content: usize = element
        .nodes()
        .map(|node| match node {
            minidom::Node::Element(child) => approximate_size(child),
            minidom::Node::Text(text) => text.len(),
        })
        .sum();
    MARKUP + 2 * element.name().len() + attributes + content
}

/// Move an element and its descendants from namespace `from` to namespace `to`: the
/// children of a stanza inherit the stream's default namespace (`jabber:client` on client
/// streams, `jabber:component:accept` on component streams, XEP-0114 section 3), so a stanza
/// crossing from one kind of stream to the other changes namespace as a whole.
pub fn with_namespace(mut element: Element, from: &str, to: &str) -> Element {
    let namespace = element.ns();
    let mut out = Element::bare(
        element.name(),
        if namespace == from {
            to
        } else {
            namespace.as_str()
        },
    );
    *out.attrs_mut() = std::mem::take(element.attrs_mut());
    for node in element.take_nodes() {
        match node {
            minidom::Node::Element(child) => {
                out.append_child(with_namespace(child, from, to));
            }
            minidom::Node::Text(text) => out.append_text_node(text),
        }
    }
    out
}

/// An IQ result addressed back to the sender of `request` (RFC 6120 section 8.2.3).
pub fn iq_result(request: &Stanza, payload: Option<Element>) -> Element {
    let mut reply = Element::bare("iq", ns::CLIENT);
    set_attr(&mut reply, "type", "result");
    if let Some(id) = &request.id {
        set_attr(&mut reply, "id", id.clone());
    }
    if let Some(from) = &request.from {
        set_attr(&mut reply, "to", from.to_string());
    }
    if let Some(to) = &request.to {
        set_attr(&mut reply, "from", to.to_string());
    }
    if let Some(payload) = payload {
        reply.append_child(payload);
    }
    reply
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_approximate_size_is_close_to_the_serialised_one() {
        let xml = "<message xmlns='jabber:client' to='juliet@capulet.example/balcony' \
                   type='chat' id='m1'><body>Wherefore art thou, Romeo? \
                   Deny thy father and refuse thy name.</body>\
                   <active xmlns='http://jabber.org/protocol/chatstates'/></message>";
        let element: Element = xml.parse().unwrap();
        let serialised = String::from(&element).len();
        let estimate = super::approximate_size(&element);
        assert!(
            estimate * 2 > serialised && estimate < serialised * 2,
            "{estimate} vs {serialised}"
        );
    }

    #[test]
    fn a_blank_makes_the_element_bare_makes_and_each_copy_is_its_own() {
        static FIELD: super::Blank = super::Blank::new("field", "jabber:x:data");
        let mut first = FIELD.make();
        assert_eq!(first, Element::bare("field", "jabber:x:data"));
        super::set_attr(&mut first, "var", "x-stanza-id");
        first.append_child(Element::bare("value", "jabber:x:data"));
        let second = FIELD.make();
        assert_eq!(second, Element::bare("field", "jabber:x:data"));
        assert_eq!(
            crate::serialise::to_string(&first),
            "<field xmlns='jabber:x:data' var='x-stanza-id'><value/></field>"
        );
        assert_eq!(
            crate::serialise::to_string(&second),
            String::from(&Element::bare("field", "jabber:x:data"))
        );
    }

    #[test]
    fn a_bare_jid_is_the_same_as_jids_own_for_every_shape_and_compares_without_one() {
        for text in [
            "juliet@capulet.example/balcony",
            "juliet@capulet.example",
            "capulet.example/balcony",
            "capulet.example",
            "Juliet@Capulet.Example/Balcony/with/slashes",
            "[::1]/r",
        ] {
            let jid = jid::Jid::new(text).unwrap();
            #[allow(clippy::disallowed_methods)]
            let expected = jid.to_bare();
            let bare = super::Bare::bare(&jid);
            assert_eq!(bare, expected, "{text}");
            assert_eq!(bare.as_str(), expected.as_str());
            assert!(bare.is_bare());
            assert_eq!(bare.node(), expected.node());
            assert_eq!(bare.domain(), expected.domain());
            assert!(jid.same_bare(&bare) && bare.same_bare(&jid));
        }
        let same = |a: &str, b: &str| {
            jid::Jid::new(a)
                .unwrap()
                .same_bare(&jid::Jid::new(b).unwrap())
        };
        assert!(same("Juliet@Example.com/a", "juliet@example.com/b"));
        assert!(!same("juliet@example.com", "romeo@example.com"));
        assert!(!same("juliet@example.com", "juliet@example.org"));
        assert!(!same("juliet@example.com", "example.com"));
        assert!(!same("example.com/juliet", "juliet@example.com"));
    }

    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn message_without_type_is_normal_and_addresses_are_typed() {
        let s = Stanza::parse(el("<message xmlns='jabber:client' to='Juliet@Example.com/balcony'><body>x</body></message>")).unwrap();
        assert_eq!(s.kind, StanzaKind::Message(MessageType::Normal));
        assert_eq!(s.to.unwrap().to_string(), "juliet@example.com/balcony");
    }

    #[test]
    fn iq_without_id_is_a_bad_request() {
        let rejected = Stanza::parse(el("<iq xmlns='jabber:client' type='get'/>")).unwrap_err();
        assert!(matches!(rejected.error, StanzaParseError::BadRequest(_)));
    }

    #[test]
    fn malformed_to_is_a_bad_jid() {
        let rejected =
            Stanza::parse(el("<message xmlns='jabber:client' to='a@b@c'/>")).unwrap_err();
        assert_eq!(rejected.error, StanzaParseError::BadJid("to"));
    }

    #[test]
    fn error_reply_swaps_addresses_and_carries_the_condition() {
        let s = Stanza::parse(el("<message xmlns='jabber:client' from='a@x/r' to='b@x' id='7' type='chat'><body>hi</body></message>")).unwrap();
        let reply = s
            .error_reply(ErrorType::Cancel, DefinedCondition::ServiceUnavailable)
            .unwrap();
        assert_eq!(reply.attr("to"), Some("a@x/r"));
        assert_eq!(reply.attr("from"), Some("b@x"));
        assert_eq!(reply.attr("type"), Some("error"));
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.has_child("service-unavailable", ns::STANZAS));
    }

    #[test]
    fn with_namespace_moves_the_stanza_and_its_default_namespace_children_only() {
        let m = el(
            "<message xmlns='jabber:client' to='a@b'><body>x</body><x xmlns='urn:other'><y/></x></message>",
        );
        let moved = with_namespace(m, ns::CLIENT, "jabber:component:accept");
        assert!(moved.is("message", "jabber:component:accept"));
        assert_eq!(moved.attr("to"), Some("a@b"));
        assert_eq!(
            moved
                .get_child("body", "jabber:component:accept")
                .unwrap()
                .text(),
            "x"
        );
        assert!(
            moved
                .get_child("x", "urn:other")
                .unwrap()
                .has_child("y", "urn:other")
        );
    }

    #[test]
    fn errors_are_never_answered_with_errors() {
        let s =
            Stanza::parse(el("<message xmlns='jabber:client' type='error' to='b@x'/>")).unwrap();
        assert!(
            s.error_reply(ErrorType::Cancel, DefinedCondition::ServiceUnavailable)
                .is_none()
        );
    }

    #[test]
    fn an_element_outside_jabber_client_is_not_a_stanza() {
        let rejected = Stanza::parse(el("<foo xmlns='jabber:client'/>")).unwrap_err();
        assert!(matches!(rejected.error, StanzaParseError::NotAStanza(_)));
    }
}
