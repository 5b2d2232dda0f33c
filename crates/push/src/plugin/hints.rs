//! The `hints` plugin (push.md section 6): `enhanced`, plus Message Processing Hints
//! (XEP-0334): `<no-store/>` never pushes, and a bodiless `<store/>` message carrying a Jingle
//! Message Initiation element (XEP-0353) pushes a call notification.

use super::{Context, Payload, Plugin, Skip, defaults, enhanced};
use crate::{
    events::{Event, Message},
    registrations::Registration,
};

/// XEP-0334's namespace.
pub const HINTS: &str = herald_stream::ns::HINTS;
/// XEP-0353's namespace.
pub const JINGLE_MESSAGE: &str = herald_stream::ns::JINGLE_MESSAGE;

/// MongooseIM's `mod_event_pusher_push_plugin_hints`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints;

impl Plugin for Hints {
    fn name(&self) -> &'static str {
        "hints"
    }

    fn prepare_notification(&self, event: &Event) -> Result<Payload, Skip> {
        let message = event.message();
        // XEP-0334 section 4.3: no-store asks that the message not be stored, which a push
        // would do on the device.
        if message.has_child("no-store", HINTS) {
            return Err(Skip::NoStoreHint);
        }
        match defaults::prepare_notification(event) {
            Err(Skip::NoBody) => call(message).ok_or(Skip::NoBody),
            other => other,
        }
    }

    fn should_publish(
        &self,
        context: &Context,
        event: &Event,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Registration>, Skip> {
        enhanced::session_registration(context, event, registrations)
    }
}

/// A call: a `<store/>` hint and a Jingle Message Initiation element with an `id`.
pub(super) fn call(message: &Message) -> Option<Payload> {
    if !message.has_child("store", HINTS) {
        return None;
    }
    let jingle = message
        .stanza
        .children()
        .find(|child| child.has_ns(JINGLE_MESSAGE) && child.attr("id").is_some())?;
    Some(defaults::call_payload(message, jingle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(inner: &str) -> Event {
        Event::Chat(
            Message::parse(
                format!(
                    "<message xmlns='jabber:client' from='Romeo@Montague.example/Orchard' \
                     to='juliet@capulet.example' type='chat'>{inner}</message>"
                )
                .parse()
                .unwrap(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_no_store_hint_never_pushes() {
        assert_eq!(
            Hints.prepare_notification(&event(
                "<body>secret</body><no-store xmlns='urn:xmpp:hints'/>"
            )),
            Err(Skip::NoStoreHint)
        );
    }

    #[test]
    fn a_stored_jingle_propose_pushes_a_call_payload() {
        let payload = Hints
            .prepare_notification(&event(
                "<propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>\
                 <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>\
                 <store xmlns='urn:xmpp:hints'/>",
            ))
            .unwrap();
        assert_eq!(
            payload.fields(),
            [
                (
                    "message-sender".to_owned(),
                    "romeo@montague.example".to_owned()
                ),
                ("jingle-message".to_owned(), "propose".to_owned()),
                (
                    "jingle-session-id".to_owned(),
                    "ca3cf894-5325-482f-a412-a6e9f832298d".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_jingle_message_without_store_hint_or_id_is_bodiless_unless_it_proposes_a_call() {
        // A proposal is a call with every plugin, hint or not (FIELD-NOTES defect 4).
        assert_eq!(
            Hints
                .prepare_notification(&event(
                    "<propose xmlns='urn:xmpp:jingle-message:0' id='x'/>"
                ))
                .unwrap()
                .get("jingle-message"),
            Some("propose")
        );
        assert_eq!(
            Hints
                .prepare_notification(&event("<accept xmlns='urn:xmpp:jingle-message:0' id='x'/>")),
            Err(Skip::NoBody)
        );
        assert_eq!(
            Hints.prepare_notification(&event(
                "<propose xmlns='urn:xmpp:jingle-message:0'/><store xmlns='urn:xmpp:hints'/>"
            )),
            Err(Skip::NoBody)
        );
    }

    #[test]
    fn a_message_with_a_body_is_a_summary_as_in_defaults() {
        let payload = Hints
            .prepare_notification(&event("<body>hi</body><store xmlns='urn:xmpp:hints'/>"))
            .unwrap();
        assert_eq!(payload.get("last-message-body"), Some("hi"));
    }
}
