//! Declarative rules (`rules`, MongooseIM 6.9's alternative to `plugin_module`): an ordered
//! list of conditions on the event, the message and the recipient, each ending in `push` or
//! `skip`; the first rule whose conditions all hold decides, and a message no rule matches
//! does not push (skip reason `rule`). Docs: `docs/modules/push.md`, "Rules".
//!
//! ```toml
//! [[modules.mod_event_pusher.push.rules]]
//! hint = "no-store"
//! action = "skip"
//!
//! [[modules.mod_event_pusher.push.rules]]
//! event = ["message", "hibernating"]
//! type = ["chat", "groupchat"]
//! body = true
//! user_status = "offline"
//! action = "push"
//! ```
//!
//! A push goes to every registration of the recipient for a message to the user
//! (`message`) or to a hibernating session; for the other session events
//! (`unacknowledged`, `ack_delayed`, `inactive`) to the registration enabled in that
//! session. The payload is the summary of section 4 for a message with a body, the call
//! payload of the `hints` plugin for a Jingle Message Initiation, and otherwise the summary
//! without a body.

use herald_stream::Bare;

use super::{Context, Payload, Plugin, Skip, defaults, hints};
use crate::{
    events::{Event, UnackedCause},
    registrations::Registration,
    rules::{Action, ClientStateCondition, EventKind, Rule, UserStatus},
};

/// The kind of `event`, as a rule names it.
fn kind_of(event: &Event) -> EventKind {
    match event {
        Event::Chat(_) => EventKind::Message,
        Event::Unacknowledged { cause, .. } => match cause {
            UnackedCause::Waiting => EventKind::Unacknowledged,
            UnackedCause::Hibernating => EventKind::Hibernating,
            UnackedCause::AckDelayed => EventKind::AckDelayed,
            UnackedCause::Inactive => EventKind::Inactive,
        },
    }
}

/// Whether every condition of `rule` holds for `event`.
fn matches(rule: &Rule, context: &Context, event: &Event) -> bool {
    let message = event.message();
    any(&rule.events, |kind| *kind == kind_of(event))
        && any(&rule.types, |type_| *type_ == message.type_)
        && rule
            .body
            .is_none_or(|body| body == message.first_body().is_some_and(|text| !text.is_empty()))
        && any(&rule.hints, |hint| message.has_child(hint, hints::HINTS))
        && rule
            .user_status
            .is_none_or(|status| (status == UserStatus::Online) == context.recipient_available)
        && rule
            .client_state
            .is_none_or(|state| (state == ClientStateCondition::Active) == context.recipient_active)
}

/// Whether a condition on a list holds: absent, or one of the list passes `test`.
fn any<T>(list: &Option<Vec<T>>, test: impl Fn(&T) -> bool) -> bool {
    list.as_ref().is_none_or(|list| list.iter().any(test))
}

/// The plugin the rules make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Plugin for Rules {
    fn name(&self) -> &'static str {
        "rules"
    }

    /// The rules decide on bodiless messages too: the summary without a body, or a call.
    fn prepare_notification(&self, event: &Event) -> Result<Payload, Skip> {
        match defaults::prepare_notification(event) {
            Ok(payload) => Ok(payload),
            Err(_) => {
                let message = event.message();
                Ok(hints::call(message).unwrap_or_else(|| {
                    Payload::new(vec![
                        ("message-count".into(), "1".into()),
                        (
                            "last-message-sender".into(),
                            message.from.bare().to_string().to_lowercase(),
                        ),
                    ])
                }))
            }
        }
    }

    fn should_publish(
        &self,
        context: &Context,
        event: &Event,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Registration>, Skip> {
        let rule = self.0.iter().find(|rule| matches(rule, context, event));
        if rule.is_none_or(|rule| rule.action == Action::Skip) {
            return Err(Skip::Rule);
        }
        match kind_of(event) {
            EventKind::Message | EventKind::Hibernating => Ok(registrations),
            EventKind::Unacknowledged | EventKind::AckDelayed | EventKind::Inactive => {
                defaults::session_registration(context, registrations)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::config::{Invalid, KeyPath};
    use jid::{BareJid, FullJid};
    use serde::Deserialize;

    use super::*;
    use crate::rules::RawRule;
    use crate::{events::Message, registrations::RegistrationKey};

    fn rules(toml: &str) -> Result<Rules, Invalid> {
        #[derive(Deserialize)]
        struct Doc {
            rules: Vec<RawRule>,
        }
        let doc: Doc = toml::from_str(toml).unwrap();
        let at = KeyPath::root().key("rules");
        doc.rules
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Rule::from_raw(raw, &at.index(index)))
            .collect::<Result<Vec<Rule>, Invalid>>()
            .map(Rules)
    }

    fn message(type_: &str, inner: &str) -> Message {
        Message::parse(
            format!(
                "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='{type_}'>{inner}</message>"
            )
            .parse()
            .unwrap(),
        )
        .unwrap()
    }

    fn registration(node: &str) -> Registration {
        Registration::new(
            RegistrationKey {
                owner: BareJid::new("b@x").unwrap(),
                pubsub: BareJid::new("push.x").unwrap(),
                node: node.into(),
            },
            Default::default(),
        )
    }

    fn keys(result: Result<Vec<Registration>, Skip>) -> Result<Vec<String>, Skip> {
        result.map(|list| list.into_iter().map(|r| r.key.node).collect())
    }

    const EXAMPLE: &str = r#"
        [[rules]]
        hint = "no-store"
        action = "skip"
        [[rules]]
        event = ["message", "hibernating"]
        type = ["chat", "groupchat"]
        body = true
        user_status = "offline"
        action = "push"
        [[rules]]
        event = "inactive"
        client_state = "inactive"
        action = "push"
    "#;

    #[test]
    fn the_first_matching_rule_decides_and_no_match_skips() {
        let rules = rules(EXAMPLE).unwrap();
        let all = vec![registration("phone"), registration("tablet")];
        let offline = Context::default();
        let chat = Event::Chat(message("chat", "<body>hi</body>"));
        assert_eq!(
            keys(rules.should_publish(&offline, &chat, all.clone())),
            Ok(vec!["phone".into(), "tablet".into()])
        );
        let hinted = Event::Chat(message(
            "chat",
            "<body>hi</body><no-store xmlns='urn:xmpp:hints'/>",
        ));
        assert_eq!(
            rules.should_publish(&offline, &hinted, all.clone()),
            Err(Skip::Rule)
        );
        let online = Context {
            recipient_available: true,
            recipient_active: true,
            ..Context::default()
        };
        assert_eq!(
            rules.should_publish(&online, &chat, all.clone()),
            Err(Skip::Rule)
        );
        let bodiless = Event::Chat(message("chat", ""));
        assert_eq!(
            rules.should_publish(&offline, &bodiless, all.clone()),
            Err(Skip::Rule)
        );
        let headline = Event::Chat(message("headline", "<body>news</body>"));
        assert_eq!(
            rules.should_publish(&offline, &headline, all),
            Err(Skip::Rule)
        );
    }

    #[test]
    fn session_events_push_to_the_sessions_own_registration() {
        let rules = rules(EXAMPLE).unwrap();
        let all = vec![registration("phone"), registration("tablet")];
        let inactive = Event::Unacknowledged {
            session: FullJid::new("b@x/phone").unwrap(),
            cause: UnackedCause::Inactive,
            registration: None,
            message: message("chat", "<body>hi</body>"),
        };
        let context = Context {
            recipient_available: true,
            recipient_active: false,
            session_registration: Some(registration("phone").key),
        };
        assert_eq!(
            keys(rules.should_publish(&context, &inactive, all.clone())),
            Ok(vec!["phone".into()])
        );
        let looking = Context {
            recipient_active: true,
            ..context
        };
        assert_eq!(
            rules.should_publish(&looking, &inactive, all),
            Err(Skip::Rule)
        );
    }

    #[test]
    fn a_bodiless_message_gets_a_payload_for_the_rules_to_judge() {
        let rules = rules(EXAMPLE).unwrap();
        let payload = rules
            .prepare_notification(&Event::Chat(message("chat", "")))
            .unwrap();
        assert_eq!(payload.get("message-count"), Some("1"));
        assert_eq!(payload.get("last-message-body"), None);
        let call = rules
            .prepare_notification(&Event::Chat(message(
                "chat",
                "<store xmlns='urn:xmpp:hints'/>\
                 <propose xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
            )))
            .unwrap();
        assert_eq!(call.get("jingle-session-id"), Some("c1"));
    }

    #[test]
    fn bad_rules_name_their_key() {
        let message = |toml: &str| {
            let invalid = rules(toml).unwrap_err();
            format!("{}: {}", invalid.key, invalid.message)
        };
        assert!(
            message("[[rules]]\nbody = true\n").contains("rules[0].action"),
            "{}",
            message("[[rules]]\nbody = true\n")
        );
        assert!(message("[[rules]]\naction = \"maybe\"\n").contains("rules[0].action"));
        assert!(
            message(
                "[[rules]]\naction = \"push\"\n[[rules]]\nevent = \"mail\"\naction = \"push\"\n"
            )
            .contains("rules[1].event")
        );
        assert!(message("[[rules]]\ntype = []\naction = \"push\"\n").contains("rules[0].type"));
        assert!(
            message("[[rules]]\nuser_status = \"away\"\naction = \"push\"\n")
                .contains("rules[0].user_status")
        );
    }
}
