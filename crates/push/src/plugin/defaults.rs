//! The `defaults` plugin (push.md section 4): push `chat` and `groupchat` messages with a
//! non-empty body to every registration of a recipient who is offline.

use herald_stream::Bare;
use herald_stream::{ns::JINGLE_MESSAGE, stanza::MessageType};

use super::{Context, Payload, Plugin, Skip};
use crate::{
    events::{Event, Message, UnackedCause},
    registrations::Registration,
    vocabulary::{About, Kind},
};

/// MongooseIM's `mod_event_pusher_push_plugin_defaults`: the trait's default methods.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults;

impl Plugin for Defaults {
    fn name(&self) -> &'static str {
        "defaults"
    }
}

/// The summary field with the recipient archive's stanza-id (herald's, `x-` as XEP-0068
/// section 6 asks of fields a registered FORM_TYPE does not define).
pub const ARCHIVE_ID_FIELD: &str = "x-stanza-id";

/// The summary of a chat or groupchat message with a body, or a call (a Jingle Message
/// Initiation proposal, or its retraction: XEP-0353), which every plugin notifies.
pub(super) fn prepare_notification(event: &Event) -> Result<Payload, Skip> {
    let message = event.message();
    if let Some(call) = call(message) {
        return Ok(call);
    }
    // "Only type='chat' and type='groupchat' messages."
    let sender = match message.type_ {
        MessageType::Chat => message.from.bare().to_string(),
        // A groupchat sender is the occupant, room@service/nick.
        MessageType::Groupchat => message.from.to_string(),
        MessageType::Normal | MessageType::Headline | MessageType::Error => {
            return Err(Skip::NotChat);
        }
    };
    // "Skip when there is no <body/> or the first body's text is empty (whitespace is not
    // empty)."
    let body = message.first_body().ok_or(Skip::NoBody)?;
    if body.is_empty() {
        return Err(Skip::EmptyBody);
    }
    // The pipeline puts the unread count in (`unread_count`); MongooseIM's 1 otherwise.
    let message_count = 1;
    let about = About {
        kind: match message.type_ {
            MessageType::Groupchat => Kind::Groupchat,
            _ => Kind::Chat,
        },
        nickname: match message.type_ {
            MessageType::Groupchat => message.from.resource().map(|nick| nick.to_string()),
            _ => None,
        },
        media: Vec::new(),
        end_to_end: is_end_to_end(message),
    };
    let payload = Payload::summary(message_count, &sender.to_lowercase(), &body).about(about);
    // With the archive on, the id under which the message is found there (push.md
    // section 4): the woken phone can fetch from it.
    Ok(match message.archive_id() {
        Some(id) => payload.with(ARCHIVE_ID_FIELD, id),
        None => payload,
    })
}

/// A call proposed (`<propose/>`, with its media) or withdrawn (`<retract/>`) in a chat or
/// normal message (XEP-0353 section 3): the call payload of push.md section 6.
pub(super) fn call(message: &Message) -> Option<Payload> {
    if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
        return None;
    }
    let jingle = message.stanza.children().find(|child| {
        child.has_ns(JINGLE_MESSAGE)
            && matches!(child.name(), "propose" | "retract")
            && child.attr("id").is_some_and(|id| !id.is_empty())
    })?;
    Some(call_payload(message, jingle))
}

/// The call payload of `jingle`, a Jingle Message Initiation element of `message`: the
/// sender's bare JID lowercased, the element's name and id, and a proposal's media.
pub(super) fn call_payload(message: &Message, jingle: &minidom::Element) -> Payload {
    let sender = message.from.bare().to_string().to_lowercase();
    let payload = Payload::call(
        &sender,
        jingle.name(),
        jingle.attr("id").unwrap_or_default(),
    );
    let mut about = payload.subject().clone();
    about.media = jingle
        .children()
        .filter_map(|description| description.attr("media"))
        .map(str::to_owned)
        .collect();
    payload.about(about)
}

/// Whether the message is encrypted end to end (OMEMO, legacy OMEMO, OpenPGP for XMPP,
/// XEP-0027): its body is then a fallback text.
fn is_end_to_end(message: &Message) -> bool {
    message.stanza.children().any(|child| {
        matches!(
            (child.name(), child.ns().as_str()),
            (
                "encrypted",
                "eu.siacs.conversations.axolotl" | "urn:xmpp:omemo:2"
            ) | ("openpgp", "urn:xmpp:openpgp:0")
                | ("x", "jabber:x:encrypted")
        )
    })
}

/// Every registration, when the recipient is offline; for a session's messages, by cause
/// ([`UnackedCause`]): nothing while it waits within `resume_timeout` (the user still counts as
/// online), every registration once it hibernates past it (unless another session is
/// available: the user then counts as offline as if the session had ended), and the
/// session's own registration for a message left unacknowledged on a live connection or
/// written to an inactive client (unless another session is active).
pub(super) fn should_publish(
    context: &Context,
    event: &Event,
    registrations: Vec<Registration>,
) -> Result<Vec<Registration>, Skip> {
    match event {
        // "One available resource blocks pushes to all of the user's registrations."
        Event::Chat(_) if context.recipient_available => Err(Skip::RecipientOnline),
        Event::Chat(_) => Ok(registrations),
        Event::Unacknowledged { cause, .. } => match cause {
            // Spec section 7: `defaults` ignores them (the user still counts as online).
            UnackedCause::Waiting => Err(Skip::RecipientOnline),
            UnackedCause::Hibernating if context.recipient_available => Err(Skip::RecipientOnline),
            UnackedCause::Hibernating => Ok(registrations),
            UnackedCause::AckDelayed | UnackedCause::Inactive => {
                own_registration(context, event, registrations)
            }
        },
    }
}

/// The registration enabled in the event's session, if it still exists; for a message to an
/// inactive client, nothing while another session is active.
pub(super) fn own_registration(
    context: &Context,
    event: &Event,
    registrations: Vec<Registration>,
) -> Result<Vec<Registration>, Skip> {
    if let Event::Unacknowledged {
        cause: UnackedCause::Inactive,
        ..
    } = event
        && context.recipient_active
    {
        return Err(Skip::RecipientActive);
    }
    session_registration(context, registrations)
}

/// The registration enabled in the event's session, if it still exists.
pub(super) fn session_registration(
    context: &Context,
    registrations: Vec<Registration>,
) -> Result<Vec<Registration>, Skip> {
    let key = context
        .session_registration
        .as_ref()
        .ok_or(Skip::NoSessionRegistration)?;
    let own: Vec<Registration> = registrations
        .into_iter()
        .filter(|registration| &registration.key == key)
        .collect();
    if own.is_empty() {
        return Err(Skip::NoSessionRegistration);
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Message;

    fn event(xml: &str) -> Event {
        Event::Chat(Message::parse(xml.parse().unwrap()).unwrap())
    }

    fn message(type_: &str, inner: &str) -> Event {
        event(&format!(
            "<message xmlns='jabber:client' from='Alice@Example.com/Phone' \
             to='bob@example.com' type='{type_}'>{inner}</message>"
        ))
    }

    #[test]
    fn a_chat_message_with_a_body_gives_the_summary_of_spec_section_4() {
        let payload = Defaults
            .prepare_notification(&message("chat", "<body>OH, HAI!</body>"))
            .unwrap();
        assert_eq!(
            payload.fields(),
            [
                ("message-count".to_owned(), "1".to_owned()),
                (
                    "last-message-sender".to_owned(),
                    "alice@example.com".to_owned()
                ),
                ("last-message-body".to_owned(), "OH, HAI!".to_owned()),
            ]
        );
    }

    #[test]
    fn a_groupchat_sender_is_the_lowercased_occupant_jid() {
        let payload = Defaults
            .prepare_notification(&event(
                "<message xmlns='jabber:client' from='Room@Conference.Example.com/Nick' \
                 to='bob@example.com' type='groupchat'><body>hi all</body></message>",
            ))
            .unwrap();
        assert_eq!(
            payload.get("last-message-sender"),
            Some("room@conference.example.com/nick")
        );
    }

    #[test]
    fn normal_headline_error_and_untyped_messages_never_push() {
        for type_ in ["normal", "headline", "error", "status"] {
            assert_eq!(
                Defaults.prepare_notification(&message(type_, "<body>x</body>")),
                Err(Skip::NotChat),
                "{type_}"
            );
        }
        assert_eq!(
            Defaults.prepare_notification(&event(
                "<message xmlns='jabber:client' from='a@x/r' to='b@x'><body>x</body></message>"
            )),
            Err(Skip::NotChat)
        );
    }

    #[test]
    fn a_bodiless_message_is_skipped() {
        // Chat states, receipts, markers: no body.
        let state = "<active xmlns='http://jabber.org/protocol/chatstates'/>";
        assert_eq!(
            Defaults.prepare_notification(&message("chat", state)),
            Err(Skip::NoBody)
        );
    }

    #[test]
    fn an_empty_first_body_is_skipped_but_whitespace_pushes() {
        assert_eq!(
            Defaults.prepare_notification(&message("chat", "<body/><body>later</body>")),
            Err(Skip::EmptyBody)
        );
        let payload = Defaults
            .prepare_notification(&message("chat", "<body> </body>"))
            .unwrap();
        assert_eq!(payload.get("last-message-body"), Some(" "));
    }

    #[test]
    fn an_online_recipient_blocks_every_registration() {
        let online = Context {
            recipient_available: true,
            ..Context::default()
        };
        let e = message("chat", "<body>x</body>");
        assert_eq!(
            Defaults.should_publish(&online, &e, Vec::new()),
            Err(Skip::RecipientOnline)
        );
        assert_eq!(
            Defaults.should_publish(&Context::default(), &e, Vec::new()),
            Ok(Vec::new())
        );
    }

    #[test]
    fn unacknowledged_messages_are_ignored_by_defaults() {
        let Event::Chat(m) = message("chat", "<body>x</body>") else {
            unreachable!()
        };
        let e = Event::Unacknowledged {
            cause: crate::events::UnackedCause::Waiting,
            registration: None,
            session: jid::FullJid::new("bob@example.com/phone").unwrap(),
            message: m,
        };
        assert_eq!(
            Defaults.should_publish(&Context::default(), &e, Vec::new()),
            Err(Skip::RecipientOnline)
        );
    }

    fn sleeping(cause: UnackedCause) -> Event {
        let Event::Chat(m) = message("chat", "<body>x</body>") else {
            unreachable!()
        };
        Event::Unacknowledged {
            cause,
            registration: None,
            session: jid::FullJid::new("bob@example.com/phone").unwrap(),
            message: m,
        }
    }

    fn registration(node: &str) -> Registration {
        Registration::new(
            crate::registrations::RegistrationKey {
                owner: jid::BareJid::new("bob@example.com").unwrap(),
                pubsub: jid::BareJid::new("push.example.com").unwrap(),
                node: node.into(),
            },
            Default::default(),
        )
    }

    #[test]
    fn a_hibernating_sessions_message_pushes_to_every_registration_unless_another_session_is_there()
    {
        let all = vec![registration("phone"), registration("tablet")];
        let e = sleeping(UnackedCause::Hibernating);
        assert_eq!(
            Defaults.should_publish(&Context::default(), &e, all.clone()),
            Ok(all.clone())
        );
        let elsewhere = Context {
            recipient_available: true,
            ..Context::default()
        };
        assert_eq!(
            Defaults.should_publish(&elsewhere, &e, all),
            Err(Skip::RecipientOnline)
        );
    }

    #[test]
    fn ack_delayed_and_inactive_messages_push_to_the_sessions_own_registration_only() {
        let all = vec![registration("phone"), registration("tablet")];
        let phone = vec![all[0].clone()];
        let own = Context {
            recipient_available: true,
            session_registration: Some(registration("phone").key),
            ..Context::default()
        };
        for cause in [UnackedCause::AckDelayed, UnackedCause::Inactive] {
            assert_eq!(
                Defaults.should_publish(&own, &sleeping(cause), all.clone()),
                Ok(phone.clone()),
                "{cause:?}"
            );
            assert_eq!(
                Defaults.should_publish(&Context::default(), &sleeping(cause), all.clone()),
                Err(Skip::NoSessionRegistration),
                "{cause:?}"
            );
        }
        let someone_looking = Context {
            recipient_active: true,
            ..own.clone()
        };
        assert_eq!(
            Defaults.should_publish(
                &someone_looking,
                &sleeping(UnackedCause::Inactive),
                all.clone()
            ),
            Err(Skip::RecipientActive)
        );
        assert_eq!(
            Defaults.should_publish(&someone_looking, &sleeping(UnackedCause::AckDelayed), all),
            Ok(phone),
            "the device not acknowledging is woken whoever else reads"
        );
    }

    #[test]
    fn a_call_proposal_and_its_retraction_are_calls_with_every_plugin() {
        let payload = Defaults
            .prepare_notification(&message(
                "chat",
                "<propose xmlns='urn:xmpp:jingle-message:0' id='c1'>\
                 <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>\
                 <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/></propose>",
            ))
            .unwrap();
        assert_eq!(payload.get("jingle-message"), Some("propose"));
        assert_eq!(payload.get("message-sender"), Some("alice@example.com"));
        assert!(payload.is_urgent());
        assert_eq!(payload.subject().media, ["audio", "video"]);
        let retract = Defaults
            .prepare_notification(&message(
                "normal",
                "<retract xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
            ))
            .unwrap();
        assert_eq!(retract.subject().kind, Kind::CallEnded);
        assert!(retract.is_urgent(), "the ringing stops at once");
        // Other elements of the family, or no id: bodiless.
        for inner in [
            "<accept xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
            "<propose xmlns='urn:xmpp:jingle-message:0'/>",
        ] {
            assert_eq!(
                Defaults.prepare_notification(&message("chat", inner)),
                Err(Skip::NoBody),
                "{inner}"
            );
        }
    }

    #[test]
    fn a_summary_says_what_it_is_about() {
        let room = Defaults
            .prepare_notification(&event(
                "<message xmlns='jabber:client' from='room@muc.example.com/Carol' \
                 to='bob@example.com' type='groupchat'><body>hi</body></message>",
            ))
            .unwrap();
        assert_eq!(room.subject().kind, Kind::Groupchat);
        assert_eq!(room.subject().nickname.as_deref(), Some("Carol"));
        let omemo = Defaults
            .prepare_notification(&message(
                "chat",
                "<body>I sent you an OMEMO encrypted message</body>\
                 <encrypted xmlns='eu.siacs.conversations.axolotl'/>",
            ))
            .unwrap();
        assert!(omemo.subject().end_to_end);
        let plain = Defaults
            .prepare_notification(&message("chat", "<body>hi</body>"))
            .unwrap();
        assert_eq!(plain.subject().kind, Kind::Chat);
        assert!(!plain.subject().end_to_end);
    }
}
