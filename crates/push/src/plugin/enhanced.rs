//! The `enhanced` plugin (push.md sections 6 and 7): an unacknowledged message is pushed at once
//! to the registration enabled in that very session, whatever the user's presence; everything
//! else as `defaults`. Clients re-enable on every connection, so the session's registration is
//! the device that just lost its connection.

use super::{Context, Plugin, Skip, defaults};
use crate::{
    events::{Event, UnackedCause},
    registrations::Registration,
};

/// MongooseIM's `mod_event_pusher_push_plugin_enhanced`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Enhanced;

impl Plugin for Enhanced {
    fn name(&self) -> &'static str {
        "enhanced"
    }

    fn should_publish(
        &self,
        context: &Context,
        event: &Event,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Registration>, Skip> {
        session_registration(context, event, registrations)
    }
}

/// For a message of a session (waiting, not acknowledged in time, inactive), only the
/// session's own registration (if it still exists); otherwise, and for a hibernating
/// session, the defaults.
pub(super) fn session_registration(
    context: &Context,
    event: &Event,
    registrations: Vec<Registration>,
) -> Result<Vec<Registration>, Skip> {
    match event {
        // A hibernating session's user counts as offline: every registration, as defaults.
        Event::Unacknowledged {
            cause: UnackedCause::Hibernating,
            ..
        }
        | Event::Chat(_) => defaults::should_publish(context, event, registrations),
        Event::Unacknowledged { .. } => defaults::own_registration(context, event, registrations),
    }
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;
    use crate::{events::Message, registrations::RegistrationKey};

    fn message() -> Message {
        Message::parse(
            "<message xmlns='jabber:client' from='a@x/r' to='bob@x' type='chat'><body>x</body></message>"
                .parse()
                .unwrap(),
        )
        .unwrap()
    }

    fn registration(node: &str) -> Registration {
        Registration::new(
            RegistrationKey {
                owner: BareJid::new("bob@x").unwrap(),
                pubsub: BareJid::new("push.x").unwrap(),
                node: node.into(),
            },
            Default::default(),
        )
    }

    #[test]
    fn an_unacknowledged_message_goes_to_the_sessions_own_registration_even_when_online() {
        let context = Context {
            recipient_available: true,
            recipient_active: true,
            session_registration: Some(registration("mine").key),
        };
        let event = Event::Unacknowledged {
            cause: crate::events::UnackedCause::Waiting,
            registration: None,
            session: jid::FullJid::new("bob@x/phone").unwrap(),
            message: message(),
        };
        let chosen = Enhanced
            .should_publish(
                &context,
                &event,
                vec![registration("other"), registration("mine")],
            )
            .unwrap();
        assert_eq!(
            chosen,
            [registration("mine")].map(|r| Registration {
                created_at: chosen[0].created_at,
                ..r
            })
        );
    }

    #[test]
    fn an_unacknowledged_message_of_a_session_without_enable_is_skipped() {
        let event = Event::Unacknowledged {
            cause: crate::events::UnackedCause::Waiting,
            registration: None,
            session: jid::FullJid::new("bob@x/phone").unwrap(),
            message: message(),
        };
        assert_eq!(
            Enhanced.should_publish(&Context::default(), &event, vec![registration("a")]),
            Err(Skip::NoSessionRegistration)
        );
        let disabled_since = Context {
            session_registration: Some(registration("gone").key),
            ..Context::default()
        };
        assert_eq!(
            Enhanced.should_publish(&disabled_since, &event, vec![registration("a")]),
            Err(Skip::NoSessionRegistration)
        );
    }

    #[test]
    fn chat_events_follow_the_defaults() {
        let online = Context {
            recipient_available: true,
            ..Context::default()
        };
        assert_eq!(
            Enhanced.should_publish(&online, &Event::Chat(message()), vec![registration("a")]),
            Err(Skip::RecipientOnline)
        );
    }
}
