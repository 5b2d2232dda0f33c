//! What the pipeline acts on (push.md section 4): a message for a local user, either on its way
//! to delivery or offline storage ([`Event::Chat`]), or buffered by a stream-management session
//! that waits for resumption ([`Event::Unacknowledged`], push.md section 7); and the record of the
//! registrations already notified for a message ([`Notified`]), which travels with it.

use std::collections::BTreeSet;

use herald_core::envelope::Mark;
pub use herald_core::hooks::UnackedCause;
use herald_stream::Bare;
use herald_stream::stanza::MessageType;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::registrations::RegistrationKey;

/// A message stanza with its addressing parsed once.
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender (`from`): a full JID for clients, `room@service/nick` for groupchat.
    pub from: Jid,
    /// The recipient's bare JID: the owner of the registrations to notify.
    pub to: BareJid,
    /// The `type`; absent and unknown types are `normal` (RFC 6121 section 5.2.2).
    pub type_: MessageType,
    /// The whole stanza, payloads untouched.
    pub stanza: Element,
}

impl Message {
    /// The id the recipient's archive gave the message (XEP-0359 `<stanza-id by='recipient'/>`,
    /// set by the archive, XEP-0313), if it is archived.
    pub fn archive_id(&self) -> Option<&str> {
        let owner = self.to.as_str();
        self.stanza
            .children()
            .find(|child| {
                child.is("stanza-id", "urn:xmpp:sid:0") && child.attr("by") == Some(owner)
            })
            .and_then(|child| child.attr("id"))
    }

    /// Parse a routed `<message/>`: it needs a `from` and a `to` JID, which a routed stanza
    /// always has. `None` for anything else.
    pub fn parse(stanza: Element) -> Option<Message> {
        if stanza.name() != "message" {
            return None;
        }
        let from = Jid::new(stanza.attr("from")?).ok()?;
        let to = Jid::new(stanza.attr("to")?).ok()?.bare();
        let type_ = message_type(stanza.attr("type"));
        Some(Message {
            from,
            to,
            type_,
            stanza,
        })
    }

    /// The text of the first `<body/>` (in the stanza's own namespace), if there is one.
    pub fn first_body(&self) -> Option<String> {
        let namespace = self.stanza.ns();
        self.stanza
            .children()
            .find(|child| child.name() == "body" && child.ns() == namespace)
            .map(Element::text)
    }

    /// Whether the stanza has a child `name` in namespace `ns`.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.stanza.has_child(name, ns)
    }
}

/// RFC 6121 section 5.2.2; an unknown type (such as `status`) is `normal`, so it never pushes
/// (push.md section 10: MongooseIM crashed on these on the unacknowledged path).
fn message_type(attr: Option<&str>) -> MessageType {
    match attr {
        Some("chat") => MessageType::Chat,
        Some("groupchat") => MessageType::Groupchat,
        Some("headline") => MessageType::Headline,
        Some("error") => MessageType::Error,
        _ => MessageType::Normal,
    }
}

/// An event the pipeline decides on.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message to a local user: delivered, or about to be stored offline.
    Chat(Message),
    /// A message written to one session that its client may not see soon: buffered,
    /// unacknowledged, by a stream-management session waiting for resumption (the session's
    /// user still counts as online) or hibernating past `resume_timeout` (the user counts as
    /// offline), left unacknowledged on a live connection for `max_ack_delay`, or written to
    /// an inactive client (XEP-0352); see [`UnackedCause`].
    Unacknowledged {
        /// The session's full JID.
        session: FullJid,
        /// Why it is offered.
        cause: UnackedCause,
        /// The registration enabled in that session (push.md section 3), if any.
        registration: Option<RegistrationKey>,
        /// The message.
        message: Message,
    },
}

impl Event {
    /// The message of either kind of event.
    pub fn message(&self) -> &Message {
        match self {
            Event::Chat(message) | Event::Unacknowledged { message, .. } => message,
        }
    }

    /// The recipient's bare JID.
    pub fn recipient(&self) -> &BareJid {
        &self.message().to
    }

    /// The label used in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Chat(_) => "chat",
            Event::Unacknowledged { cause, .. } => cause.as_str(),
        }
    }
}

/// The registrations already notified for one message (push.md section 4: "at most one push per
/// (message, registration)"). It travels with the message as a [`Mark`] in its envelope
/// (through re-routing, the stream-management buffer and offline storage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<StoredKey>", try_from = "Vec<StoredKey>")]
pub struct Notified(BTreeSet<RegistrationKey>);

impl Mark for Notified {
    /// Stored as `"push_notified": [{"owner", "pubsub", "node"}, ...]`.
    const KEY: &'static str = "push_notified";
}

/// One registration in the stored form of [`Notified`].
#[derive(Serialize, Deserialize)]
struct StoredKey {
    owner: String,
    pubsub: String,
    node: String,
}

/// A stored [`Notified`] with a JID that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid push metadata: {0}")]
pub struct MetadataError(String);

impl From<Notified> for Vec<StoredKey> {
    fn from(notified: Notified) -> Self {
        notified
            .0
            .into_iter()
            .map(|key| StoredKey {
                owner: key.owner.to_string(),
                pubsub: key.pubsub.to_string(),
                node: key.node,
            })
            .collect()
    }
}

impl TryFrom<Vec<StoredKey>> for Notified {
    type Error = MetadataError;

    fn try_from(stored: Vec<StoredKey>) -> Result<Self, Self::Error> {
        let jid = |text: &str| {
            BareJid::new(text).map_err(|error| MetadataError(format!("{text:?}: {error}")))
        };
        let mut notified = Notified::default();
        for key in stored {
            notified.insert(RegistrationKey {
                owner: jid(&key.owner)?,
                pubsub: jid(&key.pubsub)?,
                node: key.node,
            });
        }
        Ok(notified)
    }
}

impl Notified {
    /// Whether a push already went to `key` for this message.
    pub fn contains(&self, key: &RegistrationKey) -> bool {
        self.0.contains(key)
    }

    /// Record a push to `key`.
    pub fn insert(&mut self, key: RegistrationKey) {
        self.0.insert(key);
    }

    /// Whether no push went out for this message yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The registrations notified.
    pub fn iter(&self) -> impl Iterator<Item = &RegistrationKey> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use herald_core::envelope::Meta;

    use super::*;

    fn parse(xml: &str) -> Message {
        Message::parse(xml.parse().unwrap()).unwrap()
    }

    #[test]
    fn a_message_is_parsed_with_its_type_and_bare_recipient() {
        let m = parse(
            "<message xmlns='jabber:client' from='Bob@Example.com/Phone' \
             to='alice@example.com/laptop' type='chat'><body>hi</body></message>",
        );
        assert_eq!(m.from.to_string(), "bob@example.com/Phone");
        assert_eq!(m.to.to_string(), "alice@example.com");
        assert_eq!(m.type_, MessageType::Chat);
        assert_eq!(m.first_body().as_deref(), Some("hi"));
    }

    #[test]
    fn missing_and_unknown_types_are_normal() {
        for type_ in ["", " type='status'", " type='normal'"] {
            let m = parse(&format!(
                "<message xmlns='jabber:client' from='b@x' to='a@x'{type_}/>"
            ));
            assert_eq!(m.type_, MessageType::Normal, "{type_}");
        }
    }

    #[test]
    fn only_a_body_in_the_stanzas_namespace_counts() {
        let m = parse(
            "<message xmlns='jabber:client' from='b@x' to='a@x' type='chat'>\
             <body xmlns='urn:other'>no</body><body>first</body><body>second</body></message>",
        );
        assert_eq!(m.first_body().as_deref(), Some("first"));
    }

    #[test]
    fn a_message_without_addresses_is_not_an_event() {
        assert!(
            Message::parse("<message xmlns='jabber:client' to='a@x'/>".parse().unwrap()).is_none()
        );
        assert!(
            Message::parse(
                "<iq xmlns='jabber:client' from='b@x' to='a@x'/>"
                    .parse()
                    .unwrap()
            )
            .is_none()
        );
    }

    #[test]
    fn notified_registrations_round_trip_through_metadata() {
        let mut notified = Notified::default();
        notified.insert(RegistrationKey {
            owner: BareJid::new("alice@example.com").unwrap(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: "n\"1".into(),
        });
        let stored = |notified: &Notified| {
            let mut meta = Meta::new();
            meta.set(notified.clone());
            meta.to_stored()
        };
        let text = stored(&notified);
        assert_eq!(
            Meta::from_stored(&text).get::<Notified>().unwrap(),
            notified
        );
        assert_eq!(
            Meta::from_stored(&stored(&Notified::default()))
                .get::<Notified>()
                .unwrap(),
            Notified::default()
        );
        assert!(Meta::from_stored("{}").get::<Notified>().is_none());
        assert!(
            Meta::from_stored("{\"v\":2,\"push_notified\":[]}")
                .get::<Notified>()
                .is_none()
        );
        // What earlier versions stored reads the same.
        let earlier = r#"{"v":1,"push_notified":[{"owner":"alice@example.com","pubsub":"push.example.com","node":"n\"1"}]}"#;
        assert_eq!(
            Meta::from_stored(earlier).get::<Notified>().unwrap(),
            notified
        );
        assert!(
            Meta::from_stored(r#"{"v":1,"push_notified":[{"owner":"@","pubsub":"p","node":"n"}]}"#)
                .get::<Notified>()
                .is_none()
        );
    }
}
